-- A record a catch-up bot cannot handle (a payload its code cannot read) must
-- not hold back every record after it. When a batch fails with such an error
-- (not a database error: those are retried from the same checkpoint), the
-- bot handles the batch again one id at a time; an id that still fails is
-- recorded here, append-only, and passed over. A later record of the same id
-- is tried again.
create table tidings.checkpoint_failures (
  entry bigint generated always as identity primary key,
  checkpoint text not null references tidings.checkpoints (name),
  id text not null,
  -- The records of this id in the failed batch: [{"stream": ..., "position": ...}].
  records jsonb not null check (jsonb_typeof(records) = 'array'),
  error text not null,
  recorded_at timestamptz not null default now(),
  recorded_by text not null default current_user
);
create index on tidings.checkpoint_failures (checkpoint, id, entry);
comment on table tidings.checkpoint_failures is
  'Records a catch-up bot (the projection) passed over because handling them failed, with the error.';
create trigger refuse_update_delete before update or delete on tidings.checkpoint_failures
  for each statement execute function tidings.tg_refuse_change();
create trigger refuse_truncate before truncate on tidings.checkpoint_failures
  for each statement execute function tidings.tg_refuse_change();
revoke all on tidings.checkpoint_failures from public;
grant select, insert on tidings.checkpoint_failures to tidings_projection_bot;
grant select on tidings.checkpoint_failures to tidings_reader;

-- Auditors see them beside the other failures (docs/audit.md).
create view audit.projection_failures with (security_invoker = false) as
select f.entry, f.checkpoint, f.id as notification_id, f.records, f.error, f.recorded_at as at,
       (c.cursors) as checkpoint_cursors, c.updated_at as checkpoint_moved_at
from tidings.checkpoint_failures f
join tidings.checkpoints c on c.name = f.checkpoint;
comment on view audit.projection_failures is
  'Notifications whose view the projection could not build (passed over; tried again at their next change), with the error.';
grant select on audit.projection_failures to tidings_auditor;
comment on column audit.projection_failures.entry is 'Order of the failures.';
comment on column audit.projection_failures.checkpoint is 'Which catch-up bot passed the records over (notification_views: the projection).';
comment on column audit.projection_failures.notification_id is 'The notification whose view could not be built.';
comment on column audit.projection_failures.records is 'The records of the failed batch for it: [{"stream": ..., "position": ...}].';
comment on column audit.projection_failures.error is 'The error, as the bot raised it.';
comment on column audit.projection_failures.at is 'When it was passed over.';
comment on column audit.projection_failures.checkpoint_cursors is 'Where the bot is now in each stream it follows ("<txid>-<position>").';
comment on column audit.projection_failures.checkpoint_moved_at is 'When the bot last moved on.';
