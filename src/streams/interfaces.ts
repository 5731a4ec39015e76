/**
 * Glossary (the seed's vocabulary, as tidings uses it)
 *
 * - Stream: an append-only PostgreSQL table of records, named `schema.table`
 *   (the schema is the subsystem or concern: notification, email, slack,
 *   entity). Kinds: client operation, internal operation, saga, event, view,
 *   snapshot, and a concern's operation stream. Listed in `tidings.streams`.
 * - Record: one row of a stream. `position` increases within the stream; `id`
 *   ties records together across streams (for a notification: its tracking
 *   id); `type` names the payload's schema; `causedBy` points to the record it
 *   was written in reaction to.
 * - Producer: an actor that may append to a stream (INSERT only).
 * - Consumer: an actor that reads a stream and handles its records for a
 *   concern (SELECT on the stream, write access to its handling state only).
 * - Concern: one reason to handle a record (e.g. `email_bot` on
 *   `email.operations`). Concerns are independent: each has its own status.
 * - Handling state: beside each stream, `<table>__handling` holds the current
 *   status per (record, concern) and `<table>__handling_history` every change.
 * - Outbox: appending a record queues one graphile-worker job per consuming
 *   concern in the same transaction (triggers note_outbox and flush_outbox,
 *   migrations/0001_engine.sql); tidings.queue_handling queues one again.
 * - Bot: a graphile-worker task that claims a record for its concern, runs a
 *   handler and records the outcome (src/bots/runner.ts).
 */

/** A pointer to one record: what a job carries and what `causedBy` holds. */
export interface RecordRef {
  stream: string;
  position: number;
}

export type Tags = Record<string, string>;

export interface StreamRecord<TPayload = unknown> {
  stream: string;
  position: number;
  id: string;
  type: string;
  payload: TPayload;
  tags: Tags;
  causedBy: RecordRef | null;
  recordedAt: Date;
  recordedBy: string;
  /** Transaction id (xid8) that wrote the record. */
  txId: string;
  /** Where the record stands in gap-safe reads: (feedKey, position) order (src/streams/read.ts). */
  feedKey: string;
}

export interface NewRecord<TPayload = unknown> {
  id: string;
  type: string;
  payload: TPayload;
  tags?: Tags;
  causedBy?: RecordRef | null;
}

/** What append does when a matching record already exists (the original system's strategies). */
export type ExistingRecordStrategy = "write_always" | "skip_if_id_exists" | "skip_if_id_and_type_exists" | "throw_if_id_exists" | "throw_if_id_and_type_exists";

export interface AppendResult {
  position: number;
  id: string;
  type: string;
  /** false when the strategy skipped the write; `position` is then the existing record's. */
  written: boolean;
}

export const HANDLING_STATUSES = [
  "AvailableByDefault",
  "Running",
  "Completed",
  "Failed",
  "ArchivedAfterFailure",
  "AvailableAfterCompletion",
  "AvailableAfterFailure",
  "AvailableAfterExternalCancellation",
  "AvailableAfterSelfCancellation",
  "DisabledForRecord",
  "DisabledForStream",
] as const;
export type HandlingStatus = (typeof HANDLING_STATUSES)[number];

export interface HandlingState {
  stream: string;
  position: number;
  concern: string;
  status: HandlingStatus;
  attempts: number;
  claimedBy: string | null;
  lastAction: string;
  lastActor: string;
  lastReason: string | null;
  lastError: string | null;
  lastDetails: unknown;
  updatedAt: Date | null;
  /**
   * When the next attempt is due, while the record waits for a retry or a
   * deferral it was put back for (its last change recorded `retryInMs` in
   * its details); otherwise null.
   */
  retryAt: Date | null;
}

export interface HandlingHistoryEntry {
  entry: number;
  stream: string;
  position: number;
  concern: string;
  fromStatus: HandlingStatus;
  toStatus: HandlingStatus;
  action: string;
  actor: string;
  reason: string | null;
  details: unknown;
  attempt: number;
  recordedAt: Date;
  recordedBy: string;
}
