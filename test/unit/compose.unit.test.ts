import { readFileSync } from "node:fs";
import path from "node:path";
import { parse } from "yaml";
import { configSchema } from "../../src/config/config";

const root = path.resolve(__dirname, "../..");

// No Docker engine runs where the tests run; check the file a user would run.
describe("docker-compose.yml", () => {
  const compose = parse(readFileSync(path.join(root, "docker-compose.yml"), "utf8"));

  it("runs PostgreSQL, a one-shot migration, tidings and an SMTP capture service with a web UI", () => {
    expect(Object.keys(compose.services).sort()).toEqual(["mailpit", "migrate", "postgres", "tidings"]);
    expect(compose.services.postgres.image).toMatch(/^postgres:1[5-9]/);
    expect(compose.services.mailpit.ports).toEqual(expect.arrayContaining(["1025:1025", "8025:8025"]));
    expect(compose.services.tidings.build).toBe(".");
    expect(compose.services.migrate.build).toBe(".");
    expect(compose.services.migrate.command.join(" ")).toContain("scripts/migrate.ts");
  });

  it("migrates as the superuser, then runs tidings as its own login that never sees the superuser's password", () => {
    const { POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB } = compose.services.postgres.environment;
    const migrate = compose.services.migrate.environment as Record<string, string>;
    const env = compose.services.tidings.environment as Record<string, string>;
    expect(migrate.MIGRATION_DATABASE_URL).toBe(`postgres://${POSTGRES_USER}:${POSTGRES_PASSWORD}@postgres:5432/${POSTGRES_DB}`);
    // The login migrate creates is the one tidings logs in as.
    expect(migrate.DATABASE_URL).toBe(env.DATABASE_URL);
    const service = new URL(env.DATABASE_URL!);
    expect(service.username).not.toBe(POSTGRES_USER);
    expect(service.pathname).toBe(`/${POSTGRES_DB}`);
    expect(Object.values(env).join(" ")).not.toContain(POSTGRES_PASSWORD);
    expect(env.MIGRATION_DATABASE_URL).toBeUndefined();
    expect(env.SMTP_URL).toBe("smtp://mailpit:1025");
    expect(configSchema.safeParse(env).success).toBe(true);
    expect(configSchema.safeParse(migrate).success).toBe(true);
    expect(compose.services.migrate.depends_on.postgres.condition).toBe("service_healthy");
    expect(compose.services.tidings.depends_on.migrate.condition).toBe("service_completed_successfully");
  });

  it("documents every configuration variable in .env.example", () => {
    const example = readFileSync(path.join(root, ".env.example"), "utf8");
    for (const key of Object.keys(configSchema.shape)) expect(example).toContain(`${key}=`);
  });
});
