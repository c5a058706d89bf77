"""the audit chain head names the key that seals records (HMAC-SHA256) and the first record it seals; older
records keep their unkeyed SHA-256 chain

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 15:00:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('audit_chain_head', schema=None) as batch_op:
        batch_op.add_column(sa.Column('key_id', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('keyed_from', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('audit_chain_head', schema=None) as batch_op:
        batch_op.drop_column('keyed_from')
        batch_op.drop_column('key_id')
