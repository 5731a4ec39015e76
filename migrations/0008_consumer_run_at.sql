-- A consumer may ask to handle each record at a time the record names (e.g.
-- a saga's deadline) instead of at once: the outbox trigger then queues the
-- job with run_at taken from that payload field. The saga bot no longer runs
-- once at append time only to wait for its deadline.
alter table tidings.stream_consumers add column run_at_field text
  check (run_at_field ~ '^[A-Za-z][A-Za-z0-9_]*$');
comment on column tidings.stream_consumers.run_at_field is
  'When set, jobs for this consumer run at the timestamptz in payload->>run_at_field (at once when absent).';

create or replace function tidings.tg_queue_handling() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  specs graphile_worker.job_spec[];
  stream_name text := tg_table_schema || '.' || tg_table_name;
begin
  select array_agg(row(
           c.task_identifier,
           json_build_object('stream', stream_name, 'position', n.position, 'id', n.id),
           null,
           case when c.run_at_field is not null then (n.payload->>c.run_at_field)::timestamptz end,
           null, null, null, null
         )::graphile_worker.job_spec order by n.position)
    into specs
    from new_rows n
    join tidings.stream_consumers c
      on c.stream = stream_name
     and (c.record_types is null or n.type = any (c.record_types));
  if specs is not null then
    perform graphile_worker.add_jobs(specs);
  end if;
  return null;
end;
$$;

update tidings.stream_consumers set run_at_field = 'deadline', description = 'Enforces the saga deadline (runs at the deadline).'
where stream = 'notification.sagas' and concern = 'saga_bot';
