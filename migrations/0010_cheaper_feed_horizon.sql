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
