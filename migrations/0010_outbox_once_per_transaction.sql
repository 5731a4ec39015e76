-- The outbox queues jobs once per transaction instead of once per appending
-- statement. A bot's batch appends record by record, and each
-- graphile_worker.add_jobs call (five statements and a NOTIFY) cost about
-- half a millisecond of the server's time: ten per notification, the largest
-- single cost (docs/performance.md).
--
-- A transaction-local setting, tidings.outbox, keeps the note: a flag
-- ('D' when some append has not been queued yet, 'C' when all have) and, per
-- stream this transaction appended to, the last position already queued:
-- 'D;notification.events=0;email.operations=0'. A BEFORE statement trigger
-- adds the stream and sets the flag; an AFTER row constraint trigger,
-- deferred to commit, reads back this transaction's rows after each noted
-- position (tx_id, indexed), queues them all with one add_jobs call, moves
-- the positions on and clears the flag (its other calls then return at
-- once). Under SET CONSTRAINTS ALL IMMEDIATE the same trigger runs at the end
-- of each statement and queues that statement's rows. A rollback, or a
-- rollback to a savepoint, takes the note back with the rows (and with any
-- jobs queued meanwhile). Still one transaction: a commit queues the jobs of
-- all its records, a rollback none.

do $$
declare s record;
begin
  -- The per-statement AFTER trigger of 0001 and 0008 goes: the note replaces it.
  for s in select name from tidings.streams loop
    execute format('drop trigger if exists queue_handling on %I.%I', split_part(s.name, '.', 1), split_part(s.name, '.', 2));
  end loop;
end;
$$;
-- Kept as a no-op: 0001's table builder (declare_stream_tables below) still
-- creates a trigger on it, which declare_stream drops straight away.
create or replace function tidings.tg_queue_handling() returns trigger
language plpgsql as $$
begin
  return null;
end;
$$;

create function tidings.tg_note_outbox() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  stream_name text := tg_table_schema || '.' || tg_table_name;
  note text := coalesce(nullif(current_setting('tidings.outbox', true), ''), 'C');
begin
  if strpos(note || ';', ';' || stream_name || '=') = 0 then
    -- Streams nobody consumes need no note.
    if not exists (select 1 from tidings.stream_consumers c where c.stream = stream_name) then
      return null;
    end if;
    note := note || ';' || stream_name || '=0';
  end if;
  perform set_config('tidings.outbox', 'D' || substr(note, 2), true);
  return null;
end;
$$;

-- The note names streams and positions only; what is queued comes from the
-- rows this transaction wrote and the declared consumers, so a hand-written
-- note cannot forge a job.
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
                 null, null, null, null
               )::graphile_worker.job_spec order by n.position),
               max(n.position)
          from %s n
          join tidings.stream_consumers c
            on c.stream = $1
           and (c.record_types is null or n.type = any (c.record_types))
         where n.tx_id = pg_current_xact_id() and n.position > $2$q$, stream_name)
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

create or replace function tidings.create_outbox_triggers(p_stream text) returns void
language plpgsql as $$
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

do $$
declare s text;
begin
  for s in select name from tidings.streams loop
    perform tidings.create_outbox_triggers(s);
  end loop;
end;
$$;

-- Streams declared from now on get the outbox triggers too.
alter function tidings.declare_stream(text, text, text, text, text) rename to declare_stream_tables;
create function tidings.declare_stream(
  p_name text, p_subsystem text, p_kind text, p_concern text, p_description text
) returns void
language plpgsql as $$
begin
  perform tidings.declare_stream_tables(p_name, p_subsystem, p_kind, p_concern, p_description);
  execute format('drop trigger queue_handling on %I.%I', split_part(p_name, '.', 1), split_part(p_name, '.', 2));
  perform tidings.create_outbox_triggers(p_name);
end;
$$;
revoke execute on function tidings.declare_stream(text, text, text, text, text) from public;
