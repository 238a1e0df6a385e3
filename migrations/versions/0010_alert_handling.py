"""risk alerts handled by the wallet's home branch: home branch, acknowledgement, owner, note

Revision ID: 0010_alert_handling
Revises: 0009_signin_state
Create Date: 2026-11-28 09:00:00

``wallet.home_branch_id`` is the wallet's home branch (归属网点); a risk alert on the wallet is
seen and handled by the supervisors of that branch only. Existing wallets take the branch they
were opened at, as the audit trail's ``wallet.open`` event records it (none when the command
line opened them). An open alert is acknowledged by a supervisor who names its owner and writes
a note (``risk_alert.acknowledged_at``, ``acknowledged_by_id``, ``owner_id``, ``handling_note``).

The new columns are added in place on both databases: on SQLite a batch copy of ``wallet`` would
drop a table that others reference while foreign keys are enforced.
"""
from alembic import op
import sqlalchemy as sa

import console.models.types

revision = '0010_alert_handling'
down_revision = '0009_signin_state'
branch_labels = None
depends_on = None


def _add_reference(table, column, target):
    """A nullable integer column referring to ``target``.id, with its named foreign key."""
    name = op.f(f'fk_{table}_{column}_{target}')
    if op.get_bind().dialect.name == 'sqlite':
        op.add_column(table, sa.Column(column, sa.Integer(), sa.ForeignKey(f'{target}.id', name=name),
                                       nullable=True), inline_references=True)
    else:
        op.add_column(table, sa.Column(column, sa.Integer(), nullable=True))
        op.create_foreign_key(name, table, target, [column], ['id'])


def upgrade():
    _add_reference('wallet', 'home_branch_id', 'branch')
    op.create_index(op.f('ix_wallet_home_branch_id'), 'wallet', ['home_branch_id'], unique=False)
    op.execute(
        "UPDATE wallet SET home_branch_id = ("
        " SELECT branch.id FROM audit_event JOIN branch ON branch.code = audit_event.actor_branch"
        " WHERE audit_event.action = 'wallet.open'"
        " AND audit_event.after_state LIKE '%' || wallet.wallet_no || '%'"
        " ORDER BY audit_event.seq LIMIT 1)"
        " WHERE home_branch_id IS NULL")

    op.add_column('risk_alert', sa.Column('acknowledged_at', console.models.types.UTCDateTime(), nullable=True))
    _add_reference('risk_alert', 'acknowledged_by_id', 'staff')
    _add_reference('risk_alert', 'owner_id', 'staff')
    op.add_column('risk_alert', sa.Column('handling_note', sa.Text(), nullable=True))


def downgrade():
    sqlite = op.get_bind().dialect.name == 'sqlite'
    if sqlite:
        # SQLite drops these columns by copying the tables; dropping the old copy of ``wallet`` fails
        # while other rows refer to it and foreign keys are enforced. The pragma changes only
        # between transactions.
        op.execute("COMMIT")
        op.execute("PRAGMA foreign_keys=OFF")
        op.execute("BEGIN IMMEDIATE")
    with op.batch_alter_table('risk_alert', schema=None) as batch_op:
        if not sqlite:  # on SQLite the references were added in place, unnamed, and go with their columns
            batch_op.drop_constraint(batch_op.f('fk_risk_alert_owner_id_staff'), type_='foreignkey')
            batch_op.drop_constraint(batch_op.f('fk_risk_alert_acknowledged_by_id_staff'), type_='foreignkey')
        batch_op.drop_column('handling_note')
        batch_op.drop_column('owner_id')
        batch_op.drop_column('acknowledged_by_id')
        batch_op.drop_column('acknowledged_at')

    op.drop_index(op.f('ix_wallet_home_branch_id'), table_name='wallet')
    with op.batch_alter_table('wallet', schema=None) as batch_op:
        if not sqlite:
            batch_op.drop_constraint(batch_op.f('fk_wallet_home_branch_id_branch'), type_='foreignkey')
        batch_op.drop_column('home_branch_id')
    if sqlite:
        op.execute("COMMIT")
        op.execute("PRAGMA foreign_keys=ON")
        op.execute("BEGIN IMMEDIATE")
