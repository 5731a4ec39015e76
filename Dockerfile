FROM node:22-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev
COPY tsconfig.json ./
COPY migrations ./migrations
COPY src ./src
COPY scripts ./scripts
ENV NODE_ENV=production
# How an operator runs this container's npm scripts from the host (docker-compose.yml's
# service): the start-up hint for creating an API key prints it (src/auth/keyCommand.ts).
ENV TIDINGS_EXEC_PREFIX="docker compose exec tidings"
EXPOSE 3000
CMD ["node", "--import", "tsx", "src/main.ts"]
