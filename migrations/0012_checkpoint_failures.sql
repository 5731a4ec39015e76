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
