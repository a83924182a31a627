// service-label: is this account a service (non-human) identity, judged by its names?
//
// Request: resource = { type: "account", id: "<account id>",
//                       properties: { username: "deploy-bot", email?: "...", display_name?: "..." } }
//   The caller sends the account's names: the SDK has no lookup of an account by id.
// Config:  service_patterns  extra regular expressions (JavaScript source strings, matched
//                            case-insensitively against the username and the email), e.g.
//                            ["^jenkins", "^tf-"]; optional
//
// Rules (each that matches is listed in outputs.matched; any one labels the account "service"):
//   prefix:svc- prefix:sa- prefix:bot-      username starts so ('-', '_' or '.' after the word)
//   suffix:-bot suffix:-svc suffix:-service username ends so (any of those separators before)
//   word:deploy word:ci word:build word:automation
//                                   a whole word of the username or display name
//                                   ("ci-runner", "CI pipeline"; not "cindy" or "buildkite")
//   email:noreply                   email local part noreply, no-reply, donotreply, do-not-reply
//   identity:<type>-user            the username or email belongs to a user of type service,
//                                   system or agent in the identity data
//   no-human-name                   a display name is given and does not look like a person's
//                                   name (2 to 4 words of letters, e.g. "Jenkins",
//                                   "Terraform 2"); not applied when the email belongs to a
//                                   human user, and not applied without a display name: a bare
//                                   username like "jdoe" cannot be judged
//   pattern:<source>                one of config service_patterns
//
// Outcomes:
//   decision true   outputs { label: "service", matched: [rule names] }
//   decision false  outputs { label: "human", matched: [] }, or no outputs for a bad request
//   error           config service_patterns is not a list of valid regular expressions

import type { DecisionRequest, HookResult, JsonValue, Sdk } from "./verdict";

const PREFIX = /^(svc|sa|bot)[-_.]/;
const SUFFIX = /[-_.](bot|svc|service)$/;
const WORDS: ReadonlySet<string> = new Set(["deploy", "ci", "build", "automation"]);
const NOREPLY: ReadonlySet<string> = new Set(["noreply", "no-reply", "donotreply", "do-not-reply"]);
const NON_HUMAN_TYPES: ReadonlySet<string> = new Set(["service", "system", "agent"]);

/** 2 to 4 words, each of letters with inner apostrophes, hyphens or a trailing dot. */
const PERSON_NAME = /^\p{L}[\p{L}\p{M}'’.-]*(?:\s+\p{L}[\p{L}\p{M}'’.-]*){1,3}$/u;

/**
 * Per-worker cache of the compiled config patterns, keyed by their JSON so that a config
 * change (a reload) recompiles. Losing it only costs a recompile.
 */
let compiled: { key: string; patterns: { source: string; re: RegExp }[] } | undefined;

export default async function decide(req: DecisionRequest, sdk: Sdk): Promise<HookResult> {
  const patterns = configPatterns(sdk.config["service_patterns"]);

  if (req.resource.type !== "account") {
    return { decision: false, reason: `resource type must be "account", not "${req.resource.type}"` };
  }
  const props = req.resource.properties ?? {};
  const username = props["username"];
  if (typeof username !== "string" || username.trim() === "") {
    return { decision: false, reason: "resource.properties.username is required" };
  }
  const email = optionalString(props["email"]);
  const displayName = optionalString(props["display_name"]);

  const name = username.trim().toLowerCase();
  const matched: string[] = [];
  const add = (rule: string): void => {
    if (!matched.includes(rule)) matched.push(rule);
  };

  const prefix = PREFIX.exec(name);
  if (prefix !== null) add(`prefix:${prefix[1]}-`);
  const suffix = SUFFIX.exec(name);
  if (suffix !== null) add(`suffix:-${suffix[1]}`);

  for (const word of [...words(name), ...words(displayName ?? "")]) {
    if (WORDS.has(word)) add(`word:${word}`);
  }

  const localPart = email === undefined ? undefined : email.toLowerCase().split("@")[0]?.split("+")[0];
  if (localPart !== undefined && NOREPLY.has(localPart)) add("email:noreply");

  const owner = (email === undefined ? null : sdk.identity.userByEmail(email)) ?? sdk.identity.userByUsername(name);
  if (owner !== null && owner.type !== undefined && NON_HUMAN_TYPES.has(owner.type)) {
    add(`identity:${owner.type}-user`);
  }
  const humanOwner = owner !== null && owner.type === "human";

  if (displayName !== undefined && !humanOwner && !PERSON_NAME.test(displayName.trim())) {
    add("no-human-name");
  }

  for (const { source, re } of patterns) {
    if (re.test(username) || (email !== undefined && re.test(email))) add(`pattern:${source}`);
  }

  if (matched.length > 0) {
    return {
      decision: true,
      reason: `service: matched ${matched.join(", ")}`,
      outputs: { label: "service", matched },
    };
  }
  return {
    decision: false,
    reason: "human: no service naming rule matched",
    outputs: { label: "human", matched },
  };
}

/** Lowercase words of letters only ("ci2-runner" → ["ci", "runner"]). */
function words(s: string): string[] {
  return s.toLowerCase().split(/[^a-z]+/).filter((w) => w !== "");
}

function optionalString(v: JsonValue | undefined): string | undefined {
  return typeof v === "string" && v.trim() !== "" ? v.trim() : undefined;
}

/** The compiled `service_patterns`, from the cache when the config is unchanged. */
function configPatterns(value: JsonValue | undefined): { source: string; re: RegExp }[] {
  const key = JSON.stringify(value ?? null);
  if (compiled !== undefined && compiled.key === key) return compiled.patterns;
  const patterns: { source: string; re: RegExp }[] = [];
  if (value !== undefined && value !== null) {
    if (!Array.isArray(value)) {
      throw new Error("service-label: config service_patterns must be a list of regular expressions");
    }
    for (const source of value as readonly JsonValue[]) {
      if (typeof source !== "string" || source === "") {
        throw new Error("service-label: config service_patterns must be a list of non-empty strings");
      }
      let re: RegExp;
      try {
        re = new RegExp(source, "i");
      } catch (e) {
        throw new Error(`service-label: config service_patterns: invalid regular expression ${JSON.stringify(source)}: ${String(e)}`);
      }
      patterns.push({ source, re });
    }
  }
  compiled = { key, patterns };
  return patterns;
}
