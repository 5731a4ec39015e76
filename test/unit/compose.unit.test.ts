import { readFileSync } from "node:fs";
import path from "node:path";
import { parse } from "yaml";
import { configSchema } from "../../src/config/config";

const root = path.resolve(__dirname, "../..");

// No Docker engine runs where the tests run; check the file a user would run.
describe("docker-compose.yml", () => {
  const compose = parse(readFileSync(path.join(root, "docker-compose.yml"), "utf8"));

  it("runs PostgreSQL, tidings and an SMTP capture service with a web UI", () => {
    expect(Object.keys(compose.services).sort()).toEqual(["mailpit", "postgres", "tidings"]);
    expect(compose.services.postgres.image).toMatch(/^postgres:1[5-9]/);
    expect(compose.services.mailpit.ports).toEqual(expect.arrayContaining(["1025:1025", "8025:8025"]));
    expect(compose.services.tidings.build).toBe(".");
  });

  it("wires tidings to the database and the SMTP service with a valid configuration", () => {
    const env = compose.services.tidings.environment as Record<string, string>;
    const { POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB } = compose.services.postgres.environment;
    expect(env.DATABASE_URL).toBe(`postgres://${POSTGRES_USER}:${POSTGRES_PASSWORD}@postgres:5432/${POSTGRES_DB}`);
    expect(env.SMTP_URL).toBe("smtp://mailpit:1025");
    expect(configSchema.safeParse(env).success).toBe(true);
    expect(compose.services.tidings.depends_on.postgres.condition).toBe("service_healthy");
  });

  it("documents every configuration variable in .env.example", () => {
    const example = readFileSync(path.join(root, ".env.example"), "utf8");
    for (const key of Object.keys(configSchema.shape)) expect(example).toContain(`${key}=`);
  });
});
