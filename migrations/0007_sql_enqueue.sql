-- Enqueue a notification from SQL, inside the caller's own transaction: a
-- service in any language that shares the database can record its business
-- change and the notification about it atomically. The notification exists
-- if and only if the caller commits.
--
--   select tidings.send_notification_to_entity('ada', 'Your report is ready', 'Hello.');
--
-- Checks mirror SendNotificationToEntityOp (src/notification/notification.schemas.ts)
-- so what this function accepts, the notification bot accepts too.
create function tidings.send_notification_to_entity(
  entity_id text,
  subject text,
  text_body text,
  html_body text default null,
  markdown_body text default null,
  channels text[] default null,
  tags jsonb default '{}',
  idempotency_key text default null
) returns text
-- Security invoker: the append runs with the caller's privileges (those of
-- tidings_client, inherited by a login role granted it), and the record's
-- recorded_by names the caller.
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  tracking_id text;
  digest bytea;
  hex text;
  trimmed_subject text := btrim(subject);
  tag record;
begin
  if entity_id is null or length(entity_id) > 200 or entity_id !~ '^[A-Za-z0-9][A-Za-z0-9._:@-]*$' then
    raise exception 'entity_id: must be 1-200 characters, start with a letter or digit and contain only letters, digits and . _ : @ -'
      using errcode = '22023';
  end if;
  if trimmed_subject is null or trimmed_subject = '' or length(trimmed_subject) > 998 then
    raise exception 'subject: must be 1-998 characters' using errcode = '22023';
  end if;
  if text_body is null or text_body = '' or length(text_body) > 100000 then
    raise exception 'text_body: must be 1-100000 characters' using errcode = '22023';
  end if;
  if length(html_body) > 500000 then
    raise exception 'html_body: must be at most 500000 characters' using errcode = '22023';
  end if;
  if length(markdown_body) > 100000 then
    raise exception 'markdown_body: must be at most 100000 characters' using errcode = '22023';
  end if;
  if channels is not null and (
       cardinality(channels) not between 1 and 2
       or exists (select 1 from unnest(channels) c where c is null or c not in ('email', 'slack'))
       or (select count(distinct c) from unnest(channels) c) <> cardinality(channels)) then
    raise exception 'channels: must be 1-2 distinct channels out of email, slack (or null for the entity''s preferences)'
      using errcode = '22023';
  end if;
  tags := coalesce(tags, '{}');
  if jsonb_typeof(tags) <> 'object' then
    raise exception 'tags: must be a JSON object of name to string value' using errcode = '22023';
  end if;
  if (select count(*) from jsonb_object_keys(tags)) > 20 then
    raise exception 'tags: at most 20 tags' using errcode = '22023';
  end if;
  for tag in select key, value from jsonb_each(tags) loop
    if tag.key !~ '^[A-Za-z0-9_.:-]{1,64}$' or jsonb_typeof(tag.value) <> 'string' or length(tag.value #>> '{}') > 256 then
      raise exception 'tags: tag "%" must have a name of letters, digits and _ . : - and a string value of at most 256 characters', tag.key
        using errcode = '22023';
    end if;
  end loop;
  if idempotency_key is not null and (idempotency_key = '' or length(idempotency_key) > 255) then
    raise exception 'idempotency_key: must be 1-255 characters' using errcode = '22023';
  end if;

  if idempotency_key is null then
    tracking_id := gen_random_uuid()::text;
  else
    -- The same name-based UUID as trackingIdForIdempotencyKey in src/notification/ids.ts.
    digest := sha256(convert_to('tidings idempotency ' || idempotency_key, 'UTF8'));
    digest := set_byte(digest, 6, (get_byte(digest, 6) & 15) | 80);
    digest := set_byte(digest, 8, (get_byte(digest, 8) & 63) | 128);
    hex := encode(substring(digest from 1 for 16), 'hex');
    tracking_id := substr(hex, 1, 8) || '-' || substr(hex, 9, 4) || '-' || substr(hex, 13, 4) || '-'
                   || substr(hex, 17, 4) || '-' || substr(hex, 21, 12);
  end if;

  perform tidings.append(
    'notification.client_operations',
    jsonb_build_array(jsonb_build_object(
      'id', tracking_id,
      'type', 'SendNotificationToEntityOp',
      'tags', tags,
      'payload', jsonb_strip_nulls(jsonb_build_object(
        'entityId', entity_id,
        'subject', trimmed_subject,
        'text', text_body,
        'html', html_body,
        'markdown', markdown_body,
        'channels', to_jsonb(channels),
        'tags', tags,
        'idempotencyKey', idempotency_key)))),
    case when idempotency_key is null then 'write_always' else 'skip_if_id_and_type_exists' end);
  return tracking_id;
end;
$$;

comment on function tidings.send_notification_to_entity(text, text, text, text, text, text[], jsonb, text) is
  'Enqueue SendNotificationToEntityOp in the caller''s transaction; returns the tracking id. Callers need the tidings_client role.';

-- Only clients: a service's login role gets `grant tidings_client to <role>`.
revoke execute on function tidings.send_notification_to_entity(text, text, text, text, text, text[], jsonb, text) from public;
grant execute on function tidings.send_notification_to_entity(text, text, text, text, text, text[], jsonb, text) to tidings_client;
