// username: a unique username and email address for a new hire.
//
// Request: resource.properties = { given_name: "Zoë", family_name: "Ångström", domain?: "acme.test" }
// Config:  default_domain   used when the request carries no domain (optional)
//
// Names are cleaned to lowercase ASCII: compatibility-decomposed (NFKD, a superset of NFD that
// also folds ligatures and full-width letters), combining marks removed, a few letters that
// do not decompose transliterated (ß→ss, æ→ae, ø→o, ł→l, ...), and everything outside
// [a-z0-9] dropped ("García-Pérez" → "garciaperez"). Each cleaned part is cut to 30
// characters so that every candidate fits an email local part (64).
//
// Candidates, in this order (duplicates skipped):
//   first.last, flast, firstl, first.last2, first.last3, ..., first.last99
// The first candidate c with !usernameTaken(c) && !emailTaken(c@domain) wins. Deterministic:
// the same names and the same identity snapshot always give the same answer.
//
// Outcomes:
//   allow  outputs { username, email }
//   deny   a name missing or empty after cleaning, no usable domain, every candidate taken
//   error  config default_domain is set but not a string
//
// Uniqueness is checked against the loaded identity snapshot only; whoever creates the account
// should still re-check upstream, as two hires decided in the same snapshot window can collide.

import type { DecisionRequest, HookResult, Sdk } from "./verdict";

/** Letters that NFKD does not split into a base letter plus marks. */
const TRANSLITERATE: Readonly<Record<string, string>> = {
  "ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "đ": "d", "ð": "d", "þ": "th",
  "ł": "l", "ħ": "h", "ı": "i", "ŀ": "l", "ŋ": "n", "ĸ": "k", "ſ": "s",
};

/** Cleaned name parts are cut to this length. */
const MAX_PART = 30;

/** The last numbered candidate is first.last99. */
const MAX_NUMBER = 99;

const DOMAIN = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$/;

export default async function decide(req: DecisionRequest, sdk: Sdk): Promise<HookResult> {
  const props = req.resource.properties ?? {};

  const rawGiven = props["given_name"];
  const rawFamily = props["family_name"];
  if (typeof rawGiven !== "string" || rawGiven.trim() === "") {
    return deny("resource.properties.given_name is required");
  }
  if (typeof rawFamily !== "string" || rawFamily.trim() === "") {
    return deny("resource.properties.family_name is required");
  }
  const first = clean(rawGiven);
  if (first === "") {
    return deny(`given_name "${rawGiven}" has no letters or digits left after cleaning to ASCII`);
  }
  const last = clean(rawFamily);
  if (last === "") {
    return deny(`family_name "${rawFamily}" has no letters or digits left after cleaning to ASCII`);
  }

  const configured = sdk.config["default_domain"];
  if (configured !== undefined && typeof configured !== "string") {
    throw new Error("username: config default_domain must be a string");
  }
  const requested = props["domain"];
  const rawDomain = typeof requested === "string" && requested.trim() !== "" ? requested : configured;
  if (rawDomain === undefined) {
    return deny("no email domain: send resource.properties.domain or configure default_domain");
  }
  const domain = rawDomain.trim().toLowerCase().replace(/^@/, "");
  if (!DOMAIN.test(domain)) {
    return deny(`"${rawDomain}" is not a valid email domain`);
  }

  let tried = 0;
  for (const username of candidates(first, last)) {
    tried++;
    const email = `${username}@${domain}`;
    if (!sdk.identity.usernameTaken(username) && !sdk.identity.emailTaken(email)) {
      const note = tried === 1 ? "the first candidate" : `candidate ${tried}; ${tried - 1} taken before it`;
      return {
        decision: true,
        reason: `generated ${username} (${note})`,
        outputs: { username, email },
      };
    }
  }
  return deny(
    `no free username for ${rawGiven} ${rawFamily}: ${first}.${last}, ${first[0]}${last}, ` +
      `${first}${last[0]} and ${first}.${last}2 to ${first}.${last}${MAX_NUMBER} are all taken`,
  );
}

/** Lowercase ASCII letters and digits only. */
function clean(name: string): string {
  return name
    .normalize("NFKD")
    .toLowerCase()
    .replace(/\p{M}/gu, "")
    .replace(/[^a-z0-9]/g, (ch) => TRANSLITERATE[ch] ?? "")
    .slice(0, MAX_PART);
}

/** The candidates in order, without duplicates. */
function* candidates(first: string, last: string): Generator<string> {
  const seen = new Set<string>();
  const base = `${first}.${last}`;
  const fixed = [base, `${first[0]}${last}`, `${first}${last[0]}`];
  for (const c of fixed) {
    if (!seen.has(c)) {
      seen.add(c);
      yield c;
    }
  }
  for (let n = 2; n <= MAX_NUMBER; n++) {
    yield `${base}${n}`;
  }
}

function deny(reason: string): HookResult {
  return { decision: false, reason };
}
