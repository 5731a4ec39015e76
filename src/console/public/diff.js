// A line diff for the Templates page, written here rather than served from
// an npm package: the console is plain ES modules with no build step, and
// the `diff` package would have to be copied or routed out of node_modules
// for one function. Template fields are short (bounded by the template's
// schema and, in practice, tens of lines), so the textbook longest common
// subsequence table is fast enough; past LIMIT cells it gives up on
// alignment and shows the old text removed and the new text added.

const LIMIT = 4_000_000;

/**
 * The lines of `before` and `after` as a list of { op, text } in order:
 * op "same" (in both), "del" (only in before) or "add" (only in after).
 */
export function diffLines(before, after) {
  const a = before === "" ? [] : before.split("\n");
  const b = after === "" ? [] : after.split("\n");
  // Common start and end first: most edits touch a few lines in the middle.
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start++;
  let endA = a.length;
  let endB = b.length;
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) {
    endA--;
    endB--;
  }
  const head = a.slice(0, start).map((text) => ({ op: "same", text }));
  const tail = a.slice(endA).map((text) => ({ op: "same", text }));
  const x = a.slice(start, endA);
  const y = b.slice(start, endB);
  if (x.length * y.length > LIMIT) {
    return [...head, ...x.map((text) => ({ op: "del", text })), ...y.map((text) => ({ op: "add", text })), ...tail];
  }
  // lcs[i][j]: the length of the longest common subsequence of x[i..] and y[j..].
  const lcs = Array.from({ length: x.length + 1 }, () => new Uint32Array(y.length + 1));
  for (let i = x.length - 1; i >= 0; i--) {
    for (let j = y.length - 1; j >= 0; j--) {
      lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const middle = [];
  let i = 0;
  let j = 0;
  while (i < x.length && j < y.length) {
    if (x[i] === y[j]) {
      middle.push({ op: "same", text: x[i] });
      i++;
      j++;
    } else if (lcs[i + 1][j] >= lcs[i][j + 1]) middle.push({ op: "del", text: x[i++] });
    else middle.push({ op: "add", text: y[j++] });
  }
  while (i < x.length) middle.push({ op: "del", text: x[i++] });
  while (j < y.length) middle.push({ op: "add", text: y[j++] });
  return [...head, ...middle, ...tail];
}

/**
 * A template (or any JSON value) as its text fields by path, in a stable
 * order: { "email.subject": "…", "locales.fr.email.text": "…" }. Arrays and
 * other values appear as their JSON.
 */
export function flatten(value, prefix = "", out = {}) {
  if (value !== null && typeof value === "object" && !Array.isArray(value)) {
    for (const key of Object.keys(value)) flatten(value[key], prefix ? `${prefix}.${key}` : key, out);
  } else if (value !== undefined) {
    out[prefix] = typeof value === "string" ? value : JSON.stringify(value);
  }
  return out;
}

// The order a template is read in: what it is for, then the email as it is read, then Slack; each locale's variant after the default.
const FIELD_ORDER = ["description", "email.subject", "email.text", "email.markdown", "email.html", "slack.text"];

function fieldOrder(path) {
  const m = /^locales\.([^.]+)\.(.*)$/.exec(path);
  const inner = m ? m[2] : path;
  const rank = FIELD_ORDER.indexOf(inner);
  return [m ? m[1] : "", rank < 0 ? FIELD_ORDER.length : rank, path];
}

function compareFields(p, q) {
  const [la, ra, pa] = fieldOrder(p);
  const [lb, rb, pb] = fieldOrder(q);
  return la.localeCompare(lb) || ra - rb || pa.localeCompare(pb);
}

/**
 * Field by field: [{ path, change: "same" | "changed" | "added" | "removed", lines }],
 * in reading order (stored templates come back with their keys in the database's order, not the author's).
 */
export function diffFields(before, after) {
  const a = flatten(before);
  const b = flatten(after);
  const paths = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort(compareFields);
  return paths.map((path) => {
    const change = !(path in a) ? "added" : !(path in b) ? "removed" : a[path] === b[path] ? "same" : "changed";
    return { path, change, lines: change === "same" ? [] : diffLines(a[path] ?? "", b[path] ?? "") };
  });
}
