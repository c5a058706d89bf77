"""de-identified export: patient pseudonyms and date offsets, UID map

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 07:00:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('deid_patients',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('issuer_of_patient_id', sa.String(length=64), nullable=False),
    sa.Column('pseudonym', sa.String(length=64), nullable=False),
    sa.Column('date_offset_days', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('patient_id', 'issuer_of_patient_id', name='uq_deid_patient_identity'),
    sa.UniqueConstraint('pseudonym')
    )
    op.create_table('deid_uids',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('original_uid', sa.String(length=64), nullable=False),
    sa.Column('deid_uid', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('deid_uid'),
    sa.UniqueConstraint('original_uid')
    )


def downgrade() -> None:
    op.drop_table('deid_uids')
    op.drop_table('deid_patients')
