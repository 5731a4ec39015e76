-- The outbox queues jobs once per transaction instead of once per appending
-- statement. A bot's batch appends record by record, and each
-- graphile_worker.add_jobs call (five statements and a NOTIFY) cost about
-- half a millisecond of the server's time: ten per notification, the largest
-- single cost (docs/performance.md). Now an appending statement only notes,
-- in a transaction-local setting, the stream it appended to and its first
-- position (a rollback to a savepoint reverts the note with the rows); a
-- deferred constraint trigger, at commit, reads back this transaction's rows
-- of those streams (tx_id, indexed) and queues every job with one add_jobs
-- call. Still one transaction: a commit queues the jobs of all its records,
-- a rollback none.

create or replace function tidings.tg_queue_handling() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  stream_name text := tg_table_schema || '.' || tg_table_name;
  pending text := coalesce(current_setting('tidings.outbox', true), '');
  first_position bigint;
begin
  -- Only streams someone consumes need a note; and one note per stream.
  if strpos(pending, stream_name || '=') > 0
     or not exists (select 1 from tidings.stream_consumers c where c.stream = stream_name) then
    return null;
  end if;
  select min(position) into first_position from new_rows;
  if first_position is not null then
    perform set_config('tidings.outbox', pending || stream_name || '=' || first_position || ';', true);
  end if;
  return null;
end;
$$;

-- Deferred to commit: the first row's call queues the jobs of every noted
-- stream, the others find the note empty. The note names streams and
-- positions only; what is queued comes from the rows this transaction wrote
-- and the declared consumers, so a hand-written note cannot forge a job.
create function tidings.tg_flush_outbox() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  pending text := nullif(current_setting('tidings.outbox', true), '');
  entry text;
  stream_name text;
  specs graphile_worker.job_spec[] := '{}';
  more graphile_worker.job_spec[];
begin
  if pending is null then
    return null;
  end if;
  perform set_config('tidings.outbox', '', true);
  foreach entry in array string_to_array(rtrim(pending, ';'), ';') loop
    stream_name := split_part(entry, '=', 1);
    continue when not exists (select 1 from tidings.streams s where s.name = stream_name);
    execute format($q$
      select array_agg(row(
               c.task_identifier,
               json_build_object('stream', $1, 'position', n.position, 'id', n.id),
               null,
               case when c.run_at_field is not null then (n.payload->>c.run_at_field)::timestamptz end,
               null, null, null, null
             )::graphile_worker.job_spec order by n.position)
        from %s n
        join tidings.stream_consumers c
          on c.stream = $1
         and (c.record_types is null or n.type = any (c.record_types))
       where n.tx_id = pg_current_xact_id() and n.position >= $2$q$, stream_name)
      into more
      using stream_name, split_part(entry, '=', 2)::bigint;
    specs := specs || coalesce(more, '{}');
  end loop;
  if cardinality(specs) > 0 then
    perform graphile_worker.add_jobs(specs);
  end if;
  return null;
end;
$$;

create or replace function tidings.create_outbox_flush_trigger(p_stream text) returns void
language plpgsql as $$
begin
  execute format('create constraint trigger flush_outbox after insert on %I.%I
                  deferrable initially deferred
                  for each row execute function tidings.tg_flush_outbox()',
                 split_part(p_stream, '.', 1), split_part(p_stream, '.', 2));
end;
$$;
revoke execute on function tidings.create_outbox_flush_trigger(text) from public;

do $$
declare s text;
begin
  for s in select name from tidings.streams loop
    perform tidings.create_outbox_flush_trigger(s);
  end loop;
end;
$$;

-- Streams declared from now on get the flush trigger too.
alter function tidings.declare_stream(text, text, text, text, text) rename to declare_stream_tables;
create function tidings.declare_stream(
  p_name text, p_subsystem text, p_kind text, p_concern text, p_description text
) returns void
language plpgsql as $$
begin
  perform tidings.declare_stream_tables(p_name, p_subsystem, p_kind, p_concern, p_description);
  perform tidings.create_outbox_flush_trigger(p_name);
end;
$$;
revoke execute on function tidings.declare_stream(text, text, text, text, text) from public;
