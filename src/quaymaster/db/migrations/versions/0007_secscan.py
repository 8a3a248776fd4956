"""security scanner status

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 22:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('manifestsecuritystatus',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('manifest_id', sa.Integer(), nullable=False),
    sa.Column('repository_id', sa.Integer(), nullable=False),
    sa.Column('index_status', sa.Integer(), nullable=False),
    sa.Column('error_json', sa.JSON(), nullable=True),
    sa.Column('last_indexed', sa.DateTime(), nullable=False),
    sa.Column('indexer_hash', sa.String(length=128), nullable=False),
    sa.Column('indexer_version', sa.Integer(), nullable=False),
    sa.Column('metadata_json', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['manifest_id'], ['manifest.id'],
                            name=op.f('fk_manifestsecuritystatus_manifest_id_manifest'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['repository_id'], ['repository.id'],
                            name=op.f('fk_manifestsecuritystatus_repository_id_repository'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_manifestsecuritystatus')),
    sa.UniqueConstraint('manifest_id', name=op.f('uq_manifestsecuritystatus_manifest_id'))
    )
    with op.batch_alter_table('manifestsecuritystatus', schema=None) as batch_op:
        batch_op.create_index('ix_manifestsecuritystatus_index_status_last_indexed',
                              ['index_status', 'last_indexed'], unique=False)
        batch_op.create_index(batch_op.f('ix_manifestsecuritystatus_repository_id'), ['repository_id'], unique=False)

    op.create_table('secscanindexdeletion',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=255), nullable=False),
    sa.Column('queued', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_secscanindexdeletion'))
    )
    with op.batch_alter_table('secscanindexdeletion', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_secscanindexdeletion_digest'), ['digest'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('secscanindexdeletion', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_secscanindexdeletion_digest'))
    op.drop_table('secscanindexdeletion')
    with op.batch_alter_table('manifestsecuritystatus', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_manifestsecuritystatus_repository_id'))
        batch_op.drop_index('ix_manifestsecuritystatus_index_status_last_indexed')
    op.drop_table('manifestsecuritystatus')
