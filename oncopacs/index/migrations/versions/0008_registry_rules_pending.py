"""orchestration state: plug-ins enabled or not, rules added by administrators, series rules waiting to fire

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 09:00:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('plugin_states',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('changed_by', sa.String(length=128), nullable=False),
    sa.Column('changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('managed_rules',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('definition', sa.Text(), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('pending_rules',
    sa.Column('rule', sa.String(length=64), nullable=False),
    sa.Column('uid', sa.String(length=64), nullable=False),
    sa.Column('level', sa.String(length=8), nullable=False),
    sa.Column('study_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('due_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('rule', 'uid')
    )
    with op.batch_alter_table('pending_rules', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pending_rules_due_at'), ['due_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('pending_rules', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pending_rules_due_at'))

    op.drop_table('pending_rules')
    op.drop_table('managed_rules')
    op.drop_table('plugin_states')
