"""repo mirror

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 22:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('repomirrorconfig',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('repository_id', sa.Integer(), nullable=False),
    sa.Column('creation_date', sa.DateTime(), nullable=False),
    sa.Column('is_enabled', sa.Boolean(), nullable=False),
    sa.Column('mirror_type', sa.Integer(), nullable=False),
    sa.Column('internal_robot_id', sa.Integer(), nullable=True),
    sa.Column('external_reference', sa.Text(), nullable=False),
    sa.Column('external_registry_username', sa.Text(), nullable=True),
    sa.Column('external_registry_password', sa.Text(), nullable=True),
    sa.Column('external_registry_config', sa.JSON(), nullable=False),
    sa.Column('architecture_filter', sa.JSON(), nullable=False),
    sa.Column('root_rule_kind', sa.String(length=32), nullable=False),
    sa.Column('root_rule_value', sa.JSON(), nullable=False),
    sa.Column('sync_interval', sa.Integer(), nullable=False),
    sa.Column('sync_start_date', sa.DateTime(), nullable=True),
    sa.Column('sync_expiration_date', sa.DateTime(), nullable=True),
    sa.Column('sync_retries_remaining', sa.Integer(), nullable=False),
    sa.Column('sync_status', sa.Integer(), nullable=False),
    sa.Column('sync_transaction_id', sa.String(length=36), nullable=False),
    sa.Column('skopeo_timeout', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['internal_robot_id'], ['user.id'],
                            name=op.f('fk_repomirrorconfig_internal_robot_id_user'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['repository_id'], ['repository.id'],
                            name=op.f('fk_repomirrorconfig_repository_id_repository'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_repomirrorconfig')),
    sa.UniqueConstraint('repository_id', name=op.f('uq_repomirrorconfig_repository_id'))
    )
    with op.batch_alter_table('repomirrorconfig', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_repomirrorconfig_internal_robot_id'), ['internal_robot_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_repomirrorconfig_sync_status'), ['sync_status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('repomirrorconfig', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_repomirrorconfig_sync_status'))
        batch_op.drop_index(batch_op.f('ix_repomirrorconfig_internal_robot_id'))

    op.drop_table('repomirrorconfig')
