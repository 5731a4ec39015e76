import { sql } from "kysely";
import type { Task } from "graphile-worker";
import type { Db } from "../db/database";
import type { Logger } from "../logging/logger";
import type { ScheduledTasks } from "../bots/worker";

/**
 * Partitions of the partitioned streams are created ahead of time
 * (migrations/0005_partitions.sql, docs/retention.md): an append whose
 * recorded_at has no partition would be refused. tidings.create_stream_partitions()
 * keeps `partitions_ahead` (tidings.settings, 2) partitions ready after the
 * current one; it runs as the service (security definer: the owner creates
 * the tables), one caller at a time.
 */
export const PARTITIONS_TASK = "tidings:maintenance:partitions";

/**
 * Every hour at minute 7, and once at start if the last run was missed
 * (graphile-worker's backfill, `fill`). With two months' partitions ready,
 * a maintenance job that fails for weeks still leaves time to notice
 * (the log says what failed; docs/retention.md says what to do).
 */
export const PARTITIONS_CRONTAB = `7 * * * * ${PARTITIONS_TASK} ?fill=2h&max=3`;

export interface CreatedPartition {
  table_name: string;
  partition: string;
  range_from: Date;
  range_to: Date;
}

/** Create the partitions that are due; returns those it created (none when all are there). */
export async function createStreamPartitions(db: Db): Promise<CreatedPartition[]> {
  const { rows } = await sql<CreatedPartition>`select table_name, partition, range_from, range_to from tidings.create_stream_partitions()`.execute(db);
  return rows;
}

/** The maintenance job, for the workers' cron. */
export function partitionMaintenance(db: Db, logger: Logger): ScheduledTasks {
  const task: Task = async () => {
    const created = await createStreamPartitions(db);
    if (created.length > 0) logger.info({ partitions: created.map((p) => p.partition) }, "created stream partitions ahead");
  };
  return { taskList: { [PARTITIONS_TASK]: task }, crontab: PARTITIONS_CRONTAB };
}
