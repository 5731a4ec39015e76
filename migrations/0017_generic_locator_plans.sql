-- Each stream's id lookup (tidings.stream_locate__*, 0013) keeps one plan.
--
-- PL/pgSQL caches the plan of its query, but with plan_cache_mode auto
-- PostgreSQL compares the generic plan's estimate (an id array of unknown
-- length: 100 rows) with the custom plans' (the array's real length: one or
-- two ids) and kept choosing a custom plan, planned afresh on every call:
-- 0.29 ms of planning per call, three calls per notification, the largest
-- planning left once the service's own statements were prepared
-- (src/db/prepared.ts; `npm run bench:profile`, "top statements by planning
-- time"). The plan is the same either way: for each id, the newest position
-- through the stream's index on id. The function now says so
-- (plan_cache_mode = force_generic_plan, for its own statement only).

create or replace function tidings.create_stream_locator(p_stream text) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $create$
begin
  execute format($f$
    create or replace function tidings.%1$I(p_ids text[], p_types text[])
    returns table (ordinal integer, "position" bigint)
    language plpgsql stable security definer set search_path = pg_catalog, pg_temp
    set plan_cache_mode = force_generic_plan as $body$
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

select tidings.create_stream_locator(name) from tidings.streams;
