// account-match: which user owns this unowned account?
//
// Request: resource.properties = { app_id: "app-github", username?: "morty-acme",
//                                  email?: "...", display_name?: "...", candidates?: ["u-1", ...] }
// Config:  min_score       lowest score that counts as a match (default 70)
//          strip_suffixes  extra username decorations to strip, e.g. ["acme"] for "morty-acme"
//                          (always stripped: adm, admin, ext, old, test)
//
// Rules, each user scored by the best rule that finds it:
//   email              100  the email is one of a user's emails (primary or emails[])
//   username            90  the username is a user's username (case-insensitive)
//   username-stripped   70  the username without decorations is a user's username: trailing
//                           digits and "-word", "_word" or ".word" suffixes from the list above
//                           are removed one at a time ("rick_adm2" → "rick_adm" → "rick"), and
//                           every intermediate form is looked up
//   display-name        60  the display name equals "given_name family_name" (or, for a user
//                           without both, display_name) of a user, ignoring case, accents and
//                           spacing
// The SDK has lookups by email, username and id but no "all users" listing, so the
// display-name rule only compares against the users listed in `candidates` (user ids the
// caller already narrowed down, e.g. the members of the app's team); without candidates it is
// skipped. Searching every user would cost O(users) per call anyway.
//
// Outcomes:
//   allow  exactly one user has the best score and it is >= min_score;
//          outputs { user_id, score, rule, user_status, user_has_app_account, others }
//          (`others`: users found by weaker rules, for review)
//   deny   "ambiguous: ..." when two or more users share the best score (outputs list them);
//          the best score below min_score (outputs still name the user, for a human to
//          confirm); no match; a request without app_id or without any name to match
//   error  config min_score or strip_suffixes has the wrong type

import type { DecisionRequest, HookResult, JsonValue, Sdk, User } from "./verdict";

type Rule = "email" | "username" | "username-stripped" | "display-name";

const SCORES: Readonly<Record<Rule, number>> = {
  "email": 100,
  "username": 90,
  "username-stripped": 70,
  "display-name": 60,
};

/** Suffixes stripped from usernames in every deployment. */
const DECORATIONS: readonly string[] = ["adm", "admin", "ext", "old", "test"];

/** At most this many candidates are compared by display name. */
const MAX_CANDIDATES = 500;

type Match = { user: User; score: number; rule: Rule };

export default async function decide(req: DecisionRequest, sdk: Sdk): Promise<HookResult> {
  const minScore = numberConfig(sdk.config["min_score"], 70);
  const decorations = new Set([...DECORATIONS, ...stringListConfig(sdk.config["strip_suffixes"])]);

  const props = req.resource.properties ?? {};
  const appId = props["app_id"];
  if (typeof appId !== "string" || appId === "") {
    return deny("resource.properties.app_id is required");
  }
  const username = text(props["username"]);
  const email = text(props["email"]);
  const displayName = text(props["display_name"]);
  if (username === undefined && email === undefined && displayName === undefined) {
    return deny("send at least one of username, email or display_name to match");
  }
  const candidates = props["candidates"];
  if (candidates !== undefined && !isStringList(candidates)) {
    return deny("resource.properties.candidates must be a list of user ids");
  }
  if (candidates !== undefined && candidates.length > MAX_CANDIDATES) {
    return deny(`at most ${MAX_CANDIDATES} candidates can be compared by display name`);
  }

  // Best match per user id.
  const best = new Map<string, Match>();
  const found = (user: User | null, rule: Rule): void => {
    if (user === null) return;
    const score = SCORES[rule];
    const seen = best.get(user.id);
    if (seen === undefined || seen.score < score) best.set(user.id, { user, score, rule });
  };

  if (email !== undefined) found(sdk.identity.userByEmail(email), "email");
  if (username !== undefined) {
    found(sdk.identity.userByUsername(username), "username");
    for (const stem of stems(username, decorations)) {
      found(sdk.identity.userByUsername(stem), "username-stripped");
    }
  }
  if (displayName !== undefined && candidates !== undefined) {
    const wanted = normalName(displayName);
    for (const id of candidates) {
      const user = sdk.identity.user(id);
      if (user !== null && normalName(fullName(user)) === wanted) found(user, "display-name");
    }
  }

  const ranked = [...best.values()].sort((a, b) => b.score - a.score || compare(a.user.id, b.user.id));
  const top = ranked[0];
  if (top === undefined) {
    return deny("no user matches this account");
  }
  const tied = ranked.filter((m) => m.score === top.score);
  if (tied.length > 1) {
    const ids = tied.map((m) => m.user.id);
    return {
      decision: false,
      reason: `ambiguous: ${ids.join(", ")} all match by ${top.rule} (score ${top.score})`,
      outputs: { score: top.score, rule: top.rule, user_ids: ids },
    };
  }

  const others = ranked.slice(1).map((m) => ({ user_id: m.user.id, score: m.score, rule: m.rule }));
  const outputs = {
    user_id: top.user.id,
    score: top.score,
    rule: top.rule,
    user_status: top.user.status ?? null,
    user_has_app_account: sdk.identity.hasApp(top.user.id, appId),
    others,
  };
  if (top.score < minScore) {
    return {
      decision: false,
      reason: `best match ${top.user.id} by ${top.rule} scores ${top.score}, below the minimum ${minScore}`,
      outputs,
    };
  }
  return {
    decision: true,
    reason: `matched ${top.user.id} by ${top.rule} (score ${top.score})`,
    outputs,
  };
}

/**
 * The username with decorations removed step by step, each intermediate form once, not
 * including the username itself: "rick_adm2" → ["rick_adm", "rick"].
 */
function stems(username: string, decorations: ReadonlySet<string>): string[] {
  const out: string[] = [];
  let s = username.toLowerCase();
  for (let step = 0; step < 8; step++) {
    let next = s.replace(/\d+$/, "").replace(/[-_.]+$/, "");
    if (next === s) {
      const m = /^(.+?)[-_.]([a-z]+)$/.exec(s);
      if (m !== null && decorations.has(m[2] ?? "")) next = m[1] ?? "";
    }
    if (next === s || next === "") break;
    out.push(next);
    s = next;
  }
  return out;
}

/** "given family" when the user has both, else the display name. */
function fullName(user: User): string {
  if (user.given_name !== undefined && user.family_name !== undefined) {
    return `${user.given_name} ${user.family_name}`;
  }
  return user.display_name ?? "";
}

/** Lowercase, accents removed, runs of spaces collapsed: "Zoë  Ångström" → "zoe angstrom". */
function normalName(name: string): string {
  return name.normalize("NFKD").replace(/\p{M}/gu, "").toLowerCase().trim().split(/\s+/).join(" ");
}

/** Code-unit order, so ties list deterministically without Intl collation. */
function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function text(v: JsonValue | undefined): string | undefined {
  return typeof v === "string" && v.trim() !== "" ? v.trim() : undefined;
}

function isStringList(v: JsonValue): v is readonly string[] {
  return Array.isArray(v) && v.every((x) => typeof x === "string");
}

function numberConfig(v: JsonValue | undefined, fallback: number): number {
  if (v === undefined || v === null) return fallback;
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0 || v > 100) {
    throw new Error("account-match: config min_score must be a number from 0 to 100");
  }
  return v;
}

function stringListConfig(v: JsonValue | undefined): string[] {
  if (v === undefined || v === null) return [];
  if (!isStringList(v)) {
    throw new Error("account-match: config strip_suffixes must be a list of strings");
  }
  return v.map((s) => s.toLowerCase().replace(/^[-_.]+/, ""));
}

function deny(reason: string): HookResult {
  return { decision: false, reason };
}
