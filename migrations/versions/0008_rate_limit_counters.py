"""shared rate-limit counters in the database, the fallback when Redis is unreachable

Revision ID: 0008_rate_limit_counters
Revises: 0007_idempotency
Create Date: 2026-11-26 08:20:00

One row per limit key and fixed window, counted with an atomic upsert by every worker of every
node while Redis is down. See console/ratelimits.py.
"""
from alembic import op
import sqlalchemy as sa

import console.models.types

revision = '0008_rate_limit_counters'
down_revision = '0007_idempotency'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('rate_limit_counter',
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('hits', sa.Integer(), nullable=False),
    sa.Column('window_start', console.models.types.UTCDateTime(), nullable=False),
    sa.Column('expires_at', console.models.types.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_rate_limit_counter'))
    )
    with op.batch_alter_table('rate_limit_counter', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rate_limit_counter_expires_at'), ['expires_at'], unique=False)


def downgrade():
    with op.batch_alter_table('rate_limit_counter', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rate_limit_counter_expires_at'))

    op.drop_table('rate_limit_counter')
