-- 1. The handling history's recorded_by names the role that acted. The
--    history trigger runs as its owner (security definer), where current_user
--    is the owner; the role set with SET ROLE is current_setting('role').
create or replace function tidings.tg_record_handling_history() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  acting text := current_setting('role', true);
begin
  execute format(
    'insert into %I.%I (position, concern, from_status, to_status, action, actor, reason, details, attempt, recorded_by)
     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)',
    tg_table_schema, tg_table_name || '_history')
  using new.position, new.concern,
        case when tg_op = 'INSERT' then 'AvailableByDefault'::tidings.handling_status else old.status end,
        new.status, new.last_action, new.last_actor, new.last_reason, new.last_details, new.attempts,
        session_user::text || case when acting is not null and acting <> 'none' and acting <> session_user::text
                                   then ' as ' || acting else '' end;
  return null;
end;
$$;

-- 2. tidings.existing_position answers "does a record with this id exist?"
--    for any stream; only producers need it (idempotent appends).
revoke execute on function tidings.existing_position(text, text, text) from public;
do $$
declare r record;
begin
  for r in select distinct a.role_name from tidings.stream_producers p join tidings.actors a on a.name = p.actor loop
    execute format('grant execute on function tidings.existing_position(text, text, text) to %I', r.role_name);
  end loop;
end $$;

create or replace function tidings.declare_producer(p_stream text, p_actor text) returns void
language plpgsql as $$
declare
  r name := (select role_name from tidings.actors where name = p_actor);
begin
  insert into tidings.stream_producers (stream, actor) values (p_stream, p_actor);
  execute format('grant usage on schema %I to %I', split_part(p_stream, '.', 1), r);
  -- Write-only: INSERT, no SELECT of content (the seed's access rule).
  -- SELECT on the position column alone lets INSERT .. RETURNING position
  -- tell the producer where its record landed; idempotent appends look for an
  -- existing record through tidings.existing_position.
  execute format('grant insert on %s to %I', p_stream, r);
  execute format('grant select (position) on %s to %I', p_stream, r);
  execute format('grant execute on function tidings.existing_position(text, text, text) to %I', r);
end;
$$;
