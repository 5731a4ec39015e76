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

grant select, update on tidings.checkpoints to tidings_projection_bot;
grant select on tidings.checkpoints to tidings_reader;

-- The per-record jobs stop: the projection is no longer a consumer of these
-- streams (it keeps its read grants; earlier handling rows stay as history).
delete from tidings.stream_concern_states where concern = 'projection_bot';
delete from tidings.stream_consumers where concern = 'projection_bot';
