"""sign-in claims with an owner, an expiry and an order

Revision ID: 0006_signin_claims
Revises: 0005_partition_audit
Create Date: 2026-11-26 08:00:00

Each password check is a ``login_attempt`` row claimed before the check (result ``pending``)
with a per-wallet order number, its owner and an expiry; the wallet keeps the last number
handed out and the last one settled. See console/services/wallet_signin.py.
"""
from alembic import op
import sqlalchemy as sa

import console.models.types

revision = '0006_signin_claims'
down_revision = '0005_partition_audit'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('wallet', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attempt_seq', sa.BigInteger(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('settled_seq', sa.BigInteger(), nullable=False, server_default='0'))
    with op.batch_alter_table('login_attempt', schema=None) as batch_op:
        batch_op.add_column(sa.Column('seq', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('claim_owner', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('claim_expires_at', console.models.types.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('settled_at', console.models.types.UTCDateTime(), nullable=True))
        batch_op.create_index('uq_login_attempt_wallet_seq', ['wallet_id', 'seq'], unique=True)


def downgrade():
    with op.batch_alter_table('login_attempt', schema=None) as batch_op:
        batch_op.drop_index('uq_login_attempt_wallet_seq')
        batch_op.drop_column('settled_at')
        batch_op.drop_column('claim_expires_at')
        batch_op.drop_column('claim_owner')
        batch_op.drop_column('seq')
    with op.batch_alter_table('wallet', schema=None) as batch_op:
        batch_op.drop_column('settled_seq')
        batch_op.drop_column('attempt_seq')
