-- The HTTP API: API keys (stored hashed), idempotency keys for POST
-- /v1/notifications, the grants the API's reads need, and indexes for the
-- notification list. See docs/api.md.

create schema api;
comment on schema api is 'Tables of the HTTP API: API keys and the idempotency keys of enqueue requests.';

-- ---------------------------------------------------------------------------
-- API keys. Only the SHA-256 of a secret is kept: secrets are 256 random bits,
-- so a fast hash is enough (nothing to brute-force) and lets a request find
-- its key with one index lookup. Keys are revoked, never deleted, so the
-- idempotency keys below keep pointing at the key that made them.
-- ---------------------------------------------------------------------------
create table api.keys (
  id uuid primary key default gen_random_uuid(),
  name text not null check (name ~ '^[A-Za-z0-9][A-Za-z0-9 ._:@/-]{0,99}$'),
  secret_sha256 bytea not null unique check (length(secret_sha256) = 32),
  -- The last four characters of the secret, so `apikeys list` can tell keys apart.
  hint text not null check (length(hint) = 4),
  scopes text[] not null check (
    cardinality(scopes) between 1 and 4
    and scopes <@ array['producer', 'reader', 'entities', 'admin']
  ),
  created_at timestamptz not null default now(),
  created_by text not null,
  revoked_at timestamptz,
  revoked_reason text check (revoked_reason is null or btrim(revoked_reason) <> ''),
  check ((revoked_at is null) = (revoked_reason is null))
);
comment on table api.keys is
  'API keys: name, scopes and the SHA-256 of the secret (the secret itself is shown once, at creation, and never stored).';
-- Read and written only by the application's login role (authentication and scripts/apikeys.ts).
revoke all on api.keys from public;

-- ---------------------------------------------------------------------------
-- Idempotency keys. One row per Idempotency-Key ever used, global (not per
-- API key): the tracking id is derived from the key alone
-- (src/notification/ids.ts), as it is for clients enqueueing in SQL, and a
-- key must survive the rotation of the API key that used it. Never expires.
-- The primary key is what makes concurrent duplicates safe: the second insert
-- waits for the first transaction and then finds its row.
-- ---------------------------------------------------------------------------
create table api.idempotency_keys (
  key text primary key check (length(key) between 1 and 255),
  -- SHA-256 of the request as validated (canonical JSON, defaults applied):
  -- the same key with another request is refused.
  request_sha256 bytea not null check (length(request_sha256) = 32),
  tracking_id text not null,
  api_key_id uuid references api.keys (id),
  created_at timestamptz not null default now()
);
comment on table api.idempotency_keys is
  'Every Idempotency-Key used with POST /v1/notifications: the request it was first used with and the notification it created.';
revoke all on api.idempotency_keys from public;

-- The enqueue transaction runs as the client actor and records the key in
-- the same transaction as the client operation.
grant usage on schema api to tidings_client;
grant select, insert on api.idempotency_keys to tidings_client;

-- ---------------------------------------------------------------------------
-- Reads. The API reads as the reader actor: a notification's records in every
-- stream with their handling state and history (GET
-- /v1/notifications/:id/events), and the client operation of a notification
-- whose view is not written yet. Read-only, like the operator's grants in 0002.
-- ---------------------------------------------------------------------------
do $$
declare s record;
begin
  for s in select name from tidings.streams loop
    perform tidings.declare_reader(s.name, 'reader');
    execute format('grant select on %s to tidings_reader', s.name || '__handling');
    execute format('grant select on %s to tidings_reader', s.name || '__handling_history');
  end loop;
end $$;

-- ---------------------------------------------------------------------------
-- The notification list: newest first by request time, optionally for one
-- entity; keyset pagination on (recorded_at, position).
-- ---------------------------------------------------------------------------
create index client_operations_by_time on notification.client_operations (recorded_at, position);
create index client_operations_by_entity
  on notification.client_operations ((payload->>'entityId'), recorded_at, position);
