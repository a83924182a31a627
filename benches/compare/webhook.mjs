// The provisioning policy as a Node.js `node:http` webhook: the Node contender of the
// comparison harness (`verdict bench compare`, see benches/README.md).
//
// It implements examples/provisioning/policies/provisioning.yaml rule for rule, and its last
// rule does what the `cost-threshold` hook (examples/provisioning/hooks/cost-threshold.ts)
// does: GET {BILLING_URL}/projects/{project}/spend with the bearer token, then compare
// month-to-date spend + monthly cost with the budget in integer cents. The subject's identity
// record (status, transitive group names) comes from the same identity.json Verdict loads,
// indexed once at start.
//
// It answers POST (any path) with an AuthZEN evaluation response,
// {decision, context: {decided_by, reason, outputs?}}. Like a typical webhook it writes no
// decision log. The billing connection is kept alive (an http.Agent with keepAlive).
//
//   PORT=0 BILLING_URL=http://127.0.0.1:9300 BILLING_TOKEN=demo-token \
//   IDENTITY_FILE=examples/provisioning/identity.json node benches/compare/webhook.mjs
//
// Prints one line `webhook listening port=N` when ready; listens on 127.0.0.1 only.

import http from "node:http";
import fs from "node:fs";

const PORT = Number(process.env.PORT ?? 0);
const BILLING_URL = (process.env.BILLING_URL ?? "http://127.0.0.1:9300").replace(/\/+$/, "");
const BILLING_TOKEN = process.env.BILLING_TOKEN ?? "demo-token";
const IDENTITY_FILE = process.env.IDENTITY_FILE ?? "examples/provisioning/identity.json";
const MAX_BODY = 1 << 20;

// --- identity: users by id, email and username; group names per user, transitively ---
const identity = JSON.parse(fs.readFileSync(IDENTITY_FILE, "utf8"));
const users = new Map();
for (const u of identity.users) {
  for (const key of [u.id, u.email, u.username]) if (key) users.set(key, u);
}
const groupsById = new Map(identity.groups.map((g) => [g.id, g]));
// parentsOf: group id -> ids of the groups that contain it (member_group_ids).
const parentsOf = new Map();
for (const g of identity.groups) {
  for (const child of g.member_group_ids ?? []) {
    if (!parentsOf.has(child)) parentsOf.set(child, []);
    parentsOf.get(child).push(g.id);
  }
}
const groupNames = new Map();
for (const u of identity.users) {
  const seen = new Set();
  const stack = identity.groups.filter((g) => (g.member_ids ?? []).includes(u.id)).map((g) => g.id);
  while (stack.length > 0) {
    const id = stack.pop();
    if (seen.has(id)) continue;
    seen.add(id);
    stack.push(...(parentsOf.get(id) ?? []));
  }
  groupNames.set(u.id, [...seen].map((id) => groupsById.get(id).name));
}
function principal(subjectId) {
  const u = users.get(subjectId);
  if (u === undefined) return { found: false, groups: [] };
  return { ...u, found: true, groups: groupNames.get(u.id) ?? [] };
}

// --- the policy: provisioning.yaml, first match wins ---
async function decide(req) {
  const props = req.resource?.properties;
  if (props === undefined || props === null || !("monthly_cost" in props) || !("project" in props)) {
    return rule(false, "cost-missing", "the request must carry resource.properties.project and monthly_cost");
  }
  const p = principal(String(req.subject?.id ?? ""));
  if (p.found && p.status !== "enabled") {
    return rule(false, "inactive-requester", "the requester's account is not enabled");
  }
  const cost = props.monthly_cost;
  if (cost <= 50.0) return rule(true, "tiny-resources", "resources up to $50 a month are always allowed");
  if (cost > 20000.0) return rule(false, "over-hard-cap", "exceeds the hard cap of $20,000 a month");
  if (p.groups.includes("platform-admins") && cost <= 5000.0) {
    return rule(true, "platform-admins", "platform admins may provision up to $5,000 a month without a budget check");
  }
  try {
    const outcome = await costThreshold(props);
    return { decision: outcome.decision, context: { decided_by: "hook:cost-threshold", reason: outcome.reason, outputs: outcome.outputs } };
  } catch (e) {
    // The rule's on_error (deny), as in Verdict.
    return { decision: false, context: { decided_by: "error", reason: `hook cost-threshold failed: ${e.message}` } };
  }
}

function rule(decision, name, reason) {
  return { decision, context: { decided_by: `rule:provisioning/${name}`, reason } };
}

// --- the cost-threshold hook, as in hooks/cost-threshold.ts ---
const PROJECT_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const DECIMAL = /^(-?)(\d{1,13})(?:\.(\d{1,2}))?$/;
const MAX_CENTS = 1e15;
const agent = new http.Agent({ keepAlive: true });

async function costThreshold(props) {
  const project = props.project;
  if (typeof project !== "string" || !PROJECT_ID.test(project)) {
    return deny("resource.properties.project must be a project id (letters, digits, '.', '_', '-')");
  }
  const cost = cents(props.monthly_cost);
  if (cost === null || cost < 0) return deny("resource.properties.monthly_cost must be a non-negative amount");
  const res = await get(`${BILLING_URL}/projects/${encodeURIComponent(project)}/spend`);
  if (res.status === 404) return deny(`unknown project ${project}: the billing API has no such project`);
  if (res.status !== 200) throw new Error(`billing API answered HTTP ${res.status} for project ${project}`);
  let body;
  try {
    body = JSON.parse(res.text);
  } catch {
    return deny(`malformed billing data for project ${project}: not JSON`);
  }
  const spend = parseSpend(body, project);
  if (typeof spend === "string") return deny(`malformed billing data for project ${project}: ${spend}`);
  const total = spend.monthToDate + cost;
  const remaining = spend.budget - total;
  const outputs = {
    remaining: remaining / 100,
    month_to_date: spend.monthToDate / 100,
    budget: spend.budget / 100,
    currency: spend.currency,
  };
  if (spend.asOf !== undefined) outputs.as_of = spend.asOf;
  const sum = `${money(spend.monthToDate)} spent + ${money(cost)} requested = ${money(total)}`;
  if (remaining >= 0) {
    return { decision: true, reason: `within budget: ${sum} of ${money(spend.budget)} ${spend.currency}; ${money(remaining)} left`, outputs };
  }
  return { decision: false, reason: `over budget: ${sum} exceeds ${money(spend.budget)} ${spend.currency} by ${money(-remaining)}`, outputs };
}

function get(url) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent, timeout: 300, headers: { authorization: `Bearer ${BILLING_TOKEN}`, accept: "application/json" } }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", reject);
  });
}

function parseSpend(obj, project) {
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) return "expected a JSON object";
  if (obj.project !== undefined && obj.project !== project) return `answer is for project ${String(obj.project)}`;
  const monthToDate = cents(obj.month_to_date);
  if (monthToDate === null) return "month_to_date is not a decimal amount";
  const budget = cents(obj.budget);
  if (budget === null || budget < 0) return "budget is not a non-negative decimal amount";
  const currency = obj.currency;
  if (typeof currency !== "string" || !/^[A-Z]{3}$/.test(currency)) return "currency is not a three-letter code";
  return typeof obj.as_of === "string" ? { monthToDate, budget, currency, asOf: obj.as_of } : { monthToDate, budget, currency };
}

function cents(v) {
  if (typeof v === "number") {
    if (!Number.isFinite(v)) return null;
    const c = Math.round(v * 100);
    return Math.abs(c) <= MAX_CENTS ? c : null;
  }
  if (typeof v !== "string") return null;
  const m = DECIMAL.exec(v.trim());
  if (m === null) return null;
  const c = Number(m[2]) * 100 + Number((m[3] ?? "").padEnd(2, "0"));
  return m[1] === "-" ? -c : c;
}

function money(c) {
  const abs = Math.abs(c);
  return `${c < 0 ? "-" : ""}${Math.trunc(abs / 100)}.${String(abs % 100).padStart(2, "0")}`;
}

function deny(reason) {
  return { decision: false, reason };
}

// --- HTTP ---
function send(res, status, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(data) });
  res.end(data);
}

const server = http.createServer((req, res) => {
  if (req.method !== "POST") return send(res, 405, { error: "method_not_allowed" });
  const chunks = [];
  let size = 0;
  req.on("data", (c) => {
    size += c.length;
    if (size > MAX_BODY) req.destroy();
    else chunks.push(c);
  });
  req.on("end", () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      return send(res, 400, { error: "invalid_json" });
    }
    if (typeof body?.subject?.id !== "string" || typeof body?.action?.name !== "string" || typeof body?.resource?.type !== "string") {
      return send(res, 400, { error: "invalid_request" });
    }
    decide(body).then((d) => send(res, 200, d), (e) => send(res, 500, { error: "internal", message: String(e) }));
  });
});
server.keepAliveTimeout = 60_000;
server.listen(PORT, "127.0.0.1", () => {
  console.log(`webhook listening port=${server.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));
