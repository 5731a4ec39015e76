import { randomUUID } from "node:crypto";
import type { Channel } from "../entities/entity.schemas";

/**
 * Tracking ids and the ids derived from them. Every record of one
 * notification carries its tracking id; channel operations are told apart by
 * an operation id derived deterministically from it, so a re-run of the
 * notification bot finds the operations it wrote instead of inventing new ones.
 */
export function newTrackingId(): string {
  return randomUUID();
}

export function channelOperationId(trackingId: string, channel: Channel): string {
  return `${trackingId}:${channel}`;
}

export function alertOperationId(trackingId: string, alertPosition: number, channel: Channel): string {
  return `${trackingId}:alert-${alertPosition}:${channel}`;
}
