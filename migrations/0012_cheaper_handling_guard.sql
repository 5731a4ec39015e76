-- The handling guard (0001) asks the same question with fewer lookups.
--
-- Per handling row written, the guard asked pg_has_role for every actor in
-- tidings.actors (twice: once for "may this role change this concern's
-- handling", once for "does it act as the concern's consumer"). A bot's
-- write is the common case: it is the consumer, so one indexed lookup of the
-- stream's consumer for that concern and one pg_has_role answer both
-- questions; the other actors are looked at only when that fails (an
-- operator's repair, or a write that is then refused).
--
-- Same rules, same order, same errors: may change it (the consumer or a
-- repairer); a repair names a person; the transition exists; a reason is
-- given; an erased record is not made available again. In
-- `PROFILE_NOTIFICATIONS=2000 npm run bench:profile` the guard was 2.1 s of
-- the server's 15.9 s (its own time, 0.15 ms a row).
create or replace function tidings.tg_guard_handling() returns trigger
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  prior tidings.handling_status :=
    case when tg_op = 'INSERT' then 'AvailableByDefault'::tidings.handling_status else old.status end;
  stream_name text := tg_table_schema || '.' || left(tg_table_name, -length('__handling'));
  erased text;
  consumer boolean;
begin
  -- Erasure: an erasure rewrites what a handling row says (error, reason,
  -- details), never its state, its attempts or when it last changed.
  if tg_op = 'UPDATE' and current_setting('tidings.erasure', true) = 'on' and tidings.erasing() then
    if (new.position, new.concern, new.status, new.attempts, new.claimed_by, new.last_action, new.last_actor, new.updated_at)
       is distinct from (old.position, old.concern, old.status, old.attempts, old.claimed_by, old.last_action, old.last_actor, old.updated_at) then
      raise exception 'an erasure may change only the error, reason and details of handling rows' using errcode = 'TD002';
    end if;
    return new;
  end if;
  if tg_op = 'UPDATE' and (new.position is distinct from old.position or new.concern is distinct from old.concern) then
    raise exception 'handling of %.% cannot move to another record or concern', tg_table_schema, tg_table_name
      using errcode = 'TD002';
  end if;
  -- Does the role act as the concern's consumer? (One indexed lookup, one pg_has_role.)
  consumer := exists (
    select 1 from tidings.stream_consumers c join tidings.actors a on a.name = c.actor
    where c.stream = stream_name and c.concern = new.concern and pg_has_role(current_user, a.role_name, 'USAGE'));
  if not consumer and not exists (
    select 1 from tidings.actors a where a.repairs_handling and pg_has_role(current_user, a.role_name, 'USAGE')
  ) then
    raise exception 'role % may not change the handling of stream % for concern "%"', current_user, stream_name, new.concern
      using errcode = '42501',
            hint = 'Only the actor that consumes the stream for that concern, or an operator, may.';
  end if;
  -- A change by someone who is not the concern's consumer (an operator's
  -- repair) names a person: it may not pass for the machinery (a bot, the
  -- runner), or the audit would take it for the bots' own work.
  if not consumer and (new.last_actor = 'runner' or exists (select 1 from tidings.actors a where a.name = new.last_actor)) then
    raise exception 'role % may not record a handling change as "%": a repair names the person who made it', current_user, new.last_actor
      using errcode = '42501';
  end if;
  if not exists (
    select 1 from tidings.handling_transitions t
    where t.action = new.last_action and t.from_status = prior and t.to_status = new.status
  ) then
    raise exception 'cannot % record % for concern %: current status is %, requested status is %',
      new.last_action, new.position, new.concern, prior, new.status
      using errcode = 'TD002';
  end if;
  if new.last_action <> 'complete' and coalesce(btrim(new.last_reason), '') = '' then
    raise exception 'a reason is required to % record % for concern %', new.last_action, new.position, new.concern
      using errcode = 'TD002';
  end if;
  -- Erasure: an erased record is never made available again (a re-drive
  -- would send placeholders, or bring nothing back but noise).
  if new.last_action in ('reset_failed', 'reset_completed') then
    erased := tidings.erased_record_note(stream_name, new.position);
    if erased is not null then
      raise exception '%', erased using errcode = 'TD007';
    end if;
  end if;
  new.updated_at := now();
  return new;
end;
$$;
