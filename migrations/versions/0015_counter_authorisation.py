"""supervisor authorisation at the counter (approvals decided at the teller's screen)

Revision ID: 0015_counter_authorisation
Revises: 0014_staff_passkeys
Create Date: 2026-11-26 20:00:00

How each approval was decided: ``decided_via`` is "queue" (the approvals page or the staff API)
or "counter" (a supervisor at the maker's screen, 主管现场授权); for "counter",
``counter_session`` is the public id of the staff session signed in on that screen (as the audit
trail names it) and ``counter_staff_id`` the staff member it belongs to. Requests decided before
this revision keep NULL (not recorded). See console/services/operations/counter_authorisation.py
and docs/counter-authorisation.md.

The columns are added in place on both databases (as in 0010): on SQLite the reference is written
inline with its column, so no batch copy of ``approval`` is needed.
"""
from alembic import op
import sqlalchemy as sa

revision = "0015_counter_authorisation"
down_revision = "0014_staff_passkeys"
branch_labels = None
depends_on = None

FK = "fk_approval_counter_staff_id_staff"


def upgrade() -> None:
    op.add_column("approval", sa.Column("decided_via", sa.String(length=8), nullable=True))
    op.add_column("approval", sa.Column("counter_session", sa.String(length=16), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        op.add_column("approval", sa.Column("counter_staff_id", sa.Integer(),
                                            sa.ForeignKey("staff.id", name=op.f(FK)), nullable=True),
                      inline_references=True)
    else:
        op.add_column("approval", sa.Column("counter_staff_id", sa.Integer(), nullable=True))
        op.create_foreign_key(op.f(FK), "approval", "staff", ["counter_staff_id"], ["id"])


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    with op.batch_alter_table("approval", schema=None) as batch_op:
        if not sqlite:  # on SQLite the reference was added in place, unnamed, and goes with its column
            batch_op.drop_constraint(op.f(FK), type_="foreignkey")
        batch_op.drop_column("counter_staff_id")
        batch_op.drop_column("counter_session")
        batch_op.drop_column("decided_via")
