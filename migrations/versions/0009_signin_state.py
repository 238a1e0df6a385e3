"""sign-in state server-side: pending sign-ins, one-time secrets, lock notices

Revision ID: 0009_signin_state
Revises: 0008_rate_limit_counters
Create Date: 2026-11-27 08:00:00

A sign-in between its password step and its session is a ``pending_signin`` row; the browser
holds only a random token whose SHA-256 is stored. Initial passwords waiting to be shown to an
admin are ``one_time_secret`` rows of that admin's session. ``staff.lock_notice_*`` keep the last
lock until the staff member is told of it at the next sign-in. See console/services/staff_auth.py.
"""
from alembic import op
import sqlalchemy as sa

import console.models.types

revision = '0009_signin_state'
down_revision = '0008_rate_limit_counters'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('pending_signin',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_digest', sa.String(length=64), nullable=False),
    sa.Column('staff_id', sa.Integer(), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('step', sa.String(length=16), nullable=False),
    sa.Column('enrol_secret_enc', sa.LargeBinary(), nullable=True),
    sa.Column('next_url', sa.String(length=512), nullable=True),
    sa.Column('source_ip', sa.String(length=64), nullable=True),
    sa.Column('created_at', console.models.types.UTCDateTime(), nullable=False),
    sa.Column('expires_at', console.models.types.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['staff_id'], ['staff.id'], name=op.f('fk_pending_signin_staff_id_staff')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pending_signin')),
    sa.UniqueConstraint('token_digest', name=op.f('uq_pending_signin_token_digest'))
    )
    with op.batch_alter_table('pending_signin', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pending_signin_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_pending_signin_staff_id'), ['staff_id'], unique=False)

    op.create_table('one_time_secret',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('staff_session_id', sa.Integer(), nullable=False),
    sa.Column('employee_no', sa.String(length=16), nullable=False),
    sa.Column('secret_enc', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', console.models.types.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['staff_session_id'], ['staff_session.id'],
                            name=op.f('fk_one_time_secret_staff_session_id_staff_session')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_one_time_secret'))
    )
    with op.batch_alter_table('one_time_secret', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_one_time_secret_staff_session_id'), ['staff_session_id'], unique=False)

    with op.batch_alter_table('staff', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lock_notice_at', console.models.types.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('lock_notice_failures', sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table('staff', schema=None) as batch_op:
        batch_op.drop_column('lock_notice_failures')
        batch_op.drop_column('lock_notice_at')

    with op.batch_alter_table('one_time_secret', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_one_time_secret_staff_session_id'))
    op.drop_table('one_time_secret')

    with op.batch_alter_table('pending_signin', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pending_signin_staff_id'))
        batch_op.drop_index(batch_op.f('ix_pending_signin_expires_at'))
    op.drop_table('pending_signin')
