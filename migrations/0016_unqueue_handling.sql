-- Jobs that have nothing left to do leave the queue.
--
-- A saga's deadline was a graphile-worker job per notification, queued by
-- the outbox to run at the deadline (15 minutes plus the longest retry
-- schedule: about 31 hours for email), which then found the outcome long
-- written and did nothing but record that. At a million notifications a day
-- that kept over a million future rows in graphile-worker's jobs table and
-- ran each once for nothing, writing a handling row and two history rows.
-- Now the transaction that writes a notification's outcome marks its saga
-- records handled (src/notification/saga.bot.ts) and takes their jobs out
-- of the queue with tidings.unqueue_handling, the counterpart of
-- tidings.queue_handling (0001), allowed to the same roles: the concern's
-- own consumer, or an operator who repairs handling.
--
-- Only jobs no worker holds are removed. The positions whose job a worker
-- holds now are returned: the caller leaves those records to that job (it may
-- be waiting on the caller's locks, so writing their handling row would
-- wait on it in turn). graphile_worker.remove_job would also notify every
-- worker (jobs:insert) per job; a removal needs no one woken.

create function tidings.unqueue_handling(p_stream text, p_concern text, p_positions bigint[])
returns bigint[]
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  acting text := coalesce(nullif(nullif(current_setting('role', true), ''), 'none'), session_user);
  task text;
  held bigint[];
begin
  select c.task_identifier into task from tidings.stream_consumers c where c.stream = p_stream and c.concern = p_concern;
  if task is null then
    raise exception 'concern "%" does not consume stream "%"', p_concern, p_stream using errcode = 'TD004';
  end if;
  if not exists (
    select 1 from tidings.actors a
    where pg_has_role(acting, a.role_name, 'USAGE')
      and (a.repairs_handling or a.name = (select c.actor from tidings.stream_consumers c where c.stream = p_stream and c.concern = p_concern))
  ) then
    raise exception 'role % may not unqueue the handling of stream % for concern "%"', acting, p_stream, p_concern using errcode = '42501';
  end if;
  if coalesce(cardinality(p_positions), 0) = 0 then
    return '{}';
  end if;
  -- Only the jobs of records still waiting (no handling row, or Available):
  -- a record Running whose job waits to retry keeps its job, or nothing
  -- would ever run it again (the handling sweep queues waiting records only).
  -- A job being fetched right now (its row locked by graphile-worker's short
  -- fetch) is waited for, then found locked and left.
  execute format($q$
    delete from graphile_worker._private_jobs j
    where j.key = any (
            select $1 || ':' || p from unnest($2) as p
            where not exists (select 1 from %s h
                              where h.position = p and h.concern = $3
                                and h.status <> all ($4::tidings.handling_status[])))
      and j.locked_at is null$q$, tidings.stream_table(p_stream, '__handling'))
    using task, p_positions, p_concern,
          array['AvailableByDefault', 'AvailableAfterCompletion', 'AvailableAfterFailure',
                'AvailableAfterExternalCancellation', 'AvailableAfterSelfCancellation'];
  -- The key is this task's ('<stream>:<concern>:<position>'): unique across tasks.
  -- A job a worker holds whose key graphile-worker cleared (the same key
  -- queued again while it ran) is not seen here; its claim would make the
  -- caller wait, and PostgreSQL's deadlock detection ends one of the two
  -- transactions, which is retried.
  select coalesce(array_agg(substr(j.key, length(task) + 2)::bigint), '{}') into held
  from graphile_worker._private_jobs j
  where j.key = any (select task || ':' || p from unnest(p_positions) as p)
    and j.locked_at is not null;
  return held;
end;
$$;
revoke execute on function tidings.unqueue_handling(text, text, bigint[]) from public;
-- To the roles that may queue handling (the consumers' and the repairers'),
-- as queue_handling is granted; the function checks the acting role all the same.
do $$
declare r name;
begin
  for r in select rolname from pg_roles
           where has_function_privilege(oid, 'tidings.queue_handling(text, text, bigint[], timestamptz)', 'execute')
             and rolname like 'tidings\_%' and not rolsuper
  loop
    execute format('grant execute on function tidings.unqueue_handling(text, text, bigint[]) to %I', r);
  end loop;
end;
$$;
-- Consumers and repairers declared from now on get it with queue_handling:
-- declare_consumer and declare_handling_repairer (0001's text, one grant added).
create or replace function tidings.declare_consumer(
  p_stream text, p_concern text, p_actor text, p_record_types text[], p_description text,
  p_run_at_field text default null
) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  r name := (select role_name from tidings.actors where name = p_actor);
  held text[] := (select record_types from tidings.streams where name = p_stream);
begin
  if held is not null and p_record_types is not null and not p_record_types <@ held then
    raise exception 'stream % holds no records of type %', p_stream,
      array(select t from unnest(p_record_types) t where t <> all (held)) using errcode = 'TD004';
  end if;
  insert into tidings.stream_consumers (stream, concern, actor, task_identifier, record_types, run_at_field, description)
  values (p_stream, p_concern, p_actor, p_stream || ':' || p_concern, p_record_types, p_run_at_field, p_description);
  -- The sweep starts at the stream's end: records written before the
  -- consumer existed were never its to handle.
  execute format($q$
    insert into tidings.sweep_cursors (stream, concern, feed_key, position)
    select $1, $2, coalesce(max(feed_key), '0'), coalesce(max(position), 0) from %s$q$, tidings.stream_table(p_stream))
    using p_stream, p_concern;
  -- Register the task up front: otherwise the first job of a task registers
  -- it, and concurrent appenders wait on that insert until the first appender
  -- commits. Only graphile-worker's public API: a job added and removed in
  -- this transaction leaves its task registered.
  perform graphile_worker.add_job(p_stream || ':' || p_concern, '{}'::json, job_key => 'tidings:register-task');
  perform graphile_worker.remove_job('tidings:register-task');
  execute format('grant usage on schema %I to %I', split_part(p_stream, '.', 1), r);
  execute format('grant select on %s to %I', tidings.stream_table(p_stream), r);
  -- Writing handling state is not write access to the stream (the seed): the
  -- consumer may change its own handling rows; history is written by trigger.
  execute format('grant select, insert, update on %s to %I', tidings.stream_table(p_stream, '__handling'), r);
  execute format('grant select on %s to %I', tidings.stream_table(p_stream, '__handling_history'), r);
  execute format('grant execute on function tidings.queue_handling(text, text, bigint[], timestamptz) to %I', r);
  execute format('grant execute on function tidings.unqueue_handling(text, text, bigint[]) to %I', r);
end;
$$;

create or replace function tidings.declare_handling_repairer(p_actor text) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  s record;
  r name := (select role_name from tidings.actors where name = p_actor);
begin
  update tidings.actors set repairs_handling = true where name = p_actor;
  for s in select name from tidings.streams loop
    perform tidings.grant_handling_repair(s.name, p_actor);
  end loop;
  execute format('grant insert, update on tidings.stream_concern_states to %I', r);
  execute format('grant select on tidings.stream_concern_history to %I', r);
  execute format('grant execute on function tidings.queue_handling(text, text, bigint[], timestamptz) to %I', r);
  execute format('grant execute on function tidings.unqueue_handling(text, text, bigint[]) to %I', r);
end;
$$;

comment on function tidings.unqueue_handling(text, text, bigint[]) is
  'Remove the queued (not running) jobs of these records for a concern: the counterpart of queue_handling, for work that has nothing left to do. Returns the positions whose job a worker holds now.';
