-- The stream engine: a registry of streams, append-only stream tables, handling
-- state kept beside each stream, the transactional outbox that queues a
-- graphile-worker job for every consumer of an appended record, and the
-- checkpoints of consumers that follow streams instead of taking jobs.
--
-- Streams are declared (tidings.declare_stream), not hand-written: every stream
-- table, its handling tables, triggers and grants come from the same functions,
-- so a new stream cannot forget to be append-only or to queue its jobs.
--
-- This file is the engine's whole current definition. tidings is unreleased:
-- it is edited in place, and the migration runner refuses a database that
-- applied an earlier text of it (src/db/migrate.ts).

-- The schema exists already: the migration runner keeps tidings.migrations in it.
comment on schema tidings is 'The stream engine: registry, append, handling state and the outbox.';
comment on table tidings.migrations is 'Migrations applied, with the SHA-256 of each file''s text (src/db/migrate.ts).';

-- ---------------------------------------------------------------------------
-- Handling statuses and the transitions between them (the original system's).
-- ---------------------------------------------------------------------------
create type tidings.handling_status as enum (
  'AvailableByDefault',
  'Running',
  'Completed',
  'Failed',
  'ArchivedAfterFailure',
  'AvailableAfterCompletion',
  'AvailableAfterFailure',
  'AvailableAfterExternalCancellation',
  'AvailableAfterSelfCancellation',
  'DisabledForRecord',
  'DisabledForStream'
);

create table tidings.handling_transitions (
  action text not null,
  from_status tidings.handling_status not null,
  to_status tidings.handling_status not null,
  primary key (action, from_status)
);
comment on table tidings.handling_transitions is
  'Every allowed change of handling status. The handling tables'' guard trigger refuses any other.';

insert into tidings.handling_transitions (action, from_status, to_status)
select 'claim', s, 'Running'
from unnest(array[
  'AvailableByDefault', 'AvailableAfterCompletion', 'AvailableAfterFailure',
  'AvailableAfterExternalCancellation', 'AvailableAfterSelfCancellation'
]::tidings.handling_status[]) s
union all
-- Claimed and completed in one step by a transactional batch (its Running
-- state would never be visible: it commits with the completion or not at all).
select 'handle', s, 'Completed'::tidings.handling_status
from unnest(array[
  'AvailableByDefault', 'AvailableAfterCompletion', 'AvailableAfterFailure',
  'AvailableAfterExternalCancellation', 'AvailableAfterSelfCancellation'
]::tidings.handling_status[]) s
union all values
  ('complete', 'Running'::tidings.handling_status, 'Completed'::tidings.handling_status),
  ('fail', 'Running', 'Failed'),
  ('self_cancel', 'Running', 'AvailableAfterSelfCancellation'),
  ('cancel', 'Running', 'AvailableAfterExternalCancellation'),
  ('reset_failed', 'Failed', 'AvailableAfterFailure'),
  ('archive_failure', 'Failed', 'ArchivedAfterFailure'),
  ('reset_completed', 'Completed', 'AvailableAfterCompletion')
union all
select 'disable_for_record', s, 'DisabledForRecord'
from unnest(enum_range(null::tidings.handling_status)) s
where s not in ('DisabledForRecord', 'DisabledForStream');

-- ---------------------------------------------------------------------------
-- Registry: every stream, who produces it and who consumes it.
-- ---------------------------------------------------------------------------
create table tidings.actors (
  name text primary key check (name ~ '^[a-z][a-z0-9_]*$'),
  role_name name not null unique,
  description text not null,
  -- May change the handling state of any concern (an operator's re-drive);
  -- every other actor only that of the concerns it consumes.
  repairs_handling boolean not null default false
);
comment on table tidings.actors is
  'Producers and consumers. Each acts as its own PostgreSQL role (SET LOCAL ROLE inside each transaction).';

create table tidings.streams (
  name text primary key check (name ~ '^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$'),
  subsystem text not null,
  kind text not null check (kind in (
    'client_operation', 'internal_operation', 'saga', 'event', 'view', 'snapshot', 'operation'
  )),
  concern text,
  -- The record types the stream holds; the stream table's check constraint
  -- declared_type refuses any other. Null (said explicitly when declaring):
  -- any type.
  record_types text[] check (cardinality(record_types) > 0),
  description text not null,
  declared_at timestamptz not null default now()
);
comment on table tidings.streams is
  'Every stream: its table is the stream name (schema.table); handling lives in <table>__handling and <table>__handling_history.';

create table tidings.stream_producers (
  stream text not null references tidings.streams (name),
  actor text not null references tidings.actors (name),
  primary key (stream, actor)
);

create table tidings.stream_consumers (
  stream text not null references tidings.streams (name),
  concern text not null check (concern ~ '^[a-z][a-z0-9_]*$'),
  actor text not null references tidings.actors (name),
  -- The graphile-worker task that handles this stream for this concern.
  task_identifier text not null unique,
  -- Only records of these types queue a job (null: every record). Filtering
  -- here keeps the job queue free of work a consumer would only skip.
  record_types text[],
  -- When set, jobs run at the timestamptz in payload->>run_at_field (e.g. a
  -- saga's deadline) instead of at once.
  run_at_field text check (run_at_field ~ '^[A-Za-z][A-Za-z0-9_]*$'),
  description text not null,
  primary key (stream, concern)
);
comment on column tidings.stream_consumers.run_at_field is
  'When set, jobs for this consumer run at the timestamptz in payload->>run_at_field (at once when absent).';

-- A stream's table (or its handling tables, with a suffix) as a quoted
-- identifier for dynamic SQL. Every statement the engine builds names its
-- tables through this: a name that is not schema.table in lower case is
-- refused before any SQL is built from it.
create function tidings.stream_table(p_stream text, p_suffix text default '') returns text
language plpgsql immutable set search_path = pg_catalog, pg_temp as $$
begin
  if p_stream !~ '^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$' or p_suffix not in ('', '__handling', '__handling_history') then
    raise exception 'invalid stream name "%"', p_stream using errcode = 'TD004';
  end if;
  return format('%I.%I', split_part(p_stream, '.', 1), split_part(p_stream, '.', 2) || p_suffix);
end;
$$;

-- Readers that are not consumers (views, the API, the saga reading channel
-- operations): they read the stream, and its handling state when said.
create table tidings.stream_readers (
  stream text not null references tidings.streams (name),
  actor text not null references tidings.actors (name),
  reads_handling boolean not null,
  primary key (stream, actor)
);

-- Stream-wide switch per concern: disabled means nothing new is claimed,
-- running work may finish. Current state here, every change in the history.
create table tidings.stream_concern_states (
  stream text not null,
  concern text not null,
  disabled boolean not null,
  changed_at timestamptz not null default now(),
  changed_by text not null,
  reason text not null,
  primary key (stream, concern),
  foreign key (stream, concern) references tidings.stream_consumers (stream, concern)
);

create table tidings.stream_concern_history (
  entry bigint generated always as identity primary key,
  stream text not null,
  concern text not null,
  disabled boolean not null,
  changed_at timestamptz not null default now(),
  changed_by text not null,
  reason text not null,
  -- The session user and the role it acted as, as in the handling history.
  recorded_by text not null default session_user
);

-- ---------------------------------------------------------------------------
-- Trigger functions shared by every stream.
-- ---------------------------------------------------------------------------
-- Hooks of erasure, the one sanctioned rewrite of stream rows (migrations/
-- 0004_erasure.sql defines them; until then nothing is ever being erased):
-- whether this transaction is inside entity.erase_entity, and why a record
-- of an erased notification may not be made available again.
create function tidings.erasing() returns boolean
language sql stable set search_path = pg_catalog, pg_temp as $$ select false $$;
create function tidings.erased_record_note(p_stream text, p_position bigint) returns text
language sql stable set search_path = pg_catalog, pg_temp as $$ select null::text $$;

create function tidings.tg_refuse_change() returns trigger
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
  -- Erasure: inside entity.erase_entity rows may be rewritten, never removed.
  if tg_op = 'UPDATE' and current_setting('tidings.erasure', true) = 'on' and tidings.erasing() then
    return null;
  end if;
  raise exception 'stream %.% is append-only: % is not allowed', tg_table_schema, tg_table_name, tg_op
    using errcode = 'TD001',
          hint = 'Append a new record instead; handling state lives in the __handling tables.';
end;
$$;

-- Who did it, as histories record it: the session's login and, when it acted
-- as another role (SET ROLE), that role: 'tidings_app as tidings_email_bot'.
-- Called from security definer triggers, where current_user is the owner; the
-- role set with SET ROLE is still current_setting('role').
create function tidings.session_actor() returns text
language sql stable set search_path = pg_catalog, pg_temp as $$
  select session_user::text || case when r is not null and r <> 'none' and r <> session_user::text then ' as ' || r else '' end
  from (select current_setting('role', true) as r) acting
$$;

-- A stream switched on or off for a concern: the time is the database's, and
-- the history row is written by the database itself (nobody writes it by hand).
create function tidings.tg_stamp_concern_state() returns trigger
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
  new.changed_at := now();
  return new;
end;
$$;

create function tidings.tg_record_concern_history() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  insert into tidings.stream_concern_history (stream, concern, disabled, changed_at, changed_by, reason, recorded_by)
  values (new.stream, new.concern, new.disabled, new.changed_at, new.changed_by, new.reason, tidings.session_actor());
  return null;
end;
$$;

create trigger stamp before insert or update on tidings.stream_concern_states
  for each row execute function tidings.tg_stamp_concern_state();
create trigger history after insert or update on tidings.stream_concern_states
  for each row execute function tidings.tg_record_concern_history();
create trigger refuse_delete before delete or truncate on tidings.stream_concern_states
  for each statement execute function tidings.tg_refuse_change();
create trigger refuse_update_delete before update or delete on tidings.stream_concern_history
  for each statement execute function tidings.tg_refuse_change();
create trigger refuse_truncate before truncate on tidings.stream_concern_history
  for each statement execute function tidings.tg_refuse_change();

-- Guard on every handling table: only transitions listed in
-- tidings.handling_transitions are allowed, every change but 'complete'
-- carries a reason, and the acting role changes only the handling of a
-- concern it consumes (or repairs: the operator). Enforced here so a
-- hand-written statement cannot skip it. Security invoker: current_user is
-- the acting role (SET ROLE, or a login inheriting an actor role).
create function tidings.tg_guard_handling() returns trigger
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  prior tidings.handling_status :=
    case when tg_op = 'INSERT' then 'AvailableByDefault'::tidings.handling_status else old.status end;
  stream_name text := tg_table_schema || '.' || left(tg_table_name, -length('__handling'));
  erased text;
begin
  -- Erasure: an erasure rewrites what a handling row says (error, reason,
  -- details), never its state, its attempts or when it last changed.
  if tg_op = 'UPDATE' and current_setting('tidings.erasure', true) = 'on' and tidings.erasing() then
    if (new.position, new.concern, new.status, new.attempts, new.claimed_by, new.last_action, new.last_actor, new.updated_at)
       is distinct from (old.position, old.concern, old.status, old.attempts, old.claimed_by, old.last_action, old.last_actor, old.updated_at) then
      raise exception 'an erasure may change only the error, reason and details of handling rows' using errcode = 'TD002';
    end if;
    return new;
  end if;
  if tg_op = 'UPDATE' and (new.position is distinct from old.position or new.concern is distinct from old.concern) then
    raise exception 'handling of %.% cannot move to another record or concern', tg_table_schema, tg_table_name
      using errcode = 'TD002';
  end if;
  if not exists (
    select 1 from tidings.actors a
    where pg_has_role(current_user, a.role_name, 'USAGE')
      and (a.repairs_handling or exists (
        select 1 from tidings.stream_consumers c where c.stream = stream_name and c.concern = new.concern and c.actor = a.name))
  ) then
    raise exception 'role % may not change the handling of stream % for concern "%"', current_user, stream_name, new.concern
      using errcode = '42501',
            hint = 'Only the actor that consumes the stream for that concern, or an operator, may.';
  end if;
  -- A change by someone who is not the concern's consumer (an operator's
  -- repair) names a person: it may not pass for the machinery (a bot, the
  -- runner), or the audit would take it for the bots' own work.
  if not exists (
    select 1 from tidings.stream_consumers c join tidings.actors a on a.name = c.actor
    where c.stream = stream_name and c.concern = new.concern and pg_has_role(current_user, a.role_name, 'USAGE')
  ) and (new.last_actor = 'runner' or exists (select 1 from tidings.actors a where a.name = new.last_actor)) then
    raise exception 'role % may not record a handling change as "%": a repair names the person who made it', current_user, new.last_actor
      using errcode = '42501';
  end if;
  if not exists (
    select 1 from tidings.handling_transitions t
    where t.action = new.last_action and t.from_status = prior and t.to_status = new.status
  ) then
    raise exception 'cannot % record % for concern %: current status is %, requested status is %',
      new.last_action, new.position, new.concern, prior, new.status
      using errcode = 'TD002';
  end if;
  if new.last_action <> 'complete' and coalesce(btrim(new.last_reason), '') = '' then
    raise exception 'a reason is required to % record % for concern %', new.last_action, new.position, new.concern
      using errcode = 'TD002';
  end if;
  -- Erasure: an erased record is never made available again (a re-drive
  -- would send placeholders, or bring nothing back but noise).
  if new.last_action in ('reset_failed', 'reset_completed') then
    erased := tidings.erased_record_note(stream_name, new.position);
    if erased is not null then
      raise exception '%', erased using errcode = 'TD007';
    end if;
  end if;
  new.updated_at := now();
  return new;
end;
$$;

-- Every handling change lands in the append-only history, written by the
-- database itself so no code path can change status without leaving a trace.
-- recorded_by names the session user and the role it acted as (tidings.session_actor).
-- Once per statement, from its transition tables: a batch of 64 claims is
-- one insert into the history, not 64 (a row trigger planned its dynamic
-- insert on every row: the costliest part of handling, docs/performance.md).
-- Two triggers, as transition tables allow one event each; an INSERT ... ON
-- CONFLICT DO UPDATE fires both, inserted rows in one, updated in the other.
create function tidings.tg_record_handling_history() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  -- Erasure: rewriting a handling row's text is not a handling change.
  if tg_op = 'UPDATE' and current_setting('tidings.erasure', true) = 'on' and tidings.erasing() then
    return null;
  end if;
  if tg_op = 'INSERT' then
    execute format(
      'insert into %I.%I (position, concern, from_status, to_status, action, actor, reason, details, attempt, recorded_by)
       select n.position, n.concern, ''AvailableByDefault'', n.status, n.last_action, n.last_actor, n.last_reason, n.last_details, n.attempts, $1
       from new_rows n order by n.position, n.concern',
      tg_table_schema, tg_table_name || '_history')
    using tidings.session_actor();
  else
    -- The guard keeps (position, concern) fixed, so it pairs old and new rows.
    execute format(
      'insert into %I.%I (position, concern, from_status, to_status, action, actor, reason, details, attempt, recorded_by)
       select n.position, n.concern, o.status, n.status, n.last_action, n.last_actor, n.last_reason, n.last_details, n.attempts, $1
       from new_rows n join old_rows o on o.position = n.position and o.concern = n.concern order by n.position, n.concern',
      tg_table_schema, tg_table_name || '_history')
    using tidings.session_actor();
  end if;
  return null;
end;
$$;

-- ---------------------------------------------------------------------------
-- The transactional outbox: appending a record queues a job per consuming
-- concern in the appending transaction, so a rolled-back append queues
-- nothing and a committed one cannot be missed. Jobs are queued once per
-- transaction, not once per appending statement: a bot's batch appends record
-- by record, and each graphile_worker.add_jobs call (five statements and a
-- NOTIFY) cost about half a millisecond of the server's time, ten per
-- notification, the largest single cost (docs/performance.md).
--
-- A transaction-local setting, tidings.outbox, keeps the note: a flag
-- ('D' when some append has not been queued yet, 'C' when all have) and, per
-- stream this transaction appended to, the position after which its rows
-- are still to be queued: 'D;notification.events=41;email.operations=7'. A
-- BEFORE statement trigger adds the stream with the last position its
-- sequence had handed out to anyone (every row this transaction appends
-- later has a greater one) and sets the flag; an AFTER row constraint
-- trigger, deferred to commit, reads back this transaction's rows after each
-- noted position (a primary-key range, filtered by tx_id: no index of its
-- own), queues them all with one add_jobs call, moves the positions on and
-- clears the flag (its other calls then return at once). Under SET CONSTRAINTS ALL IMMEDIATE the same trigger runs at the end
-- of each statement and queues that statement's rows. A rollback, or a
-- rollback to a savepoint, takes the note back with the rows (and with any
-- jobs queued meanwhile). Still one transaction: a commit queues the jobs of
-- all its records, a rollback none.

create function tidings.tg_note_outbox() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  stream_name text := tg_table_schema || '.' || tg_table_name;
  note text := coalesce(nullif(current_setting('tidings.outbox', true), ''), 'C');
begin
  if note = 'C' then
    -- Its first append: from now on the transaction may not stay open past
    -- the bound, so it cannot hold readers back for long.
    perform tidings.bound_appending_transaction();
  end if;
  if strpos(note || ';', ';' || stream_name || '=') = 0 then
    -- Streams nobody consumes need no note.
    if not exists (select 1 from tidings.stream_consumers c where c.stream = stream_name) then
      return null;
    end if;
    -- Identity sequences hand out increasing values (cache 1), whoever asks.
    note := note || ';' || stream_name || '='
      || coalesce(pg_sequence_last_value(pg_get_serial_sequence(tidings.stream_table(stream_name), 'position')::regclass), 0);
  end if;
  perform set_config('tidings.outbox', 'D' || substr(note, 2), true);
  return null;
end;
$$;

-- The note names streams and positions only; what is queued comes from the
-- rows this transaction wrote and the declared consumers, so a hand-written
-- note cannot forge a job.
--
-- Every job tidings queues has the key '<task>:<position>' (graphile-worker's
-- job_key): at most one job waits per record and concern (queueing again
-- replaces a waiting one; a running one keeps running and the new one waits
-- after it), and the handling sweep finds a record's job by its key through
-- graphile-worker's public jobs view.
create function tidings.tg_flush_outbox() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  note text := nullif(current_setting('tidings.outbox', true), '');
  entry text;
  stream_name text;
  queued_upto bigint;
  entries text[] := '{}';
  specs graphile_worker.job_spec[] := '{}';
  more graphile_worker.job_spec[];
  newest bigint;
begin
  if note is null or left(note, 1) <> 'D' then
    return null;
  end if;
  foreach entry in array coalesce(string_to_array(nullif(substr(note, 3), ''), ';'), '{}') loop
    stream_name := split_part(entry, '=', 1);
    queued_upto := split_part(entry, '=', 2)::bigint;
    if exists (select 1 from tidings.streams s where s.name = stream_name) then
      execute format($q$
        select array_agg(row(
                 c.task_identifier,
                 json_build_object('stream', $1, 'position', n.position, 'id', n.id),
                 null,
                 case when c.run_at_field is not null then (n.payload->>c.run_at_field)::timestamptz end,
                 null, c.task_identifier || ':' || n.position, null, null
               )::graphile_worker.job_spec order by n.position),
               max(n.position)
          from %s n
          join tidings.stream_consumers c
            on c.stream = $1
           and (c.record_types is null or n.type = any (c.record_types))
         where n.tx_id = pg_current_xact_id() and n.position > $2
           -- Handled for the concern in this very transaction (a bot that
           -- follows inline, src/bots/runner.ts): no job left to do.
           and not exists (select 1 from %s h
                           where h.position = n.position and h.concern = c.concern and h.status = 'Completed')$q$,
        tidings.stream_table(stream_name), tidings.stream_table(stream_name, '__handling'))
        into more, newest
        using stream_name, queued_upto;
      specs := specs || coalesce(more, '{}');
      queued_upto := greatest(queued_upto, coalesce(newest, 0));
    end if;
    entries := entries || (stream_name || '=' || queued_upto);
  end loop;
  perform set_config('tidings.outbox', 'C' || coalesce(';' || nullif(array_to_string(entries, ';'), ''), ''), true);
  if cardinality(specs) > 0 then
    perform graphile_worker.add_jobs(specs);
  end if;
  return null;
end;
$$;

create function tidings.create_outbox_triggers(p_stream text) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
  execute format('create trigger note_outbox before insert on %I.%I
                  for each statement execute function tidings.tg_note_outbox()',
                 split_part(p_stream, '.', 1), split_part(p_stream, '.', 2));
  execute format('create constraint trigger flush_outbox after insert on %I.%I
                  deferrable initially deferred
                  for each row execute function tidings.tg_flush_outbox()',
                 split_part(p_stream, '.', 1), split_part(p_stream, '.', 2));
end;
$$;
revoke execute on function tidings.create_outbox_triggers(text) from public;

-- ---------------------------------------------------------------------------
-- Gap-safe reading. Positions come from a sequence, so a slower transaction
-- can commit position 5 after a faster one committed 6: a reader that
-- remembered "6" would skip 5 for ever. Readers therefore go through a
-- stream in (feed_key, position) order and only as far as the feed horizon,
-- below which nothing can appear any more.
--
-- Every INSERT into a stream table first takes the table's RowExclusiveLock
-- (when the statement is parsed; held to the end of the transaction); only a
-- role allowed to write the table can hold that lock. Then each row takes as
-- feed_key the greater of its transaction id and the xmax of a snapshot
-- taken after that lock (tg_stamp_record). A reader's horizon is the
-- smallest id of the transactions that hold a stream it reads that way and
-- are still in progress, or else the xmax of its snapshot (feed_horizon),
-- computed in a statement before it reads. Whoever held the lock before the
-- reader looked holds the horizon at or below its own id, hence below its
-- keys; whoever takes it later gets keys at or above the reader's xmax,
-- hence at or above the horizon. So only transactions that append to the
-- streams being read hold a reader back: a long transaction elsewhere, in
-- this database or another, does not (the transaction-id horizon,
-- pg_snapshot_xmin, waited for every one on the server), and nobody but a
-- stream's writers can fake one (advisory locks would let any login do so).
-- ---------------------------------------------------------------------------

create function tidings.tg_stamp_record() returns trigger
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
  new.recorded_at := now();
  new.recorded_by := current_user;
  new.tx_id := pg_current_xact_id();
  -- A plpgsql expression in a volatile function runs with a fresh snapshot
  -- (READ COMMITTED): one taken after this statement locked the table.
  new.feed_key := greatest(pg_current_xact_id(), pg_snapshot_xmax(pg_current_snapshot()));
  return new;
end;
$$;

-- The horizon for reading these streams now: read records with feed_key
-- below it, in a later statement of a READ COMMITTED transaction (whose
-- snapshot is younger than this one's look at the locks).
create function tidings.feed_horizon(p_streams text[]) returns xid8
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
declare
  snap pg_snapshot := pg_current_snapshot();
  appending xid8;
begin
  if current_setting('transaction_isolation') <> 'read committed' then
    raise exception 'tidings.feed_horizon needs a READ COMMITTED transaction (the read that follows must see a newer snapshot)'
      using errcode = '25000';
  end if;
  -- Backends writing one of these tables, and their transaction ids (each
  -- transaction holds an ExclusiveLock on its own id): pg_locks is the one
  -- place that shows both for every login.
  select min(x) into appending
  from pg_snapshot_xip(snap) x
  where (x::text::bigint % 4294967296) in (
    select t.transactionid::text::bigint
    from pg_locks w
    join pg_locks t on t.pid = w.pid and t.locktype = 'transactionid' and t.mode = 'ExclusiveLock' and t.granted
    where w.locktype = 'relation' and w.mode = 'RowExclusiveLock'
      and w.database = (select d.oid from pg_database d where d.datname = current_database())
      and w.relation in (select to_regclass(tidings.stream_table(s)) from unnest(p_streams) s));
  return least(pg_snapshot_xmax(snap), appending);
end;
$$;

-- How far behind the gap-safe readers are, for metrics and operators:
-- per stream, the committed records the horizon still holds back (reader
-- 'horizon': the feed waits for a transaction that appended before them);
-- per checkpoint and stream, the records past its cursor (a catch-up bot
-- such as the projection has yet to handle them). Each with the age of the
-- oldest (from its writing transaction's start).
create function tidings.read_lag()
returns table (reader text, stream text, waiting bigint, oldest_seconds double precision)
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  s record;
  horizon xid8;
begin
  for s in select name from tidings.streams order by name loop
    horizon := tidings.feed_horizon(array[s.name]);
    reader := 'horizon';
    stream := s.name;
    execute format('select count(*), coalesce(extract(epoch from now() - min(recorded_at)), 0)::float8 from %s where feed_key >= $1', tidings.stream_table(s.name))
      into waiting, oldest_seconds using horizon;
    return next;
  end loop;
  -- Only cursors of declared streams: a checkpoint's keys are data its bot writes.
  for s in select c.name, e.key as followed, e.value as cursor
           from tidings.checkpoints c, jsonb_each_text(c.cursors) e
           where e.key in (select name from tidings.streams) and e.value ~ '^[0-9]{1,20}-[0-9]{1,19}$'
           order by 1, 2 loop
    reader := 'checkpoint:' || s.name;
    stream := s.followed;
    execute format('select count(*), coalesce(extract(epoch from now() - min(recorded_at)), 0)::float8 from %s
                    where (feed_key, position) > ($1::xid8, $2::bigint)', tidings.stream_table(s.followed))
      into waiting, oldest_seconds using split_part(s.cursor, '-', 1), split_part(s.cursor, '-', 2)::bigint;
    return next;
  end loop;
end;
$$;
revoke execute on function tidings.read_lag() from public;

-- Records whose handling is Failed, per stream and concern (each count
-- answered by the handling table's (concern, status) index): what waits for
-- an operator, for metrics.
create function tidings.failed_handling_counts()
returns table (stream text, concern text, failed bigint)
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  c record;
begin
  for c in select sc.stream, sc.concern from tidings.stream_consumers sc order by 1, 2 loop
    stream := c.stream;
    concern := c.concern;
    execute format('select count(*) from %s where concern = $1 and status = ''Failed''', tidings.stream_table(c.stream, '__handling'))
      into failed using c.concern;
    return next;
  end loop;
end;
$$;
revoke execute on function tidings.failed_handling_counts() from public;

-- Settings of the engine that a database keeps (an operator changes them with UPDATE).
create table tidings.settings (
  name text primary key,
  value text not null,
  description text not null
);
insert into tidings.settings (name, value, description) values
  ('append_transaction_timeout', '60s',
   'A transaction that appended to a stream is ended by the database once it has been open (PostgreSQL 17+) or idle, or one statement has run, this long: it holds the readers of that stream back meanwhile. 0 turns it off.');

-- Bound the transaction that is appending (see tidings.settings). Never
-- loosens a stricter bound the caller set; a caller that raises it again
-- afterwards holds back only its own streams' readers.
create function tidings.bound_appending_transaction() returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  bound text := (select value from tidings.settings where name = 'append_transaction_timeout');
  bound_ms bigint;
  setting text;
begin
  if bound is null then
    return;
  end if;
  bound_ms := extract(epoch from bound::interval) * 1000;
  if bound_ms <= 0 then
    return;
  end if;
  foreach setting in array array['idle_in_transaction_session_timeout',
    case when current_setting('server_version_num')::int >= 170000 then 'transaction_timeout' else 'statement_timeout' end] loop
    if current_setting(setting)::interval = interval '0' or current_setting(setting)::interval > bound::interval then
      perform set_config(setting, bound_ms || 'ms', true);
    end if;
  end loop;
end;
$$;

-- ---------------------------------------------------------------------------
-- Roles (docs/security.md). Migrations run as tidings_owner, which owns every
-- object here. Every actor is a role without login. tidings_service is the
-- running service's role: a member of every actor, so it may SET LOCAL ROLE
-- to each inside a transaction, but NOINHERIT, so it holds none of their
-- privileges unless it does; what it holds itself is only what the service
-- does as itself (graphile-worker's queue, worker heartbeats, API keys). The
-- service's login role (tidings_app by default) is granted tidings_service
-- and nothing else: neither a superuser nor an owner, it cannot disable a
-- trigger, truncate a stream or change a row.
-- ---------------------------------------------------------------------------
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'tidings_service') then
    begin
      create role tidings_service nologin noinherit;
    exception when duplicate_object or unique_violation then
      null; -- another database on this server created it at the same moment
    end;
  end if;
end;
$$;
grant usage on schema tidings to tidings_service;
-- The service checks at start and in /readyz that its schema is current.
grant select on tidings.migrations to tidings_service;
grant execute on function tidings.read_lag(), tidings.failed_handling_counts() to tidings_service;
grant select on tidings.streams, tidings.stream_producers, tidings.stream_consumers, tidings.stream_readers,
  tidings.actors, tidings.stream_concern_states, tidings.handling_transitions to tidings_service;
-- graphile-worker's queue (owned by tidings_owner like everything else) is
-- the service's to work: the migration runner grants it after each
-- migration, for the tables a graphile-worker release may add
-- (grantQueueToService in src/db/migrate.ts).
create function tidings.declare_actor(p_name text, p_description text) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  r name := 'tidings_' || p_name;
begin
  if not exists (select 1 from pg_roles where rolname = r) then
    begin
      execute format('create role %I nologin', r);
    exception
      when duplicate_object or unique_violation then
        null; -- another database on this server created it at the same moment
      when insufficient_privilege then
        raise exception 'role % does not exist and % may not create it: run npm run migrate once as a superuser (docs/security.md)', r, current_user
          using errcode = '42501';
    end;
  end if;
  -- The service acts as every actor (SET LOCAL ROLE); NOINHERIT keeps their
  -- privileges from adding up in the service's own.
  if not pg_has_role('tidings_service', r, 'MEMBER') then
    execute format('grant %I to tidings_service', r);
  end if;
  execute format('grant usage on schema tidings to %I', r);
  -- Every actor may read the registry (append and the handling guard consult it).
  execute format('grant select on tidings.streams, tidings.stream_producers, tidings.stream_consumers,
                  tidings.actors, tidings.stream_concern_states, tidings.handling_transitions to %I', r);
  insert into tidings.actors (name, role_name, description) values (p_name, r, p_description);
end;
$$;

-- ---------------------------------------------------------------------------
-- Declaring streams.
-- ---------------------------------------------------------------------------
-- p_record_types: the types of record the stream holds (null: any). The
-- table refuses any other type, whoever writes it.
create function tidings.declare_stream(
  p_name text, p_subsystem text, p_kind text, p_concern text, p_record_types text[], p_description text
) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  sch text := split_part(p_name, '.', 1);
  tbl text := split_part(p_name, '.', 2);
  repairer record;
begin
  insert into tidings.streams (name, subsystem, kind, concern, record_types, description)
  values (p_name, p_subsystem, p_kind, p_concern, p_record_types, p_description);

  execute format('create schema if not exists %I', sch);

  execute format($ddl$
    create table %1$I.%2$I (
      position bigint generated always as identity primary key,
      -- No control characters: ids end up in logs, alerts and pasted SQL.
      id text not null check (id <> '' and length(id) <= 200 and id !~ '[[:cntrl:]]'),
      type text not null check (type ~ '^[A-Za-z][A-Za-z0-9_.]*$'),
      payload jsonb not null,
      tags jsonb not null default '{}' check (jsonb_typeof(tags) = 'object'),
      caused_by_stream text,
      caused_by_position bigint,
      recorded_at timestamptz not null default now(),
      recorded_by text not null default current_user,
      tx_id xid8 not null default pg_current_xact_id(),
      -- The gap-safe read order (feed_horizon): set by trigger stamp_record.
      feed_key xid8 not null default pg_current_xact_id(),
      check ((caused_by_stream is null) = (caused_by_position is null))
    )$ddl$, sch, tbl);
  execute format('comment on table %I.%I is %L', sch, tbl, p_description);
  perform tidings.constrain_record_types(p_name);
  execute format('create index on %I.%I (id, position)', sch, tbl);
  -- Readers go in (feed_key, position) order. (The outbox finds a transaction's
  -- rows by a range of positions: tx_id needs no index.)
  execute format('create index on %I.%I (feed_key, position)', sch, tbl);
  execute format('create trigger stamp_record before insert on %I.%I
                  for each row execute function tidings.tg_stamp_record()', sch, tbl);

  execute format('create trigger refuse_update_delete before update or delete on %I.%I
                  for each statement execute function tidings.tg_refuse_change()', sch, tbl);
  execute format('create trigger refuse_truncate before truncate on %I.%I
                  for each statement execute function tidings.tg_refuse_change()', sch, tbl);
  perform tidings.create_outbox_triggers(p_name);

  -- Handling state beside the stream: current status per (record, concern)...
  execute format($ddl$
    create table %1$I.%3$I (
      -- No foreign key to the stream: it would turn TRUNCATE's append-only
      -- error into a foreign-key one. Claims check that the record exists.
      position bigint not null,
      concern text not null,
      status tidings.handling_status not null,
      attempts integer not null default 0,
      claimed_by text,
      last_action text not null,
      last_actor text not null,
      last_reason text,
      last_details jsonb,
      last_error text,
      updated_at timestamptz not null default now(),
      primary key (position, concern)
    )$ddl$, sch, tbl, tbl || '__handling');
  execute format('create index on %I.%I (concern, status, updated_at)', sch, tbl || '__handling');
  execute format('comment on table %I.%I is %L', sch, tbl || '__handling',
    'Current handling status of each record of ' || p_name || ' per concern (absent row: AvailableByDefault).');
  execute format('create trigger guard before insert or update on %I.%I
                  for each row execute function tidings.tg_guard_handling()', sch, tbl || '__handling');
  execute format('create trigger history_of_inserts after insert on %I.%I referencing new table as new_rows
                  for each statement execute function tidings.tg_record_handling_history()', sch, tbl || '__handling');
  execute format('create trigger history_of_updates after update on %I.%I referencing old table as old_rows new table as new_rows
                  for each statement execute function tidings.tg_record_handling_history()', sch, tbl || '__handling');
  execute format('create trigger refuse_delete before delete or truncate on %I.%I
                  for each statement execute function tidings.tg_refuse_change()', sch, tbl || '__handling');

  -- ...and every change of it, append-only.
  execute format($ddl$
    create table %1$I.%2$I (
      entry bigint generated always as identity primary key,
      position bigint not null,
      concern text not null,
      from_status tidings.handling_status not null,
      to_status tidings.handling_status not null,
      action text not null,
      actor text not null,
      reason text,
      details jsonb,
      attempt integer not null,
      recorded_at timestamptz not null default now(),
      recorded_by text not null
    )$ddl$, sch, tbl || '__handling_history');
  execute format('create index on %I.%I (position, concern, entry)', sch, tbl || '__handling_history');
  execute format('comment on table %I.%I is %L', sch, tbl || '__handling_history',
    'Append-only history of every handling change of ' || p_name || ': who, when, why.');
  execute format('create trigger refuse_update_delete before update or delete on %I.%I
                  for each statement execute function tidings.tg_refuse_change()', sch, tbl || '__handling_history');
  execute format('create trigger refuse_truncate before truncate on %I.%I
                  for each statement execute function tidings.tg_refuse_change()', sch, tbl || '__handling_history');

  -- Nobody but the owner holds any privilege until producers and consumers are declared...
  execute format('revoke all on %I.%I, %I.%I, %I.%I from public', sch, tbl, sch, tbl || '__handling', sch, tbl || '__handling_history');
  -- ...but those who repair handling state on every stream.
  for repairer in select name from tidings.actors where repairs_handling loop
    perform tidings.grant_handling_repair(p_name, repairer.name);
  end loop;
end;
$$;

-- The stream table's check constraint declared_type lists the types of
-- tidings.streams.record_types: a check constraint costs an append nothing
-- measurable, where a trigger looking the type up would cost every row.
create function tidings.constrain_record_types(p_stream text) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  types text[] := (select record_types from tidings.streams where name = p_stream);
begin
  execute format('alter table %s drop constraint if exists declared_type', tidings.stream_table(p_stream));
  if types is not null then
    -- NOT VALID: rows already there were checked against the earlier list,
    -- which this one only widens (see declare_record_types).
    execute format('alter table %s add constraint declared_type check (type = any (%L::text[])) not valid', tidings.stream_table(p_stream), types);
  end if;
end;
$$;

-- A stream holds a new type of record from now on (a later migration's).
create function tidings.declare_record_types(p_stream text, p_types text[]) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
  update tidings.streams
  set record_types = (select array_agg(distinct t order by t) from unnest(record_types || p_types) t)
  where name = p_stream and record_types is not null;
  if not found then
    raise exception 'stream "%" is unknown or holds any type', p_stream using errcode = 'TD004';
  end if;
  perform tidings.constrain_record_types(p_stream);
end;
$$;

create function tidings.declare_producer(p_stream text, p_actor text) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  r name := (select role_name from tidings.actors where name = p_actor);
begin
  insert into tidings.stream_producers (stream, actor) values (p_stream, p_actor);
  execute format('grant usage on schema %I to %I', split_part(p_stream, '.', 1), r);
  -- Write-only: INSERT, no SELECT of content (the seed's access rule).
  -- SELECT on the position column alone lets INSERT .. RETURNING position
  -- tell the producer where its record landed; idempotent appends look for an
  -- existing record through tidings.existing_position.
  -- INSERT of the content columns only: position, recorded_at, recorded_by
  -- tx_id and feed_key are the database's own (identity and defaults), so a producer
  -- can neither squat a position nor name another writer or time.
  execute format('grant insert (id, type, payload, tags, caused_by_stream, caused_by_position) on %s to %I', tidings.stream_table(p_stream), r);
  execute format('grant select (position) on %s to %I', tidings.stream_table(p_stream), r);
  execute format('grant execute on function tidings.existing_position(text, text, text) to %I', r);
  execute format('grant execute on function tidings.existing_positions(text, text[], text[]) to %I', r);
end;
$$;

create function tidings.declare_consumer(
  p_stream text, p_concern text, p_actor text, p_record_types text[], p_description text,
  p_run_at_field text default null
) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  r name := (select role_name from tidings.actors where name = p_actor);
  held text[] := (select record_types from tidings.streams where name = p_stream);
begin
  if held is not null and p_record_types is not null and not p_record_types <@ held then
    raise exception 'stream % holds no records of type %', p_stream,
      array(select t from unnest(p_record_types) t where t <> all (held)) using errcode = 'TD004';
  end if;
  insert into tidings.stream_consumers (stream, concern, actor, task_identifier, record_types, run_at_field, description)
  values (p_stream, p_concern, p_actor, p_stream || ':' || p_concern, p_record_types, p_run_at_field, p_description);
  -- The sweep starts at the stream's end: records written before the
  -- consumer existed were never its to handle.
  execute format($q$
    insert into tidings.sweep_cursors (stream, concern, feed_key, position)
    select $1, $2, coalesce(max(feed_key), '0'), coalesce(max(position), 0) from %s$q$, tidings.stream_table(p_stream))
    using p_stream, p_concern;
  -- Register the task up front: otherwise the first job of a task registers
  -- it, and concurrent appenders wait on that insert until the first appender
  -- commits. Only graphile-worker's public API: a job added and removed in
  -- this transaction leaves its task registered.
  perform graphile_worker.add_job(p_stream || ':' || p_concern, '{}'::json, job_key => 'tidings:register-task');
  perform graphile_worker.remove_job('tidings:register-task');
  execute format('grant usage on schema %I to %I', split_part(p_stream, '.', 1), r);
  execute format('grant select on %s to %I', tidings.stream_table(p_stream), r);
  -- Writing handling state is not write access to the stream (the seed): the
  -- consumer may change its own handling rows; history is written by trigger.
  execute format('grant select, insert, update on %s to %I', tidings.stream_table(p_stream, '__handling'), r);
  execute format('grant select on %s to %I', tidings.stream_table(p_stream, '__handling_history'), r);
  execute format('grant execute on function tidings.queue_handling(text, text, bigint[], timestamptz) to %I', r);
end;
$$;

-- Read-only access for a reader that is not a handler (views, the API, a
-- bot reading another stream), with its handling state when p_handling.
create function tidings.declare_reader(p_stream text, p_actor text, p_handling boolean default false) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  r name := (select role_name from tidings.actors where name = p_actor);
begin
  insert into tidings.stream_readers (stream, actor, reads_handling) values (p_stream, p_actor, p_handling)
  on conflict (stream, actor) do update set reads_handling = tidings.stream_readers.reads_handling or excluded.reads_handling;
  execute format('grant usage on schema %I to %I', split_part(p_stream, '.', 1), r);
  execute format('grant select on %s to %I', tidings.stream_table(p_stream), r);
  if p_handling then
    execute format('grant select on %s, %s to %I', tidings.stream_table(p_stream, '__handling'), tidings.stream_table(p_stream, '__handling_history'), r);
  end if;
end;
$$;

-- An actor that repairs handling state on every stream (the operator's
-- re-drive, cancel, archive): reads every stream, changes the handling of
-- any concern (the guard lets it), never writes a stream.
create function tidings.declare_handling_repairer(p_actor text) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  s record;
  r name := (select role_name from tidings.actors where name = p_actor);
begin
  update tidings.actors set repairs_handling = true where name = p_actor;
  for s in select name from tidings.streams loop
    perform tidings.grant_handling_repair(s.name, p_actor);
  end loop;
  execute format('grant insert, update on tidings.stream_concern_states to %I', r);
  execute format('grant select on tidings.stream_concern_history to %I', r);
  execute format('grant execute on function tidings.queue_handling(text, text, bigint[], timestamptz) to %I', r);
end;
$$;

create function tidings.grant_handling_repair(p_stream text, p_actor text) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  r name := (select role_name from tidings.actors where name = p_actor);
begin
  perform tidings.declare_reader(p_stream, p_actor, true);
  execute format('grant insert, update on %s to %I', tidings.stream_table(p_stream, '__handling'), r);
end;
$$;

-- ---------------------------------------------------------------------------
-- Appending.
-- ---------------------------------------------------------------------------
create function tidings.stream_exists(p_stream text) returns boolean
language sql stable set search_path = pg_catalog, pg_temp as $$ select exists (select 1 from tidings.streams where name = p_stream) $$;

-- The position of the latest record with this id (and type, when given), or
-- null. Security definer so a write-only producer can make its appends
-- idempotent without being granted read access to the stream.
-- Only for a stream the caller produces: the acting role (SET ROLE), or the
-- login when it acts as itself with an actor role it inherits.
-- Where the latest record with each of these ids (and types, when given) is,
-- for the stream's producers only (they may not read its content): one
-- answer per input pair, in input order (ordinal), null when there is none.
create function tidings.existing_positions(p_stream text, p_ids text[], p_types text[] default null)
returns table (ordinal integer, "position" bigint)
language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
declare
  acting text := coalesce(nullif(nullif(current_setting('role', true), ''), 'none'), session_user);
begin
  if not tidings.stream_exists(p_stream) then
    raise exception 'unknown stream "%"', p_stream using errcode = 'TD004';
  end if;
  if not exists (
    select 1 from tidings.stream_producers p join tidings.actors a on a.name = p.actor
    where p.stream = p_stream and pg_has_role(acting, a.role_name, 'USAGE')
  ) then
    raise exception 'role % does not produce stream %: only its producers may look up its records', acting, p_stream
      using errcode = '42501';
  end if;
  return query execute format($q$
    select k.ordinal::integer, (select max(s.position) from %s s where s.id = k.id and (k.type is null or s.type = k.type))
    from unnest($1::text[], $2::text[]) with ordinality as k(id, type, ordinal)
    order by k.ordinal$q$, tidings.stream_table(p_stream))
    using p_ids, coalesce(p_types, array_fill(null::text, array[cardinality(p_ids)]));
end;
$$;

-- The same for one id: what a SQL caller uses.
create function tidings.existing_position(p_stream text, p_id text, p_type text default null) returns bigint
language sql stable security definer set search_path = pg_catalog, pg_temp as $$
  select e.position from tidings.existing_positions(p_stream, array[p_id], array[p_type]) e
$$;

-- Append records to a stream with an existing-record strategy:
--   write_always
--   skip_if_id_exists / skip_if_id_and_type_exists       (returns the existing position, written = false)
--   throw_if_id_exists / throw_if_id_and_type_exists     (raises TD003)
-- p_records is a JSON array of {id, type, payload, tags?, causedBy?: {stream, position}}.
-- Security invoker: the INSERT runs with the caller's privileges, so only a
-- declared producer can append.
create function tidings.append(p_stream text, p_records jsonb, p_strategy text default 'write_always')
returns table (ordinal integer, "position" bigint, id text, type text, written boolean)
language plpgsql set search_path = pg_catalog, pg_temp as $$
#variable_conflict use_column
declare
  missing integer;
  by_type boolean;
  ords integer[];
  existing_at bigint[];
  first_of integer[];
  written_ords integer[];
  written_at bigint[];
  offending integer[];
  i integer;
begin
  if not tidings.stream_exists(p_stream) then
    raise exception 'unknown stream "%"', p_stream using errcode = 'TD004';
  end if;
  if jsonb_typeof(p_records) is distinct from 'array' then
    raise exception 'records must be a JSON array' using errcode = '22023';
  end if;
  if p_strategy not in ('write_always', 'skip_if_id_exists', 'skip_if_id_and_type_exists',
                        'throw_if_id_exists', 'throw_if_id_and_type_exists') then
    raise exception 'unknown existing-record strategy "%"', p_strategy using errcode = '22023';
  end if;

  if p_strategy = 'write_always' then
    -- One INSERT for the whole batch: one trigger call, one add_jobs, one NOTIFY.
    -- Identity values follow the ORDER BY, so position order is input order.
    return query execute format($q$
      with input as (
        select r.ordinality::integer as ordinal, r.value as v
        from jsonb_array_elements($1) with ordinality r
      ), inserted as (
        insert into %s (id, type, payload, tags, caused_by_stream, caused_by_position)
        select v->>'id', v->>'type', v->'payload', coalesce(v->'tags', '{}'),
               v->'causedBy'->>'stream', (v->'causedBy'->>'position')::bigint
        from input order by ordinal
        returning position
      ), numbered as (
        select (row_number() over (order by position))::integer as ordinal, position from inserted
      )
      select n.ordinal, n.position, i.v->>'id', i.v->>'type', true
      from numbered n join input i using (ordinal)
      order by n.ordinal$q$, tidings.stream_table(p_stream)) using p_records;
    return;
  end if;

  -- The other strategies look for an existing record first, set-based: a
  -- batch costs the same few statements whatever its size. Writers of the
  -- same id are serialised by transaction-level advisory locks (taken in id
  -- order, so two batches cannot deadlock); under READ COMMITTED the lookup
  -- after the locks sees whatever the previous holder committed. Within the
  -- batch, the first record of an id (and type) is written and the later
  -- ones find it, as if appended one by one.
  select min(r.ordinality) into missing
  from jsonb_array_elements(p_records) with ordinality r where coalesce(r.value->>'id', '') = '';
  if missing is not null then
    raise exception 'record % has no id', missing using errcode = '23502';
  end if;
  perform pg_advisory_xact_lock(hashtextextended(p_stream || ' ' || x.i, 0))
  from (select distinct r.value->>'id' as i from jsonb_array_elements(p_records) r order by 1) x;

  by_type := p_strategy like '%_and_type_exists';
  select array_agg(k.ord order by k.ord), array_agg(e.position order by k.ord),
         array_agg(k.first_ord order by k.ord)
    into ords, existing_at, first_of
  from (
    select r.ordinality::integer as ord,
           min(r.ordinality::integer) over (partition by r.value->>'id', case when by_type then r.value->>'type' end) as first_ord,
           r.value->>'id' as rid, case when by_type then r.value->>'type' end as rtype
    from jsonb_array_elements(p_records) with ordinality r
  ) k
  join tidings.existing_positions(
         p_stream,
         array(select r.value->>'id' from jsonb_array_elements(p_records) with ordinality r order by r.ordinality),
         case when by_type then array(select r.value->>'type' from jsonb_array_elements(p_records) with ordinality r order by r.ordinality) end
       ) e on e.ordinal = k.ord;

  -- Written: the first record of each key that does not exist yet, in input order.
  execute format($q$
    with writable as (
      select r.ordinality::integer as ord, r.value as v
      from jsonb_array_elements($1) with ordinality r
      where r.ordinality::integer = any ($2)
    ), inserted as (
      insert into %s (id, type, payload, tags, caused_by_stream, caused_by_position)
      select v->>'id', v->>'type', v->'payload', coalesce(v->'tags', '{}'),
             v->'causedBy'->>'stream', (v->'causedBy'->>'position')::bigint
      from writable order by ord
      returning position
    )
    select array_agg(w.ord order by w.ord), array_agg(i.position order by w.ord)
    from (select ord, row_number() over (order by ord) as n from writable) w
    join (select position, row_number() over (order by position) as n from inserted) i using (n)$q$,
    tidings.stream_table(p_stream))
    into written_ords, written_at
    using p_records,
          array(select o from unnest(ords, existing_at, first_of) as x(o, e, f) where e is null and f = o);

  for i in 1 .. coalesce(cardinality(ords), 0) loop
    ordinal := ords[i];
    id := p_records->(ordinal - 1)->>'id';
    type := p_records->(ordinal - 1)->>'type';
    written := ordinal = any (coalesce(written_ords, '{}'));
    "position" := case
      when written then written_at[array_position(written_ords, ordinal)]
      else coalesce(existing_at[i], written_at[array_position(written_ords, first_of[i])]) end;
    if not written and p_strategy like 'throw%' then
      offending := coalesce(offending, '{}') || array[ordinal];
    end if;
    return next;
  end loop;
  if offending is not null then
    -- The first offending record in id order, as a loop over the ids would have met it.
    select r.ordinality::integer into missing
    from jsonb_array_elements(p_records) with ordinality r
    where r.ordinality::integer = any (offending)
    order by r.value->>'id', r.ordinality limit 1;
    i := array_position(ords, missing);
    raise exception 'a record with id "%"% already exists in stream % at position %',
      p_records->(missing - 1)->>'id',
      case when by_type then ' and type "' || (p_records->(missing - 1)->>'type') || '"' else '' end,
      p_stream, coalesce(existing_at[i], written_at[array_position(written_ords, first_of[i])])
      using errcode = 'TD003';
  end if;
end;
$$;

-- Queue (again) the handling job of records for one concern, e.g. a retry
-- after a delay or an operator's re-drive. Security definer for the same
-- reason as the outbox trigger; refuses concerns that do not consume the stream.
create function tidings.queue_handling(
  p_stream text, p_concern text, p_positions bigint[], p_run_at timestamptz default null
) returns integer
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  acting text := coalesce(nullif(nullif(current_setting('role', true), ''), 'none'), session_user);
  task text;
  specs graphile_worker.job_spec[];
begin
  select c.task_identifier into task from tidings.stream_consumers c where c.stream = p_stream and c.concern = p_concern;
  if task is null then
    raise exception 'concern "%" does not consume stream "%"', p_concern, p_stream using errcode = 'TD004';
  end if;
  -- Only the concern's own consumer (a retry) or an operator (a re-drive) queues its work.
  if not exists (
    select 1 from tidings.actors a
    where pg_has_role(acting, a.role_name, 'USAGE')
      and (a.repairs_handling or a.name = (select c.actor from tidings.stream_consumers c where c.stream = p_stream and c.concern = p_concern))
  ) then
    raise exception 'role % may not queue the handling of stream % for concern "%"', acting, p_stream, p_concern using errcode = '42501';
  end if;
  execute format($q$
    select array_agg(row($2, json_build_object('stream', $3, 'position', position, 'id', id),
                         null, $4, null, $2 || ':' || position, null, null)::graphile_worker.job_spec order by position)
    from %s where position = any ($1)$q$, tidings.stream_table(p_stream))
    into specs using p_positions, task, p_stream, p_run_at;
  if coalesce(array_length(specs, 1), 0) <> coalesce(array_length(p_positions, 1), 0) then
    raise exception 'some of positions % do not exist in stream %', p_positions, p_stream using errcode = 'TD004';
  end if;
  if specs is not null then
    perform graphile_worker.add_jobs(specs);
  end if;
  return coalesce(array_length(specs, 1), 0);
end;
$$;

-- ---------------------------------------------------------------------------
-- The handling sweep. The outbox queues a job for every record a consumer
-- must handle, in the appending transaction. Should a job go missing all the
-- same (a transaction that overwrote its own outbox note, the owner
-- appending with triggers disabled, a job deleted from graphile-worker's
-- queue, whose tables the service works), the record would wait for ever.
-- The sweep follows every consumed stream from a cursor of its own and
-- queues a job for each record that waits (no handling row, or an Available
-- status) with no job in the queue. Its cursor passes a record only once the
-- record is settled for the concern (Completed, Failed, archived, disabled),
-- so a job lost while its record waited is found too. One sweeper at a time
-- (an advisory lock); src/bots/worker.ts runs it now and then.
-- ---------------------------------------------------------------------------
create table tidings.sweep_cursors (
  stream text not null,
  concern text not null,
  -- Gap-safe, like the feed's: the (feed_key, position) of the last record passed.
  feed_key xid8 not null default '0',
  position bigint not null default 0,
  updated_at timestamptz not null default now(),
  primary key (stream, concern),
  foreign key (stream, concern) references tidings.stream_consumers (stream, concern)
);
comment on table tidings.sweep_cursors is
  'Where the handling sweep is in each consumed stream: every record before it is settled for the concern.';

create function tidings.sweep_handling(p_limit integer default 1000)
returns table (stream text, concern text, examined integer, queued integer)
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  c record;
  horizon xid8;
  specs graphile_worker.job_spec[];
  new_key xid8;
  new_position bigint;
begin
  if not pg_try_advisory_xact_lock(hashtextextended('tidings handling sweep', 0)) then
    return; -- another process is sweeping
  end if;
  for c in
    select sc.stream, sc.concern, sc.task_identifier, sc.record_types, sc.run_at_field, k.feed_key, k.position
    from tidings.stream_consumers sc
    join tidings.sweep_cursors k on k.stream = sc.stream and k.concern = sc.concern
    where not exists (select 1 from tidings.stream_concern_states d
                      where d.stream = sc.stream and d.concern = sc.concern and d.disabled)
    order by sc.stream, sc.concern
  loop
    horizon := tidings.feed_horizon(array[c.stream]);
    execute format($q$
      with candidate as (
        select r.feed_key, r.position, r.id, r.payload, h.status,
               h.status is null or h.status not in ('Completed', 'Failed', 'ArchivedAfterFailure', 'DisabledForRecord') as unsettled
        from %1$s r
        left join %2$s h on h.position = r.position and h.concern = $1
        where (r.feed_key, r.position) > ($2, $3) and r.feed_key < $4
          and ($5::text[] is null or r.type = any ($5))
        order by r.feed_key, r.position
        limit $6
      ), missing as (
        select m.* from candidate m
        where (m.status is null or m.status = any ($8::tidings.handling_status[]))
          and not exists (
            select 1 from graphile_worker.jobs j where j.key = $7 || ':' || m.position)
      ), first_unsettled as (
        select u.feed_key, u.position from candidate u where u.unsettled order by u.feed_key, u.position limit 1
      ), passed as (
        select p.feed_key, p.position from candidate p
        where not exists (select 1 from first_unsettled)
           or (p.feed_key, p.position) < (select f.feed_key, f.position from first_unsettled f)
        order by p.feed_key desc, p.position desc limit 1
      )
      select (select count(*)::int from candidate),
             (select array_agg(row($7, json_build_object('stream', $9, 'position', m.position, 'id', m.id), null,
                                   case when $10::text is not null then (m.payload->>$10)::timestamptz end,
                                   null, $7 || ':' || m.position, null, null)::graphile_worker.job_spec order by m.position) from missing m),
             (select p.feed_key from passed p),
             (select p.position from passed p)
      $q$, tidings.stream_table(c.stream), tidings.stream_table(c.stream, '__handling'))
      into examined, specs, new_key, new_position
      using c.concern, c.feed_key, c.position, horizon, c.record_types, p_limit, c.task_identifier,
            array['AvailableByDefault', 'AvailableAfterCompletion', 'AvailableAfterFailure',
                  'AvailableAfterExternalCancellation', 'AvailableAfterSelfCancellation']::tidings.handling_status[],
            c.stream, c.run_at_field;
    queued := coalesce(cardinality(specs), 0);
    if queued > 0 then
      perform graphile_worker.add_jobs(specs);
    end if;
    if new_key is not null then
      update tidings.sweep_cursors k set feed_key = new_key, position = new_position, updated_at = now()
      where k.stream = c.stream and k.concern = c.concern;
    end if;
    stream := c.stream;
    concern := c.concern;
    return next;
  end loop;
end;
$$;
revoke execute on function tidings.sweep_handling(integer) from public;
grant execute on function tidings.sweep_handling(integer) to tidings_service;

revoke execute on function tidings.queue_handling(text, text, bigint[], timestamptz) from public;
revoke execute on function tidings.declare_actor(text, text) from public;
revoke execute on function tidings.declare_stream(text, text, text, text, text[], text) from public;
revoke execute on function tidings.constrain_record_types(text) from public;
revoke execute on function tidings.declare_record_types(text, text[]) from public;
revoke execute on function tidings.declare_handling_repairer(text) from public;
revoke execute on function tidings.grant_handling_repair(text, text) from public;
revoke execute on function tidings.declare_producer(text, text) from public;
revoke execute on function tidings.declare_consumer(text, text, text, text[], text, text) from public;
revoke execute on function tidings.declare_reader(text, text, boolean) from public;
-- Producers are granted it by declare_producer.
revoke execute on function tidings.existing_position(text, text, text) from public;
revoke execute on function tidings.existing_positions(text, text[], text[]) from public;

-- ---------------------------------------------------------------------------
-- Worker liveness. graphile-worker only frees the jobs of a dead worker after
-- 4 hours; each tidings worker process records a heartbeat here, and any
-- process may unlock the jobs held by a worker pool whose heartbeat stopped
-- (recoverAbandonedJobs in src/bots/worker.ts, docs/operations.md).
-- ---------------------------------------------------------------------------
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
grant select, insert, update, delete on tidings.worker_heartbeats to tidings_service;

-- ---------------------------------------------------------------------------
-- Checkpoints of catch-up consumers. Derived data (views, snapshots) is not
-- built by one job per record: that was seven jobs per notification and more
-- than half of the server's statements (docs/performance.md). A catch-up
-- consumer follows its streams from a checkpoint instead, the way event
-- stores run projections: it reads the records committed after its cursor in
-- each stream, handles them with set-based queries, and moves the cursor, all
-- in one transaction. Its handling state is that cursor, kept here; what each
-- view was built from is in the view's caused_by and version.
-- ---------------------------------------------------------------------------
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
-- Each catch-up bot moves its own checkpoint only: a bot granted UPDATE (to
-- move its cursor) could otherwise move another's, making it skip or repeat
-- records. Whoever is granted SELECT reads them all. The owner (migrations)
-- is not bound by the policies.
alter table tidings.checkpoints enable row level security;
create policy read_every_checkpoint on tidings.checkpoints for select using (true);
create policy move_own_checkpoint on tidings.checkpoints for update
  using (pg_has_role(current_user, (select a.role_name from tidings.actors a where a.name = actor), 'USAGE'))
  with check (pg_has_role(current_user, (select a.role_name from tidings.actors a where a.name = actor), 'USAGE'));

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
