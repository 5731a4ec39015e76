import { get } from "./api.js";
import { cell, fill, h, table, time } from "./dom.js";

// Health: GET /v1/health, refreshed every 10 seconds.

const bytes = (n) => (n >= 1 << 30 ? `${(n / (1 << 30)).toFixed(1)} GB` : n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MB` : `${Math.round(n / 1024)} kB`);

export async function healthPage(main) {
  const content = h("div", { "aria-live": "off" });
  const refreshed = h("p", { class: "muted" });
  fill(main, h("h1", {}, "Health"), refreshed, content);

  async function load() {
    const s = await get("/v1/health");
    refreshed.replaceChildren("As of ", time(s.at), " (refreshes every 10 s)");
    fill(
      content,
      h("h2", {}, `Workers (${s.workers.length})`),
      s.workers.length === 0
        ? h("p", { class: "notice bad" }, "No worker process is running: nothing is being sent.")
        : table(
            "Worker processes",
            ["Process", "Host / pid", "Pools", "Started", "Last heartbeat"],
            s.workers.map((w) =>
              h(
                "tr",
                {},
                cell("Process", h("span", { class: "mono" }, w.processId)),
                cell("Host / pid", `${w.hostname} / ${w.pid}`),
                cell("Pools", String(w.pools)),
                cell("Started", time(w.startedAt)),
                cell("Heartbeat", time(w.heartbeatAt), h("span", { class: w.ageSeconds > 60 ? "error" : "muted" }, ` (${w.ageSeconds} s ago)`)),
              ),
            ),
          ),
      h("h2", {}, "Queue depth per task"),
      table(
        "Jobs waiting per task",
        ["Task", "Due now", "Later", "Running"],
        s.queue.map((q) => h("tr", {}, cell("Task", q.task), cell("Due now", String(q.now)), cell("Later", String(q.later)), cell("Running", String(q.running)))),
      ),
      h("h2", {}, "Projection and feed lag"),
      table(
        "Readers' lag",
        ["Reader", "Stream", "Waiting", "Oldest waiting"],
        s.lag.map((l) => h("tr", {}, cell("Reader", l.reader), cell("Stream", l.stream), cell("Waiting", String(l.waiting)), cell("Oldest", `${Math.round(l.oldestSeconds)} s`))),
      ),
      h("h2", {}, "Failures waiting for an operator"),
      s.failedWaiting.every((f) => f.failed === 0)
        ? h("p", { class: "muted" }, "None.")
        : table(
            "Failed per stream",
            ["Stream", "Concern", "Failed"],
            s.failedWaiting
              .filter((f) => f.failed > 0)
              .map((f) => h("tr", {}, cell("Stream", f.stream), cell("Concern", f.concern), cell("Failed", h("a", { href: "#/failures" }, String(f.failed))))),
          ),
      h("h3", {}, "By the hour they failed (last 24 hours)"),
      s.failuresPerHour.length === 0
        ? h("p", { class: "muted" }, "None.")
        : table(
            "Failures per hour",
            ["Hour", "Failed"],
            s.failuresPerHour.map((f) => h("tr", {}, cell("Hour", time(f.hour)), cell("Failed", String(f.failed)))),
          ),
      h("h2", {}, "Stream sizes"),
      table(
        "Stream sizes",
        ["Stream", "Rows (estimate)", "On disk"],
        s.streams.map((t) =>
          h(
            "tr",
            {},
            cell("Stream", h("span", { class: "mono" }, t.stream)),
            cell("Rows", t.estimatedRows === null ? "not analysed yet" : t.estimatedRows.toLocaleString()),
            cell("On disk", bytes(t.bytes)),
          ),
        ),
      ),
    );
  }
  await load();
  const timer = setInterval(() => void load().catch(() => {}), 10_000);
  return () => clearInterval(timer);
}
