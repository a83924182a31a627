// cost-threshold: may this project provision a resource costing `monthly_cost` a month?
//
// Called by the provisioning policy's last rule (`hook: cost-threshold`) for the middle band of
// costs that CEL cannot decide alone. Asks the billing API for the project's month-to-date
// spend and budget, and allows when month_to_date + monthly_cost <= budget.
//
// Request: resource.properties = { project: "proj-alpha", monthly_cost: 120 }
//          (monthly_cost: a number or a decimal string, in the budget's currency)
// Config:  billing_url   base URL of the billing API, e.g. "https://billing.internal"
// Secrets: BILLING_TOKEN bearer token for the billing API
//
// The billing API answers GET {billing_url}/projects/{project}/spend with
//   {"project": "proj-alpha", "month_to_date": "2310.40", "budget": "2500.00",
//    "currency": "USD", "as_of": "2026-11-25T06:00:00Z"}
// Money is a decimal string; all arithmetic here is in integer cents, so there is no
// floating-point rounding in the comparison.
//
// Outcomes:
//   allow  within budget; outputs { remaining, month_to_date, budget, currency, as_of? }
//   deny   over budget (same outputs, remaining negative), unknown project (404), malformed
//          request or malformed billing data
//   error  billing_url not configured, BILLING_TOKEN not declared, the fetch failed, or the
//          billing API answered anything but 200/404: the rule's on_error outcome applies.

import type { DecisionRequest, HookResult, JsonObject, JsonValue, Sdk } from "./verdict";

/** Project ids allowed into the URL path: no slashes, no dot-segments. */
const PROJECT_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** A decimal amount with at most two fractional digits (e.g. "2310.40", "-3", "0.5"). */
const DECIMAL = /^(-?)(\d{1,13})(?:\.(\d{1,2}))?$/;

/** Amounts above this many cents are not believable (and would lose integer precision). */
const MAX_CENTS = 1e15;

export default async function decide(req: DecisionRequest, sdk: Sdk): Promise<HookResult> {
  const props = req.resource.properties ?? {};

  const project = props["project"];
  if (typeof project !== "string" || !PROJECT_ID.test(project)) {
    return deny("resource.properties.project must be a project id (letters, digits, '.', '_', '-')");
  }
  const cost = cents(props["monthly_cost"]);
  if (cost === null || cost < 0) {
    return deny("resource.properties.monthly_cost must be a non-negative amount");
  }

  const base = sdk.config["billing_url"];
  if (typeof base !== "string" || !/^https?:\/\/[^/?#]+/.test(base)) {
    throw new Error("cost-threshold: config billing_url must be an http(s) URL");
  }
  const url = `${base.replace(/\/+$/, "")}/projects/${encodeURIComponent(project)}/spend`;
  const res = await sdk.fetch(url, {
    method: "GET",
    headers: {
      authorization: `Bearer ${sdk.secrets.get("BILLING_TOKEN")}`,
      accept: "application/json",
    },
  });
  sdk.log.info(`billing spend for project ${project}: HTTP ${res.status}`);

  if (res.status === 404) {
    return deny(`unknown project ${project}: the billing API has no such project`);
  }
  if (res.status !== 200) {
    throw new Error(`billing API answered HTTP ${res.status} for project ${project}`);
  }

  let body: JsonValue;
  try {
    body = res.json();
  } catch {
    return deny(`malformed billing data for project ${project}: not JSON`);
  }
  const spend = parseSpend(body, project);
  if (typeof spend === "string") {
    return deny(`malformed billing data for project ${project}: ${spend}`);
  }

  const total = spend.monthToDate + cost;
  const remaining = spend.budget - total;
  const outputs: JsonObject = {
    remaining: remaining / 100,
    month_to_date: spend.monthToDate / 100,
    budget: spend.budget / 100,
    currency: spend.currency,
  };
  if (spend.asOf !== undefined) outputs["as_of"] = spend.asOf;

  const sum = `${money(spend.monthToDate)} spent + ${money(cost)} requested = ${money(total)}`;
  if (remaining >= 0) {
    return {
      decision: true,
      reason: `within budget: ${sum} of ${money(spend.budget)} ${spend.currency}; ${money(remaining)} left`,
      outputs,
    };
  }
  return {
    decision: false,
    reason: `over budget: ${sum} exceeds ${money(spend.budget)} ${spend.currency} by ${money(-remaining)}`,
    outputs,
  };
}

type Spend = { monthToDate: number; budget: number; currency: string; asOf?: string };

/** The billing answer in cents, or what is wrong with it. */
function parseSpend(body: JsonValue, project: string): Spend | string {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    return "expected a JSON object";
  }
  const obj = body as JsonObject;
  if (obj["project"] !== undefined && obj["project"] !== project) {
    return `answer is for project ${String(obj["project"])}`;
  }
  const monthToDate = cents(obj["month_to_date"]);
  if (monthToDate === null) return "month_to_date is not a decimal amount";
  const budget = cents(obj["budget"]);
  if (budget === null || budget < 0) return "budget is not a non-negative decimal amount";
  const currency = obj["currency"];
  if (typeof currency !== "string" || !/^[A-Z]{3}$/.test(currency)) {
    return "currency is not a three-letter code";
  }
  const asOf = obj["as_of"];
  return typeof asOf === "string" ? { monthToDate, budget, currency, asOf } : { monthToDate, budget, currency };
}

/**
 * An amount in integer cents: a decimal string with up to two fractional digits, or a finite
 * number (rounded to the nearest cent). Anything else is null.
 */
function cents(v: JsonValue | undefined): number | null {
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

/** Cents as a plain decimal string with two fractional digits (no Intl, no grouping). */
function money(c: number): string {
  const abs = Math.abs(c);
  return `${c < 0 ? "-" : ""}${Math.trunc(abs / 100)}.${String(abs % 100).padStart(2, "0")}`;
}

function deny(reason: string): HookResult {
  return { decision: false, reason };
}
