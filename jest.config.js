/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: "node",
  transform: { "^.+\\.ts$": ["@swc/jest", { jsc: { parser: { syntax: "typescript" }, target: "es2022" } }] },
  testMatch: ["<rootDir>/test/**/*.test.ts"],
  // Starts the embedded PostgreSQL when DATABASE_URL is unset and builds the
  // migrated template database every test file clones (test/setup).
  globalSetup: "<rootDir>/test/setup/globalSetup.mjs",
  globalTeardown: "<rootDir>/test/setup/globalTeardown.mjs",
  maxWorkers: 2,
  testTimeout: 30_000,
  detectOpenHandles: false,
};
