import { sql } from "kysely";
import { ValidationError } from "../errors/errors";

const STREAM_NAME = /^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$/;

/**
 * Stream names become table names in SQL, so only `schema.table` made of
 * lower-case identifiers is accepted; anything else is refused before any
 * SQL is built from it.
 */
export function assertStreamName(stream: string): string {
  if (!STREAM_NAME.test(stream)) {
    throw new ValidationError(`invalid stream name "${stream}": expected schema.table in lower case`);
  }
  return stream;
}

export function streamTable(stream: string) {
  return sql.table(assertStreamName(stream));
}

export function handlingTable(stream: string) {
  return sql.table(`${assertStreamName(stream)}__handling`);
}

export function historyTable(stream: string) {
  return sql.table(`${assertStreamName(stream)}__handling_history`);
}
