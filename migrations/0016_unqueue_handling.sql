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
  -- A job being fetched right now (its row locked by graphile-worker's short
  -- fetch) is waited for, then found locked and left.
  delete from graphile_worker._private_jobs j
  where j.key = any (select task || ':' || p from unnest(p_positions) as p)
    and j.locked_at is null;
  select coalesce(array_agg(substr(j.key, length(task) + 2)::bigint), '{}') into held
  from graphile_worker._private_jobs j
  where j.key = any (select task || ':' || p from unnest(p_positions) as p);
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
comment on function tidings.unqueue_handling(text, text, bigint[]) is
  'Remove the queued (not running) jobs of these records for a concern: the counterpart of queue_handling, for work that has nothing left to do. Returns the positions whose job a worker holds now.';
