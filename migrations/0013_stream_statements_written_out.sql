-- The statements that append to a stream and that read back, at commit,
-- what a transaction appended (the outbox's flush) are written out per
-- stream, so PostgreSQL keeps their plans.
--
-- tidings.append (0001) and the flush (0001) named the stream's table
-- in dynamic SQL (`execute format(...)`), which PostgreSQL parses and plans
-- again on every call. At one notification per transaction (`PROFILE_RATE=40
-- npm run bench:profile`) they were the two costliest functions: the flush
-- 7.9 ms and tidings.append 7.5 ms of the server's time per notification.
--
-- Each stream now has two functions of its own with the statement written
-- out: PL/pgSQL keeps the plan of a static statement for the session.
-- - tidings.stream_write__<schema>__<table>_<hash>(records, ordinals): the insert
--   of tidings.append (security invoker, like tidings.append: the insert runs
--   with the caller's privileges, so only a declared producer can append);
-- - tidings.stream_locate__<schema>__<table>_<hash>(ids, types): the lookup of
--   tidings.existing_positions (security definer like it; nobody else may
--   call it, as existing_positions checks who asks first);
-- - tidings.outbox_read__<schema>__<table>_<hash>(after): the flush's read-back of
--   this transaction's records and their consumers' job specs (security
--   definer, like the flush; nobody else may call it).
-- tidings.append, existing_positions and the flush call them: the same rows,
-- positions, job specs and errors, but for the flush's read, which now ends
-- at the last position handed out (below). create_outbox_triggers, which declare_stream calls for
-- every new stream, creates them too; the streams declared so far get theirs
-- here.

-- The name of a stream's own function: the prefix, the stream's schema and
-- table (the dot as "__"), cut so the whole stays within PostgreSQL's 63
-- bytes, and the first 8 hex digits of the stream name's md5, so two streams
-- never share a function (names may contain "__", and a long one would be
-- cut to the same prefix).
create function tidings.stream_function_name(p_prefix text, p_stream text) returns text
language sql immutable set search_path = pg_catalog, pg_temp as $$
  select left(p_prefix || replace(p_stream, '.', '__'), 54) || '_' || left(md5(p_stream), 8)
$$;

create function tidings.outbox_reader(p_stream text) returns text
language sql immutable set search_path = pg_catalog, pg_temp as $$
  select tidings.stream_function_name('outbox_read__', p_stream)
$$;

create function tidings.create_outbox_reader(p_stream text) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $create$
begin
  execute format($f$
    create or replace function tidings.%1$I(p_after bigint)
    returns table (specs graphile_worker.job_spec[], newest bigint)
    language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $body$
    #variable_conflict use_column
    declare
      -- The rows this transaction appended lie between the noted position
      -- and the last the stream's sequence has handed out: a bounded
      -- primary-key range. With only the lower bound (0001), a partition
      -- whose statistics lagged its growth (a new month, a new database:
      -- autovacuum analyses at most once a minute) was planned as a scan of
      -- the whole partition on every appending commit (2.9 ms at 5,000 rows
      -- against 0.17 ms with the upper bound, EXPLAIN ANALYZE).
      handed_out bigint := coalesce(pg_sequence_last_value(pg_get_serial_sequence(%2$L, 'position')::regclass), 0);
    begin
      return query
      select array_agg(row(
               c.task_identifier,
               json_build_object('stream', %3$L, 'position', n.position, 'id', n.id),
               null,
               case when c.run_at_field is not null then (n.payload->>c.run_at_field)::timestamptz end,
               null, c.task_identifier || ':' || n.position, null, null
             )::graphile_worker.job_spec order by n.position),
             max(n.position)
        from %4$s n
        join tidings.stream_consumers c
          on c.stream = %3$L
         and (c.record_types is null or n.type = any (c.record_types))
       where n.position > p_after and n.position <= handed_out and n.tx_id = pg_current_xact_id()
         -- Handled for the concern in this very transaction (a bot that
         -- follows inline, src/bots/runner.ts): no job left to do.
         and not exists (select 1 from %5$s h
                         where h.position = n.position and h.concern = c.concern and h.status = 'Completed');
    end;
    $body$
    $f$,
    tidings.outbox_reader(p_stream), tidings.stream_table(p_stream), p_stream,
    tidings.stream_table(p_stream), tidings.stream_table(p_stream, '__handling'));
  execute format('revoke execute on function tidings.%I(bigint) from public', tidings.outbox_reader(p_stream));
end;
$create$;
revoke execute on function tidings.create_outbox_reader(text) from public;

create function tidings.stream_writer(p_stream text) returns text
language sql immutable set search_path = pg_catalog, pg_temp as $$
  select tidings.stream_function_name('stream_write__', p_stream)
$$;

-- Inserts the records of p_records at these ordinals (all when null), in
-- input order: identity values follow the ORDER BY, so position order is
-- input order. Returns each one's ordinal and position.
create function tidings.create_stream_writer(p_stream text) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $create$
begin
  execute format($f$
    create or replace function tidings.%1$I(p_records jsonb, p_ordinals integer[])
    returns table (ordinal integer, "position" bigint)
    language plpgsql set search_path = pg_catalog, pg_temp as $body$
    #variable_conflict use_column
    begin
      return query
      with input as (
        select r.ordinality::integer as ord, r.value as v
        from jsonb_array_elements(p_records) with ordinality r
        where p_ordinals is null or r.ordinality::integer = any (p_ordinals)
      ), inserted as (
        insert into %2$s (id, type, payload, tags, caused_by_stream, caused_by_position)
        select v->>'id', v->>'type', v->'payload', coalesce(v->'tags', '{}'),
               v->'causedBy'->>'stream', (v->'causedBy'->>'position')::bigint
        from input order by ord
        returning position
      )
      select w.ord, i.position
      from (select ord, row_number() over (order by ord) as n from input) w
      join (select position, row_number() over (order by position) as n from inserted) i using (n);
    end;
    $body$
    $f$,
    tidings.stream_writer(p_stream), tidings.stream_table(p_stream));
end;
$create$;
revoke execute on function tidings.create_stream_writer(text) from public;

create function tidings.stream_locator(p_stream text) returns text
language sql immutable set search_path = pg_catalog, pg_temp as $$
  select tidings.stream_function_name('stream_locate__', p_stream)
$$;

-- tidings.existing_positions's lookup: the latest position of each id (and
-- type, when given), one answer per input pair in input order. Security
-- definer like existing_positions, which alone may call it (it checks who
-- asks first).
create function tidings.create_stream_locator(p_stream text) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $create$
begin
  execute format($f$
    create or replace function tidings.%1$I(p_ids text[], p_types text[])
    returns table (ordinal integer, "position" bigint)
    language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $body$
    #variable_conflict use_column
    begin
      return query
      select k.ordinal::integer, (select max(s.position) from %2$s s where s.id = k.id and (k.type is null or s.type = k.type))
      from unnest(p_ids, p_types) with ordinality as k(id, type, ordinal)
      order by k.ordinal;
    end;
    $body$
    $f$,
    tidings.stream_locator(p_stream), tidings.stream_table(p_stream));
  execute format('revoke execute on function tidings.%I(text[], text[]) from public', tidings.stream_locator(p_stream));
end;
$create$;
revoke execute on function tidings.create_stream_locator(text) from public;

create or replace function tidings.create_outbox_triggers(p_stream text) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
  execute format('create trigger note_outbox before insert on %I.%I
                  for each statement execute function tidings.tg_note_outbox()',
                 split_part(p_stream, '.', 1), split_part(p_stream, '.', 2));
  execute format('create constraint trigger flush_outbox after insert on %I.%I
                  deferrable initially deferred
                  for each row execute function tidings.tg_flush_outbox()',
                 split_part(p_stream, '.', 1), split_part(p_stream, '.', 2));
  -- The stream's statements written out (0013).
  perform tidings.create_stream_writer(p_stream);
  perform tidings.create_stream_locator(p_stream);
  perform tidings.create_outbox_reader(p_stream);
end;
$$;

select tidings.create_stream_writer(name), tidings.create_stream_locator(name), tidings.create_outbox_reader(name) from tidings.streams;

create or replace function tidings.tg_flush_outbox() returns trigger
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
    -- Only declared streams: the note is a setting anyone may write, and it
    -- names the reader to call.
    if exists (select 1 from tidings.streams s where s.name = stream_name) then
      execute format('select r.specs, r.newest from tidings.%I($1) r', tidings.outbox_reader(stream_name))
        into more, newest
        using queued_upto;
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

-- tidings.append (0001), its inserts through the stream's writer.
create or replace function tidings.append(p_stream text, p_records jsonb, p_strategy text default 'write_always')
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
    -- One INSERT for the whole batch (the stream's writer): one trigger call, one add_jobs, one NOTIFY.
    return query execute format(
      'select w.ordinal, w.position, $1->(w.ordinal - 1)->>''id'', $1->(w.ordinal - 1)->>''type'', true
       from tidings.%I($1, null) w order by w.ordinal', tidings.stream_writer(p_stream))
      using p_records;
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

  -- Written: the first record of each key that does not exist yet, in input order (the stream's writer).
  execute format('select array_agg(w.ordinal order by w.ordinal), array_agg(w.position order by w.ordinal) from tidings.%I($1, $2) w',
                 tidings.stream_writer(p_stream))
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

-- tidings.existing_positions (0001), its lookup through the stream's locator.
create or replace function tidings.existing_positions(p_stream text, p_ids text[], p_types text[] default null)
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
  return query execute format('select l.ordinal, l.position from tidings.%I($1, $2) l order by l.ordinal', tidings.stream_locator(p_stream))
    using p_ids, coalesce(p_types, array_fill(null::text, array[cardinality(p_ids)]));
end;
$$;
