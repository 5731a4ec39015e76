import { SCOPES } from "./apiKeys";

/**
 * The command that creates a first API key, as an operator can paste it:
 * `npm run apikeys` where tidings runs (it connects with the same
 * DATABASE_URL, or to the running embedded database).
 */
export const FIRST_KEY_ARGUMENTS = `create --name my-first-key --scopes ${SCOPES.join(",")}`;

/**
 * How an operator reaches this process's npm scripts when they are not run
 * where the operator types: the Dockerfile sets `docker compose exec tidings`
 * (docker-compose.yml's service). Not guessed from /.dockerenv: development
 * containers and CI runners have one too, and run `npm start` directly.
 */
export const EXEC_PREFIX_VARIABLE = "TIDINGS_EXEC_PREFIX";

export function createKeyCommand(prefix = process.env[EXEC_PREFIX_VARIABLE]): string {
  const command = `npm run apikeys -- ${FIRST_KEY_ARGUMENTS}`;
  return prefix?.trim() ? `${prefix.trim()} ${command}` : command;
}
