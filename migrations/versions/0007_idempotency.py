"""idempotency keys for the APIs and one-time form tokens for the desk

Revision ID: 0007_idempotency
Revises: 0006_signin_claims
Create Date: 2026-11-26 08:10:00

One row per caller and key: reserved (``pending``, with a lease) before the work, and
``done`` with the answer in the transaction that commits the work. See
console/services/idempotency.py.
"""
from alembic import op
import sqlalchemy as sa

import console.models.types

revision = '0007_idempotency'
down_revision = '0006_signin_claims'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('idempotency_key',
    sa.Column('scope', sa.String(length=64), nullable=False),
    sa.Column('key_digest', sa.String(length=64), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('owner', sa.String(length=32), nullable=True),
    sa.Column('lease_expires_at', console.models.types.UTCDateTime(), nullable=True),
    sa.Column('created_at', console.models.types.UTCDateTime(), nullable=False),
    sa.Column('expires_at', console.models.types.UTCDateTime(), nullable=False),
    sa.Column('completed_at', console.models.types.UTCDateTime(), nullable=True),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('response_status', sa.Integer(), nullable=True),
    sa.Column('response_headers', sa.Text(), nullable=True),
    sa.Column('response_body_enc', sa.LargeBinary(), nullable=True),
    sa.PrimaryKeyConstraint('scope', 'key_digest', name=op.f('pk_idempotency_key'))
    )
    with op.batch_alter_table('idempotency_key', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_idempotency_key_expires_at'), ['expires_at'], unique=False)


def downgrade():
    with op.batch_alter_table('idempotency_key', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_idempotency_key_expires_at'))

    op.drop_table('idempotency_key')
