-- A notification cancelled before its time (0006's NotificationCancelledEvent)
-- has ended: audit.notifications says so since 0008, but
-- notification.open_notifications (0005), which retention asks before it
-- archives a partition or expires an idempotency key, still counted it as
-- open, so a cancelled notification held its partition and its key forever.
-- The same definition, with the cancel among the outcomes.
create or replace function notification.open_notifications(p_ids text[]) returns text[]
language sql stable security definer set search_path = pg_catalog, pg_temp as $$
  select coalesce(array_agg(c.id order by c.id), '{}')
  from notification.client_operations c
  where c.id = any (p_ids)
    and (coalesce((
          select e.type in ('SentOnAllPreparedChannelsEvent', 'SentOnSomePreparedChannelsEvent', 'CouldNotSendOnAnyPreparedChannelEvent',
                            'CouldNotGetOrUseAudienceEvent', 'AudienceOptedOutOfAllChannelsEvent', 'CouldNotPrepareToSendOnAnyChannelEvent',
                            'NotificationCancelledEvent')
          from notification.events e
          where e.id = c.id and e.type not in ('FailedNotificationSentToInternalTeamEvent', 'NotificationDelayedEvent')
            and not (e.type = 'ResendRequestedEvent' and e.payload->'operations' = '[]'::jsonb)
          order by e.position desc limit 1), false) = false
      or exists (
          select 1 from notification.sagas s
          left join notification.sagas__handling h on h.position = s.position and h.concern = 'saga_bot'
          where s.id = c.id and (h.status is null or h.status not in ('Completed', 'ArchivedAfterFailure', 'DisabledForRecord'))))
$$;
revoke execute on function notification.open_notifications(text[]) from public;
