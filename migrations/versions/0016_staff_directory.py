"""staff accounts from the bank's directory (LDAP)

Revision ID: 0016_staff_directory
Revises: 0015_counter_authorisation
Create Date: 2026-11-26 20:00:00

``staff.auth_source``: "local" (password hash here; break-glass admins) or "directory" (the
password is checked by binding to the bank's directory); ``staff.directory_dn``: the entry the
account was last matched to. See console/services/directory.py and docs/directory.md.
"""
from alembic import op
import sqlalchemy as sa

revision = "0016_staff_directory"
down_revision = "0015_counter_authorisation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('staff', schema=None) as batch_op:
        batch_op.add_column(sa.Column('auth_source', sa.String(length=16), nullable=False,
                                      server_default='local'))
        batch_op.add_column(sa.Column('directory_dn', sa.String(length=512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('staff', schema=None) as batch_op:
        batch_op.drop_column('directory_dn')
        batch_op.drop_column('auth_source')
