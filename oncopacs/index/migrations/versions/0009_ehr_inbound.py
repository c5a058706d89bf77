"""the EHR's side: the HL7 message log, demographics updates and patient merges, worklist items from orders;
an index on instances.source (the model registry counts what each plug-in produced by it)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 09:30:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_instances_source'), ['source'], unique=False)
    op.create_table('hl7_messages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('peer', sa.String(length=128), nullable=False),
    sa.Column('sending_application', sa.String(length=180), nullable=False),
    sa.Column('sending_facility', sa.String(length=180), nullable=False),
    sa.Column('message_type', sa.String(length=32), nullable=False),
    sa.Column('control_id', sa.String(length=64), nullable=False),
    sa.Column('outcome', sa.String(length=2), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('raw', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('hl7_messages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_hl7_messages_received_at'), ['received_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_hl7_messages_message_type'), ['message_type'], unique=False)
    op.create_table('patient_updates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_pk', sa.Integer(), nullable=False),
    sa.Column('before_json', sa.Text(), nullable=False),
    sa.Column('after_json', sa.Text(), nullable=False),
    sa.Column('message_pk', sa.Integer(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['message_pk'], ['hl7_messages.id'], ),
    sa.ForeignKeyConstraint(['patient_pk'], ['patients.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('patient_updates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_patient_updates_patient_pk'), ['patient_pk'], unique=False)
    op.create_table('patient_merges',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('surviving_patient_id', sa.String(length=64), nullable=False),
    sa.Column('surviving_issuer', sa.String(length=64), nullable=False),
    sa.Column('prior_patient_id', sa.String(length=64), nullable=False),
    sa.Column('prior_issuer', sa.String(length=64), nullable=False),
    sa.Column('prior_json', sa.Text(), nullable=False),
    sa.Column('moved_study_uids', sa.Text(), nullable=False),
    sa.Column('message_pk', sa.Integer(), nullable=True),
    sa.Column('merged_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reverted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reverted_by', sa.String(length=128), nullable=False),
    sa.ForeignKeyConstraint(['message_pk'], ['hl7_messages.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('patient_merges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_patient_merges_surviving_patient_id'), ['surviving_patient_id'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_patient_merges_prior_patient_id'), ['prior_patient_id'], unique=False)
    op.create_table('worklist_items',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('placer_order_number', sa.String(length=64), nullable=False),
    sa.Column('filler_order_number', sa.String(length=64), nullable=False),
    sa.Column('accession_number', sa.String(length=16), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('issuer_of_patient_id', sa.String(length=64), nullable=False),
    sa.Column('patient_name', sa.String(length=324), nullable=False),
    sa.Column('patient_birth_date', sa.String(length=8), nullable=False),
    sa.Column('patient_sex', sa.String(length=16), nullable=False),
    sa.Column('requested_procedure_id', sa.String(length=16), nullable=False),
    sa.Column('requested_procedure_description', sa.String(length=64), nullable=False),
    sa.Column('scheduled_step_id', sa.String(length=16), nullable=False),
    sa.Column('scheduled_step_description', sa.String(length=64), nullable=False),
    sa.Column('scheduled_station_ae', sa.String(length=16), nullable=False),
    sa.Column('modality', sa.String(length=16), nullable=False),
    sa.Column('scheduled_date', sa.String(length=8), nullable=False),
    sa.Column('scheduled_time', sa.String(length=16), nullable=False),
    sa.Column('referring_physician_name', sa.String(length=324), nullable=False),
    sa.Column('study_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('linked_study_uid', sa.String(length=64), nullable=False),
    sa.Column('mpps_uid', sa.String(length=64), nullable=False),
    sa.Column('message_pk', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['message_pk'], ['hl7_messages.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('placer_order_number', 'scheduled_step_id', name='uq_worklist_order_step')
    )
    with op.batch_alter_table('worklist_items', schema=None) as batch_op:
        for column in ('accession_number', 'patient_id', 'scheduled_station_ae', 'modality', 'scheduled_date',
                       'status'):
            batch_op.create_index(batch_op.f(f'ix_worklist_items_{column}'), [column], unique=False)


def downgrade() -> None:
    op.drop_table('worklist_items')
    op.drop_table('patient_merges')
    op.drop_table('patient_updates')
    op.drop_table('hl7_messages')
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instances_source'))
