-- Worker liveness. graphile-worker only frees the jobs of a dead worker after
-- 4 hours; each tidings worker process records a heartbeat here, and any
-- process may unlock the jobs held by a worker pool whose heartbeat stopped
-- (see src/bots/recovery.ts and docs/operations.md).
create table tidings.worker_heartbeats (
  process_id text primary key,
  worker_ids text[] not null default '{}',
  hostname text not null,
  pid integer not null,
  started_at timestamptz not null default now(),
  heartbeat_at timestamptz not null default now()
);
comment on table tidings.worker_heartbeats is
  'One row per running worker process: the graphile-worker pool ids it owns and when it last proved alive.';
