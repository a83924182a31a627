//! Synthetic identity snapshots: deterministic, streamed, and shaped like a real company.
//!
//! Used by tests, benchmarks and `verdict identity generate`; never on the request path.
//! [`generate`] writes the snapshot format (notes/identity-data.md §5.1) for a [`Profile`]
//! and a seed. The same profile and seed give the same bytes on every platform: the only
//! randomness is the small splitmix64 generator below, and nothing iterates a hash map.
//!
//! # Shape
//!
//! Users are mostly people (`jdoe`, `jdoe2` on collision, `john.doe@example.com`) in
//! weighted departments, with managers forming a tree about six wide; about 2 % are service
//! identities (`svc-deploy-12`). Groups are `all-employees` ⊃ one group per department ⊃
//! team groups, plus project groups (which nest a few teams) and access groups; a person is
//! a direct member of their department and of a few other groups, popular ones more often.
//! Apps are well-known SaaS names, then numbered internal tools; the first apps are picked
//! most often. Each app has a few app-wide roles (`member`, `admin`, ...) and then
//! per-resource permissions (`repo:atlas-12:write`). Every account belongs to a user except
//! about 2 % unmatched ones (`user_id: null`). There are no dangling references, so a
//! generated snapshot loads with a clean report.
//!
//! # Streaming
//!
//! Only what later sections need is kept (per user: id, names, status; per group: member
//! lists; per app: entitlement ids). Accounts and grants, most of the volume, are never
//! held: grants are listed after all accounts, so the accounts are generated twice from the
//! same generator state, once to write them and once to write their grants.
//!
//! This module must not depend on anything that varies between runs (clock, hash-map
//! order, thread count), and its output is test data, not a model of any real company.

use std::collections::HashMap;
use std::io::{self, BufWriter, Write};

use serde::Serialize;

use super::Counts;

/// Written as `generated_at`, fixed so the output does not depend on the clock.
const GENERATED_AT: &str = "2026-11-25T06:00:00Z";

/// Percentage of users that are service identities.
const SERVICE_USER_PERCENT: u64 = 2;

/// Percentage of users after whom an unmatched account is added.
const UNMATCHED_PERCENT: u64 = 2;

/// Percentage of people who list a second email address (`username@example.com`).
const ALIAS_PERCENT: u64 = 30;

/// Percentage of grants that name a group as their source.
const GROUP_SOURCE_PERCENT: u64 = 20;

/// Grant dates: days since 1970-01-01 of 2023-01-01, and the span after it.
const GRANTED_FROM_DAY: u64 = 19_358;
const GRANTED_DAYS: u64 = 1_400;

/// Expiry dates: days since 1970-01-01 of 2026-01-01, and the span after it.
const EXPIRES_FROM_DAY: u64 = 20_454;
const EXPIRES_DAYS: u64 = 365;

/// The size of snapshot to generate (sizes from notes/identity-data.md §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// 300 users, 40 groups / ~1.2k memberships, 20 apps / 200 entitlements, ~2k accounts,
    /// ~3.8k grants (about 0.9 MB): for unit tests.
    Small,
    /// 5,000 users, 800 groups / ~35k memberships, 150 apps / 6,000 entitlements, ~62k
    /// accounts, ~127k grants (about 29 MB): the default fixture.
    Mid,
    /// 50,000 users, 6,000 groups / ~380k memberships, 400 apps / 24,000 entitlements,
    /// ~760k accounts, ~1.56M grants (about 340 MB): the stress case.
    Large,
}

/// The numbers behind a profile.
struct Shape {
    users: usize,
    groups: usize,
    /// Average direct groups per person, in tenths.
    groups_per_user_x10: usize,
    apps: usize,
    entitlements_per_app: usize,
    /// A person has `1..=2 * accounts_per_user` accounts, uniformly (half an account more
    /// than this on average).
    accounts_per_user: u64,
    /// Percentages of accounts with 1, 2 and 3 grants.
    grants_split: [u64; 3],
}

/// splitmix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough for test data.
#[derive(Clone)]
struct Rng(u64);

/// Usernames and email local parts handed out so far, with their use counts.
#[derive(Default)]
struct Names {
    usernames: HashMap<String, u32>,
    email_locals: HashMap<String, u32>,
}

/// What later sections need to know about a user.
struct Person {
    id: String,
    username: String,
    email: String,
    service: bool,
    status: &'static str,
    /// Position in [`DEPARTMENTS`].
    department: usize,
}

/// What the accounts and grants sections need to know about an app.
struct AppInfo {
    id: String,
    /// Entitlement ids; the first is always the `member` role.
    entitlements: Vec<String>,
}

/// A JSON array being written one element per line.
struct List {
    empty: bool,
}

/// The records as written; they borrow, so writing one allocates nothing for the record.
#[derive(Serialize)]
struct UserOut<'a> {
    id: &'a str,
    username: &'a str,
    email: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    emails: &'a [&'a str],
    display_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    given_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    family_name: Option<&'a str>,
    status: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    department: &'a str,
    job_title: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    manager_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    employee_id: Option<&'a str>,
    external_id: &'a str,
    attributes: AttributesOut<'a>,
}

#[derive(Serialize)]
struct AttributesOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_center: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner_team: Option<&'a str>,
}

#[derive(Serialize)]
struct GroupOut<'a> {
    id: &'a str,
    name: &'a str,
    description: &'a str,
    member_ids: Vec<&'a str>,
    member_group_ids: Vec<&'a str>,
}

#[derive(Serialize)]
struct AppOut<'a> {
    id: &'a str,
    name: &'a str,
    owner_ids: Vec<&'a str>,
}

#[derive(Serialize)]
struct EntitlementOut<'a> {
    id: &'a str,
    app_id: &'a str,
    slug: &'a str,
    display_name: &'a str,
    resource_type: &'a str,
    resource_id: &'a str,
    risk: &'a str,
}

#[derive(Serialize)]
struct AccountOut<'a> {
    id: &'a str,
    app_id: &'a str,
    user_id: Option<&'a str>,
    username: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'a str,
    status: &'a str,
    /// Position of the app, for the grants pass; not part of the format.
    #[serde(skip)]
    app: usize,
}

#[derive(Serialize)]
struct GrantOut<'a> {
    account_id: &'a str,
    entitlement_id: &'a str,
    source: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    granted_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<&'a str>,
}

// Word lists are `|`-separated strings: compact to read, and `Rng::word` picks from them.

const FIRST_NAMES: &str = concat!(
    "James|Mary|John|Patricia|Robert|Jennifer|Michael|Linda|David|Elizabeth|William|Barbara|",
    "Richard|Susan|Joseph|Jessica|Thomas|Sarah|Charles|Karen|Daniel|Lisa|Matthew|Nancy|",
    "Anthony|Betty|Mark|Margaret|Steven|Sandra|Paul|Ashley|Andrew|Emily|Joshua|Donna|Kenneth|",
    "Michelle|Kevin|Carol|Brian|Amanda|George|Melissa|Timothy|Deborah|Ronald|Stephanie|Jason|",
    "Rebecca|Priya|Wei|Fatima|Mohammed|Yuki|Olga|Lars|Ines|Kwame|Ana",
);

const LAST_NAMES: &str = concat!(
    "Smith|Johnson|Williams|Brown|Jones|Garcia|Miller|Davis|Rodriguez|Martinez|Hernandez|",
    "Lopez|Gonzalez|Wilson|Anderson|Thomas|Taylor|Moore|Jackson|Martin|Lee|Perez|Thompson|",
    "White|Harris|Sanchez|Clark|Ramirez|Lewis|Robinson|Walker|Young|Allen|King|Wright|Scott|",
    "Torres|Nguyen|Hill|Flores|Green|Adams|Nelson|Baker|Hall|Rivera|Campbell|Mitchell|Carter|",
    "Roberts|Schmidt|Muller|Kowalski|Novak|Rossi|Tanaka|Sato|Kim|Park|Chen|Wang|Singh|Patel|",
    "Khan|Ivanova|Larsen|Silva|Costa|Mensah|Okafor",
);

/// Department, its weight in the head count, and its job titles.
const DEPARTMENTS: &[(&str, u64, &str)] = &[
    (
        "Engineering",
        30,
        "Software Engineer|Senior Software Engineer|Staff Engineer|SRE|Engineering Manager",
    ),
    (
        "Product",
        6,
        "Product Manager|Senior Product Manager|Group Product Manager",
    ),
    ("Design", 4, "Product Designer|UX Researcher|Design Manager"),
    (
        "Sales",
        15,
        "Account Executive|Sales Development Rep|Sales Engineer|Sales Manager",
    ),
    (
        "Marketing",
        7,
        "Marketing Manager|Content Strategist|Growth Analyst",
    ),
    (
        "Support",
        10,
        "Support Engineer|Support Lead|Customer Success Manager",
    ),
    ("Finance", 5, "Accountant|Financial Analyst|Controller"),
    (
        "People",
        4,
        "HR Business Partner|Recruiter|People Ops Specialist",
    ),
    ("Legal", 2, "Counsel|Paralegal"),
    ("IT", 6, "IT Administrator|Helpdesk Analyst|IT Manager"),
    ("Security", 4, "Security Engineer|Security Analyst|CISO"),
    (
        "Operations",
        7,
        "Operations Manager|Business Analyst|Program Manager",
    ),
];

const LOCATIONS: &str = "BER|NYC|SFO|LON|AMS|SGP|TOR|SYD|BLR|REMOTE";
const SERVICE_WORDS: &str = "deploy|ci|backup|monitor|etl|billing|sync|scanner|reporting|build";
const PROJECT_WORDS: &str = "apollo|gemini|atlas|orion|phoenix|hermes|zephyr|nova|titan|vega";
const ACCESS_WORDS: &str = "admins|readers|oncall|contractors|vpn";
const RESOURCE_TYPES: &str = "org|repo|team|project|workspace|channel|account|dataset";
const UNMATCHED_NAMES: &str =
    "deploy-bot|ci-runner|backup-agent|scanner|legacy-admin|test-user|contractor|shared-mailbox";

/// App id and name; apps past the end of the list are numbered internal tools.
const APPS: &[(&str, &str)] = &[
    ("app-okta", "Okta"),
    ("app-google", "Google Workspace"),
    ("app-slack", "Slack"),
    ("app-github", "GitHub"),
    ("app-jira", "Jira"),
    ("app-confluence", "Confluence"),
    ("app-zoom", "Zoom"),
    ("app-aws", "AWS"),
    ("app-salesforce", "Salesforce"),
    ("app-datadog", "Datadog"),
    ("app-pagerduty", "PagerDuty"),
    ("app-snowflake", "Snowflake"),
    ("app-workday", "Workday"),
    ("app-zendesk", "Zendesk"),
    ("app-hubspot", "HubSpot"),
    ("app-figma", "Figma"),
    ("app-notion", "Notion"),
    ("app-tableau", "Tableau"),
    ("app-servicenow", "ServiceNow"),
    ("app-azure", "Azure"),
    ("app-gcp", "Google Cloud"),
    ("app-box", "Box"),
    ("app-dropbox", "Dropbox"),
    ("app-docusign", "DocuSign"),
    ("app-1password", "1Password"),
    ("app-miro", "Miro"),
    ("app-asana", "Asana"),
    ("app-linear", "Linear"),
    ("app-sentry", "Sentry"),
    ("app-cloudflare", "Cloudflare"),
];

/// App-wide roles and their risk; the first is most accounts' baseline.
const ROLES: &[(&str, &str)] = &[
    ("member", "low"),
    ("admin", "high"),
    ("viewer", "low"),
    ("editor", "medium"),
    ("owner", "high"),
    ("billing", "medium"),
    ("auditor", "low"),
    ("support", "medium"),
];

/// Permissions on a resource and their risk.
const PERMISSIONS: &[(&str, &str)] = &[("read", "low"), ("write", "medium"), ("admin", "high")];

/// Writes a synthetic snapshot of `profile` to `out`, the same bytes for the same seed, and
/// returns how many records of each kind it wrote.
///
/// Output goes through a buffer as it is generated; memory stays proportional to users,
/// groups and entitlements, not to accounts or grants.
pub fn generate(profile: Profile, seed: u64, out: &mut impl Write) -> io::Result<Counts> {
    let shape = profile.shape();
    let mut out = BufWriter::with_capacity(1 << 16, out);
    let mut rng = Rng(seed);
    let mut counts = Counts::default();
    write!(
        out,
        "{{\"version\":1,\"generated_at\":\"{GENERATED_AT}\",\"source\":\"generate:{}:{seed}\",",
        profile.name()
    )?;
    out.write_all(b"\n\"users\":[")?;
    let people = write_users(&mut out, &mut rng, &shape, &mut counts)?;
    out.write_all(b"\n],\n\"groups\":[")?;
    let group_ids = write_groups(&mut out, &mut rng, &shape, &people, &mut counts)?;
    out.write_all(b"\n],\n\"apps\":[")?;
    let apps = write_apps(&mut out, &mut rng, &shape, &people, &mut counts)?;
    out.write_all(b"\n],\n\"entitlements\":[")?;
    let apps = write_entitlements(&mut out, &mut rng, &shape, apps, &mut counts)?;

    out.write_all(b"\n],\n\"accounts\":[")?;
    // The grants pass replays the accounts from this state; grants draw from a generator of
    // their own, so the replay stays identical.
    let mut grant_rng = Rng(rng.next() ^ 0x6772_616e_7473);
    let mut replay = rng.clone();
    let mut list = List::new();
    for_each_account(&mut rng, &shape, &people, &apps, |account| {
        counts.accounts += 1;
        list.push(&mut out, account)
    })?;
    out.write_all(b"\n],\n\"grants\":[")?;
    let mut list = List::new();
    let grants = Grants {
        shape: &shape,
        apps: &apps,
        group_ids: &group_ids,
    };
    for_each_account(&mut replay, &shape, &people, &apps, |account| {
        counts.grants += grants.write(&mut out, &mut list, &mut grant_rng, account)?;
        Ok(())
    })?;
    out.write_all(b"\n]}\n")?;
    out.flush()?;
    Ok(counts)
}

/// Writes the users; returns what later sections need about them.
fn write_users(
    out: &mut impl Write,
    rng: &mut Rng,
    shape: &Shape,
    counts: &mut Counts,
) -> io::Result<Vec<Person>> {
    let mut people = Vec::with_capacity(shape.users);
    let mut names = Names::default();
    // Positions of the people so far. The n-th person's manager is person (n - 1) / 6, so
    // reporting lines form a tree about six wide with user 0 at the top.
    let mut humans: Vec<usize> = Vec::new();
    let mut list = List::new();
    for i in 0..shape.users {
        let service = i > 0 && rng.below(100) < SERVICE_USER_PERCENT;
        let person = if service {
            write_service_user(out, &mut list, rng, i, &mut names)?
        } else {
            let manager = humans
                .len()
                .checked_sub(1)
                .and_then(|h| humans.get(h / 6))
                .copied();
            humans.push(i);
            write_person(out, &mut list, rng, i, manager, &mut names)?
        };
        counts.users += 1;
        people.push(person);
    }
    Ok(people)
}

/// Writes user `i`, a person.
fn write_person(
    out: &mut impl Write,
    list: &mut List,
    rng: &mut Rng,
    i: usize,
    manager: Option<usize>,
    names: &mut Names,
) -> io::Result<Person> {
    let department = pick_weighted(rng, DEPARTMENTS);
    let (dept, _, titles) = DEPARTMENTS.get(department).copied().unwrap_or_default();
    let (first, last) = (rng.word(FIRST_NAMES), rng.word(LAST_NAMES));
    let initial = first.chars().next().unwrap_or('x');
    let username = unique(
        &mut names.usernames,
        &format!("{initial}{last}").to_lowercase(),
        "",
    );
    let local = unique(
        &mut names.email_locals,
        &format!("{first}.{last}").to_lowercase(),
        "",
    );
    let email = format!("{local}@example.com");
    let alias = format!("{username}@example.com");
    let emails = [email.as_str(), alias.as_str()];
    let status = match rng.below(100) {
        0 => "deleted",
        1..=4 => "disabled",
        _ => "enabled",
    };
    let id = user_id(i);
    list.push(
        out,
        &UserOut {
            id: &id,
            username: &username,
            email: &email,
            emails: if rng.below(100) < ALIAS_PERCENT {
                &emails
            } else {
                &[]
            },
            display_name: &format!("{first} {last}"),
            given_name: Some(first),
            family_name: Some(last),
            status,
            kind: "human",
            department: dept,
            job_title: rng.word(titles),
            manager_id: manager.map(user_id).as_deref(),
            employee_id: Some(&(100_000 + i).to_string()),
            external_id: &format!("00u{:012x}", rng.next() >> 16),
            attributes: AttributesOut {
                cost_center: Some(&format!("CC-{:03}", rng.below(120))),
                location: Some(rng.word(LOCATIONS)),
                owner_team: None,
            },
        },
    )?;
    Ok(Person {
        id,
        username,
        email,
        service: false,
        status,
        department,
    })
}

/// Writes user `i`, a service identity.
fn write_service_user(
    out: &mut impl Write,
    list: &mut List,
    rng: &mut Rng,
    i: usize,
    names: &mut Names,
) -> io::Result<Person> {
    let department = pick_weighted(rng, DEPARTMENTS);
    let (dept, _, _) = DEPARTMENTS.get(department).copied().unwrap_or_default();
    let base = format!("svc-{}-{}", rng.word(SERVICE_WORDS), rng.below(100));
    let username = unique(&mut names.usernames, &base, "-");
    let email = format!("{username}@example.com");
    let id = user_id(i);
    list.push(
        out,
        &UserOut {
            id: &id,
            username: &username,
            email: &email,
            emails: &[],
            display_name: &username,
            given_name: None,
            family_name: None,
            status: "enabled",
            kind: "service",
            department: dept,
            job_title: "Service identity",
            manager_id: None,
            employee_id: None,
            external_id: &format!("00u{:012x}", rng.next() >> 16),
            attributes: AttributesOut {
                cost_center: None,
                location: None,
                owner_team: Some(dept),
            },
        },
    )?;
    Ok(Person {
        id,
        username,
        email,
        service: true,
        status: "enabled",
        department,
    })
}

/// Writes the groups; returns their ids (grant sources name them).
///
/// Layout by position: 0 is `all-employees` (nesting every department group), then one
/// group per department (nesting its teams), then `service-identities`, then teams,
/// projects and access groups in turn.
fn write_groups(
    out: &mut impl Write,
    rng: &mut Rng,
    shape: &Shape,
    people: &[Person],
    counts: &mut Counts,
) -> io::Result<Vec<String>> {
    let fixed = DEPARTMENTS.len() + 2;
    let total = shape.groups.max(fixed + 4);
    let ids: Vec<String> = (0..total).map(|g| format!("g{g:05}")).collect();
    let (names, nested) = group_layout(rng, fixed, total);
    let members = group_members(rng, shape, people, fixed, total);
    let mut list = List::new();
    for (g, id) in ids.iter().enumerate() {
        let member_ids: Vec<&str> = members
            .get(g)
            .into_iter()
            .flatten()
            .filter_map(|&u| people.get(u))
            .map(|p| p.id.as_str())
            .collect();
        counts.memberships += member_ids.len();
        let member_group_ids: Vec<&str> = nested
            .get(g)
            .into_iter()
            .flatten()
            .filter_map(|&n| ids.get(n))
            .map(String::as_str)
            .collect();
        let name = names.get(g).map_or("group", String::as_str);
        let description = format!("Members of {name}");
        list.push(
            out,
            &GroupOut {
                id,
                name,
                description: &description,
                member_ids,
                member_group_ids,
            },
        )?;
        counts.groups += 1;
    }
    Ok(ids)
}

/// Names of the `total` groups and the groups each one nests (always groups created
/// before it... or, for department groups, teams after it: never a cycle).
fn group_layout(rng: &mut Rng, fixed: usize, total: usize) -> (Vec<String>, Vec<Vec<usize>>) {
    let mut names: Vec<String> = Vec::with_capacity(total);
    let mut nested: Vec<Vec<usize>> = vec![Vec::new(); total];
    names.push("all-employees".to_owned());
    names.extend(
        DEPARTMENTS
            .iter()
            .map(|(d, _, _)| format!("dept-{}", d.to_lowercase())),
    );
    names.push("service-identities".to_owned());
    if let Some(all) = nested.get_mut(0) {
        all.extend(1..=DEPARTMENTS.len());
    }
    let mut teams = Vec::new();
    for g in fixed..total {
        let name = match (g - fixed) % 4 {
            0 | 1 => {
                let d = rng.below(DEPARTMENTS.len() as u64) as usize;
                let (dept, _, _) = DEPARTMENTS.get(d).copied().unwrap_or_default();
                if let Some(parent) = nested.get_mut(d + 1) {
                    parent.push(g);
                }
                teams.push(g);
                format!("team-{}-{g}", dept.to_lowercase())
            }
            2 => {
                if let Some(project) = nested.get_mut(g) {
                    for _ in 0..rng.below(3) {
                        let team = teams.get(rng.below(teams.len() as u64) as usize);
                        if let Some(&team) = team.filter(|t| !project.contains(t)) {
                            project.push(team);
                        }
                    }
                }
                format!("proj-{}-{g}", rng.word(PROJECT_WORDS))
            }
            _ => format!("access-{}-{g}", rng.word(ACCESS_WORDS)),
        };
        names.push(name);
    }
    (names, nested)
}

/// Direct members of each group: a person's department group plus a few others, popular
/// (low-numbered) ones more often; service identities are in `service-identities`.
fn group_members(
    rng: &mut Rng,
    shape: &Shape,
    people: &[Person],
    fixed: usize,
    total: usize,
) -> Vec<Vec<usize>> {
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); total];
    let mut add = |group: usize, user: usize| {
        if let Some(list) = members.get_mut(group) {
            list.push(user);
        }
    };
    let mut mine: Vec<usize> = Vec::new();
    for (u, person) in people.iter().enumerate() {
        if person.service {
            add(DEPARTMENTS.len() + 1, u);
            continue;
        }
        add(1 + person.department, u);
        let want = around(rng, shape.groups_per_user_x10).saturating_sub(1);
        pick_distinct(rng, total - fixed, want, &mut mine);
        for &g in &mine {
            add(fixed + g, u);
        }
    }
    members
}

/// Writes the apps, each owned by one or two users; returns their ids and names.
fn write_apps(
    out: &mut impl Write,
    rng: &mut Rng,
    shape: &Shape,
    people: &[Person],
    counts: &mut Counts,
) -> io::Result<Vec<(String, String)>> {
    let apps: Vec<(String, String)> = (0..shape.apps)
        .map(|a| match APPS.get(a) {
            Some((id, name)) => ((*id).to_owned(), (*name).to_owned()),
            None => (format!("app-tool-{a:03}"), format!("Internal Tool {a}")),
        })
        .collect();
    let mut list = List::new();
    for (id, name) in &apps {
        let owners: Vec<&str> = (0..1 + rng.below(2))
            .filter_map(|_| people.get(rng.below(people.len() as u64) as usize))
            .map(|p| p.id.as_str())
            .collect();
        list.push(
            out,
            &AppOut {
                id,
                name,
                owner_ids: owners,
            },
        )?;
        counts.apps += 1;
    }
    Ok(apps)
}

/// Writes each app's entitlements, the app-wide roles first, then per-resource permissions;
/// returns each app's entitlement ids.
fn write_entitlements(
    out: &mut impl Write,
    rng: &mut Rng,
    shape: &Shape,
    apps: Vec<(String, String)>,
    counts: &mut Counts,
) -> io::Result<Vec<AppInfo>> {
    let mut list = List::new();
    let mut infos = Vec::with_capacity(apps.len());
    for (app_id, app_name) in apps {
        let mut ids = Vec::with_capacity(shape.entitlements_per_app);
        for e in 0..shape.entitlements_per_app {
            let (slug, display_name, resource_type, resource_id, risk) = match ROLES.get(e) {
                Some(&(role, risk)) => (
                    role.to_owned(),
                    format!("{app_name} {role}"),
                    "app",
                    app_id.clone(),
                    risk,
                ),
                None => {
                    let rtype = rng.word(RESOURCE_TYPES);
                    let (perm, risk) = PERMISSIONS
                        .get(e % PERMISSIONS.len())
                        .copied()
                        .unwrap_or_default();
                    let resource = format!("{}-{}", rng.word(PROJECT_WORDS), e / PERMISSIONS.len());
                    let display_name = format!("{app_name} {rtype} {resource} {perm}");
                    (
                        format!("{rtype}:{resource}:{perm}"),
                        display_name,
                        rtype,
                        resource,
                        risk,
                    )
                }
            };
            let id = format!("{app_id}:{slug}");
            list.push(
                out,
                &EntitlementOut {
                    id: &id,
                    app_id: &app_id,
                    slug: &slug,
                    display_name: &display_name,
                    resource_type,
                    resource_id: &resource_id,
                    risk,
                },
            )?;
            counts.entitlements += 1;
            ids.push(id);
        }
        infos.push(AppInfo {
            id: app_id,
            entitlements: ids,
        });
    }
    Ok(infos)
}

/// Generates every account in order and hands each to `each`; two calls from the same
/// generator state produce the same accounts.
fn for_each_account(
    rng: &mut Rng,
    shape: &Shape,
    people: &[Person],
    apps: &[AppInfo],
    mut each: impl FnMut(&AccountOut<'_>) -> io::Result<()>,
) -> io::Result<()> {
    let mut next_id = 0usize;
    let mut chosen: Vec<usize> = Vec::new();
    for person in people {
        let want = if person.service {
            1 + rng.below(3)
        } else {
            1 + rng.below(2 * shape.accounts_per_user)
        };
        pick_distinct(rng, apps.len(), want as usize, &mut chosen);
        for &app in &chosen {
            let Some(info) = apps.get(app) else { continue };
            let id = format!("acct-{next_id:07}");
            next_id += 1;
            let suffixed;
            let username = match rng.below(100) {
                0..70 => person.username.as_str(),
                70..85 => person.email.as_str(),
                _ => {
                    suffixed =
                        format!("{}-{}", person.username, info.id.trim_start_matches("app-"));
                    suffixed.as_str()
                }
            };
            let disabled = person.status != "enabled" || rng.below(100) < 3;
            each(&AccountOut {
                id: &id,
                app_id: &info.id,
                user_id: Some(&person.id),
                username,
                email: (rng.below(100) < 65).then_some(person.email.as_str()),
                kind: if person.service { "service" } else { "user" },
                status: if disabled { "disabled" } else { "enabled" },
                app,
            })?;
        }
        if rng.below(100) < UNMATCHED_PERCENT {
            let app = rng.below(apps.len() as u64) as usize;
            let Some(info) = apps.get(app) else { continue };
            let id = format!("acct-{next_id:07}");
            next_id += 1;
            let username = format!("{}-{}", rng.word(UNMATCHED_NAMES), rng.below(1000));
            let kind = if rng.below(100) < 60 {
                "service"
            } else {
                "user"
            };
            let account = AccountOut {
                id: &id,
                app_id: &info.id,
                user_id: None,
                username: &username,
                email: None,
                kind,
                status: "enabled",
                app,
            };
            each(&account)?;
        }
    }
    Ok(())
}

/// What writing the grants needs besides the account.
struct Grants<'a> {
    shape: &'a Shape,
    apps: &'a [AppInfo],
    group_ids: &'a [String],
}

impl Grants<'_> {
    /// Writes the grants of one account, usually including the app's `member` role;
    /// returns how many.
    fn write(
        &self,
        out: &mut impl Write,
        list: &mut List,
        rng: &mut Rng,
        account: &AccountOut<'_>,
    ) -> io::Result<usize> {
        let Some(app) = self.apps.get(account.app) else {
            return Ok(0);
        };
        let roll = rng.below(100);
        let [one, two, _] = self.shape.grants_split;
        let want = if roll < one {
            1
        } else if roll < one + two {
            2
        } else {
            3
        };
        let mut picked: Vec<usize> = Vec::with_capacity(want);
        if rng.below(100) < 70 {
            picked.push(0);
        }
        for _ in 0..want * 4 {
            if picked.len() >= want {
                break;
            }
            let e = rng.skewed(app.entitlements.len() as u64) as usize;
            if !picked.contains(&e) {
                picked.push(e);
            }
        }
        let mut written = 0;
        for e in picked {
            let Some(entitlement_id) = app.entitlements.get(e) else {
                continue;
            };
            let group = rng.below(self.group_ids.len() as u64) as usize;
            let source = match self.group_ids.get(group) {
                Some(g) if rng.below(100) < GROUP_SOURCE_PERCENT => format!("group:{g}"),
                _ => "direct".to_owned(),
            };
            let granted_at =
                (rng.below(100) < 80).then(|| timestamp(rng, GRANTED_FROM_DAY, GRANTED_DAYS));
            let expires_at =
                (rng.below(100) < 10).then(|| timestamp(rng, EXPIRES_FROM_DAY, EXPIRES_DAYS));
            let grant = GrantOut {
                account_id: account.id,
                entitlement_id,
                source: &source,
                granted_at: granted_at.as_deref(),
                expires_at: expires_at.as_deref(),
            };
            list.push(out, &grant)?;
            written += 1;
        }
        Ok(written)
    }
}

/// Fills `chosen` with `want` distinct positions below `n` (fewer if `n` is smaller), low
/// positions more often.
fn pick_distinct(rng: &mut Rng, n: usize, want: usize, chosen: &mut Vec<usize>) {
    chosen.clear();
    let want = want.min(n);
    for _ in 0..want * 8 {
        if chosen.len() >= want {
            return;
        }
        let pick = rng.skewed(n as u64) as usize;
        if !chosen.contains(&pick) {
            chosen.push(pick);
        }
    }
    // Unlucky draws: top up with the first free positions, still deterministically.
    for pick in 0..n {
        if chosen.len() >= want {
            break;
        }
        if !chosen.contains(&pick) {
            chosen.push(pick);
        }
    }
}

/// `base` if unused, else `base`, the separator and the next number from 2 (`jdoe2`).
///
/// Bases never end in a digit where the separator is empty (names are letters), so a
/// numbered name cannot collide with another base.
fn unique(seen: &mut HashMap<String, u32>, base: &str, separator: &str) -> String {
    let count = seen.entry(base.to_owned()).or_insert(0);
    *count += 1;
    if *count == 1 {
        base.to_owned()
    } else {
        format!("{base}{separator}{count}")
    }
}

/// A count averaging `x10 / 10`, spread uniformly over ±3 around it, at least 1.
fn around(rng: &mut Rng, x10: usize) -> usize {
    let base = x10 / 10;
    let extra = usize::from(rng.below(10) < (x10 % 10) as u64);
    (base + extra + rng.below(7) as usize)
        .saturating_sub(3)
        .max(1)
}

/// A position in `items`, drawn with the weights in their second field.
fn pick_weighted<T>(rng: &mut Rng, items: &[(&str, u64, T)]) -> usize {
    let total: u64 = items.iter().map(|(_, weight, _)| weight).sum();
    let mut roll = rng.below(total);
    for (i, (_, weight, _)) in items.iter().enumerate() {
        if roll < *weight {
            return i;
        }
        roll -= weight;
    }
    0
}

fn user_id(i: usize) -> String {
    format!("u{i:06}")
}

/// An RFC 3339 UTC timestamp on a day in `first_day..first_day + days` (days since
/// 1970-01-01), in office hours, on a five-minute mark.
fn timestamp(rng: &mut Rng, first_day: u64, days: u64) -> String {
    let (y, m, d) = civil_from_days(first_day + rng.below(days));
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:00Z",
        8 + rng.below(10),
        rng.below(12) * 5
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`, restricted to dates after 1970).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + u64::from(m <= 2), m, d)
}

// === impl Profile ===

impl Profile {
    /// The profile's name, as written in `source`: `small`, `mid` or `large`.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Small => "small",
            Profile::Mid => "mid",
            Profile::Large => "large",
        }
    }

    fn shape(self) -> Shape {
        match self {
            Profile::Small => Shape {
                users: 300,
                groups: 40,
                groups_per_user_x10: 40,
                apps: 20,
                entitlements_per_app: 10,
                accounts_per_user: 6,
                grants_split: [30, 46, 24],
            },
            Profile::Mid => Shape {
                users: 5_000,
                groups: 800,
                groups_per_user_x10: 70,
                apps: 150,
                entitlements_per_app: 40,
                accounts_per_user: 12,
                grants_split: [25, 45, 30],
            },
            Profile::Large => Shape {
                users: 50_000,
                groups: 6_000,
                groups_per_user_x10: 77,
                apps: 400,
                entitlements_per_app: 60,
                accounts_per_user: 15,
                grants_split: [25, 45, 30],
            },
        }
    }
}

// === impl Rng ===

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0); the modulo bias is irrelevant for test data.
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    /// In `0..n`, low values more likely (the smaller of two draws).
    fn skewed(&mut self, n: u64) -> u64 {
        let (a, b) = (self.below(n), self.below(n));
        a.min(b)
    }

    /// One of the `|`-separated words of `list`.
    fn word(&mut self, list: &'static str) -> &'static str {
        let n = list.split('|').count() as u64;
        list.split('|')
            .nth(self.below(n) as usize)
            .unwrap_or_default()
    }
}

// === impl List ===

impl List {
    fn new() -> List {
        List { empty: true }
    }

    /// Writes `item` as the next element, one per line.
    fn push(&mut self, out: &mut impl Write, item: &impl Serialize) -> io::Result<()> {
        out.write_all(if self.empty { b"\n" } else { b",\n" })?;
        self.empty = false;
        serde_json::to_writer(out, item).map_err(io::Error::from)
    }
}
