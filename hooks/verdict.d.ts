/**
 * Types for Verdict hooks: the request a hook is handed, the result it must return, and the
 * SDK it may use. Hooks import them with `import type { ... } from "./verdict";`.
 *
 * A hook is one TypeScript file `hooks/NAME.ts`, called when a CEL rule says `hook: NAME`:
 *
 * ```ts
 * import type { DecisionRequest, HookResult, Sdk } from "./verdict";
 * export default async function decide(req: DecisionRequest, sdk: Sdk): Promise<HookResult> {
 *   return { decision: true, reason: "why", outputs: { anything: "JSON" } };
 * }
 * ```
 *
 * How hooks run, and what that means for the code you write:
 * - Types are stripped (oxc) and the plain ES module runs in QuickJS, not Node or a browser.
 *   Use only erasable TypeScript: no `enum`, `namespace`, decorators or parameter properties.
 *   The only import allowed is `import type` from `"./verdict"`; a hook is a single file.
 * - There is no `console`, `fetch`, `setTimeout`, `process`, `require`, `Intl`, `eval` or
 *   `Function` constructor. Use `sdk.log`, `sdk.fetch`. Do not rely on `Date.now()` or
 *   `Math.random()`: decisions should be deterministic.
 * - Built-ins and `globalThis` are frozen. Module-level `const` tables are fine. Module-level
 *   mutable state (a `let`, or a mutated `Map`) lives as long as one worker's context and is
 *   not shared between workers: use it only as a cache that may be empty on any call.
 * - A thrown error, a rejected promise, a timeout, a limit breach or a result of the wrong
 *   shape is a hook *error*: the calling rule's `on_error` outcome applies (deny by default).
 *   Return `{ decision: false, reason }` for an ordinary denial; throw for "could not decide".
 * - Everything a hook receives and returns is JSON. Values that JSON cannot carry (functions,
 *   `Map`, `Set`, `undefined` in arrays, `NaN`) must not appear in `outputs`.
 *
 * This file declares types only; it is never loaded by the runtime.
 */

// ---------------------------------------------------------------------------------------------
// JSON

/** A JSON scalar. */
export type JsonPrimitive = string | number | boolean | null;

/** Any JSON value. Narrow it (`typeof`, `Array.isArray`) before use. */
export type JsonValue = JsonPrimitive | readonly JsonValue[] | JsonObject;

/**
 * A JSON object. Reading a key that is absent gives `undefined`, so the value type says so.
 * Keys whose value is `undefined` are dropped when the object is serialized.
 */
export type JsonObject = { [key: string]: JsonValue | undefined };

// ---------------------------------------------------------------------------------------------
// Identity records (the snapshot format v1, as the identity index serves them)
//
// Optional fields are *absent* (not null) when the snapshot does not have them; empty lists
// (`emails`, `member_ids`, `owner_ids`, ...) may be absent too.

/** `enabled`, `disabled` or `deleted`; other values are passed through as written. */
export type Status = "enabled" | "disabled" | "deleted" | (string & {});

/** The kind of identity a user is; other values are passed through as written. */
export type UserType = "human" | "service" | "system" | "agent" | (string & {});

/** The kind of account an app holds; other values are passed through as written. */
export type AccountType = "user" | "service" | "system" | (string & {});

/** A user (identity): a person, or a service, system or agent identity. */
export type User = {
  /** Opaque id, unique among users. */
  id: string;
  /** Login name; compared case-insensitively by every lookup. */
  username?: string;
  /** Primary email address. */
  email?: string;
  /** All email addresses, usually including the primary one. */
  emails?: string[];
  /** Name to show, e.g. "John Doe". */
  display_name?: string;
  /** Given (first) name. */
  given_name?: string;
  /** Family (last) name. */
  family_name?: string;
  /** Account status. */
  status?: Status;
  /** `human`, `service`, `system` or `agent`. */
  type?: UserType;
  /** Department name. */
  department?: string;
  /** Job title. */
  job_title?: string;
  /** Id of this user's manager. */
  manager_id?: string;
  /** HR employee number. */
  employee_id?: string;
  /** Id in the upstream system (IdP or SCIM `externalId`). */
  external_id?: string;
  /** Free-form attributes: cost center, location, owner team, ... */
  attributes?: JsonObject;
};

/** A group of users, which may contain other groups (membership is transitive). */
export type Group = {
  /** Opaque id, unique among groups. */
  id: string;
  /** Name; compared case-insensitively, not necessarily unique. */
  name: string;
  /** Free text. */
  description?: string;
  /** Ids of the users that are direct members. */
  member_ids?: string[];
  /** Ids of the groups that are direct members. */
  member_group_ids?: string[];
};

/** A connected application. */
export type App = {
  /** Opaque id, unique among apps, e.g. `app-github`. */
  id: string;
  /** Name to show. */
  name?: string;
  /** Ids of the users who own the app. */
  owner_ids?: string[];
};

/** A permission that can be granted within one app. */
export type Entitlement = {
  /** Opaque id, unique among all entitlements. */
  id: string;
  /** Id of the app it belongs to. */
  app_id: string;
  /** Short name, unique within its app (e.g. `admin`). */
  slug?: string;
  /** Name to show. */
  display_name?: string;
  /** Kind of resource within the app (e.g. `org`, `repo`). */
  resource_type?: string;
  /** The resource it applies to (e.g. `acme`). */
  resource_id?: string;
  /** Risk label (e.g. `low`, `medium`, `high`). */
  risk?: string;
};

/** An account in one app, owned by a user or unmatched. */
export type Account = {
  /** Opaque id, unique among accounts. */
  id: string;
  /** Id of the app the account lives in. */
  app_id: string;
  /** Id of the owning user; `null` marks an unmatched (unowned) account. */
  user_id: string | null;
  /** Login name in the app. Counts as taken for username generation. */
  username?: string;
  /** Email address in the app. */
  email?: string;
  /** `user`, `service` or `system`. */
  type?: AccountType;
  /** Account status. */
  status?: Status;
};

/** An entitlement held by an account. */
export type Grant = {
  /** Id of the account holding the entitlement. */
  account_id: string;
  /** Id of the entitlement held. */
  entitlement_id: string;
  /** `direct`, or `group:<group_id>` when inherited through a group. */
  source?: "direct" | `group:${string}` | (string & {});
  /** When it was granted (usually RFC 3339). */
  granted_at?: string;
  /** When it expires (usually RFC 3339); `null` or absent for never. Not filtered on. */
  expires_at?: string | null;
};

/** The requesting subject, found in the identity data: its record plus its groups. */
export type KnownPrincipal = User & {
  /** Names of every group the user is in, directly or through nesting. */
  groups: string[];
  /** The subject was found in the identity data. */
  found: true;
};

/** The requesting subject, not found in the identity data. */
export type UnknownPrincipal = {
  /** The subject id exactly as the request gave it. */
  id: string;
  /** Always empty. */
  groups: string[];
  /** The subject was not found in the identity data. */
  found: false;
};

/**
 * The identity record of the request's subject (looked up by id, then email, then username).
 * Test `principal.found` before reading user fields:
 * `if (req.principal.found && req.principal.status === "enabled") ...`
 */
export type Principal = KnownPrincipal | UnknownPrincipal;

// ---------------------------------------------------------------------------------------------
// Request and result

/** The AuthZEN subject: who asks. */
export type Subject = {
  /** E.g. `user`. */
  type: string;
  /** The subject's id, email or username. */
  id: string;
  /** Whatever the caller sent about the subject. */
  properties?: JsonObject;
};

/** The AuthZEN action: what the subject wants to do. */
export type Action = {
  /** E.g. `provision`, `read`. */
  name: string;
  /** Whatever the caller sent about the action. */
  properties?: JsonObject;
};

/** The AuthZEN resource: what the action is done to. */
export type Resource = {
  /** E.g. `cloud.vm`, `account`. */
  type: string;
  /** The resource's id. */
  id: string;
  /** Whatever the caller sent about the resource. */
  properties?: JsonObject;
};

/** What a hook is asked to decide: the AuthZEN evaluation request plus the principal. */
export type DecisionRequest = {
  readonly subject: Subject;
  readonly action: Action;
  readonly resource: Resource;
  /** The request's context object, if the caller sent one. */
  readonly context?: JsonObject;
  /** The subject's identity record (see {@link Principal}). */
  readonly principal: Principal;
};

/**
 * What a hook returns. Anything else (a missing or non-boolean `decision`, a non-string
 * `reason`, non-object `outputs`, extra keys) is a hook error and the rule's `on_error`
 * outcome applies.
 */
export type HookResult = {
  /** `true` allows (or, for a labelling hook, says "yes"); `false` denies. */
  decision: boolean;
  /** Why, for the caller and the decision log. */
  reason?: string;
  /** Extra data returned to the caller and logged (secret values are redacted). */
  outputs?: JsonObject;
};

/**
 * The shape of a hook's default export. Prefer declaring the function with an explicit return
 * type, `async function decide(req: DecisionRequest, sdk: Sdk): Promise<HookResult>`: TypeScript
 * then also rejects unknown keys in returned object literals (`{ decision: true, allow: true }`),
 * which it does not check for an arrow function assigned to a `Hook`-typed variable.
 */
export type Hook = (req: DecisionRequest, sdk: Sdk) => HookResult | Promise<HookResult>;

// ---------------------------------------------------------------------------------------------
// SDK

/**
 * Lookups in the identity snapshot the request was decided against. All synchronous and
 * O(1) or O(result). Wherever a parameter is called `uid`, it may be a user id, an email or a
 * username (resolved in that order); an unknown user gives `null`, `false` or `[]`.
 * Names, usernames and emails are compared case-insensitively. Returned records are copies:
 * changing them changes nothing.
 */
export interface Identity {
  /** The user with this id, or `null`. */
  user(id: string): User | null;
  /** The user with this email (primary or any of `emails`), or `null`. */
  userByEmail(email: string): User | null;
  /** The user with this username, or `null`. */
  userByUsername(username: string): User | null;
  /** Names of every group the user is in, directly or through nested groups. */
  groupsOf(uid: string): string[];
  /** Whether the user is in the group (a group id, or a name), directly or through nesting. */
  inGroup(uid: string, group: string): boolean;
  /** Whether the user has an account in the app (an app id). */
  hasApp(uid: string, app: string): boolean;
  /**
   * Whether one of the user's accounts in `app` (an app id) holds the entitlement
   * `entitlement` (its id, or its slug within that app).
   */
  hasEntitlement(uid: string, app: string, entitlement: string): boolean;
  /** Every grant held by any of the user's accounts. */
  grantsOf(uid: string): Grant[];
  /** The entitlements of the app (an app id). */
  entitlementsOf(app: string): Entitlement[];
  /** The user's manager chain, nearest first; each manager once even if the data loops. */
  managers(uid: string): User[];
  /** The users whose `manager_id` is this user. */
  directReports(uid: string): User[];
  /** The user's accounts; only those in `app` (an app id) when given. */
  accountsOf(uid: string, app?: string): Account[];
  /** Accounts that no user owns (`user_id` is `null`). */
  unmatchedAccounts(): Account[];
  /**
   * Whether `username` is in use: as a user's username, as the local part of a user's email,
   * or as an account's username in any app. Authoritative for the loaded snapshot.
   */
  usernameTaken(username: string): boolean;
  /** Whether `email` is in use by a user (any of its emails) or an account. */
  emailTaken(email: string): boolean;
}

/** Secrets declared for this hook in the configuration. */
export interface Secrets {
  /**
   * The secret's value. Throws if the hook's configuration does not declare `name`.
   * The value is redacted from logs, outputs and the decision log; never build reasons from it.
   */
  get(name: string): string;
}

/**
 * Log lines, captured into the decision record (not printed). Arguments are joined like
 * `console.log` does; objects are shown as JSON. Secret values are redacted.
 */
export interface Log {
  info(...args: unknown[]): void;
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
}

/** HTTP methods `sdk.fetch` accepts. */
export type HttpMethod = "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS";

/** Options of `sdk.fetch`. */
export type FetchInit = {
  /** Defaults to `GET`. */
  method?: HttpMethod;
  /** Request headers. */
  headers?: Record<string, string>;
  /** Request body (serialize JSON yourself with `JSON.stringify`). */
  body?: string;
};

/** A response of `sdk.fetch`; the body has already been read (within the size cap). */
export type FetchResponse = {
  /** HTTP status code. Any status resolves; only transport failures reject. */
  readonly status: number;
  /** Response headers, names lowercased. */
  readonly headers: Readonly<Record<string, string>>;
  /** The body as text (UTF-8). */
  text(): string;
  /** The body parsed as JSON; throws if it is not valid JSON. */
  json(): JsonValue;
};

/**
 * Outbound HTTP (`http://` or `https://`), only to hosts allow-listed for this hook. An
 * `https://` server must present a certificate for the URL's host from the built-in roots or
 * the hook's `ca_file`. Rejects (throws when awaited) for a host that is not allowed, a
 * transport or TLS error, a timeout or a body over the size cap; any HTTP status, 404 and 500
 * included, resolves to a {@link FetchResponse}.
 */
export type Fetch = (url: string, init?: FetchInit) => Promise<FetchResponse>;

/** What a hook can use besides plain JavaScript. */
export interface Sdk {
  /** Identity lookups. */
  readonly identity: Identity;
  /** This hook's declared secrets. */
  readonly secrets: Secrets;
  /** Log lines for the decision record. */
  readonly log: Log;
  /** Allow-listed HTTP. */
  readonly fetch: Fetch;
  /** This hook's values from the TOML configuration (absent keys read as `undefined`). */
  readonly config: Readonly<JsonObject>;
}
