"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 19:37:41.650291
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('audit_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('actor_kind', sa.String(length=16), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('object_type', sa.String(length=32), nullable=False),
    sa.Column('object_id', sa.String(length=64), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('client_ip', sa.String(length=64), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events'))
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_events_action'), ['action'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_actor'), ['actor'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_at'), ['at'], unique=False)

    op.create_table('connections',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('port', sa.Integer(), nullable=True),
    sa.Column('username', sa.String(length=128), nullable=False),
    sa.Column('secret_ciphertext', sa.LargeBinary(), nullable=True),
    sa.Column('guest_username', sa.String(length=128), nullable=False),
    sa.Column('guest_secret_ciphertext', sa.LargeBinary(), nullable=True),
    sa.Column('verify_tls', sa.Boolean(), nullable=False),
    sa.Column('trusted_thumbprint', sa.String(length=95), nullable=True),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('last_checked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_synced_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_connections')),
    sa.UniqueConstraint('name', name=op.f('uq_connections_name'))
    )
    with op.batch_alter_table('connections', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_connections_kind'), ['kind'], unique=False)

    op.create_table('proxies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=False),
    sa.Column('capabilities', sa.JSON(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_heartbeat_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_proxies')),
    sa.UniqueConstraint('name', name=op.f('uq_proxies_name'))
    )
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('full_name', sa.String(length=128), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('role', sa.String(length=32), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('last_login_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_api_tokens_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash'))
    )
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_tokens_prefix'), ['prefix'], unique=False)
        batch_op.create_index(batch_op.f('ix_api_tokens_user_id'), ['user_id'], unique=False)

    op.create_table('clusters',
    sa.Column('connection_id', sa.Integer(), nullable=False),
    sa.Column('datacenter_moref', sa.String(length=64), nullable=True),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('moref', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('synced_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['connection_id'], ['connections.id'], name=op.f('fk_clusters_connection_id_connections'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_clusters')),
    sa.UniqueConstraint('connection_id', 'moref', name=op.f('uq_clusters_connection_id'))
    )
    with op.batch_alter_table('clusters', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_clusters_name'), ['name'], unique=False)

    op.create_table('datacenters',
    sa.Column('connection_id', sa.Integer(), nullable=False),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('moref', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('synced_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['connection_id'], ['connections.id'], name=op.f('fk_datacenters_connection_id_connections'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_datacenters')),
    sa.UniqueConstraint('connection_id', 'moref', name=op.f('uq_datacenters_connection_id'))
    )
    with op.batch_alter_table('datacenters', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_datacenters_name'), ['name'], unique=False)

    op.create_table('datastores',
    sa.Column('connection_id', sa.Integer(), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('capacity_bytes', sa.BigInteger(), nullable=False),
    sa.Column('free_bytes', sa.BigInteger(), nullable=False),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('moref', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('synced_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['connection_id'], ['connections.id'], name=op.f('fk_datastores_connection_id_connections'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_datastores')),
    sa.UniqueConstraint('connection_id', 'moref', name=op.f('uq_datastores_connection_id'))
    )
    with op.batch_alter_table('datastores', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_datastores_name'), ['name'], unique=False)

    op.create_table('exchange_servers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('connection_id', sa.Integer(), nullable=True),
    sa.Column('vm_moref', sa.String(length=64), nullable=True),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['connection_id'], ['connections.id'], name=op.f('fk_exchange_servers_connection_id_connections'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_exchange_servers')),
    sa.UniqueConstraint('name', name=op.f('uq_exchange_servers_name'))
    )
    with op.batch_alter_table('exchange_servers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_exchange_servers_connection_id'), ['connection_id'], unique=False)

    op.create_table('hosts',
    sa.Column('connection_id', sa.Integer(), nullable=False),
    sa.Column('cluster_moref', sa.String(length=64), nullable=True),
    sa.Column('connection_state', sa.String(length=32), nullable=False),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('moref', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('synced_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['connection_id'], ['connections.id'], name=op.f('fk_hosts_connection_id_connections'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hosts')),
    sa.UniqueConstraint('connection_id', 'moref', name=op.f('uq_hosts_connection_id'))
    )
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_hosts_name'), ['name'], unique=False)

    op.create_table('policies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('method', sa.String(length=32), nullable=False),
    sa.Column('schedule_cron', sa.String(length=128), nullable=True),
    sa.Column('rpo_minutes', sa.Integer(), nullable=True),
    sa.Column('consistency', sa.String(length=32), nullable=False),
    sa.Column('pre_script', sa.Text(), nullable=True),
    sa.Column('post_script', sa.Text(), nullable=True),
    sa.Column('script_timeout_s', sa.Integer(), nullable=False),
    sa.Column('keep_on_primary', sa.Integer(), nullable=False),
    sa.Column('repository_id', sa.Integer(), nullable=True),
    sa.Column('keep_last', sa.Integer(), nullable=False),
    sa.Column('keep_daily', sa.Integer(), nullable=False),
    sa.Column('keep_weekly', sa.Integer(), nullable=False),
    sa.Column('keep_monthly', sa.Integer(), nullable=False),
    sa.Column('keep_yearly', sa.Integer(), nullable=False),
    sa.Column('restores_needed', sa.JSON(), nullable=False),
    sa.Column('compliance_retention_days', sa.Integer(), nullable=True),
    sa.Column('notify_on', sa.JSON(), nullable=False),
    sa.Column('notify_webhook_url', sa.String(length=512), nullable=True),
    sa.Column('notify_webhook_secret_ciphertext', sa.LargeBinary(), nullable=True),
    sa.Column('notify_emails', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['repository_id'], ['connections.id'], name=op.f('fk_policies_repository_id_connections'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_policies')),
    sa.UniqueConstraint('name', name=op.f('uq_policies_name'))
    )
    op.create_table('virtual_machines',
    sa.Column('connection_id', sa.Integer(), nullable=False),
    sa.Column('instance_uuid', sa.String(length=64), nullable=True),
    sa.Column('host_moref', sa.String(length=64), nullable=True),
    sa.Column('power_state', sa.String(length=32), nullable=False),
    sa.Column('tools_status', sa.String(length=32), nullable=False),
    sa.Column('guest_os', sa.String(length=128), nullable=False),
    sa.Column('cbt_enabled', sa.Boolean(), nullable=False),
    sa.Column('snapshot_names', sa.JSON(), nullable=False),
    sa.Column('custom_attributes', sa.JSON(), nullable=False),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('moref', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('synced_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['connection_id'], ['connections.id'], name=op.f('fk_virtual_machines_connection_id_connections'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_virtual_machines')),
    sa.UniqueConstraint('connection_id', 'moref', name=op.f('uq_virtual_machines_connection_id'))
    )
    with op.batch_alter_table('virtual_machines', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_virtual_machines_connection_id'), ['connection_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_virtual_machines_name'), ['name'], unique=False)

    op.create_table('exchange_databases',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('server_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('database_disk_key', sa.Integer(), nullable=True),
    sa.Column('log_disk_key', sa.Integer(), nullable=True),
    sa.Column('layout', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['server_id'], ['exchange_servers.id'], name=op.f('fk_exchange_databases_server_id_exchange_servers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_exchange_databases')),
    sa.UniqueConstraint('server_id', 'name', name=op.f('uq_exchange_databases_server_id'))
    )
    op.create_table('virtual_disks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('vm_id', sa.Integer(), nullable=False),
    sa.Column('device_key', sa.Integer(), nullable=False),
    sa.Column('label', sa.String(length=128), nullable=False),
    sa.Column('backing', sa.String(length=32), nullable=False),
    sa.Column('disk_mode', sa.String(length=64), nullable=False),
    sa.Column('capacity_bytes', sa.BigInteger(), nullable=False),
    sa.Column('datastore_moref', sa.String(length=64), nullable=True),
    sa.Column('file_name', sa.String(length=512), nullable=False),
    sa.Column('lun_uuid', sa.String(length=128), nullable=True),
    sa.Column('device_name', sa.String(length=255), nullable=True),
    sa.ForeignKeyConstraint(['vm_id'], ['virtual_machines.id'], name=op.f('fk_virtual_disks_vm_id_virtual_machines'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_virtual_disks')),
    sa.UniqueConstraint('vm_id', 'device_key', name=op.f('uq_virtual_disks_vm_id'))
    )
    op.create_table('jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('policy_id', sa.Integer(), nullable=True),
    sa.Column('server_id', sa.Integer(), nullable=True),
    sa.Column('database_id', sa.Integer(), nullable=True),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('required_capabilities', sa.JSON(), nullable=False),
    sa.Column('progress_percent', sa.Double(), nullable=False),
    sa.Column('bytes_done', sa.BigInteger(), nullable=False),
    sa.Column('bytes_total', sa.BigInteger(), nullable=True),
    sa.Column('current_step', sa.String(length=64), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('worker_name', sa.String(length=64), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=False),
    sa.Column('leftovers', sa.JSON(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['database_id'], ['exchange_databases.id'], name=op.f('fk_jobs_database_id_exchange_databases'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['policy_id'], ['policies.id'], name=op.f('fk_jobs_policy_id_policies'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['server_id'], ['exchange_servers.id'], name=op.f('fk_jobs_server_id_exchange_servers'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_jobs_kind'), ['kind'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_policy_id'), ['policy_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_server_id'), ['server_id'], unique=False)
        batch_op.create_index('ix_jobs_state_not_before', ['state', 'not_before'], unique=False)

    op.create_table('policy_targets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('policy_id', sa.Integer(), nullable=False),
    sa.Column('server_id', sa.Integer(), nullable=False),
    sa.Column('database_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['database_id'], ['exchange_databases.id'], name=op.f('fk_policy_targets_database_id_exchange_databases'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['policy_id'], ['policies.id'], name=op.f('fk_policy_targets_policy_id_policies'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['server_id'], ['exchange_servers.id'], name=op.f('fk_policy_targets_server_id_exchange_servers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_policy_targets')),
    sa.UniqueConstraint('policy_id', 'server_id', 'database_id', name=op.f('uq_policy_targets_policy_id'))
    )
    with op.batch_alter_table('policy_targets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_policy_targets_server_id'), ['server_id'], unique=False)

    op.create_table('job_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('level', sa.String(length=32), nullable=False),
    sa.Column('step', sa.String(length=64), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_events_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_events'))
    )
    with op.batch_alter_table('job_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_job_events_job_id'), ['job_id'], unique=False)

    op.create_table('restore_points',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('policy_id', sa.Integer(), nullable=True),
    sa.Column('server_id', sa.Integer(), nullable=True),
    sa.Column('database_id', sa.Integer(), nullable=True),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('captured_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('method', sa.String(length=32), nullable=False),
    sa.Column('consistency', sa.String(length=32), nullable=False),
    sa.Column('capabilities', sa.JSON(), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('verification', sa.String(length=32), nullable=False),
    sa.Column('verified_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('retain_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['database_id'], ['exchange_databases.id'], name=op.f('fk_restore_points_database_id_exchange_databases'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_restore_points_job_id_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['policy_id'], ['policies.id'], name=op.f('fk_restore_points_policy_id_policies'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['server_id'], ['exchange_servers.id'], name=op.f('fk_restore_points_server_id_exchange_servers'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_restore_points'))
    )
    with op.batch_alter_table('restore_points', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_restore_points_captured_at'), ['captured_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_restore_points_policy_id'), ['policy_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_restore_points_server_id'), ['server_id'], unique=False)

    op.create_table('legal_holds',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('scope', sa.String(length=32), nullable=False),
    sa.Column('server_id', sa.Integer(), nullable=True),
    sa.Column('restore_point_id', sa.Integer(), nullable=True),
    sa.Column('mailbox', sa.String(length=255), nullable=True),
    sa.Column('search_query', sa.Text(), nullable=True),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('released_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('released_by', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['restore_point_id'], ['restore_points.id'], name=op.f('fk_legal_holds_restore_point_id_restore_points'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['server_id'], ['exchange_servers.id'], name=op.f('fk_legal_holds_server_id_exchange_servers'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_legal_holds')),
    sa.UniqueConstraint('name', name=op.f('uq_legal_holds_name'))
    )
    op.create_table('restore_point_copies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('restore_point_id', sa.Integer(), nullable=False),
    sa.Column('location', sa.String(length=32), nullable=False),
    sa.Column('connection_id', sa.Integer(), nullable=True),
    sa.Column('reference', sa.String(length=255), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['connection_id'], ['connections.id'], name=op.f('fk_restore_point_copies_connection_id_connections'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['restore_point_id'], ['restore_points.id'], name=op.f('fk_restore_point_copies_restore_point_id_restore_points'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_restore_point_copies'))
    )
    with op.batch_alter_table('restore_point_copies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_restore_point_copies_restore_point_id'), ['restore_point_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('restore_point_copies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_restore_point_copies_restore_point_id'))

    op.drop_table('restore_point_copies')
    op.drop_table('legal_holds')
    with op.batch_alter_table('restore_points', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_restore_points_server_id'))
        batch_op.drop_index(batch_op.f('ix_restore_points_policy_id'))
        batch_op.drop_index(batch_op.f('ix_restore_points_captured_at'))

    op.drop_table('restore_points')
    with op.batch_alter_table('job_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_job_events_job_id'))

    op.drop_table('job_events')
    with op.batch_alter_table('policy_targets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_policy_targets_server_id'))

    op.drop_table('policy_targets')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_state_not_before')
        batch_op.drop_index(batch_op.f('ix_jobs_server_id'))
        batch_op.drop_index(batch_op.f('ix_jobs_policy_id'))
        batch_op.drop_index(batch_op.f('ix_jobs_kind'))

    op.drop_table('jobs')
    op.drop_table('virtual_disks')
    op.drop_table('exchange_databases')
    with op.batch_alter_table('virtual_machines', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_virtual_machines_name'))
        batch_op.drop_index(batch_op.f('ix_virtual_machines_connection_id'))

    op.drop_table('virtual_machines')
    op.drop_table('policies')
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_hosts_name'))

    op.drop_table('hosts')
    with op.batch_alter_table('exchange_servers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_exchange_servers_connection_id'))

    op.drop_table('exchange_servers')
    with op.batch_alter_table('datastores', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_datastores_name'))

    op.drop_table('datastores')
    with op.batch_alter_table('datacenters', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_datacenters_name'))

    op.drop_table('datacenters')
    with op.batch_alter_table('clusters', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_clusters_name'))

    op.drop_table('clusters')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_tokens_user_id'))
        batch_op.drop_index(batch_op.f('ix_api_tokens_prefix'))

    op.drop_table('api_tokens')
    op.drop_table('users')
    op.drop_table('proxies')
    with op.batch_alter_table('connections', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_connections_kind'))

    op.drop_table('connections')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_events_at'))
        batch_op.drop_index(batch_op.f('ix_audit_events_actor'))
        batch_op.drop_index(batch_op.f('ix_audit_events_action'))

    op.drop_table('audit_events')
