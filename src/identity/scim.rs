//! A read-only SCIM 2.0 client (RFC 7643/7644, RFC 9865 cursors) that fetches users and
//! groups from a SCIM service provider and turns them into the identity snapshot's
//! [`User`] and [`Group`] records.
//!
//! Where it sits: a reload job calls [`ScimClient::fetch_all`], wraps the result in a
//! [`Snapshot`] ([`ScimData::into_snapshot`]) and hands it to the index build; request
//! handlers never call it. The single-user lookups ([`ScimClient::user`] and the filter
//! lookups) are for refreshing one record between full syncs.
//!
//! Paging follows the notes' client rules: `startIndex` is 1-based and advances by the number
//! of `Resources` actually returned (never by `count`, never trusting `totalResults`), and a
//! listing stops at the first page that returns none. When `/ServiceProviderConfig`
//! advertises `pagination.cursor`, the client pages with `cursor`/`nextCursor` instead.
//!
//! `https://` (certificate checked against the built-in roots and [`ScimConfig::ca_file`],
//! see [`crate::tls_client`]) and plain `http://` are spoken; each request opens its own
//! HTTP/1.1 connection and the whole exchange, TLS handshake included, is bounded by
//! [`ScimConfig::timeout`]. Bad payloads produce an [`Error`], never a panic. Deletes are
//! invisible to SCIM deltas, so only full syncs are offered.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{Attributes, Group, Snapshot, Str, User, VERSION};

/// The URN of the enterprise user extension.
pub const ENTERPRISE_USER: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// The media type SCIM requests and responses use.
const SCIM_JSON: &str = "application/scim+json";

/// The largest response body accepted, in bytes.
const MAX_BODY: usize = 256 * 1024 * 1024;

/// The most resources one listing accepts, so a server that never stops paging cannot make
/// the client loop or grow forever (the index holds at most `u32::MAX` records anyway).
const MAX_RESOURCES: usize = 10_000_000;

/// Page size used when the configuration asks for 0.
const DEFAULT_PAGE_SIZE: usize = 100;

/// How to reach a SCIM service provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimConfig {
    /// Base URL of the SCIM endpoints, e.g. `https://idp.example/scim/v2/` (`/Users` is
    /// appended); `http` or `https`.
    pub base_url: String,
    /// PEM certificates trusted for `https` besides the built-in roots (see
    /// [`crate::tls_client`]).
    pub ca_file: Option<std::path::PathBuf>,
    /// Bearer token sent as `Authorization: Bearer …`, if any.
    pub token: Option<String>,
    /// Resources asked for per page (`count`); the server may return fewer. 0 means 100.
    pub page_size: usize,
    /// Upper bound on one whole request: connect, send, and read the full response.
    pub timeout: Duration,
}

/// A SCIM client; cheap to clone, holds no connection between requests.
#[derive(Debug, Clone)]
pub struct ScimClient {
    /// The configuration, as given.
    config: ScimConfig,
}

/// Everything a full sync read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScimData {
    /// All users, in server order.
    pub users: Vec<User>,
    /// All groups, in server order; member ids are kept even when they name no user.
    pub groups: Vec<Group>,
    /// How the listings were paged.
    pub paging: Paging,
}

/// The paging method a full sync used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Paging {
    /// `startIndex`/`count` (RFC 7644 §3.4.2.4).
    #[default]
    Index,
    /// `cursor`/`nextCursor` (RFC 9865).
    Cursor,
}

/// The outcome of a conditional lookup by id.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup<T> {
    /// The resource, with its ETag if the server sent one.
    Found {
        /// The resource.
        value: T,
        /// The `ETag` header (or `meta.version`), to send as `If-None-Match` next time.
        etag: Option<String>,
    },
    /// The resource did not change since the ETag given (HTTP 304).
    NotModified,
    /// No such resource (HTTP 404).
    NotFound,
}

/// Why a SCIM request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL cannot be used (bad syntax, or not `http`).
    #[error("{url}: invalid scim url: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The TCP connection failed.
    #[error("{url}: cannot connect: {error}")]
    Connect {
        /// The URL requested.
        url: String,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// The TLS handshake failed (an untrusted or wrong certificate, say), or the trust
    /// configuration (`ca_file`) could not be built.
    #[error("{url}: tls: {message}")]
    Tls {
        /// The URL requested.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The HTTP exchange failed (connection closed, malformed response, ...).
    #[error("{url}: http error: {error}")]
    Http {
        /// The URL requested.
        url: String,
        /// What hyper said.
        error: hyper::Error,
    },
    /// No complete response within [`ScimConfig::timeout`].
    #[error("{url}: no response within {after:?}")]
    Timeout {
        /// The URL requested.
        url: String,
        /// The configured timeout.
        after: Duration,
    },
    /// The response body could not be read (too large, or cut off).
    #[error("{url}: cannot read response body: {message}")]
    Body {
        /// The URL requested.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The server answered with an unexpected HTTP status.
    #[error("{url}: http status {status}{}", StatusDetail { scim_type, detail })]
    Status {
        /// The URL requested.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The SCIM error's `scimType` (e.g. `invalidFilter`), if the body had one.
        scim_type: Option<String>,
        /// The SCIM error's `detail`, if the body had one.
        detail: Option<String>,
    },
    /// The body is not JSON, or a value has the wrong type.
    #[error("{url}: invalid json at {path}: {message}")]
    Json {
        /// The URL requested.
        url: String,
        /// JSON path of the offending value, like `Resources[3].active`; `.` for the root.
        path: String,
        /// What is wrong, in serde's words.
        message: String,
    },
    /// The JSON is well-formed but not a usable SCIM resource (e.g. a group without a name).
    #[error("{url}: invalid scim resource: {message}")]
    Invalid {
        /// The URL requested.
        url: String,
        /// What is wrong.
        message: String,
    },
}

/// Formats the optional SCIM detail of a [`Error::Status`].
struct StatusDetail<'a> {
    /// `scimType`.
    scim_type: &'a Option<String>,
    /// `detail`.
    detail: &'a Option<String>,
}

/// The parts of the base URL a request needs.
#[derive(Debug, Clone)]
struct Target {
    /// Host to connect to, without IPv6 brackets.
    host: String,
    /// TCP port.
    port: u16,
    /// `https`: TLS over the connection.
    tls: bool,
    /// `host:port` as written, for the `Host` header.
    authority: String,
    /// Path prefix without a trailing `/`, e.g. `/v2`.
    prefix: String,
}

/// A response whose status the caller still has to judge.
struct Response {
    /// The full URL requested, for error messages.
    url: String,
    /// The status.
    status: StatusCode,
    /// The `ETag` header, if any.
    etag: Option<String>,
    /// The body.
    body: Bytes,
}

// --- wire types: only the attributes the mapping reads; unknown ones are ignored ---

/// A SCIM ListResponse.
#[derive(Deserialize)]
struct WireList<T> {
    /// The page's resources; absent on some servers when empty.
    #[serde(rename = "Resources", default = "Option::default")]
    resources: Option<Vec<T>>,
    /// RFC 9865: the cursor of the next page; absent on the last one.
    #[serde(rename = "nextCursor", default)]
    next_cursor: Option<String>,
}

/// The parts of `/ServiceProviderConfig` the client reads.
#[derive(Deserialize, Default)]
struct WireConfig {
    /// RFC 9865 pagination capabilities.
    #[serde(default)]
    pagination: Option<WirePagination>,
}

/// RFC 9865 `pagination`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WirePagination {
    /// Cursor pagination is supported.
    #[serde(default)]
    cursor: Option<bool>,
    /// The largest page the server returns.
    #[serde(default)]
    max_page_size: Option<u64>,
}

/// A SCIM User.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireUser {
    /// Server-assigned id.
    id: String,
    /// `externalId`.
    #[serde(default)]
    external_id: Option<String>,
    /// `userName`.
    #[serde(default)]
    user_name: Option<String>,
    /// `name`.
    #[serde(default)]
    name: Option<WireName>,
    /// `displayName`.
    #[serde(default)]
    display_name: Option<String>,
    /// `emails`.
    #[serde(default)]
    emails: Option<Vec<WireEmail>>,
    /// `active`.
    #[serde(default)]
    active: Option<bool>,
    /// `title`.
    #[serde(default)]
    title: Option<String>,
    /// `userType`.
    #[serde(default)]
    user_type: Option<String>,
    /// The enterprise extension.
    #[serde(
        rename = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        default
    )]
    enterprise: Option<WireEnterprise>,
    /// `meta`.
    #[serde(default)]
    meta: Option<WireMeta>,
}

/// A SCIM `name` complex attribute.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireName {
    /// `givenName`.
    #[serde(default)]
    given_name: Option<String>,
    /// `familyName`.
    #[serde(default)]
    family_name: Option<String>,
}

/// One entry of `emails`.
#[derive(Deserialize)]
struct WireEmail {
    /// The address.
    #[serde(default)]
    value: Option<String>,
    /// Whether it is the primary address.
    #[serde(default)]
    primary: Option<bool>,
}

/// The enterprise user extension.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireEnterprise {
    /// `employeeNumber`.
    #[serde(default)]
    employee_number: Option<String>,
    /// `department`.
    #[serde(default)]
    department: Option<String>,
    /// `manager`.
    #[serde(default)]
    manager: Option<WireRef>,
}

/// A reference (`manager`, group `members[]`).
#[derive(Deserialize)]
struct WireRef {
    /// The referenced id.
    #[serde(default)]
    value: Option<String>,
    /// `User` or `Group` (members only).
    #[serde(rename = "type", default)]
    kind: Option<String>,
    /// The referenced resource's URI.
    #[serde(rename = "$ref", default)]
    reference: Option<String>,
}

/// `meta`.
#[derive(Deserialize)]
struct WireMeta {
    /// The resource version (ETag).
    #[serde(default)]
    version: Option<String>,
}

/// A SCIM Group.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireGroup {
    /// Server-assigned id.
    id: String,
    /// `displayName`.
    #[serde(default)]
    display_name: Option<String>,
    /// `members`.
    #[serde(default)]
    members: Option<Vec<WireRef>>,
}

// === impl ScimConfig ===

impl ScimConfig {
    /// A configuration for `base_url` without a token, 100 resources per page and a
    /// 30-second timeout.
    pub fn new(base_url: impl Into<String>) -> ScimConfig {
        ScimConfig {
            base_url: base_url.into(),
            ca_file: None,
            token: None,
            page_size: DEFAULT_PAGE_SIZE,
            timeout: Duration::from_secs(30),
        }
    }
}

// === impl ScimClient ===

impl ScimClient {
    /// A client for the given service provider; nothing is contacted yet.
    pub fn new(config: ScimConfig) -> ScimClient {
        ScimClient { config }
    }

    /// The configuration in use.
    pub fn config(&self) -> &ScimConfig {
        &self.config
    }

    /// Full sync: every user and every group.
    ///
    /// Pages with `cursor`/`nextCursor` when `/ServiceProviderConfig` advertises RFC 9865
    /// cursors, otherwise with `startIndex`/`count`. Group members become `member_ids` or
    /// `member_group_ids` by their `type` (or, without one, by their `$ref` or by whether the
    /// id is a known group); ids of users that do not exist are kept.
    pub async fn fetch_all(&self) -> Result<ScimData, Error> {
        let (paging, max_page) = self.paging().await?;
        let wanted = if self.config.page_size == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            self.config.page_size
        };
        let page_size = max_page.map_or(wanted, |max| wanted.min(max.max(1)));
        let wire_users: Vec<WireUser> = self.list("Users", paging, page_size).await?;
        let wire_groups: Vec<WireGroup> = self.list("Groups", paging, page_size).await?;

        // Intern while mapping (no await from here on, so the thread-local table stays on
        // this thread): member ids then share their allocation with the user ids.
        let _interning = super::snapshot::Interning::begin();
        let users: Vec<User> = wire_users.into_iter().map(to_user).collect();
        let group_ids: HashSet<String> = wire_groups.iter().map(|g| g.id.clone()).collect();
        let url = self.url_for("Groups");
        let groups = wire_groups
            .into_iter()
            .map(|wire| to_group(wire, &group_ids, &url))
            .collect::<Result<Vec<Group>, Error>>()?;
        Ok(ScimData {
            users,
            groups,
            paging,
        })
    }

    /// One user by id, conditionally on `etag` (sent as `If-None-Match`).
    ///
    /// Returns [`Lookup::NotModified`] on 304 and [`Lookup::NotFound`] on 404.
    pub async fn user(&self, id: &str, etag: Option<&str>) -> Result<Lookup<User>, Error> {
        let path = format!("Users/{}", encode(id));
        let mut headers = Vec::new();
        if let Some(etag) = etag {
            headers.push((header::IF_NONE_MATCH, etag.to_owned()));
        }
        let response = self.request(Method::GET, &path, None, &headers).await?;
        match response.status {
            StatusCode::NOT_MODIFIED => Ok(Lookup::NotModified),
            StatusCode::NOT_FOUND => Ok(Lookup::NotFound),
            status if status.is_success() => {
                let wire: WireUser = parse(&response.url, &response.body)?;
                let etag = response
                    .etag
                    .clone()
                    .or_else(|| wire.meta.as_ref().and_then(|meta| meta.version.clone()));
                Ok(Lookup::Found {
                    value: to_user(wire),
                    etag,
                })
            }
            _ => Err(status_error(&response)),
        }
    }

    /// The user whose `userName` equals `name` (the server compares case-insensitively).
    pub async fn user_by_username(&self, name: &str) -> Result<Option<User>, Error> {
        self.user_by_filter("userName", name).await
    }

    /// The first user with `email` among its `emails` values.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>, Error> {
        self.user_by_filter("emails.value", email).await
    }

    /// The user whose `externalId` equals `external_id`.
    pub async fn user_by_external_id(&self, external_id: &str) -> Result<Option<User>, Error> {
        self.user_by_filter("externalId", external_id).await
    }

    /// `GET /Users?filter=<attribute> eq "<value>"`, first match.
    async fn user_by_filter(&self, attribute: &str, value: &str) -> Result<Option<User>, Error> {
        let filter = format!("{attribute} eq {}", filter_string(value));
        let path = format!("Users?filter={}&count=1", encode(&filter));
        let response = self.request(Method::GET, &path, None, &[]).await?;
        if !response.status.is_success() {
            return Err(status_error(&response));
        }
        let list: WireList<WireUser> = parse(&response.url, &response.body)?;
        Ok(list
            .resources
            .unwrap_or_default()
            .into_iter()
            .next()
            .map(to_user))
    }

    /// Reads `/ServiceProviderConfig` for RFC 9865 support. A server without the endpoint
    /// (404/501) pages by index.
    async fn paging(&self) -> Result<(Paging, Option<usize>), Error> {
        let response = self
            .request(Method::GET, "ServiceProviderConfig", None, &[])
            .await?;
        if matches!(
            response.status,
            StatusCode::NOT_FOUND | StatusCode::NOT_IMPLEMENTED
        ) {
            return Ok((Paging::Index, None));
        }
        if !response.status.is_success() {
            return Err(status_error(&response));
        }
        let config: WireConfig = parse(&response.url, &response.body)?;
        let pagination = config.pagination.unwrap_or_default();
        let max = pagination
            .max_page_size
            .and_then(|max| usize::try_from(max).ok());
        let paging = if pagination.cursor == Some(true) {
            Paging::Cursor
        } else {
            Paging::Index
        };
        Ok((paging, max))
    }

    /// Reads every page of one resource type.
    async fn list<T: DeserializeOwned>(
        &self,
        resource: &str,
        paging: Paging,
        page_size: usize,
    ) -> Result<Vec<T>, Error> {
        let mut all = Vec::new();
        let mut start: usize = 1;
        let mut cursor = String::new();
        loop {
            let path = match paging {
                Paging::Index => format!("{resource}?startIndex={start}&count={page_size}"),
                Paging::Cursor => {
                    format!("{resource}?cursor={}&count={page_size}", encode(&cursor))
                }
            };
            let response = self.request(Method::GET, &path, None, &[]).await?;
            if !response.status.is_success() {
                return Err(status_error(&response));
            }
            let page: WireList<T> = parse(&response.url, &response.body)?;
            let resources = page.resources.unwrap_or_default();
            let returned = resources.len();
            if returned == 0 {
                break;
            }
            if all.len().saturating_add(returned) > MAX_RESOURCES {
                return Err(Error::Invalid {
                    url: response.url,
                    message: format!("more than {MAX_RESOURCES} {resource} listed"),
                });
            }
            all.extend(resources);
            match paging {
                Paging::Index => start = start.saturating_add(returned),
                Paging::Cursor => match page.next_cursor {
                    Some(next) if !next.is_empty() => cursor = next,
                    _ => break,
                },
            }
        }
        Ok(all)
    }

    /// The full URL of `path` (relative to the base URL), for error messages.
    fn url_for(&self, path: &str) -> String {
        format!("{}/{path}", self.config.base_url.trim_end_matches('/'))
    }

    /// Parses the base URL.
    fn target(&self) -> Result<Target, Error> {
        let base = &self.config.base_url;
        let bad = |reason: &str| Error::Url {
            url: base.clone(),
            reason: reason.to_owned(),
        };
        let uri: http::Uri = base
            .parse()
            .map_err(|error: http::uri::InvalidUri| Error::Url {
                url: base.clone(),
                reason: error.to_string().to_lowercase(),
            })?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(_) => return Err(bad("only http:// and https:// are supported")),
            None => return Err(bad("missing https:// or http:// scheme")),
        };
        let authority = uri.authority().ok_or_else(|| bad("missing host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if uri.query().is_some() {
            return Err(bad("a query is not allowed"));
        }
        Ok(Target {
            host,
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            tls,
            authority: authority.as_str().to_owned(),
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// Sends one request to `path` (relative to the base URL, query included) and reads the
    /// whole response, all within the configured timeout.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(header::HeaderName, String)],
    ) -> Result<Response, Error> {
        let url = self.url_for(path);
        let target = self.target()?;
        let after = self.config.timeout;
        match tokio::time::timeout(
            after,
            self.exchange(&url, &target, method, path, body, headers),
        )
        .await
        {
            Ok(result) => result,
            Err(_elapsed) => Err(Error::Timeout { url, after }),
        }
    }

    /// [`Self::request`] without the timeout.
    async fn exchange(
        &self,
        url: &str,
        target: &Target,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(header::HeaderName, String)],
    ) -> Result<Response, Error> {
        let http_error = |error: hyper::Error| Error::Http {
            url: url.to_owned(),
            error,
        };
        let bad_request = |error: http::Error| Error::Url {
            url: url.to_owned(),
            reason: error.to_string().to_lowercase(),
        };
        let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|error| Error::Connect {
                url: url.to_owned(),
                error,
            })?;
        let tls = match target.tls {
            false => None,
            true => {
                let config = crate::tls_client::config(self.config.ca_file.as_deref())
                    .map_err(|e| Error::Tls { url: url.to_owned(), message: e.to_string() })?;
                Some((config, target.host.as_str()))
            }
        };
        // The connection ends when `sender` is dropped, on success, error or timeout alike.
        let mut sender = crate::tls_client::http1(stream, tls).await.map_err(|e| match e {
            crate::tls_client::ConnectError::Tls(e) => Error::Tls { url: url.to_owned(), message: e.to_string() },
            crate::tls_client::ConnectError::Http(error) => http_error(error),
        })?;

        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}/{path}", target.prefix))
            .header(header::HOST, target.authority.as_str())
            .header(header::ACCEPT, SCIM_JSON);
        if let Some(token) = &self.config.token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, SCIM_JSON);
        }
        for (name, value) in headers {
            builder = builder.header(name, value.as_str());
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(bad_request)?;
        let response = sender.send_request(request).await.map_err(http_error)?;
        let status = response.status();
        let etag = response
            .headers()
            .get(header::ETAG)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|error| Error::Body {
                url: url.to_owned(),
                message: error.to_string().to_lowercase(),
            })?
            .to_bytes();
        Ok(Response {
            url: url.to_owned(),
            status,
            etag,
            body,
        })
    }
}

// === mapping ===

/// Maps a SCIM user to a snapshot user (notes §2.2).
fn to_user(wire: WireUser) -> User {
    let mut emails: Vec<(bool, String)> = wire
        .emails
        .unwrap_or_default()
        .into_iter()
        .filter_map(|email| Some((email.primary == Some(true), email.value?)))
        .collect();
    // Primary first; the sort is stable, so the others keep the server's order.
    emails.sort_by_key(|(primary, _)| !*primary);
    let emails: Vec<Str> = emails
        .into_iter()
        .map(|(_, value)| Str::from(value))
        .collect();
    let (given_name, family_name) = match wire.name {
        Some(name) => (name.given_name, name.family_name),
        None => (None, None),
    };
    let (department, employee_id, manager_id) = match wire.enterprise {
        Some(ext) => (
            ext.department,
            ext.employee_number,
            ext.manager.and_then(|manager| manager.value),
        ),
        None => (None, None, None),
    };
    let status = wire
        .active
        .map(|active| Str::from(if active { "enabled" } else { "disabled" }));
    let attributes = wire.user_type.and_then(|user_type| {
        let mut map = serde_json::Map::new();
        map.insert("user_type".to_owned(), serde_json::Value::String(user_type));
        let text = serde_json::Value::Object(map).to_string();
        serde_json::from_str::<Attributes>(&text).ok()
    });
    User {
        id: Str::from(wire.id),
        username: wire.user_name.map(Str::from),
        email: emails.first().cloned(),
        emails,
        display_name: wire.display_name.map(Str::from),
        given_name: given_name.map(Str::from),
        family_name: family_name.map(Str::from),
        status,
        kind: None,
        department: department.map(Str::from),
        job_title: wire.title.map(Str::from),
        manager_id: manager_id.map(Str::from),
        employee_id: employee_id.map(Str::from),
        external_id: wire.external_id.map(Str::from),
        attributes,
    }
}

/// Maps a SCIM group to a snapshot group; `group_ids` are all groups' ids, to classify
/// members that carry no `type`.
fn to_group(wire: WireGroup, group_ids: &HashSet<String>, url: &str) -> Result<Group, Error> {
    let Some(name) = wire.display_name else {
        return Err(Error::Invalid {
            url: url.to_owned(),
            message: format!("group `{}` has no displayName", wire.id),
        });
    };
    let mut member_ids = Vec::new();
    let mut member_group_ids = Vec::new();
    for member in wire.members.unwrap_or_default() {
        let Some(value) = member.value else { continue };
        let is_group = match member.kind.as_deref() {
            Some(kind) if kind.eq_ignore_ascii_case("group") => true,
            Some(kind) if kind.eq_ignore_ascii_case("user") => false,
            _ => {
                member
                    .reference
                    .as_deref()
                    .is_some_and(|reference| reference.contains("/Groups/"))
                    || group_ids.contains(&value)
            }
        };
        if is_group {
            member_group_ids.push(Str::from(value));
        } else {
            member_ids.push(Str::from(value));
        }
    }
    Ok(Group {
        id: Str::from(wire.id),
        name: Str::from(name),
        description: None,
        member_ids,
        member_group_ids,
    })
}

// === impl ScimData ===

impl ScimData {
    /// A snapshot holding these users and groups, with `source` naming the upstream.
    pub fn into_snapshot(self, source: &str) -> Snapshot {
        Snapshot {
            version: VERSION,
            source: Some(Str::from(source)),
            users: self.users,
            groups: self.groups,
            ..Snapshot::default()
        }
    }
}

// === helpers ===

/// Parses a JSON body, reporting the path of the first bad value.
fn parse<T: DeserializeOwned>(url: &str, body: &[u8]) -> Result<T, Error> {
    // Every SCIM body is an object; serde would otherwise accept an array for a struct.
    if let Some(first) = body.iter().find(|byte| !byte.is_ascii_whitespace())
        && *first != b'{'
        && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
    {
        return Err(Error::Json {
            url: url.to_owned(),
            path: ".".to_owned(),
            message: "expected a json object".to_owned(),
        });
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|error| Error::Json {
            url: url.to_owned(),
            path: error.path().to_string(),
            message: error.inner().to_string(),
        })?;
    deserializer.end().map_err(|error| Error::Json {
        url: url.to_owned(),
        path: ".".to_owned(),
        message: error.to_string(),
    })?;
    Ok(value)
}

/// An error for an unexpected status, with the SCIM error's `scimType` and `detail` if the
/// body is a SCIM error.
fn status_error(response: &Response) -> Error {
    let error: Option<serde_json::Value> = serde_json::from_slice(&response.body).ok();
    let field = |name: &str| {
        error
            .as_ref()
            .and_then(|error| error.get(name))
            .and_then(|value| value.as_str())
            .map(str::to_owned)
    };
    Error::Status {
        url: response.url.clone(),
        status: response.status.as_u16(),
        scim_type: field("scimType"),
        detail: field("detail"),
    }
}

/// A SCIM filter string literal: the value as a JSON string (RFC 7644 §3.4.2.2), so quotes,
/// backslashes and control characters are escaped.
fn filter_string(value: &str) -> String {
    serde_json::Value::String(value.to_owned()).to_string()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl fmt::Display for StatusDetail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(detail) = self.detail {
            write!(f, ": {detail}")?;
        }
        if let Some(scim_type) = self.scim_type {
            write!(f, " (scimType {scim_type})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Tests against a real `scim2-server` (PyPI, pinned 0.8.3) started per test on a free
    //! loopback port, plus a tiny in-process stub for failures a real server does not produce.

    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};

    use serde_json::{Value, json};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::identity::Index;

    const TOKEN: &str = "testtoken";
    const INSTALL: &str = "scim2-server is not installed. Install it with \
        `python3 -m venv /tmp/scim-venv && /tmp/scim-venv/bin/pip install 'scim2-server[cursor]==0.8.3'` \
        and run the tests with SCIM2_SERVER=/tmp/scim-venv/bin/scim2-server (or put scim2-server on PATH)";

    /// The version the tests run against (`.ci/run` installs the same).
    const SCIM2_SERVER: &str = "scim2-server[cursor]==0.8.3";

    /// `$SCIM2_SERVER`, else `scim2-server` on `PATH`, else the venv `.ci/run` makes in
    /// `target/scim-venv` (created here on first use, from PyPI); fails the test with install
    /// instructions when none can be had.
    fn server_binary() -> PathBuf {
        static INSTALLED: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
        let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/scim-venv");
        let bin = venv.join("bin/scim2-server");
        if std::env::var_os("SCIM2_SERVER").is_none() && !on_path() {
            let got = INSTALLED.get_or_init(|| {
                if !bin.is_file() {
                    let ok = std::process::Command::new("python3").arg("-m").arg("venv").arg(&venv).status().is_ok_and(|s| s.success())
                        && std::process::Command::new(venv.join("bin/pip"))
                            .args(["install", "--quiet", SCIM2_SERVER])
                            .status()
                            .is_ok_and(|s| s.success());
                    if !ok {
                        return None;
                    }
                }
                Some(bin.clone())
            });
            if let Some(path) = got {
                return path.clone();
            }
        }
        server_binary_given()
    }

    fn on_path() -> bool {
        std::env::var_os("PATH").iter().flat_map(std::env::split_paths).any(|d| d.join("scim2-server").is_file())
    }

    fn server_binary_given() -> PathBuf {
        if let Some(path) = std::env::var_os("SCIM2_SERVER") {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "SCIM2_SERVER={} does not exist. {INSTALL}",
                path.display()
            );
            return path;
        }
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join("scim2-server"))
            .find(|path| path.is_file())
            .unwrap_or_else(|| panic!("{INSTALL}"))
    }

    /// A running scim2-server, killed (by its pid) on drop.
    struct Server {
        child: Child,
        base_url: String,
        _dir: tempfile::TempDir,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn free_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    /// Starts `scim2-server --hostname 127.0.0.1 --port <free> --bearer-token testtoken
    /// [--service-provider-config <file>]` and waits until `/v2/ServiceProviderConfig` answers.
    async fn start(provider_config: Option<Value>) -> Server {
        let binary = server_binary();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut command = Command::new(&binary);
        command
            .args([
                "--hostname",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--bearer-token",
                TOKEN,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("server.log")).unwrap());
        if let Some(config) = provider_config {
            let file = dir.path().join("spc.json");
            std::fs::write(&file, config.to_string()).unwrap();
            command.arg("--service-provider-config").arg(file);
        }
        let child = command.spawn().unwrap_or_else(|error| {
            panic!("cannot start {}: {error}. {INSTALL}", binary.display())
        });
        let mut server = Server {
            child,
            base_url: format!("http://127.0.0.1:{port}/v2/"),
            _dir: dir,
        };
        let client = server.client(100);
        for _ in 0..100 {
            if let Ok(response) = client
                .request(Method::GET, "ServiceProviderConfig", None, &[])
                .await
                && response.status.is_success()
            {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = std::fs::read_to_string(server._dir.path().join("server.log"))
                    .unwrap_or_default();
                panic!("scim2-server exited with {status}: {log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "scim2-server did not answer on {} within 10 s",
            server.base_url
        );
    }

    impl Server {
        fn client(&self, page_size: usize) -> ScimClient {
            ScimClient::new(ScimConfig {
                base_url: self.base_url.clone(),
                ca_file: None,
                token: Some(TOKEN.to_owned()),
                page_size,
                timeout: Duration::from_secs(10),
            })
        }
    }

    /// Sends a seeding request and returns the parsed body (`null` for 204).
    async fn send(client: &ScimClient, method: Method, path: &str, body: Option<Value>) -> Value {
        let response = client
            .request(
                method.clone(),
                path,
                body.map(|body| body.to_string().into_bytes()),
                &[],
            )
            .await
            .unwrap();
        assert!(
            response.status.is_success(),
            "{method} {path}: {} {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        );
        serde_json::from_slice(&response.body).unwrap_or(Value::Null)
    }

    async fn post_user(client: &ScimClient, body: Value) -> String {
        let created = send(client, Method::POST, "Users", Some(body)).await;
        created["id"].as_str().unwrap().to_owned()
    }

    async fn post_group(client: &ScimClient, name: &str, members: Value) -> String {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": name,
            "members": members,
        });
        let created = send(client, Method::POST, "Groups", Some(body)).await;
        created["id"].as_str().unwrap().to_owned()
    }

    fn simple_user(name: &str) -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": name,
            "emails": [{"value": format!("{name}@example.com"), "type": "work", "primary": true}],
            "active": true,
        })
    }

    fn find<'a>(users: &'a [User], username: &str) -> &'a User {
        users
            .iter()
            .find(|user| user.username.as_deref() == Some(username))
            .unwrap()
    }

    #[tokio::test]
    async fn full_sync_pages_maps_and_follows_changes() {
        let server = start(None).await;
        let client = server.client(2);
        let bob = post_user(
            &client,
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "bob", "active": false, "userType": "Contractor",
            }),
        )
        .await;
        let alice = post_user(
            &client,
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE_USER],
                "userName": "alice",
                "externalId": "00u-alice",
                "name": {"givenName": "Alice", "familyName": "Smith"},
                "displayName": "Alice Smith",
                "title": "Staff Engineer",
                "userType": "Employee",
                "active": true,
                "emails": [
                    {"value": "alice@home.example", "type": "home"},
                    {"value": "alice@example.com", "type": "work", "primary": true},
                ],
                ENTERPRISE_USER: {
                    "employeeNumber": "10042",
                    "department": "Eng",
                    "manager": {"value": bob},
                },
            }),
        )
        .await;
        let carol = post_user(&client, simple_user("carol")).await;
        let dave = post_user(&client, simple_user("dave")).await;
        let eve = post_user(&client, simple_user("eve")).await;
        let platform = post_group(
            &client,
            "platform",
            json!([{"value": carol, "type": "User"}]),
        )
        .await;
        let engineering = post_group(
            &client,
            "engineering",
            json!([
                {"value": alice, "type": "User"},
                {"value": bob, "type": "User"},
                {"value": dave, "type": "User"},
                {"value": platform, "type": "Group"},
            ]),
        )
        .await;
        send(&client, Method::DELETE, &format!("Users/{dave}"), None).await;

        // 4 users at 2 per page: 2 full pages, then an empty one.
        let data = client.fetch_all().await.unwrap();
        assert_eq!(data.paging, Paging::Index);
        let mut names: Vec<&str> = data
            .users
            .iter()
            .filter_map(|u| u.username.as_deref())
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["alice", "bob", "carol", "eve"]);

        let a = find(&data.users, "alice");
        assert_eq!(a.id, alice.as_str());
        assert_eq!(a.external_id.as_deref(), Some("00u-alice"));
        assert_eq!(a.email.as_deref(), Some("alice@example.com"));
        let emails: Vec<&str> = a.emails.iter().map(|e| &**e).collect();
        assert_eq!(emails, ["alice@example.com", "alice@home.example"]);
        assert_eq!(a.given_name.as_deref(), Some("Alice"));
        assert_eq!(a.family_name.as_deref(), Some("Smith"));
        assert_eq!(a.display_name.as_deref(), Some("Alice Smith"));
        assert_eq!(a.status.as_deref(), Some("enabled"));
        assert_eq!(a.job_title.as_deref(), Some("Staff Engineer"));
        assert_eq!(a.department.as_deref(), Some("Eng"));
        assert_eq!(a.employee_id.as_deref(), Some("10042"));
        assert_eq!(a.manager_id.as_deref(), Some(bob.as_str()));
        assert_eq!(a.kind, None);
        assert_eq!(
            a.attributes.as_ref().and_then(|x| x.get("user_type")),
            Some(json!("Employee"))
        );
        let b = find(&data.users, "bob");
        assert_eq!(b.status.as_deref(), Some("disabled"));
        assert_eq!(b.email, None);
        assert_eq!(
            b.attributes.as_ref().and_then(|x| x.get("user_type")),
            Some(json!("Contractor"))
        );

        assert_eq!(data.groups.len(), 2);
        let eng = data
            .groups
            .iter()
            .find(|g| g.name == "engineering")
            .unwrap();
        assert_eq!(eng.id, engineering.as_str());
        assert_eq!(
            eng.member_ids,
            [alice.as_str(), bob.as_str(), dave.as_str()]
        );
        assert_eq!(eng.member_group_ids, [platform.as_str()]);
        let plat = data.groups.iter().find(|g| g.name == "platform").unwrap();
        assert_eq!(plat.member_ids, [carol.as_str()]);

        // The dangling member (deleted dave) survives into the index, which counts it.
        let index = Index::build(data.clone().into_snapshot(&server.base_url)).unwrap();
        assert_eq!(index.report().dangling.group_member_user, 1);

        // Remove bob from engineering, delete eve: the next full sync reflects both.
        send(
            &client,
            Method::PATCH,
            &format!("Groups/{engineering}"),
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "remove", "path": format!("members[value eq \"{bob}\"]")}],
            })),
        )
        .await;
        send(&client, Method::DELETE, &format!("Users/{eve}"), None).await;
        let data = client.fetch_all().await.unwrap();
        assert_eq!(data.users.len(), 3);
        assert!(data.users.iter().all(|u| u.id != eve.as_str()));
        let eng = data
            .groups
            .iter()
            .find(|g| g.name == "engineering")
            .unwrap();
        assert_eq!(eng.member_ids, [alice.as_str(), dave.as_str()]);
        assert_eq!(eng.member_group_ids, [platform.as_str()]);

        // Page size 1 and a large one give the same data.
        let one = server.client(1).fetch_all().await.unwrap();
        let big = server.client(1000).fetch_all().await.unwrap();
        assert_eq!(one, data);
        assert_eq!(big, data);
    }

    #[tokio::test]
    async fn lookups_filters_and_etags() {
        let server = start(None).await;
        let client = server.client(100);
        let mut alice_body = simple_user("alice");
        alice_body["externalId"] = json!("ext-1");
        let alice = post_user(&client, alice_body).await;
        // A value that needs escaping inside a filter string.
        let odd = post_user(&client, simple_user("o\"brien\\x y")).await;
        post_user(&client, simple_user("alicia")).await;

        let found = client.user_by_username("ALICE").await.unwrap().unwrap();
        assert_eq!(found.id, alice.as_str());
        let found = client
            .user_by_username("o\"brien\\x y")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.id, odd.as_str());
        let found = client
            .user_by_email("alice@example.com")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.id, alice.as_str());
        let found = client.user_by_external_id("ext-1").await.unwrap().unwrap();
        assert_eq!(found.id, alice.as_str());
        assert_eq!(client.user_by_username("nobody").await.unwrap(), None);
        assert_eq!(client.user_by_username("ali").await.unwrap(), None);

        // The server advertises ETags; 200 with one, then 304 with If-None-Match.
        let config: Value = send(&client, Method::GET, "ServiceProviderConfig", None).await;
        assert_eq!(config["etag"]["supported"], json!(true));
        let Lookup::Found { value, etag } = client.user(&alice, None).await.unwrap() else {
            panic!("alice not found");
        };
        assert_eq!(value.username.as_deref(), Some("alice"));
        let etag = etag.unwrap();
        assert_eq!(
            client.user(&alice, Some(&etag)).await.unwrap(),
            Lookup::NotModified
        );
        send(
            &client,
            Method::PATCH,
            &format!("Users/{alice}"),
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "displayName", "value": "Alice B"}],
            })),
        )
        .await;
        let Lookup::Found { value, etag: newer } = client.user(&alice, Some(&etag)).await.unwrap()
        else {
            panic!("changed user not returned");
        };
        assert_eq!(value.display_name.as_deref(), Some("Alice B"));
        assert_ne!(newer.as_deref(), Some(etag.as_str()));
        assert_eq!(
            client.user("no-such-id", None).await.unwrap(),
            Lookup::NotFound
        );
        assert_eq!(
            client.user("../Groups", None).await.unwrap(),
            Lookup::NotFound
        );

        // A wrong token is an error naming the status and the URL.
        let mut config = client.config().clone();
        config.token = Some("wrong".to_owned());
        let error = ScimClient::new(config).fetch_all().await.unwrap_err();
        assert!(
            matches!(error, Error::Status { status: 401, .. }),
            "{error}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&server.base_url.trim_end_matches('/').to_string()),
            "{message}"
        );
        assert!(message.contains("http status 401"), "{message}");
    }

    #[tokio::test]
    async fn cursor_pagination_when_advertised() {
        let spc = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "patch": {"supported": true},
            "bulk": {"supported": true, "maxOperations": 1000, "maxPayloadSize": 1048576},
            "filter": {"supported": true, "maxResults": 1000},
            "changePassword": {"supported": true},
            "sort": {"supported": true},
            "etag": {"supported": true},
            "pagination": {"cursor": true, "index": true, "defaultPaginationMethod": "index",
                "defaultPageSize": 100, "maxPageSize": 1000, "cursorTimeout": 3600},
            "authenticationSchemes": [],
        });
        // Cursor support needs the `cursor` extra (cryptography); the server exits without it.
        let server = start(Some(spc)).await;
        let client = server.client(2);
        let mut ids = Vec::new();
        for name in ["u1", "u2", "u3", "u4", "u5"] {
            ids.push(post_user(&client, simple_user(name)).await);
        }
        post_group(
            &client,
            "all",
            json!(
                ids.iter()
                    .map(|id| json!({"value": id, "type": "User"}))
                    .collect::<Vec<_>>()
            ),
        )
        .await;
        let data = client.fetch_all().await.unwrap();
        assert_eq!(data.paging, Paging::Cursor);
        let mut got: Vec<&str> = data.users.iter().map(|u| &*u.id).collect();
        got.sort_unstable();
        ids.sort_unstable();
        assert_eq!(got, ids);
        assert_eq!(data.groups.len(), 1);
        assert_eq!(data.groups.first().unwrap().member_ids.len(), 5);
    }

    // --- stub server, for failures a real server does not produce ---

    /// Serves each connection with `handler(request head) -> (status, body)`, then closes it.
    async fn stub(handler: impl Fn(&str) -> (u16, String) + Send + Sync + 'static) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let handler = std::sync::Arc::new(handler);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let handler = handler.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let (status, body) = handler(&String::from_utf8_lossy(&head));
                    let response = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/scim+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        format!("http://127.0.0.1:{port}/scim/v2")
    }

    fn client_for(base_url: String, page_size: usize, timeout: Duration) -> ScimClient {
        ScimClient::new(ScimConfig {
            base_url,
            ca_file: None,
            token: None,
            page_size,
            timeout,
        })
    }

    fn query(head: &str, key: &str) -> Option<usize> {
        let line = head.lines().next()?;
        let start = line.find(&format!("{key}="))? + key.len() + 1;
        line[start..].split(['&', ' ']).next()?.parse().ok()
    }

    fn list(resources: Value) -> String {
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": 3, "Resources": resources})
        .to_string()
    }

    #[tokio::test]
    async fn paging_ignores_total_results_and_survives_capped_pages() {
        // 7 users; the server caps every page at 3 whatever `count` says and lies in
        // totalResults; no ServiceProviderConfig (404), and no Resources key when empty.
        let base = stub(|head| {
            if head.contains("ServiceProviderConfig") {
                return (404, "{}".to_owned());
            }
            assert!(head.starts_with("GET /scim/v2/"), "{head}");
            let start = query(head, "startIndex").unwrap_or(1);
            if head.contains("/Groups") {
                return (200, json!({"totalResults": 0}).to_string());
            }
            let items: Vec<Value> = (start..=7)
                .take(3)
                .map(|i| json!({"id": format!("u{i}")}))
                .collect();
            if items.is_empty() {
                return (200, json!({"totalResults": 3}).to_string());
            }
            (200, list(json!(items)))
        })
        .await;
        let data = client_for(base, 10, Duration::from_secs(5))
            .fetch_all()
            .await
            .unwrap();
        let ids: Vec<&str> = data.users.iter().map(|u| &*u.id).collect();
        assert_eq!(ids, ["u1", "u2", "u3", "u4", "u5", "u6", "u7"]);
        assert!(data.groups.is_empty());
    }

    #[tokio::test]
    async fn bad_payloads_are_errors_not_panics() {
        let cases: Vec<(u16, String, &str)> = vec![
            (
                200,
                list(json!([{"id": "u1", "active": "yes"}])),
                "Resources[0].active",
            ),
            (
                200,
                list(json!([{"id": "u1", "emails": {"value": "x"}}])),
                "Resources[0].emails",
            ),
            (200, list(json!([{"userName": "no-id"}])), "Resources[0]"),
            (200, list(json!([{"id": 7}])), "Resources[0].id"),
            (200, json!({"Resources": "nope"}).to_string(), "Resources"),
            (200, "<html>oops</html>".to_owned(), "invalid json"),
            (200, "{\"Resources\": [".to_owned(), "invalid json"),
            (200, "[]".to_owned(), "invalid json"),
        ];
        for (status, body, expect) in cases {
            let body2 = body.clone();
            let base = stub(move |head| {
                if head.contains("ServiceProviderConfig") {
                    (404, String::new())
                } else {
                    (status, body2.clone())
                }
            })
            .await;
            let error = client_for(base.clone(), 10, Duration::from_secs(5))
                .fetch_all()
                .await
                .unwrap_err();
            let message = error.to_string();
            assert!(matches!(error, Error::Json { .. }), "{body}: {message}");
            assert!(message.contains(expect), "{body}: {message}");
            assert!(
                message.contains(&format!("{base}/Users?startIndex=1&count=10")),
                "{message}"
            );
        }

        // A group without displayName.
        let base = stub(|head| {
            if head.contains("ServiceProviderConfig") {
                (404, String::new())
            } else if head.contains("/Groups") && head.contains("startIndex=1&") {
                (200, list(json!([{"id": "g1"}])))
            } else {
                (200, list(json!([])))
            }
        })
        .await;
        let error = client_for(base, 10, Duration::from_secs(5))
            .fetch_all()
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Invalid { .. }), "{error}");
        assert!(
            error.to_string().contains("group `g1` has no displayName"),
            "{error}"
        );

        // A SCIM error body: status, detail and scimType in the message.
        let base = stub(|_| {
            (
                400,
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": "400", "scimType": "invalidFilter", "detail": "bad filter"})
                .to_string(),
            )
        })
        .await;
        let error = client_for(base.clone(), 10, Duration::from_secs(5))
            .user_by_username("x")
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{base}/Users?filter=userName%20eq%20%22x%22&count=1: http status 400: bad filter (scimType invalidFilter)"
            )
        );
        // A non-JSON error body still gives the status.
        let base = stub(|_| (500, "boom".to_owned())).await;
        let error = client_for(base, 10, Duration::from_secs(5))
            .user("u1", None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                Error::Status {
                    status: 500,
                    detail: None,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[tokio::test]
    async fn server_down_is_an_error_not_a_hang() {
        // Nothing listens: connection refused.
        let port = free_port();
        let client = client_for(
            format!("http://127.0.0.1:{port}/v2/"),
            10,
            Duration::from_secs(5),
        );
        let error = client.fetch_all().await.unwrap_err();
        assert!(matches!(error, Error::Connect { .. }), "{error}");
        assert!(
            error.to_string().starts_with(&format!(
                "http://127.0.0.1:{port}/v2/ServiceProviderConfig: cannot connect"
            )),
            "{error}"
        );

        // Accepts but never answers: the timeout fires.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        // Over https the TLS handshake never completes: bounded by the same timeout.
        for scheme in ["http", "https"] {
            let client = client_for(
                format!("{scheme}://127.0.0.1:{port}/v2"),
                10,
                Duration::from_millis(300),
            );
            let started = std::time::Instant::now();
            let error = client.user_by_username("alice").await.unwrap_err();
            assert!(matches!(error, Error::Timeout { .. }), "{scheme}: {error}");
            assert!(started.elapsed() < Duration::from_secs(3));
            assert!(
                error.to_string().contains("no response within 300ms"),
                "{error}"
            );
        }
        hold.abort();

        // Unusable base URLs.
        for url in [
            "ftp://example.com/v2",
            "127.0.0.1:80/v2",
            "http://",
            "http://h/v2?x=1",
        ] {
            let error = client_for(url.to_owned(), 10, Duration::from_secs(1))
                .fetch_all()
                .await
                .unwrap_err();
            assert!(matches!(error, Error::Url { .. }), "{url}: {error}");
        }
    }

    #[test]
    fn filter_values_and_paths_are_escaped() {
        assert_eq!(filter_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(encode("userName eq \"a&b\""), "userName%20eq%20%22a%26b%22");
        assert_eq!(encode("../x/é"), "..%2Fx%2F%C3%A9");
    }
}
