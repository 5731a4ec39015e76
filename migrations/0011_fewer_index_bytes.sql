-- Fewer bytes per notification (issue 13): indexes nothing reads, and index
-- columns nothing needs. Measured with
-- `PROFILE_NOTIFICATIONS=1000 env -u DATABASE_URL npx tsx bench/profile.ts`
-- (docs/performance.md, "Issue 13: indexes nobody needs").
--
-- 1. notification.client_operations (id, position), from declare_stream: the
--    unique index client_operations_one_per_id (0002) on id answers every
--    lookup by id (trails, existing_position(s), the audit views, erasure),
--    and an id has one client operation, so there is no order by position
--    within an id to keep.
-- 2. (feed_key, position) on the streams no gap-safe reader follows: the
--    feed (GET /v1/events, notification.events), the catch-up bots
--    (projection and webhook dispatcher: notification.events, email.events,
--    slack.events) and the handling sweep (every consumed stream) read in
--    (feed_key, position) order; notification.views and .snapshots,
--    entity.events and .erasures, webhook.endpoints and template.versions
--    are read by id or position only. What else asks for feed_key there
--    (tidings.read_lag's count of records at or past the horizon, every
--    /metrics scrape; readAfter's "waiting" check) compares feed_key alone:
--    an index on (feed_key) serves it, and as the records of one appending
--    transaction share their feed_key (the projection appends a batch of
--    views in one), B-tree deduplication keeps it a fraction of the size.
--    The column and its stamp stay on every stream: tidings.follow_stream
--    gives a stream its (feed_key, position) index back when something
--    starts following it (declaring a consumer does it; a catch-up bot or a
--    feed over a stream nobody consumes calls it in its migration).
-- 3. The handling histories' (position, concern, entry): readers ask for a
--    record's changes by position (and concern), ordered by entry
--    (getHistory, readTrail, audit.handling_changes joined to the records,
--    partition_holds); a record has a few changes (claim and complete, a
--    retry or a re-drive more), so (position) finds them and sorting them
--    costs nothing, and the index keeps one posting list per record.
--    Lookups by entry (erasure's rewrite) use the primary key.
-- 4. (id, position) on the streams that hold several records per tracking id
--    (notification.views, notification.events, email.events, slack.events):
--    (id) instead. Every reader there asks for an id's records (readTrail,
--    existing_position(s), the audit views' probes, erasure) or an id's
--    latest (the projection's and the API's view, a saga's events): a few
--    rows per id, sorted by position when read. With id alone, B-tree
--    deduplication keeps an id's entries in one posting list, where
--    (id, position) stored the tracking id again for each record. Streams
--    where an id may gather many records (entity.events: an entity's
--    versions; template.versions) keep (id, position), and so does every
--    stream declared later.

-- Non-unique, non-partial, plain-column B-tree indexes of a table whose key
-- columns are exactly p_columns (on a partitioned table, its own index: its
-- partitions' follow it).
create function tidings.plain_indexes_on(p_table regclass, p_columns text[]) returns setof regclass
language sql stable set search_path = pg_catalog, pg_temp as $$
  select i.indexrelid::regclass
  from pg_index i
  join pg_class c on c.oid = i.indexrelid
  join pg_am am on am.oid = c.relam and am.amname = 'btree'
  where i.indrelid = p_table and not i.indisunique and i.indexprs is null and i.indpred is null
    and array(select a.attname::text
              from unnest(i.indkey::int2[]) with ordinality k(attnum, n)
              join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
              order by k.n) = p_columns
$$;
revoke execute on function tidings.plain_indexes_on(regclass, text[]) from public;

-- A stream read in gap-safe order from now on: its (feed_key, position)
-- index, in place of (feed_key). Idempotent.
create function tidings.follow_stream(p_stream text) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  rel regclass := tidings.stream_table(p_stream)::regclass;
  idx regclass;
begin
  if not exists (select 1 from tidings.plain_indexes_on(rel, array['feed_key', 'position'])) then
    execute format('create index on %s (feed_key, position)', rel);
  end if;
  for idx in select * from tidings.plain_indexes_on(rel, array['feed_key']) loop
    execute format('drop index %s', idx);
  end loop;
end;
$$;
revoke execute on function tidings.follow_stream(text) from public;
comment on function tidings.follow_stream(text) is
  'Gives a stream the (feed_key, position) index that gap-safe readers (readAfter, the handling sweep) read in. Declaring a consumer calls it; call it for a stream a catch-up bot or feed follows that nobody consumes.';

-- The handling sweep follows every consumed stream.
create function tidings.tg_follow_consumed_stream() returns trigger
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
  perform tidings.follow_stream(new.stream);
  return null;
end;
$$;
revoke execute on function tidings.tg_follow_consumed_stream() from public;
create trigger follow_consumed_stream after insert on tidings.stream_consumers
  for each row execute function tidings.tg_follow_consumed_stream();

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

-- The streams already declared.
do $$
declare
  s record;
  rel regclass;
  idx regclass;
begin
  -- 1.
  for idx in select * from tidings.plain_indexes_on('notification.client_operations'::regclass, array['id', 'position']) loop
    execute format('drop index %s', idx);
  end loop;
  for s in select name from tidings.streams order by name loop
    rel := tidings.stream_table(s.name)::regclass;
    -- 2. Followed: consumed (the sweep, and the feed's notification.events),
    -- or named in a catch-up bot's checkpoint.
    if exists (select 1 from tidings.stream_consumers c where c.stream = s.name)
       or exists (select 1 from tidings.checkpoints k where k.cursors ? s.name) then
      perform tidings.follow_stream(s.name);
    else
      if not exists (select 1 from tidings.plain_indexes_on(rel, array['feed_key'])) then
        execute format('create index on %s (feed_key)', rel);
      end if;
      for idx in select * from tidings.plain_indexes_on(rel, array['feed_key', 'position']) loop
        execute format('drop index %s', idx);
      end loop;
    end if;
    -- 4.
    if s.name in ('notification.views', 'notification.events', 'email.events', 'slack.events') then
      if not exists (select 1 from tidings.plain_indexes_on(rel, array['id'])) then
        execute format('create index on %s (id)', rel);
      end if;
      for idx in select * from tidings.plain_indexes_on(rel, array['id', 'position']) loop
        execute format('drop index %s', idx);
      end loop;
    end if;
    -- 3.
    rel := tidings.stream_table(s.name, '__handling_history')::regclass;
    if not exists (select 1 from tidings.plain_indexes_on(rel, array['position'])) then
      execute format('create index on %s (position)', rel);
    end if;
    for idx in select * from tidings.plain_indexes_on(rel, array['position', 'concern', 'entry']) loop
      execute format('drop index %s', idx);
    end loop;
  end loop;
end;
$$;
