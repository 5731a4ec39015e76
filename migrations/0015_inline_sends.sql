-- Inline sends (src/bots/runner.ts, claimInline): a transactional bot that
-- appends a channel's operations (the notification bot) claims them in its
-- own transaction, as the channel's bot, and its process sends them as soon
-- as it commits. Their jobs would only find them Running, so the outbox
-- queues none: each stream's outbox reader (0013) also skips records
-- Running under an inline claim (claimed_by 'inline:<process id>') made in
-- the appending transaction. A process that dies holding such a claim has
-- it handed over by another after the lease (recoverInlineClaims, from the
-- worker heartbeats), which cancels the attempt as abandoned and queues the
-- job. The readers of the streams declared so far are made again here;
-- declare_stream makes new ones with this text.

create or replace function tidings.create_outbox_reader(p_stream text) returns void
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
         -- follows inline, src/bots/runner.ts): no job left to do. Or
         -- claimed in it by a process that sends it as soon as it commits
         -- (ExternalBot.sendsInline): its job would only find it Running;
         -- if that process dies, src/bots/inline.ts queues one after the lease.
         and not exists (select 1 from %5$s h
                         where h.position = n.position and h.concern = c.concern
                           and (h.status = 'Completed'
                                or (h.status = 'Running' and h.claimed_by like 'inline:%%'
                                    -- claimed by the consumer itself, as a bot claims (not
                                    -- a repairer's hand-written row, which would get no job)
                                    and h.last_action = 'claim' and h.last_actor = c.actor)));
    end;
    $body$
    $f$,
    tidings.outbox_reader(p_stream), tidings.stream_table(p_stream), p_stream,
    tidings.stream_table(p_stream), tidings.stream_table(p_stream, '__handling'));
  execute format('revoke execute on function tidings.%I(bigint) from public', tidings.outbox_reader(p_stream));
end;
$create$;
revoke execute on function tidings.create_outbox_reader(text) from public;

select tidings.create_outbox_reader(name) from tidings.streams;
