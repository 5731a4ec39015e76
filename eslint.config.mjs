// @ts-check
// typescript-eslint's recommended type-aware rules, less those that fight this
// code's style (each turned off with its reason). Formatting is Prettier's.
import eslint from "@eslint/js";
import { defineConfig } from "eslint/config";
import globals from "globals";
import tseslint from "typescript-eslint";

export default defineConfig(
  { ignores: ["dist/", "coverage/", ".data/"] },
  eslint.configs.recommended,
  tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      globals: globals.node,
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // `_req`, `_next`: a parameter a signature needs (Express's error handler takes four).
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_", caughtErrors: "none" }],
      // Bots, transports and waitFor predicates implement promise-returning interfaces; some need no await.
      "@typescript-eslint/require-await": "off",
      // Objects here are closures (createMetrics, test databases), so passing `metrics.onHandled` keeps its state.
      "@typescript-eslint/unbound-method": "off",
      // graphile-worker's string-valued LogLevel is compared with its literal values.
      "@typescript-eslint/no-unsafe-enum-comparison": "off",
      // `let x = null` before a try whose catch or finally reads it.
      "no-useless-assignment": "off",
      // String() of a value already narrowed past null, undefined and objects (a primitive).
      "@typescript-eslint/no-base-to-string": "off",
      // A waiter's or a handler's failure is passed on as caught (unknown), not wrapped.
      "@typescript-eslint/prefer-promise-reject-errors": ["error", { allowThrowingUnknown: true }],
    },
  },
  {
    files: ["test/**", "bench/**"],
    rules: {
      // Tests and benchmarks read HTTP and SQL answers as JSON (any) and assert on their fields.
      "@typescript-eslint/no-explicit-any": "off",
      "@typescript-eslint/no-unsafe-argument": "off",
      "@typescript-eslint/no-unsafe-assignment": "off",
      "@typescript-eslint/no-unsafe-call": "off",
      "@typescript-eslint/no-unsafe-member-access": "off",
      "@typescript-eslint/no-unsafe-return": "off",
      // The CLI tests look for (or rule out) ANSI escape codes, which start with a control character.
      "no-control-regex": "off",
    },
  },
  // Configuration and jest setup files in plain JavaScript: outside tsconfig.json, so no type information.
  { files: ["**/*.{js,mjs,cjs}"], extends: [tseslint.configs.disableTypeChecked] },
);
