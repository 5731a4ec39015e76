-- Views and snapshots are no longer built by one job per (event, projection):
-- that was seven jobs per notification and more than half of the server's
-- statements (docs/performance.md). The projection follows its streams from
-- a checkpoint instead, the way event stores run projections: it reads the
-- records committed after its cursor in each stream, refreshes the view of
-- every notification they touch with set-based queries, and moves the
-- cursor, all in one transaction. Its handling state is that cursor, kept
-- beside the streams here; what each view was built from is in the view's
-- caused_by and version.

create table tidings.checkpoints (
  name text primary key check (name ~ '^[a-z][a-z0-9_]*$'),
  actor text not null references tidings.actors (name),
  -- Per stream: the (writing transaction id, position) of the last record
  -- handled, the same gap-safe cursor as the feed (src/streams/read.ts).
  cursors jsonb not null default '{}' check (jsonb_typeof(cursors) = 'object'),
  updated_at timestamptz not null default now(),
  description text not null
);
comment on table tidings.checkpoints is
  'Where each catch-up consumer (a projection) is in the streams it follows: stream name → "<txid>-<position>".';

insert into tidings.checkpoints (name, actor, description)
values ('notification_views', 'projection_bot',
        'Views and snapshots of notifications, from notification.events, email.events and slack.events.');

-- Where the projection starts, per stream: just before the oldest record (in
-- commit order) the per-record projection had not completed, or after the
-- newest record when it had completed them all; an empty stream from its
-- start. History already projected is not replayed.
do $$
declare
  s text;
  start_tx xid8;
  start_position bigint;
  starts jsonb := '{}';
begin
  foreach s in array array['notification.events', 'email.events', 'slack.events'] loop
    execute format($q$
      select r.tx_id, r.position - 1 from %s r
      where not exists (select 1 from %s h where h.position = r.position and h.concern = 'projection_bot' and h.status = 'Completed')
      order by r.tx_id, r.position limit 1$q$, s, s || '__handling')
      into start_tx, start_position;
    if start_tx is null then
      execute format('select tx_id, position from %s order by tx_id desc, position desc limit 1', s)
        into start_tx, start_position;
    end if;
    if start_tx is not null then
      starts := starts || jsonb_build_object(s, start_tx::text || '-' || start_position);
    end if;
  end loop;
  update tidings.checkpoints set cursors = starts where name = 'notification_views';
end;
$$;

grant select, update on tidings.checkpoints to tidings_projection_bot;
grant select on tidings.checkpoints to tidings_reader;

-- The per-record jobs stop: the projection is no longer a consumer of these
-- streams (it keeps its read grants; earlier handling rows stay as history).
delete from tidings.stream_concern_states where concern = 'projection_bot';
delete from tidings.stream_consumers where concern = 'projection_bot';
-- Their waiting jobs are covered by the checkpoint above.
do $$
begin
  if to_regclass('graphile_worker._private_jobs') is not null then
    delete from graphile_worker._private_jobs
    where task_id in (select id from graphile_worker._private_tasks where identifier like '%:projection_bot');
  end if;
end;
$$;
