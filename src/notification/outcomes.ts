import { sql } from "kysely";
import type { Executor } from "../db/database";
import type { Channel } from "../entities/entity.schemas";

/**
 * A channel operation's outcome, as notification.operation_outcomes decides
 * it (migrations/0002_notification.sql): from its latest attempt with an
 * outcome event, a failure winning within an attempt. The saga, the
 * projection and the audit views all read this one definition.
 */
export interface ChannelOperationOutcome {
  channel: Channel;
  id: string;
  operationId: string;
  attempt: number;
  outcome: "succeeded" | "failed";
  error: string | null;
  /** The event that decided it. */
  source: { stream: string; position: number };
  recordedAt: Date;
  payload: unknown;
}

/** The outcomes of these notifications' channel operations (those that have one), by notification id. */
export async function readOperationOutcomes(db: Executor, ids: readonly string[]): Promise<Map<string, ChannelOperationOutcome[]>> {
  const byId = new Map<string, ChannelOperationOutcome[]>();
  if (ids.length === 0) return byId;
  const { rows } = await sql<{
    channel: Channel;
    id: string;
    operation_id: string;
    attempt: number;
    outcome: "succeeded" | "failed";
    error: string | null;
    stream: string;
    position: number;
    recorded_at: Date;
    payload: unknown;
  }>`select * from notification.operation_outcomes where id = any(${[...ids]}::text[])`.execute(db);
  for (const r of rows) {
    const outcome: ChannelOperationOutcome = {
      channel: r.channel,
      id: r.id,
      operationId: r.operation_id,
      attempt: r.attempt,
      outcome: r.outcome,
      error: r.error,
      source: { stream: r.stream, position: Number(r.position) },
      recordedAt: r.recorded_at,
      payload: r.payload,
    };
    byId.set(r.id, [...(byId.get(r.id) ?? []), outcome]);
  }
  return byId;
}
