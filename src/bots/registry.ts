import type { Config } from "../config/config";
import type { Logger } from "../logging/logger";
import type { Bot } from "./bot";

/** Dependencies injected into every bot (database access comes from the runner). */
export type BotDeps = Record<string, never>;

export async function createBotDeps(_config: Config, _logger: Logger): Promise<BotDeps> {
  return {};
}

/** Every bot tidings runs. The notification workflow's bots are added here. */
export function allBots(_config: Config): Bot<BotDeps>[] {
  return [];
}
