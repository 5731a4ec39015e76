-- Partitions, retention and archival (docs/retention.md).
--
-- The largest streams and their handling histories are range-partitioned by
-- recorded_at, one partition per month unless said otherwise
-- (tidings.partitioned_tables.partition_interval). Partitions are created
-- ahead by tidings.create_stream_partitions(), which the workers run from
-- graphile-worker's cron (src/maintenance/partitions.ts). Old partitions
-- leave only through tidings.drop_archived_partition(): after the operator's
-- `npm run retention -- --execute` copied them to files, never while a saga
-- or an operator still waits on one of their records, and always with an
-- appended record of the act (tidings.retention_acts, audit.retention).
--
-- What a partitioned stream promises, and how (docs/retention.md, "What
-- uniqueness rests on"):
-- - The primary key is (position, recorded_at): PostgreSQL requires the
--   partition key in every unique index. position stays unique in the stream
--   because it comes only from the stream's identity sequence (generated
--   always; producers may insert the content columns only), as before.
-- - existing_position and the skip/throw append strategies look a record up
--   by (id, position) in every partition, as before; a record archived away
--   is no longer found, which is why only records nobody waits on are
--   archived (their notification has ended: no bot appends for it again).
-- - notification.client_operations is not partitioned: its unique index on
--   id (one client operation per tracking id) cannot include recorded_at
--   without allowing a second operation under an id in another month.
--   Its handling history is partitioned.
--
-- The guard functions of 0001 (tidings.tg_refuse_change, tg_stamp_record,
-- the outbox triggers) are reused as they are: the converted tables get the
-- same triggers calling the same functions, so a later text of one of them
-- (0004's erasure path) applies to partitioned streams too.

-- ---------------------------------------------------------------------------
-- Registry: which tables are partitioned, by what interval.
-- ---------------------------------------------------------------------------
create table tidings.partitioned_tables (
  table_name text primary key,
  stream text not null references tidings.streams (name),
  holds text not null check (holds in ('records', 'handling_history')),
  partition_interval interval not null check (partition_interval > interval '0'),
  partitioned_at timestamptz not null default now(),
  unique (stream, holds)
);
comment on table tidings.partitioned_tables is
  'Stream tables and handling histories range-partitioned by recorded_at, and the length of their partitions (an operator may change it: later partitions follow).';

insert into tidings.settings (name, value, description) values
  ('partitions_ahead', '2',
   'How many partitions after the current one tidings.create_stream_partitions keeps ready (the maintenance job runs it every hour).');

-- The start of the partition that holds p_at: months from the first of a
-- month (UTC), shorter intervals from a Monday (UTC), so boundaries are the
-- same whoever computes them.
create function tidings.partition_floor(p_interval interval, p_at timestamptz) returns timestamptz
language plpgsql immutable set search_path = pg_catalog, pg_temp as $$
begin
  if extract(year from p_interval) * 12 + extract(month from p_interval) > 0 then
    return date_trunc('month', p_at at time zone 'UTC') at time zone 'UTC';
  end if;
  return date_bin(p_interval, p_at, timestamptz '2000-01-03 00:00:00+00');
end;
$$;

-- Every partition of the registered tables with its range (from the
-- partition bound PostgreSQL keeps; the literals carry their offset).
create view tidings.stream_partitions as
select t.table_name, t.stream, t.holds,
       n.nspname || '.' || c.relname as partition,
       c.oid::regclass as partition_oid,
       substring(pg_get_expr(c.relpartbound, c.oid) from $r$FROM \('([^']+)'\)$r$)::timestamptz as range_from,
       substring(pg_get_expr(c.relpartbound, c.oid) from $r$TO \('([^']+)'\)$r$)::timestamptz as range_to
from tidings.partitioned_tables t
join pg_inherits i on i.inhparent = to_regclass(t.table_name)
join pg_class c on c.oid = i.inhrelid
join pg_namespace n on n.oid = c.relnamespace;
comment on view tidings.stream_partitions is
  'Every partition of a partitioned stream or handling history, with its range [range_from, range_to).';

-- Grants of one relation (or column) copied onto another, from its ACL.
create function tidings.copy_grants(p_acl aclitem[], p_owner oid, p_target text, p_column text default null) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  g record;
begin
  for g in select a.grantee, a.privilege_type, a.is_grantable from aclexplode(p_acl) a where a.grantee <> p_owner loop
    execute format('grant %s%s on %s to %s%s', g.privilege_type,
      case when p_column is null then '' else format(' (%I)', p_column) end, p_target,
      case when g.grantee = 0 then 'public' else quote_ident((select rolname from pg_roles where oid = g.grantee)) end,
      case when g.is_grantable then ' with grant option' else '' end);
  end loop;
end;
$$;
revoke execute on function tidings.copy_grants(aclitem[], oid, text, text) from public;

-- A partition gets the parent's append-only guard of its own: statement
-- triggers fire only for the table a statement names, so without these an
-- UPDATE naming the partition (only its owner may try) would meet no guard.
-- Every statement-level UPDATE, DELETE or TRUNCATE trigger of the parent is
-- copied as it is (tidings.tg_refuse_change, or whatever a later migration
-- put in its place); row-level triggers PostgreSQL clones itself, and
-- inserts go through the parent.
create function tidings.guard_partition(p_parent regclass, p_partition regclass) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  t record;
begin
  for t in
    select tg.tgname, pg_get_triggerdef(tg.oid) as def
    from pg_trigger tg
    where tg.tgrelid = p_parent and not tg.tgisinternal
      and tg.tgtype & 1 = 0             -- statement level
      and tg.tgtype & (8 | 16 | 32) <> 0 -- on DELETE, UPDATE or TRUNCATE
      and not exists (select 1 from pg_trigger o where o.tgrelid = p_partition and o.tgname = tg.tgname)
  loop
    execute replace(t.def, ' ON ' || p_parent::text || ' ', ' ON ' || p_partition::text || ' ');
  end loop;
end;
$$;
revoke execute on function tidings.guard_partition(regclass, regclass) from public;

-- One partition [p_from, p_to) of a registered table, named after its start
-- (email.operations_p20261201), owned by the owner, with no grant: every
-- reader and writer goes through the parent.
create function tidings.create_partition(p_table text, p_from timestamptz, p_to timestamptz) returns text
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  sch text := split_part(p_table, '.', 1);
  tbl text := split_part(p_table, '.', 2);
  name text := tbl || '_p' || to_char(p_from at time zone 'UTC', 'YYYYMMDD')
               || case when (p_from at time zone 'UTC')::time <> '00:00' then to_char(p_from at time zone 'UTC', '"T"HH24MISS') else '' end;
begin
  execute format('create table %I.%I partition of %I.%I for values from (%L) to (%L)', sch, name, sch, tbl, p_from, p_to);
  execute format('revoke all on %I.%I from public', sch, name);
  perform tidings.guard_partition(format('%I.%I', sch, tbl)::regclass, format('%I.%I', sch, name)::regclass);
  return sch || '.' || name;
end;
$$;
revoke execute on function tidings.create_partition(text, timestamptz, timestamptz) from public;

-- Keep every registered table's partitions ready: every instant from the
-- start of the current interval to partitions_ahead intervals after it lies
-- in a partition. Walks forward from there: past an existing partition to
-- its end; over a gap (none yet, or one dropped by hand) with a new
-- partition of the table's interval, cut short where the next existing one
-- begins. So an operator may change a table's interval at any time. Run by
-- the maintenance job (as the service: security definer, the owner creates
-- them) and by migrations.
create function tidings.create_stream_partitions()
returns table (table_name text, partition text, range_from timestamptz, range_to timestamptz)
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  t record;
  ahead integer := coalesce((select value::integer from tidings.settings where name = 'partitions_ahead'), 2);
  upto timestamptz;
  at_ timestamptz;
  covering timestamptz;
  next_start timestamptz;
begin
  -- One creator at a time (two workers' cron jobs, or a migration).
  perform pg_advisory_xact_lock(hashtextextended('tidings partitions', 0));
  for t in select p.table_name, p.partition_interval from tidings.partitioned_tables p order by p.table_name loop
    at_ := tidings.partition_floor(t.partition_interval, now());
    upto := at_ + t.partition_interval * (ahead + 1);
    while at_ < upto loop
      select s.range_to into covering from tidings.stream_partitions s
      where s.table_name = t.table_name and s.range_from <= at_ and s.range_to > at_;
      if covering is not null then
        at_ := covering;
        continue;
      end if;
      select min(s.range_from) into next_start from tidings.stream_partitions s
      where s.table_name = t.table_name and s.range_from > at_;
      table_name := t.table_name;
      range_from := at_;
      range_to := least(at_ + t.partition_interval, coalesce(next_start, 'infinity'));
      partition := tidings.create_partition(t.table_name, range_from, range_to);
      return next;
      at_ := range_to;
    end loop;
  end loop;
end;
$$;
revoke execute on function tidings.create_stream_partitions() from public;
grant execute on function tidings.create_stream_partitions() to tidings_service;

-- ---------------------------------------------------------------------------
-- Converting a table to a partitioned one. PostgreSQL cannot partition a
-- table in place: a partitioned table of the same name is created, the rows
-- are copied into it with their positions (triggers are created after the
-- copy, so no record is stamped again or queued again), and the old table is
-- dropped. Everything that made the old table a stream is carried over
-- from the catalog, not from a list written here: check constraints and
-- comments (LIKE), the identity and where its sequence stood, every index
-- (unique ones must include recorded_at), every trigger, every grant
-- (column grants included), and every view that read it (dropped and
-- created again from its own definition, with its options, grants and
-- comments): so what a later migration added (0004's, or another's) comes
-- along too.
-- ---------------------------------------------------------------------------

-- Every view reading these tables, directly or through other views, deepest last.
create function tidings.dependent_views(p_tables oid[]) returns table (view_oid oid, depth integer)
language sql stable set search_path = pg_catalog, pg_temp as $$
  with recursive deps(oid, depth) as (
    select r.ev_class, 1
    from pg_depend d join pg_rewrite r on r.oid = d.objid
    where d.classid = 'pg_rewrite'::regclass and d.refclassid = 'pg_class'::regclass
      and d.refobjid = any (p_tables) and r.ev_class <> d.refobjid
    union
    select r.ev_class, deps.depth + 1
    from deps
    join pg_depend d on d.refobjid = deps.oid and d.classid = 'pg_rewrite'::regclass and d.refclassid = 'pg_class'::regclass
    join pg_rewrite r on r.oid = d.objid
    where r.ev_class <> deps.oid
  )
  select oid, max(depth)::integer from deps group by oid order by 2, 1
$$;
revoke execute on function tidings.dependent_views(oid[]) from public;

-- What it takes to create these views again: definition, options, owner,
-- grants, comments.
create function tidings.capture_views(p_tables oid[]) returns jsonb
language sql stable set search_path = pg_catalog, pg_temp as $$
  select coalesce(jsonb_agg(jsonb_build_object(
    'name', format('%I.%I', n.nspname, c.relname),
    'kind', c.relkind,
    'definition', pg_get_viewdef(c.oid),
    'options', coalesce(array_to_string(c.reloptions, ', '), ''),
    'owner', c.relowner,
    'acl', c.relacl::text,
    'comment', obj_description(c.oid, 'pg_class'),
    'columns', (select coalesce(jsonb_agg(jsonb_build_object('name', a.attname, 'comment', col_description(c.oid, a.attnum), 'acl', a.attacl::text)), '[]')
                from pg_attribute a where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
                  and (col_description(c.oid, a.attnum) is not null or a.attacl is not null))
  ) order by v.depth, v.view_oid), '[]')
  from tidings.dependent_views(p_tables) v
  join pg_class c on c.oid = v.view_oid
  join pg_namespace n on n.oid = c.relnamespace
$$;
revoke execute on function tidings.capture_views(oid[]) from public;

create function tidings.restore_views(p_views jsonb) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  v jsonb;
  col jsonb;
begin
  for v in select value from jsonb_array_elements(p_views) loop
    if v->>'kind' <> 'v' then
      raise exception 'cannot carry % over a partitioning: only plain views are', v->>'name' using errcode = 'TD004';
    end if;
    execute format('create view %s%s as %s', v->>'name',
      case when v->>'options' <> '' then ' with (' || (v->>'options') || ')' else '' end,
      v->>'definition');
    if (v->>'owner')::oid <> (select oid from pg_roles where rolname = current_user) then
      execute format('alter view %s owner to %I', v->>'name', (select rolname from pg_roles where oid = (v->>'owner')::oid));
    end if;
    perform tidings.copy_grants((v->>'acl')::aclitem[], (v->>'owner')::oid, v->>'name');
    if v->>'comment' is not null then
      execute format('comment on view %s is %L', v->>'name', v->>'comment');
    end if;
    for col in select value from jsonb_array_elements(v->'columns') loop
      if col->>'comment' is not null then
        execute format('comment on column %s.%I is %L', v->>'name', col->>'name', col->>'comment');
      end if;
      perform tidings.copy_grants((col->>'acl')::aclitem[], (v->>'owner')::oid, v->>'name', col->>'name');
    end loop;
  end loop;
end;
$$;
revoke execute on function tidings.restore_views(jsonb) from public;

-- Convert one table (a stream's, or its handling history); the caller has
-- dropped the views that read it. Returns the partitions created.
create function tidings.convert_to_partitioned(p_table text, p_stream text, p_holds text, p_interval interval) returns integer
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  sch text := split_part(p_table, '.', 1);
  tbl text := split_part(p_table, '.', 2);
  old_name text := tbl || '__unpartitioned';
  rel regclass := to_regclass(format('%I.%I', sch, tbl));
  old_rel regclass;
  new_rel regclass;
  key_col text;
  pkey_name text;
  seq regclass;
  next_value bigint;
  idx record;
  indexes jsonb;
  triggers text[];
  def text;
  table_acl aclitem[];
  column_acls jsonb;
  col record;
  table_comment text;
  owner_oid oid;
  oldest timestamptz;
  lo timestamptz;
  upto timestamptz;
  ahead integer := coalesce((select value::integer from tidings.settings where name = 'partitions_ahead'), 2);
  made integer := 0;
  p record;
begin
  if rel is null then
    raise exception 'no table %', p_table using errcode = 'TD004';
  end if;
  if (select relkind from pg_class where oid = rel) = 'p' then
    return 0; -- partitioned already
  end if;
  execute format('lock table %s in access exclusive mode', rel);

  -- The key the identity fills: position (streams) or entry (histories).
  select a.attname, con.conname into key_col, pkey_name
  from pg_constraint con join pg_attribute a on a.attrelid = con.conrelid and a.attnum = con.conkey[1]
  where con.conrelid = rel and con.contype = 'p' and cardinality(con.conkey) = 1;
  if key_col is null then
    raise exception 'table % has no one-column primary key to partition by', p_table using errcode = 'TD004';
  end if;
  -- A unique index without recorded_at could not be kept (PostgreSQL checks
  -- uniqueness per partition only): refuse rather than weaken a promise.
  for idx in
    select i.indexrelid::regclass as name from pg_index i
    where i.indrelid = rel and i.indisunique and not i.indisprimary
      and not exists (select 1 from pg_attribute a where a.attrelid = rel and a.attname = 'recorded_at' and a.attnum = any (i.indkey))
  loop
    raise exception 'cannot partition %: unique index % does not include recorded_at, and its promise would hold only within a partition', p_table, idx.name
      using errcode = 'TD004';
  end loop;

  -- What the table is besides its rows: captured before anything is renamed,
  -- so each definition names the table as it will be named again.
  select coalesce(jsonb_agg(jsonb_build_object('def', pg_get_indexdef(i.indexrelid), 'name', format('%I.%I', sch, ic.relname),
                                               'comment', obj_description(i.indexrelid, 'pg_class')) order by ic.relname), '[]')
    into indexes
  from pg_index i join pg_class ic on ic.oid = i.indexrelid
  where i.indrelid = rel and not i.indisprimary;
  select coalesce(array_agg(pg_get_triggerdef(tg.oid) order by tg.tgname), '{}') into triggers
  from pg_trigger tg where tg.tgrelid = rel and not tg.tgisinternal;
  select c.relacl, c.relowner, obj_description(c.oid, 'pg_class') into table_acl, owner_oid, table_comment
  from pg_class c where c.oid = rel;
  select coalesce(jsonb_agg(jsonb_build_object('name', a.attname, 'acl', a.attacl::text)), '[]') into column_acls
  from pg_attribute a where a.attrelid = rel and a.attnum > 0 and not a.attisdropped and a.attacl is not null;
  seq := pg_get_serial_sequence(rel::text, key_col)::regclass;
  if seq is not null then
    execute format('select case when is_called then last_value + 1 else last_value end from %s', seq) into next_value;
  end if;

  -- Free the names: the old table's indexes and constraint, its identity
  -- (the new table has its own, continuing where this one stood).
  for idx in select value->>'name' as name from jsonb_array_elements(indexes) loop
    execute format('drop index %s', idx.name);
  end loop;
  execute format('alter table %s drop constraint %I', rel, pkey_name);
  if seq is not null then
    execute format('alter table %s alter column %I drop identity', rel, key_col);
  end if;
  execute format('alter table %s rename to %I', rel, old_name);
  old_rel := format('%I.%I', sch, old_name)::regclass;

  execute format('create table %I.%I (like %s including defaults including constraints including comments including storage including compression)
                  partition by range (recorded_at)', sch, tbl, old_rel);
  new_rel := format('%I.%I', sch, tbl)::regclass;
  if next_value is not null then
    execute format('alter table %s alter column %I add generated always as identity (start with %s)', new_rel, key_col, next_value);
  end if;
  execute format('alter table %s add primary key (%I, recorded_at)', new_rel, key_col);
  if table_comment is not null then
    execute format('comment on table %s is %L', new_rel, table_comment);
  end if;

  -- Partitions from the oldest row's interval to partitions_ahead after the current one.
  insert into tidings.partitioned_tables (table_name, stream, holds, partition_interval)
  values (p_table, p_stream, p_holds, p_interval);
  execute format('select min(recorded_at) from %s', old_rel) into oldest;
  lo := tidings.partition_floor(p_interval, least(coalesce(oldest, now()), now()));
  upto := tidings.partition_floor(p_interval, now()) + p_interval * (ahead + 1);
  while lo < upto loop
    perform tidings.create_partition(p_table, lo, lo + p_interval);
    made := made + 1;
    lo := lo + p_interval;
  end loop;

  -- The rows, as they are (positions, times, writers, feed keys).
  execute format('insert into %s overriding system value select * from %s', new_rel, old_rel);

  for idx in select value->>'def' as def, value->>'name' as name, value->>'comment' as comment from jsonb_array_elements(indexes) loop
    execute idx.def;
    if idx.comment is not null then
      execute format('comment on index %s is %L', idx.name, idx.comment);
    end if;
  end loop;
  foreach def in array triggers loop
    execute def;
  end loop;
  for p in select s.partition_oid from tidings.stream_partitions s where s.table_name = p_table loop
    perform tidings.guard_partition(new_rel, p.partition_oid);
  end loop;
  perform tidings.copy_grants(table_acl, owner_oid, new_rel::text);
  for col in select value->>'name' as name, value->>'acl' as acl from jsonb_array_elements(column_acls) loop
    perform tidings.copy_grants(col.acl::aclitem[], owner_oid, new_rel::text, col.name);
  end loop;
  if owner_oid <> (select oid from pg_roles where rolname = current_user) then
    execute format('alter table %s owner to %I', new_rel, (select rolname from pg_roles where oid = owner_oid));
  end if;

  execute format('drop table %s', old_rel);
  execute format('analyze %s', new_rel);
  return made;
end;
$$;
revoke execute on function tidings.convert_to_partitioned(text, text, text, interval) from public;

-- Partition a stream (p_records) and its handling history by recorded_at,
-- keeping every row, position, trigger, index, grant and view. Run by a
-- migration (as the owner). A stream declared later is partitioned by
-- calling this after declaring it (cheap while it is empty).
create function tidings.partition_stream(p_stream text, p_interval interval default '1 month', p_records boolean default true)
returns integer
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  tables text[] := case when p_records then array[p_stream] else '{}' end || array[p_stream || '__handling_history'];
  views jsonb;
  v jsonb;
  made integer := 0;
  t text;
begin
  if not tidings.stream_exists(p_stream) then
    raise exception 'unknown stream "%"', p_stream using errcode = 'TD004';
  end if;
  perform tidings.stream_table(p_stream); -- refuses a malformed name
  views := tidings.capture_views(array(select to_regclass(x)::oid from unnest(tables) x));
  for v in select value from jsonb_array_elements(views) order by (value->>'name') loop
    execute format('drop view if exists %s cascade', v->>'name');
  end loop;
  foreach t in array tables loop
    made := made + tidings.convert_to_partitioned(t, p_stream,
      case when t = p_stream then 'records' else 'handling_history' end, p_interval);
  end loop;
  perform tidings.restore_views(views);
  return made;
end;
$$;
revoke execute on function tidings.partition_stream(text, interval, boolean) from public;

-- ---------------------------------------------------------------------------
-- Retention. A partition whose range ended before the cutoff may be
-- archived and dropped unless some record in it is still waited on:
-- - a record whose handling, for any concern, is not settled for good
--   (anything but Completed, ArchivedAfterFailure, DisabledForRecord:
--   Failed waits for an operator), or that a consumer must still handle
--   (no handling row yet);
-- - a record of a notification that has not ended: its saga or an operator
--   may still need it (notification.open_notifications).
-- The same holds for a handling history partition's entries. The drop, the
-- removal of the dropped records' handling rows and the record of the act
-- are one transaction.
-- ---------------------------------------------------------------------------

-- Notifications among these ids that have not ended: no outcome yet, or an
-- outcome a later resend reopened (the latest event that moves a
-- notification on, as audit.notifications reads it, is not an outcome), or
-- a saga of it that saga_bot has not settled (its deadline job still due).
create function notification.open_notifications(p_ids text[]) returns text[]
language sql stable security definer set search_path = pg_catalog, pg_temp as $$
  select coalesce(array_agg(c.id order by c.id), '{}')
  from notification.client_operations c
  where c.id = any (p_ids)
    and (coalesce((
          select e.type in ('SentOnAllPreparedChannelsEvent', 'SentOnSomePreparedChannelsEvent', 'CouldNotSendOnAnyPreparedChannelEvent',
                            'CouldNotGetOrUseAudienceEvent', 'AudienceOptedOutOfAllChannelsEvent', 'CouldNotPrepareToSendOnAnyChannelEvent')
          from notification.events e
          where e.id = c.id and e.type not in ('FailedNotificationSentToInternalTeamEvent', 'NotificationDelayedEvent')
            and not (e.type = 'ResendRequestedEvent' and e.payload->'operations' = '[]'::jsonb)
          order by e.position desc limit 1), false) = false
      or exists (
          select 1 from notification.sagas s
          left join notification.sagas__handling h on h.position = s.position and h.concern = 'saga_bot'
          where s.id = c.id and (h.status is null or h.status not in ('Completed', 'ArchivedAfterFailure', 'DisabledForRecord'))))
$$;
revoke execute on function notification.open_notifications(text[]) from public;

-- The records of one partition still waited on (at most p_limit, and how many in all).
create function tidings.partition_holds(p_partition regclass, p_limit integer default 20)
returns table (held bigint, records jsonb)
language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
declare
  t record;
  waiting jsonb;
begin
  select s.* into t from tidings.stream_partitions s where s.partition_oid = p_partition;
  if not found then
    raise exception '% is not a partition of a partitioned stream', p_partition using errcode = 'TD004';
  end if;
  -- Positions of records in this partition (records) or that its entries are about (histories).
  execute format($q$
    with here as (
      select %1$s as position from %2$s p
    ), records as (
      select r.position, r.id, r.type from %3$s r where r.position in (select h.position from here h)
    ), unsettled as (
      select r.position, r.id, h.concern, h.status::text as status, 'handling ' || h.status::text || ' for ' || h.concern as why
      from records r join %4$s h on h.position = r.position
      where h.status not in ('Completed', 'ArchivedAfterFailure', 'DisabledForRecord')
      union all
      select r.position, r.id, c.concern, 'AvailableByDefault', 'not handled yet by ' || c.concern
      from records r join tidings.stream_consumers c on c.stream = $1 and (c.record_types is null or r.type = any (c.record_types))
      where not exists (select 1 from %4$s h where h.position = r.position and h.concern = c.concern)
    ), unended as (
      select r.position, r.id, null::text as concern, null::text as status, 'notification ' || r.id || ' has not ended' as why
      from records r where r.id = any (notification.open_notifications(array(select distinct r2.id from records r2)))
    ), held as (
      select * from unsettled union all select * from unended
    )
    select (select count(*) from held),
           (select coalesce(jsonb_agg(jsonb_build_object('stream', $1, 'position', x.position, 'id', x.id, 'concern', x.concern, 'why', x.why)
                                      order by x.position), '[]')
            from (select * from held order by position limit $2) x)$q$,
    case when t.holds = 'records' then 'p.position' else 'distinct p.position' end,
    p_partition, tidings.stream_table(t.stream), tidings.stream_table(t.stream, '__handling'))
    into held, records using t.stream, p_limit;
  return next;
end;
$$;
revoke execute on function tidings.partition_holds(regclass, integer) from public;

-- Partitions that have ended before the cutoff, oldest first, with their
-- rows and the records that hold them back. The cutoff may not be in the future.
create function tidings.retention_candidates(p_cutoff timestamptz)
returns table (table_name text, stream text, holds text, partition text, range_from timestamptz, range_to timestamptz,
               row_count bigint, handling_rows bigint, held bigint, held_records jsonb)
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  s record;
begin
  if p_cutoff > now() then
    raise exception 'the cutoff % is in the future', p_cutoff using errcode = '22023';
  end if;
  for s in select * from tidings.stream_partitions sp where sp.range_to <= p_cutoff order by sp.range_from, sp.table_name loop
    table_name := s.table_name;
    stream := s.stream;
    holds := s.holds;
    partition := s.partition;
    range_from := s.range_from;
    range_to := s.range_to;
    execute format('select count(*) from %s', s.partition_oid) into row_count;
    handling_rows := null;
    if s.holds = 'records' then
      execute format('select count(*) from %s h where h.position in (select p.position from %s p)',
        tidings.stream_table(s.stream, '__handling'), s.partition_oid) into handling_rows;
    end if;
    select h.held, h.records into held, held_records from tidings.partition_holds(s.partition_oid) h;
    return next;
  end loop;
end;
$$;
revoke execute on function tidings.retention_candidates(timestamptz) from public;

-- The queries whose output is a partition's archive (COPY (...) TO STDOUT),
-- read through the parent (pruned to the one partition), in key order; for
-- a stream's partition, also its records' handling rows.
create function tidings.archive_queries(p_partition text)
returns table (records_query text, handling_query text)
language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
declare
  s record;
begin
  select * into s from tidings.stream_partitions sp where sp.partition = p_partition;
  if not found then
    raise exception '"%" is not a partition of a partitioned stream', p_partition using errcode = 'TD004';
  end if;
  records_query := format('select * from %s where recorded_at >= %L and recorded_at < %L order by %I',
    s.table_name::regclass, s.range_from, s.range_to, case when s.holds = 'records' then 'position' else 'entry' end);
  handling_query := case when s.holds = 'records' then format(
    'select h.* from %s h where h.position in (select p.position from %s p where p.recorded_at >= %L and p.recorded_at < %L) order by h.position, h.concern',
    tidings.stream_table(s.stream, '__handling'), s.table_name::regclass, s.range_from, s.range_to) end;
  return next;
end;
$$;
revoke execute on function tidings.archive_queries(text) from public;

-- Every act of retention, appended: who, when, why, which partition, the
-- files it went to and how many rows; expired idempotency keys too.
create table tidings.retention_acts (
  entry bigint generated always as identity primary key,
  run_id uuid not null,
  kind text not null check (kind in ('partition', 'idempotency_keys')),
  at timestamptz not null default now(),
  by text not null check (btrim(by) <> ''),
  reason text not null check (btrim(reason) <> ''),
  cutoff timestamptz not null,
  table_name text,
  partition text,
  range_from timestamptz,
  range_to timestamptz,
  row_count bigint not null,
  file text,
  sha256 text,
  handling_rows bigint,
  handling_file text,
  handling_sha256 text,
  recorded_by text not null
);
comment on table tidings.retention_acts is
  'Append-only record of every partition archived and dropped, and of every expiry of idempotency keys (npm run retention).';
create trigger refuse_update_delete before update or delete on tidings.retention_acts
  for each statement execute function tidings.tg_refuse_change();
create trigger refuse_truncate before truncate on tidings.retention_acts
  for each statement execute function tidings.tg_refuse_change();
revoke all on tidings.retention_acts from public;

-- Drop one archived partition. p_archive: {"file", "rows", "sha256"} and for
-- a stream's partition {"handlingFile", "handlingRows", "handlingSha256"}.
-- The counts must be the partition's own (so what was archived is what is
-- dropped), its range must have ended before the cutoff, and nothing in it
-- may be waited on, checked again here under lock.
create function tidings.drop_archived_partition(
  p_run_id uuid, p_partition text, p_cutoff timestamptz, p_by text, p_reason text, p_archive jsonb
) returns bigint
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  s record;
  handling regclass;
  n bigint;
  hn bigint;
  holds_now record;
  entry_id bigint;
begin
  if coalesce(btrim(p_reason), '') = '' or coalesce(btrim(p_by), '') = '' then
    raise exception 'dropping a partition needs who and why' using errcode = '22023';
  end if;
  if p_cutoff > now() then
    raise exception 'the cutoff % is in the future', p_cutoff using errcode = '22023';
  end if;
  select * into s from tidings.stream_partitions sp where sp.partition = p_partition;
  if not found then
    raise exception '"%" is not a partition of a partitioned stream', p_partition using errcode = 'TD004';
  end if;
  if s.range_to > p_cutoff then
    raise exception 'partition % ends at %, after the cutoff %', p_partition, s.range_to, p_cutoff using errcode = '22023';
  end if;
  -- Appends, readers of the parent and handling changes wait from here to
  -- the commit (the caller sets a lock_timeout).
  execute format('lock table %s in access exclusive mode', s.table_name::regclass);
  if s.holds = 'records' then
    handling := tidings.stream_table(s.stream, '__handling')::regclass;
    execute format('lock table %s in share row exclusive mode', handling);
  end if;
  select * into holds_now from tidings.partition_holds(s.partition_oid);
  if holds_now.held > 0 then
    raise exception 'partition % holds % record(s) still waited on: %', p_partition, holds_now.held, holds_now.records
      using errcode = 'TD007';
  end if;
  execute format('select count(*) from %s', s.partition_oid) into n;
  if n is distinct from (p_archive->>'rows')::bigint then
    raise exception 'partition % has % rows, the archive % holds %', p_partition, n, p_archive->>'file', p_archive->>'rows'
      using errcode = 'TD007';
  end if;
  if s.holds = 'records' then
    execute format('select count(*) from %s h where h.position in (select p.position from %s p)', handling, s.partition_oid) into hn;
    if hn is distinct from (p_archive->>'handlingRows')::bigint then
      raise exception 'partition % has % handling rows, the archive % holds %', p_partition, hn, p_archive->>'handlingFile', p_archive->>'handlingRows'
        using errcode = 'TD007';
    end if;
    -- The handling rows of records that no longer exist. Only here: every
    -- other DELETE of a handling row is refused (no grant, and the trigger).
    execute format('alter table %s disable trigger refuse_delete', handling);
    execute format('delete from %s h where h.position in (select p.position from %s p)', handling, s.partition_oid);
    execute format('alter table %s enable trigger refuse_delete', handling);
  end if;
  execute format('alter table %s detach partition %s', s.table_name::regclass, s.partition_oid);
  execute format('drop table %s', s.partition_oid);
  insert into tidings.retention_acts (run_id, kind, by, reason, cutoff, table_name, partition, range_from, range_to,
                                      row_count, file, sha256, handling_rows, handling_file, handling_sha256, recorded_by)
  values (p_run_id, 'partition', p_by, p_reason, p_cutoff, s.table_name, p_partition, s.range_from, s.range_to,
          n, p_archive->>'file', p_archive->>'sha256', hn, p_archive->>'handlingFile', p_archive->>'handlingSha256',
          tidings.session_actor())
  returning entry into entry_id;
  return entry_id;
end;
$$;
revoke execute on function tidings.drop_archived_partition(uuid, text, timestamptz, text, text, jsonb) from public;

-- Idempotency keys follow the same retention: a key used before the cutoff
-- is forgotten (the same key again then makes a new notification), unless
-- its notification has not ended. Returns how many were removed, recorded.
create function api.expire_idempotency_keys(p_run_id uuid, p_cutoff timestamptz, p_by text, p_reason text, p_dry_run boolean default false)
returns bigint
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  n bigint;
begin
  if p_cutoff > now() then
    raise exception 'the cutoff % is in the future', p_cutoff using errcode = '22023';
  end if;
  if p_dry_run then
    select count(*) into n from api.idempotency_keys k
    where k.created_at < p_cutoff and not k.tracking_id = any (notification.open_notifications(array[k.tracking_id]));
    return n;
  end if;
  if coalesce(btrim(p_reason), '') = '' or coalesce(btrim(p_by), '') = '' then
    raise exception 'expiring idempotency keys needs who and why' using errcode = '22023';
  end if;
  with gone as (
    delete from api.idempotency_keys k
    where k.created_at < p_cutoff and not k.tracking_id = any (notification.open_notifications(array[k.tracking_id]))
    returning 1)
  select count(*) into n from gone;
  insert into tidings.retention_acts (run_id, kind, by, reason, cutoff, table_name, row_count, recorded_by)
  values (p_run_id, 'idempotency_keys', p_by, p_reason, p_cutoff, 'api.idempotency_keys', n, tidings.session_actor());
  return n;
end;
$$;
revoke execute on function api.expire_idempotency_keys(uuid, timestamptz, text, text, boolean) from public;

-- Retention is the operator's act (npm run retention acts as tidings_operator).
grant execute on function tidings.retention_candidates(timestamptz), tidings.archive_queries(text),
  tidings.drop_archived_partition(uuid, text, timestamptz, text, text, jsonb) to tidings_operator;
grant execute on function api.expire_idempotency_keys(uuid, timestamptz, text, text, boolean) to tidings_operator;
grant usage on schema api to tidings_operator;
grant select on tidings.retention_acts, tidings.partitioned_tables, tidings.stream_partitions to tidings_operator;
grant select on tidings.partitioned_tables, tidings.stream_partitions to tidings_service;

-- The audit's view of it.
create view audit.retention with (security_invoker = false) as
select r.entry, r.run_id, r.kind, r.at, r.by, r.reason, r.cutoff, r.table_name, r.partition, r.range_from, r.range_to,
       r.row_count, r.file, r.sha256, r.handling_rows, r.handling_file, r.handling_sha256, r.recorded_by as database_role
from tidings.retention_acts r;
comment on view audit.retention is
  'Every partition archived and dropped by retention, and every expiry of idempotency keys: who, when, why, which, the files and row counts.';
grant select on audit.retention to tidings_auditor;
comment on column audit.retention.entry is 'Order of the acts.';
comment on column audit.retention.run_id is 'The run of npm run retention the act belongs to (one run drops several partitions).';
comment on column audit.retention.kind is 'partition (archived and dropped) or idempotency_keys (expired).';
comment on column audit.retention.at is 'When (the dropping transaction''s time).';
comment on column audit.retention.by is 'Who, as the operator named themself (--actor).';
comment on column audit.retention.reason is 'Why, as the operator wrote it (--reason).';
comment on column audit.retention.cutoff is 'Partitions that ended before this were due: now minus the retention period.';
comment on column audit.retention.table_name is 'The partitioned table (a stream, or a handling history), or api.idempotency_keys.';
comment on column audit.retention.partition is 'The partition dropped (schema.table_pYYYYMMDD); null for idempotency keys.';
comment on column audit.retention.range_from is 'Start of the partition''s range of recorded_at (inclusive).';
comment on column audit.retention.range_to is 'End of the partition''s range of recorded_at (exclusive).';
comment on column audit.retention.row_count is 'Rows dropped (each in the archive file), or idempotency keys expired.';
comment on column audit.retention.file is 'The archive file of the rows (gzip''d CSV with a header line), as named in the run''s folder.';
comment on column audit.retention.sha256 is 'SHA-256 of the archive file as written (sha256sum of the .csv.gz).';
comment on column audit.retention.handling_rows is 'Handling rows of the dropped records, archived and removed with them (a stream''s partition).';
comment on column audit.retention.handling_file is 'The archive file of those handling rows.';
comment on column audit.retention.handling_sha256 is 'SHA-256 of the handling archive file.';
comment on column audit.retention.database_role is 'The database session user and the role it acted as.';

-- ---------------------------------------------------------------------------
-- The streams partitioned. Measured (docs/retention.md): these hold most of
-- the bytes stored per notification. client_operations keeps its unique id
-- (above): only its handling history is partitioned. entity.events is the
-- entities' current state (never expires); internal_operations is small.
-- ---------------------------------------------------------------------------
select tidings.partition_stream('notification.events');
select tidings.partition_stream('notification.views');
select tidings.partition_stream('notification.snapshots');
select tidings.partition_stream('notification.sagas');
select tidings.partition_stream('email.operations');
select tidings.partition_stream('email.events');
select tidings.partition_stream('slack.operations');
select tidings.partition_stream('slack.events');
select tidings.partition_stream('notification.client_operations', p_records => false);
