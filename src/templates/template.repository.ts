import { sql } from "kysely";
import { inTransaction, type Db, type Executor } from "../db/database";
import { appendOne } from "../streams/append";
import { findRecords, getLatestById, getLatestByIds } from "../streams/read";
import type { StreamRecord } from "../streams/interfaces";
import { canonicalJson } from "../util/json";
import { checkTemplateSyntax } from "./render";
import { TemplateInput, TemplateRecordTypes, TemplateStreams, TemplateVersionRecorded, templateKey } from "./template.schemas";

/** One version of a template as people and the API see it. */
export interface TemplateVersion {
  key: string;
  version: number;
  template: TemplateInput;
  recordedAt: Date;
  recordedBy: string;
  /** Where the version is in template.versions. */
  position: number;
}

function toVersion(record: StreamRecord): TemplateVersion {
  const payload = TemplateVersionRecorded.parse(record.payload);
  return { key: payload.key, version: payload.version, template: payload.template, recordedAt: record.recordedAt, recordedBy: payload.recordedBy, position: record.position };
}

/** The current (latest) version of a template, or null when there is none. */
export async function getCurrentTemplate(db: Executor, key: string): Promise<TemplateVersion | null> {
  const record = await getLatestById(db, TemplateStreams.versions, key);
  return record ? toVersion(record) : null;
}

/** The current version of each of these templates, in one query (unknown keys are absent). */
export async function getCurrentTemplates(db: Executor, keys: readonly string[]): Promise<Map<string, TemplateVersion>> {
  if (keys.length === 0) return new Map();
  const latest = await getLatestByIds(db, TemplateStreams.versions, keys);
  return new Map([...latest].map(([key, record]) => [key, toVersion(record)]));
}

/** Every version of a template, oldest first (empty: no such template). */
export async function getTemplateVersions(db: Executor, key: string): Promise<TemplateVersion[]> {
  return (await findRecords(db, TemplateStreams.versions, { ids: [key], limit: null })).map(toVersion);
}

/** One version of a template, or null (a template has few versions: read them all, by its key's index). */
export async function getTemplateVersion(db: Executor, key: string, version: number): Promise<TemplateVersion | null> {
  return (await getTemplateVersions(db, key)).find((v) => v.version === version) ?? null;
}

/**
 * Record a new version of a template (version 1 for a new key), unless it
 * says exactly what the current version says. Every Liquid field is parsed
 * first, so a template with a syntax error is refused and nothing is stored.
 * Writers of one key are serialised, so versions count 1, 2, 3 without gaps.
 */
export async function putTemplate(db: Db, key: string, input: unknown, recordedBy: string): Promise<{ version: TemplateVersion; created: boolean; changed: boolean }> {
  templateKey.parse(key);
  const template = TemplateInput.parse(input);
  checkTemplateSyntax(template);
  return inTransaction(db, "template_admin", async (tx) => {
    await sql`select pg_advisory_xact_lock(hashtextextended(${`template ${key}`}, 0))`.execute(tx);
    const current = await getCurrentTemplate(tx, key);
    // Compared canonically: jsonb keeps object keys in its own order.
    if (current && canonicalJson(current.template) === canonicalJson(template)) return { version: current, created: false, changed: false };
    const payload = TemplateVersionRecorded.parse({ key, version: (current?.version ?? 0) + 1, template, recordedBy });
    const appended = await appendOne(tx, TemplateStreams.versions, { id: key, type: TemplateRecordTypes.TemplateVersionRecorded, payload });
    const { rows } = await sql<{ recorded_at: Date }>`select recorded_at from template.versions where position = ${appended.position}`.execute(tx);
    return {
      version: { key, version: payload.version, template, recordedAt: rows[0]!.recorded_at, recordedBy, position: appended.position },
      created: !current,
      changed: true,
    };
  });
}
