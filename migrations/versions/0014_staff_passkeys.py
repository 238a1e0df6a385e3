"""staff passkeys (WebAuthn credentials) and their sign-in challenges

Revision ID: 0014_staff_passkeys
Revises: 0013_audit_seq_unique
Create Date: 2026-11-26 20:00:00

``staff_passkey``: the security keys staff enrol (credential ID, COSE public key, signature
counter, name, transports), revoked rather than deleted. ``webauthn_challenge``: the challenge of
each ceremony under way, bound to one staff member, purpose and context, deleted when answered.
See console/services/passkeys.py and docs/passkeys.md.
"""
from alembic import op
import sqlalchemy as sa

import console.models.types

revision = "0014_staff_passkeys"
down_revision = "0013_audit_seq_unique"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('staff_passkey',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('staff_id', sa.Integer(), nullable=False),
    sa.Column('credential_id', sa.LargeBinary(length=1023), nullable=False),
    sa.Column('public_key', sa.LargeBinary(), nullable=False),
    sa.Column('sign_count', sa.BigInteger(), nullable=False),
    sa.Column('name', sa.String(length=60), nullable=False),
    sa.Column('transports', sa.String(length=120), nullable=True),
    sa.Column('aaguid', sa.String(length=36), nullable=True),
    sa.Column('created_at', console.models.types.UTCDateTime(), nullable=False),
    sa.Column('last_used_at', console.models.types.UTCDateTime(), nullable=True),
    sa.Column('revoked_at', console.models.types.UTCDateTime(), nullable=True),
    sa.Column('revoked_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['revoked_by_id'], ['staff.id'], name=op.f('fk_staff_passkey_revoked_by_id_staff')),
    sa.ForeignKeyConstraint(['staff_id'], ['staff.id'], name=op.f('fk_staff_passkey_staff_id_staff')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_staff_passkey')),
    sa.UniqueConstraint('credential_id', name=op.f('uq_staff_passkey_credential_id'))
    )
    with op.batch_alter_table('staff_passkey', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_staff_passkey_staff_id'), ['staff_id'], unique=False)

    op.create_table('webauthn_challenge',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('challenge_digest', sa.String(length=64), nullable=False),
    sa.Column('staff_id', sa.Integer(), nullable=False),
    sa.Column('purpose', sa.String(length=16), nullable=False),
    sa.Column('context', sa.String(length=64), nullable=False),
    sa.Column('created_at', console.models.types.UTCDateTime(), nullable=False),
    sa.Column('expires_at', console.models.types.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['staff_id'], ['staff.id'], name=op.f('fk_webauthn_challenge_staff_id_staff')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webauthn_challenge')),
    sa.UniqueConstraint('challenge_digest', name=op.f('uq_webauthn_challenge_challenge_digest'))
    )
    with op.batch_alter_table('webauthn_challenge', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webauthn_challenge_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_webauthn_challenge_staff_id'), ['staff_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('webauthn_challenge', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webauthn_challenge_staff_id'))
        batch_op.drop_index(batch_op.f('ix_webauthn_challenge_expires_at'))
    op.drop_table('webauthn_challenge')
    with op.batch_alter_table('staff_passkey', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_staff_passkey_staff_id'))
    op.drop_table('staff_passkey')
