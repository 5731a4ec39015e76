-- Handling rows that are done leave the (concern, status, updated_at) index.
--
-- Every handling table indexed (concern, status, updated_at) for all its
-- rows (0001), to find what waits, runs or failed, by concern and age: the
-- re-drive tools' "stuck" and failure lists, the inline claims' hand-over
-- (status Running older than the lease), the console. None of them looks
-- for Completed rows through it, and Completed is where nearly every row
-- ends; most (the saga's handling of channel events, the saga records) are
-- written Completed at once. The index now holds the other rows only: a row
-- written Completed adds no entry, and one completed later leaves it at the
-- next vacuum (`npm run bench:profile`, bytes by table; docs/performance.md).
--
-- A query for Completed rows by concern alone (redrive-completed with no
-- other filter) reads the table instead, as it would have read most of the
-- index. On a large database the index is rebuilt in this migration's
-- transaction, holding off writes to that table meanwhile.
--
-- declare_stream (0014's text, the index line changed) makes new streams' so.

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
  execute format('create index on %I.%I (concern, status, updated_at) where status <> ''Completed''', sch, tbl || '__handling');
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

do $$
declare
  s record;
  handling regclass;
  old_index regclass;
begin
  for s in select name from tidings.streams order by name loop
    handling := tidings.stream_table(s.name, '__handling')::regclass;
    for old_index in
      select i.indexrelid::regclass from pg_index i
      where i.indrelid = handling and i.indpred is null
        and pg_get_indexdef(i.indexrelid) like '%(concern, status, updated_at)'
    loop
      execute format('drop index %s', old_index);
    end loop;
    execute format('create index on %s (concern, status, updated_at) where status <> ''Completed''', handling);
  end loop;
end;
$$;
