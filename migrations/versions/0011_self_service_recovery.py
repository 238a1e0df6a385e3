"""self-service recovery: recoveries, authenticator secrets of 2FA bindings

Revision ID: 0011_self_service_recovery
Revises: 0010_alert_handling
Create Date: 2026-11-26 14:00:00

A recovery started in the wallet app (忘记密码) is a ``self_service_recovery`` row, whether or not
its details matched a wallet; its handle, code and token are stored as digests only. A 2FA binding
may carry its authenticator's TOTP secret (encrypted), which recovery then asks for. See
console/services/recovery.py.
"""
from alembic import op
import sqlalchemy as sa

import console.models.types

revision = '0011_self_service_recovery'
down_revision = '0010_alert_handling'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('self_service_recovery',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('handle_digest', sa.String(length=64), nullable=False),
    sa.Column('identified_by', sa.String(length=12), nullable=False),
    sa.Column('wallet_id', sa.Integer(), nullable=True),
    sa.Column('customer_id', sa.Integer(), nullable=True),
    sa.Column('matched', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('failure_reason', sa.String(length=32), nullable=True),
    sa.Column('source_ip', sa.String(length=64), nullable=True),
    sa.Column('device_id', sa.String(length=64), nullable=True),
    sa.Column('started_at', console.models.types.UTCDateTime(), nullable=False),
    sa.Column('expires_at', console.models.types.UTCDateTime(), nullable=False),
    sa.Column('code_digest', sa.String(length=64), nullable=True),
    sa.Column('code_expires_at', console.models.types.UTCDateTime(), nullable=True),
    sa.Column('code_tries', sa.SmallInteger(), nullable=False),
    sa.Column('factor', sa.String(length=24), nullable=True),
    sa.Column('question_codes', sa.String(length=200), nullable=True),
    sa.Column('token_digest', sa.String(length=64), nullable=True),
    sa.Column('token_expires_at', console.models.types.UTCDateTime(), nullable=True),
    sa.Column('finished_at', console.models.types.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], name=op.f('fk_self_service_recovery_customer_id_customer')),
    sa.ForeignKeyConstraint(['wallet_id'], ['wallet.id'], name=op.f('fk_self_service_recovery_wallet_id_wallet')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_self_service_recovery')),
    sa.UniqueConstraint('handle_digest', name=op.f('uq_self_service_recovery_handle_digest'))
    )
    with op.batch_alter_table('self_service_recovery', schema=None) as batch_op:
        batch_op.create_index('ix_recovery_wallet_started', ['wallet_id', 'started_at'], unique=False)
        batch_op.create_index('ix_recovery_customer_started', ['customer_id', 'started_at'], unique=False)

    with op.batch_alter_table('twofactor_binding', schema=None) as batch_op:
        batch_op.add_column(sa.Column('totp_secret_enc', sa.LargeBinary(), nullable=True))


def downgrade():
    with op.batch_alter_table('twofactor_binding', schema=None) as batch_op:
        batch_op.drop_column('totp_secret_enc')

    with op.batch_alter_table('self_service_recovery', schema=None) as batch_op:
        batch_op.drop_index('ix_recovery_customer_started')
        batch_op.drop_index('ix_recovery_wallet_started')
    op.drop_table('self_service_recovery')
