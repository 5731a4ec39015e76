import { existsSync } from "node:fs";
import { SCOPES } from "./apiKeys";

/**
 * The command that creates a first API key, as an operator can paste it:
 * `npm run apikeys` on the machine that runs tidings (it connects with the
 * same DATABASE_URL, or to the running embedded database), or through the
 * `tidings` service of docker-compose.yml when tidings runs in a container.
 */
export const FIRST_KEY_ARGUMENTS = `create --name my-first-key --scopes ${SCOPES.join(",")}`;

/** Docker (and Podman) mark their containers with these files. */
export function runsInContainer(): boolean {
  return existsSync("/.dockerenv") || existsSync("/run/.containerenv");
}

export function createKeyCommand(inContainer = runsInContainer()): string {
  const command = `npm run apikeys -- ${FIRST_KEY_ARGUMENTS}`;
  return inContainer ? `docker compose exec tidings ${command}` : command;
}
