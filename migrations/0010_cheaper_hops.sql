-- Cheaper hops at small batch sizes: the feed horizon without its quadratic join, and the outbox flush on a bounded range.
--
-- The feed horizon (0001) without its quadratic join.
--
-- 0001 joined pg_locks with itself on pid, and PostgreSQL planned that as a
-- nested loop over two function scans: every RowExclusiveLock in the
-- database against every lock held. With 64 jobs in flight (each holding
-- locks on streams, partitions and indexes) one call took 12-16 ms in
-- `PROFILE_RATE=40 npm run bench:profile`, and every catch-up round of the
-- projection and of the webhook dispatcher paid it.
--
-- The same answer, in the same order (the snapshot first, then the locks):
-- - no transaction was in progress when the snapshot was taken: its xmax is
--   the horizon, and the locks need not be read at all;
-- - otherwise the backends appending to these streams first (one scan of
--   pg_locks), then their transaction ids (a second scan, filtered by pid).
create or replace function tidings.feed_horizon(p_streams text[]) returns xid8
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
declare
  snap pg_snapshot := pg_current_snapshot();
  appending xid8;
  appenders integer[];
begin
  if current_setting('transaction_isolation') <> 'read committed' then
    raise exception 'tidings.feed_horizon needs a READ COMMITTED transaction (the read that follows must see a newer snapshot)'
      using errcode = '25000';
  end if;
  if not exists (select 1 from pg_snapshot_xip(snap)) then
    return pg_snapshot_xmax(snap);
  end if;
  -- Backends writing one of these tables, and their transaction ids (each
  -- transaction holds an ExclusiveLock on its own id): pg_locks is the one
  -- place that shows both for every login.
  select array_agg(distinct w.pid) into appenders
  from pg_locks w
  where w.locktype = 'relation' and w.mode = 'RowExclusiveLock'
    and w.database = (select d.oid from pg_database d where d.datname = current_database())
    and w.relation = any (array(select to_regclass(tidings.stream_table(s))::oid from unnest(p_streams) s));
  if appenders is null then
    return pg_snapshot_xmax(snap);
  end if;
  select min(x) into appending
  from pg_snapshot_xip(snap) x
  where (x::text::bigint % 4294967296) in (
    select t.transactionid::text::bigint
    from pg_locks t
    where t.pid = any (appenders) and t.locktype = 'transactionid' and t.mode = 'ExclusiveLock' and t.granted);
  return least(pg_snapshot_xmax(snap), appending);
end;
$$;

-- The outbox's flush at commit (0001) reads back this transaction's rows
-- after the noted position. With only a lower bound, a partition whose
-- statistics lag behind its growth (a new month, a new database: autovacuum
-- analyses at most once a minute) was planned as a sequential scan of the
-- whole partition, on every commit that appended: in `PROFILE_RATE=30 npm run
-- bench:profile` the flush was the costliest function, 8 ms of the server's
-- time per notification. The rows this transaction appended lie between the
-- noted position and the last the stream's sequence has handed out, so the
-- read is a bounded primary-key range, whatever the statistics say.
create or replace function tidings.tg_flush_outbox() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  note text := nullif(current_setting('tidings.outbox', true), '');
  entry text;
  stream_name text;
  queued_upto bigint;
  handed_out bigint;
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
      handed_out := coalesce(pg_sequence_last_value(pg_get_serial_sequence(tidings.stream_table(stream_name), 'position')::regclass), 0);
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
         where n.position > $2 and n.position <= $3 and n.tx_id = pg_current_xact_id()
           -- Handled for the concern in this very transaction (a bot that
           -- follows inline, src/bots/runner.ts): no job left to do.
           and not exists (select 1 from %s h
                           where h.position = n.position and h.concern = c.concern and h.status = 'Completed')$q$,
        tidings.stream_table(stream_name), tidings.stream_table(stream_name, '__handling'))
        into more, newest
        using stream_name, queued_upto, handed_out;
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
