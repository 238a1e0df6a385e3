"""audit intake and stream cursors: appends that do not wait on one another

Revision ID: 0012_audit_intake
Revises: 0011_self_service_recovery
Create Date: 2026-11-26 17:00:00

A transaction writes its audit events to ``audit_intake`` (one row, with a digest); the sequencer
numbers and chains them into ``audit_event`` in batches (console/services/sequencer.py,
docs/audit-chain.md). ``audit_stream_cursor`` keeps how far an exporter (the SIEM stream) got.
"""
from alembic import op
import sqlalchemy as sa

import console.models.types

revision = '0012_audit_intake'
down_revision = '0011_self_service_recovery'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('audit_intake',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('recorded_at', console.models.types.UTCDateTime(), nullable=False),
    sa.Column('events', sa.Text(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_intake'))
    )
    op.create_table('audit_stream_cursor',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', console.models.types.UTCDateTime(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_audit_stream_cursor'))
    )


def downgrade():
    op.drop_table('audit_stream_cursor')
    op.drop_table('audit_intake')
