-- The outbox's flush at commit (0001, 0010) reads back, per stream it
-- noted, the records this transaction appended and their consumers' job
-- specs. It did so with dynamic SQL (`execute format(...)` naming the
-- stream's table), which PostgreSQL parses and plans again on every call:
-- at one notification per transaction (`PROFILE_RATE=40 npm run
-- bench:profile`) the flush was the costliest function, 7.9 ms of the
-- server's time per notification over 13 calls.
--
-- Each stream now has its own reader, a function with the statement written
-- out (tidings.outbox_read__<schema>__<table>): PL/pgSQL keeps the plan of a
-- static statement for the session. The flush calls the stream's reader; the
-- same rows, the same job specs, the same bounded range (0010).
-- create_outbox_triggers, which declare_stream calls for every new stream,
-- creates the reader too; the streams declared so far get theirs here.

create function tidings.outbox_reader(p_stream text) returns text
language sql immutable set search_path = pg_catalog, pg_temp as $$
  select 'outbox_read__' || replace(p_stream, '.', '__')
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
      -- and the last the stream's sequence has handed out.
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
  perform tidings.create_outbox_reader(p_stream);
end;
$$;

select tidings.create_outbox_reader(name) from tidings.streams;

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
