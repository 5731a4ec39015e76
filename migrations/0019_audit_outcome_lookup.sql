-- The audit views' outcome lookup, one operation at a time again.
--
-- audit.emails and audit.slack_messages look up each operation's outcome in
-- notification.operation_outcomes (a distinct on over a union of the
-- channels' outcome events) with a lateral subquery. Without a LIMIT the
-- planner may flatten that subquery into a join, and a join cannot push
-- `id = o.id` into the distinct on: it then builds every operation's outcome
-- (a scan and sort of all email events) to answer for one address. After the
-- streams were partitioned (0005) it did: "emails to one address" took 163 ms
-- at 100,000 email records and 4.7 s at 3 million (`BENCH_SECTIONS=audit
-- BENCH_AUDIT_ROWS=100000,3000000 npx tsx bench/run.ts`), against the 5 ms
-- target at 10 million. LIMIT 1 (there is at most one row: one per channel,
-- id and operation) keeps the subquery lateral, so each lookup reaches the
-- events' (id) index. Same columns: grants and comments stay.

create or replace view audit.emails with (security_invoker = false) as
select
  o.id as notification_id,
  o.payload->>'operationId' as operation_id,
  o.payload->>'purpose' as purpose,
  o.payload->>'entityId' as entity_id,
  o.payload->'to'->>0 as recipient,
  array(select jsonb_array_elements_text(o.payload->'to')) as recipients,
  o.payload->>'subject' as subject,
  st.status,
  coalesce(h.status::text, 'AvailableByDefault') as handling_status,
  coalesce(h.attempts, 0) as attempts,
  o.recorded_at as requested_at,
  ok.recorded_at as sent_at,
  bad.recorded_at as failed_at,
  coalesce(h.last_error, bad.payload->>'error') as last_error,
  case
    when st.status = 'sent' then substring(ok.payload->>'response' from '^[2-5][0-9][0-9]')::integer
    else coalesce((bad.payload->>'smtpCode')::integer, (lf.details->'external'->>'smtpCode')::integer)
  end as smtp_code,
  ok.payload->>'response' as response,
  coalesce(ok.payload->>'messageId', o.payload->>'messageId') as message_id,
  o.tags,
  o.position as operation_position
from email.operations o
left join email.operations__handling h on h.position = o.position and h.concern = 'email_bot'
left join lateral (
  select e.recorded_at, e.payload from email.events e
  where e.id = o.id and e.type = 'SucceededInSendingEmailEvent' and e.payload->>'operationId' = o.payload->>'operationId'
  order by e.position desc limit 1
) ok on true
left join lateral (
  select e.recorded_at, e.payload from email.events e
  where e.id = o.id and e.type = 'FailedToSendEmailEvent' and e.payload->>'operationId' = o.payload->>'operationId'
  order by e.position desc limit 1
) bad on true
left join lateral (
  -- The last attempt that failed or was deferred, retried or not: its details keep the SMTP code.
  select hh.details from email.operations__handling_history hh
  where hh.position = o.position and hh.concern = 'email_bot' and hh.action in ('fail', 'self_cancel')
  order by hh.entry desc limit 1
) lf on true
left join lateral (
  -- The operation's outcome as the saga and the view take it (notification.operation_outcomes).
  select oc.outcome, oc.recorded_at from notification.operation_outcomes oc
  where oc.channel = 'email' and oc.id = o.id and oc.operation_id = o.payload->>'operationId'
  limit 1 -- one row at most (distinct on): keeps the subquery from being flattened into a join
) oc on true
cross join lateral (
  select case
    -- An attempt after the outcome is under way or waiting (an operator re-drove it).
    when h.status not in ('Completed', 'Failed', 'ArchivedAfterFailure', 'DisabledForRecord') and h.updated_at > oc.recorded_at then 'sending'
    when oc.outcome = 'succeeded' then 'sent'
    when oc.outcome = 'failed' then 'failed'
    when h.status = 'Completed' then 'sent'
    when h.status in ('Failed', 'ArchivedAfterFailure', 'DisabledForRecord') then 'failed'
    when h.status is null then 'pending'
    else 'sending' -- Running, or waiting for its next attempt
  end as status
) st
where o.type = 'SendEmailOp';

create or replace view audit.slack_messages with (security_invoker = false) as
select
  o.id as notification_id,
  o.payload->>'operationId' as operation_id,
  o.payload->>'purpose' as purpose,
  o.payload->>'entityId' as entity_id,
  o.payload->>'channel' as channel,
  o.payload->>'text' as text,
  st.status,
  coalesce(h.status::text, 'AvailableByDefault') as handling_status,
  coalesce(h.attempts, 0) as attempts,
  o.recorded_at as requested_at,
  ok.recorded_at as sent_at,
  bad.recorded_at as failed_at,
  ok.payload->>'channel' as posted_channel,
  ok.payload->>'ts' as ts,
  case when st.status <> 'sent' then coalesce(bad.payload->>'slackError', lf.details->'external'->>'slackError') end as slack_error,
  case when st.status <> 'sent' then coalesce((bad.payload->>'httpStatus')::integer, (lf.details->'external'->>'httpStatus')::integer) end as http_status,
  coalesce(h.last_error, bad.payload->>'error') as last_error,
  o.tags,
  o.position as operation_position
from slack.operations o
left join slack.operations__handling h on h.position = o.position and h.concern = 'slack_bot'
left join lateral (
  select e.recorded_at, e.payload from slack.events e
  where e.id = o.id and e.type = 'SucceededInSendingSlackMessageEvent' and e.payload->>'operationId' = o.payload->>'operationId'
  order by e.position desc limit 1
) ok on true
left join lateral (
  select e.recorded_at, e.payload from slack.events e
  where e.id = o.id and e.type = 'FailedToSendSlackMessageEvent' and e.payload->>'operationId' = o.payload->>'operationId'
  order by e.position desc limit 1
) bad on true
left join lateral (
  select hh.details from slack.operations__handling_history hh
  where hh.position = o.position and hh.concern = 'slack_bot' and hh.action in ('fail', 'self_cancel')
  order by hh.entry desc limit 1
) lf on true
left join lateral (
  -- The operation's outcome as the saga and the view take it (notification.operation_outcomes).
  select oc.outcome, oc.recorded_at from notification.operation_outcomes oc
  where oc.channel = 'slack' and oc.id = o.id and oc.operation_id = o.payload->>'operationId'
  limit 1 -- one row at most (distinct on): keeps the subquery from being flattened into a join
) oc on true
cross join lateral (
  select case
    -- An attempt after the outcome is under way or waiting (an operator re-drove it).
    when h.status not in ('Completed', 'Failed', 'ArchivedAfterFailure', 'DisabledForRecord') and h.updated_at > oc.recorded_at then 'sending'
    when oc.outcome = 'succeeded' then 'sent'
    when oc.outcome = 'failed' then 'failed'
    when h.status = 'Completed' then 'sent'
    when h.status in ('Failed', 'ArchivedAfterFailure', 'DisabledForRecord') then 'failed'
    when h.status is null then 'pending'
    else 'sending' -- Running, or waiting for its next attempt
  end as status
) st
where o.type = 'SendSlackMessageOp';
