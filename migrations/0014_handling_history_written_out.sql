-- The handling history trigger (0001) with its statement written out per
-- stream, so PostgreSQL keeps its plan.
--
-- tidings.tg_record_handling_history copied every handling change into the
-- stream's history with dynamic SQL (`execute format(...)` naming the
-- history table), planned again on every statement that changed handling
-- rows: 3.4 ms of the server's time per notification at one notification
-- per transaction (`PROFILE_RATE=40 npm run bench:profile`, its own time).
-- As 0013 did for appends and the outbox, each stream's handling table now
-- has a trigger function of its own, tidings.handling_history__<schema>__<table>_<hash>,
-- with the insert written out: PL/pgSQL keeps a static statement's plan for
-- the session (one compiled copy per trigger, so the insert and update
-- triggers each plan only their own branch). Same rows, same order, same
-- erasure rule; declare_stream (0011's text, the triggers' two lines
-- replaced) creates them for new streams, and the streams declared so far
-- get theirs here. tidings.tg_record_handling_history stays for any trigger
-- created by hand with it.

create function tidings.handling_history_function(p_stream text) returns text
language sql immutable set search_path = pg_catalog, pg_temp as $$
  select tidings.stream_function_name('handling_history__', p_stream)
$$;

create function tidings.create_handling_history_triggers(p_stream text) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $create$
declare
  sch text := split_part(p_stream, '.', 1);
  tbl text := split_part(p_stream, '.', 2);
begin
  execute format($f$
    create or replace function tidings.%1$I() returns trigger
    language plpgsql security definer set search_path = pg_catalog, pg_temp as $body$
    begin
      -- Erasure: rewriting a handling row's text is not a handling change.
      if tg_op = 'UPDATE' and current_setting('tidings.erasure', true) = 'on' and tidings.erasing() then
        return null;
      end if;
      if tg_op = 'INSERT' then
        insert into %2$s (position, concern, from_status, to_status, action, actor, reason, details, attempt, recorded_by)
        select n.position, n.concern, 'AvailableByDefault', n.status, n.last_action, n.last_actor, n.last_reason, n.last_details, n.attempts,
               tidings.session_actor()
        from new_rows n order by n.position, n.concern;
      else
        -- The guard keeps (position, concern) fixed, so it pairs old and new rows.
        insert into %2$s (position, concern, from_status, to_status, action, actor, reason, details, attempt, recorded_by)
        select n.position, n.concern, o.status, n.status, n.last_action, n.last_actor, n.last_reason, n.last_details, n.attempts,
               tidings.session_actor()
        from new_rows n join old_rows o on o.position = n.position and o.concern = n.concern order by n.position, n.concern;
      end if;
      return null;
    end;
    $body$
    $f$,
    tidings.handling_history_function(p_stream), tidings.stream_table(p_stream, '__handling_history'));
  execute format('revoke execute on function tidings.%I() from public', tidings.handling_history_function(p_stream));
  execute format('drop trigger if exists history_of_inserts on %I.%I', sch, tbl || '__handling');
  execute format('drop trigger if exists history_of_updates on %I.%I', sch, tbl || '__handling');
  execute format('create trigger history_of_inserts after insert on %I.%I referencing new table as new_rows
                  for each statement execute function tidings.%I()', sch, tbl || '__handling', tidings.handling_history_function(p_stream));
  execute format('create trigger history_of_updates after update on %I.%I referencing old table as old_rows new table as new_rows
                  for each statement execute function tidings.%I()', sch, tbl || '__handling', tidings.handling_history_function(p_stream));
end;
$create$;
revoke execute on function tidings.create_handling_history_triggers(text) from public;

select tidings.create_handling_history_triggers(name) from tidings.streams;

create or replace function tidings.declare_stream(
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
  -- feed_key alone (read_lag's count past the horizon, readAfter's "waiting"
  -- check): a stream gets (feed_key, position), the gap-safe readers' order,
  -- when something follows it (tidings.follow_stream; declaring a consumer
  -- does it). (The outbox finds a transaction's rows by a range of positions:
  -- tx_id needs no index.)
  execute format('create index on %I.%I (feed_key)', sch, tbl);
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
  -- The history triggers, with the stream's own statement written out (0014).
  perform tidings.create_handling_history_triggers(p_name);
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
  -- A record's changes by position (a record has a few; they are sorted by entry when read).
  execute format('create index on %I.%I (position)', sch, tbl || '__handling_history');
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

