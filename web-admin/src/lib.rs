/*!
The seeder's admin site: what an office admin sees at `http://seeder.local/`. Server-rendered
HTML (maud, checked at compile time), a little vanilla JS for live numbers over SSE, a JSON API
under `/api/v1` described by an OpenAPI document, Prometheus metrics at `/metrics`.

It knows nothing of QUIC, sled or the board: everything it shows or changes goes through
[`AdminBackend`], which the daemon implements. Handlers are thin: check who is asking, parse,
call the backend, render.

Security, in order of a request's path: every connection, request head and body has a time
limit and connections are limited in number (see [`server`]), a request must carry exactly one
valid `Host` header and it must name this device (stops DNS rebinding), every response carries
a strict CSP and frame/sniffing denial, bodies are capped, an unclaimed device shows only the
claim page, sessions are HttpOnly + SameSite=Strict cookies, who is asking is settled before
anything reads or parses a request's body (the `Caller` and `SignedIn` extractors), every
state-changing request carries the session's CSRF token (forms: a hidden field; API: the
`X-CSRF-Token` header) or an API token, and password and setup-code attempts are rate limited
per client.
*/
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod backend;
pub mod format;
pub mod memory;
pub mod openapi;
pub mod pages;
pub mod server;
pub mod ssh;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;

pub use auth::{unclaim_blob, SiteSettings};
pub use backend::*;
pub use server::Limits;

/// Request bodies above this are refused: the largest form is an agreement's notes.
pub const MAX_BODY: usize = 16 * 1024;
/// Live-update streams open at once (each holds a task and a timer).
pub const MAX_EVENT_STREAMS: usize = 16;
/// Samples of the transfer graph: 120 × 30 s = the last hour ([`GRAPH_SPAN`]). Each is 24
/// bytes, so the ring is under 3 KiB in memory and in the registry.
pub const HISTORY_LEN: usize = 120;
/// Time between samples of the transfer graph: the dashboard's in/out rates are averages over
/// this long.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(30);
/// How far back the transfer graph reaches.
pub const GRAPH_SPAN: Duration = Duration::from_secs(60 * 60);
/// Samples handed to [`AdminBackend::save_samples`] at most: the whole ring, no more, so what
/// the registry holds stays bounded however long the device runs.
pub const SAMPLES_KEPT: usize = HISTORY_LEN;
/// The ring is saved every this many samples (every 2 min) and when the site stops: a power
/// cut loses at most 2 minutes of the graph, and the data disk sees one small write per 2 min
/// rather than one per sample.
pub const SAVE_EVERY_SAMPLES: u64 = 4;
/// How long a claim waits for the board's button.
pub const BUTTON_WAIT: Duration = Duration::from_secs(120);

/// Session cookie.
pub const SESSION_COOKIE: &str = "seeder_session";
/// Cookie of the double-submit token that guards the claim and login forms (before there is a
/// session to hold a CSRF token).
pub const PRE_COOKIE: &str = "seeder_pre";

/// How the site is reached.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Names the `Host` header may carry (without port), besides IP literals.
    pub hosts: Vec<String>,
    /// Shown in the footer and the API.
    pub version: String,
    /// The command that reaches this daemon's control socket where it runs, e.g.
    /// `sudo seeder ctl` or `seeder ctl --data /srv/seeder`: the pages' hints (the setup
    /// code, a forgotten password) show it, so that what they say works there.
    pub ctl: String,
}

impl AdminConfig {
    /// `localhost`, `seeder`, `seeder.local` and this machine's host name (and `.local`).
    pub fn for_this_host(version: &str) -> AdminConfig {
        let mut hosts = vec![
            "localhost".to_string(),
            "seeder".to_string(),
            "seeder.local".to_string(),
        ];
        if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            let name = name.trim().to_ascii_lowercase();
            if !name.is_empty() {
                hosts.push(format!("{name}.local"));
                hosts.push(name);
            }
        }
        hosts.sort();
        hosts.dedup();
        AdminConfig {
            hosts,
            version: version.to_string(),
            ctl: "sudo seeder ctl".to_string(),
        }
    }
}

/// A claim waiting for the board's button: the press count when it started.
#[derive(Debug, Clone)]
struct ButtonWait {
    pre: String,
    baseline: u64,
    started: Instant,
}

/// State shared by every handler.
pub struct App {
    pub backend: Arc<dyn AdminBackend>,
    pub config: AdminConfig,
    sessions: Mutex<auth::Sessions>,
    limiter: Mutex<auth::Limiter>,
    button: Mutex<Option<ButtonWait>>,
    history: Mutex<std::collections::VecDeque<Sample>>,
    /// Samples taken since start (every [`SAVE_EVERY_SAMPLES`]th saves the ring).
    samples_taken: std::sync::atomic::AtomicU64,
    /// Serialises read-modify-write of the stored settings.
    settings_lock: tokio::sync::Mutex<()>,
    streams: Arc<tokio::sync::Semaphore>,
    /// Password hashes being computed (see [`MAX_HASHING`]).
    hashing: Arc<tokio::sync::Semaphore>,
    /// The one thread argon2 runs on (see [`App::hash`]).
    hasher: std::sync::mpsc::SyncSender<HashJob>,
}

/// Work for the argon2 thread.
type HashJob = Box<dyn FnOnce() + Send>;

/// Start the thread [`App::hash`] runs jobs on; it ends when the app is dropped.
fn hash_thread() -> std::sync::mpsc::SyncSender<HashJob> {
    // The turn (a permit of `hashing`) is taken before a job is queued, so the queue never
    // holds more than the one job that has it.
    let (tx, rx) = std::sync::mpsc::sync_channel::<HashJob>(MAX_HASHING);
    let spawned = std::thread::Builder::new()
        .name("argon2".into())
        .spawn(move || {
            for job in rx {
                job();
            }
        });
    if let Err(e) = spawned {
        // Every hash then answers "the password hashing thread stopped".
        tracing::error!(error = %e, "cannot start the password hashing thread");
    }
    tx
}

/// argon2 runs at once: each takes 19 MiB and about half a second on the board, and anyone who
/// reaches the page can ask for one. Another attempt meanwhile is answered 429 at once.
pub const MAX_HASHING: usize = 1;

pub type Shared = Arc<App>;

impl App {
    pub fn new(backend: Arc<dyn AdminBackend>, config: AdminConfig) -> Shared {
        let history = kept_samples(backend.as_ref(), format::now_unix());
        Arc::new(App {
            backend,
            config,
            sessions: Mutex::default(),
            limiter: Mutex::default(),
            button: Mutex::default(),
            history: Mutex::new(history),
            samples_taken: std::sync::atomic::AtomicU64::new(0),
            settings_lock: tokio::sync::Mutex::new(()),
            streams: Arc::new(tokio::sync::Semaphore::new(MAX_EVENT_STREAMS)),
            hashing: Arc::new(tokio::sync::Semaphore::new(MAX_HASHING)),
            hasher: hash_thread(),
        })
    }

    /// Run `f` (an argon2 hash or check) on the hashing thread with the `turn` taken from
    /// [`App::hash_turn`]. One thread for every hash, not a pool's: the allocator keeps
    /// the 19 MiB a hash used in the freeing thread's arena for reuse, so hashes spread over
    /// a blocking pool's threads would each leave their own 19 MiB resident.
    async fn hash<T: Send + 'static>(
        &self,
        turn: tokio::sync::OwnedSemaphorePermit,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Fail> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: HashJob = Box::new(move || {
            let out = f();
            // The turn is given back before the caller hears, so its next attempt finds it free.
            drop(turn);
            let _ = tx.send(out);
        });
        self.hasher
            .try_send(job)
            .map_err(|_| Fail::TooMany(std::time::Duration::from_secs(1)))?;
        rx.await
            .map_err(|_| Fail::internal("the password hashing thread stopped"))
    }

    /// A turn at argon2, or 429 at once if one runs (see [`MAX_HASHING`]).
    pub(crate) fn hash_turn(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Fail> {
        self.hashing
            .clone()
            .try_acquire_owned()
            .map_err(|_| Fail::TooMany(std::time::Duration::from_secs(1)))
    }

    /// Whether an admin password is set (`false`: the setup code claims the site).
    pub fn claimed(&self) -> bool {
        self.settings().is_ok_and(|s| s.claimed())
    }

    fn settings(&self) -> Result<SiteSettings, Fail> {
        let blob = self.backend.load_site()?;
        SiteSettings::decode(blob.as_deref()).map_err(|e| Fail::internal(e.to_string()))
    }

    /// Change the stored settings under the lock.
    async fn update_settings<T>(
        &self,
        f: impl FnOnce(&mut SiteSettings) -> Result<T, Fail>,
    ) -> Result<T, Fail> {
        let _guard = self.settings_lock.lock().await;
        let mut s = self.settings()?;
        let out = f(&mut s)?;
        self.backend.save_site(&s.encode())?;
        Ok(out)
    }

    /// Record a sample of the transfer counters (the graph's history), and every
    /// [`SAVE_EVERY_SAMPLES`]th time hand the ring to the backend to keep across restarts.
    pub fn sample(&self) {
        if let Ok(o) = self.backend.overview() {
            self.record(Sample {
                at: format::now_unix(),
                bytes_received: o.bytes_received,
                bytes_sent: o.bytes_sent,
            });
            let taken = self
                .samples_taken
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if (taken + 1).is_multiple_of(SAVE_EVERY_SAMPLES) {
                self.save_history();
            }
        }
    }

    /// Add a sample to the ring, dropping the oldest past [`HISTORY_LEN`].
    pub fn record(&self, sample: Sample) {
        let mut h = self.history.lock().expect("history lock");
        while h.len() >= HISTORY_LEN {
            h.pop_front();
        }
        h.push_back(sample);
    }

    /// Hand the ring to the backend (a failure is logged: the graph only loses its past).
    pub fn save_history(&self) {
        let samples = self.history();
        let from = samples.len().saturating_sub(SAMPLES_KEPT);
        if let Err(e) = self.backend.save_samples(&samples[from..]) {
            tracing::warn!(error = %e, "the transfer graph's samples were not saved");
        }
    }

    pub fn history(&self) -> Vec<Sample> {
        self.history
            .lock()
            .expect("history lock")
            .iter()
            .copied()
            .collect()
    }

    /// Start a password or setup-code attempt: 429 if the client must wait, else it is counted
    /// now, before any hashing (a success clears it).
    fn begin_attempt(&self, client: IpAddr) -> Result<(), Fail> {
        self.limiter
            .lock()
            .expect("limiter lock")
            .begin(client, Instant::now())
            .map_err(Fail::TooMany)
    }

    fn attempt_failed(&self, client: IpAddr) {
        tracing::warn!(%client, "failed admin login or claim attempt");
    }

    fn attempt_succeeded(&self, client: IpAddr) {
        self.limiter.lock().expect("limiter lock").succeeded(client);
    }

    /// Start a session; returns the `Set-Cookie` value and the CSRF token.
    fn login(&self, ctx: &Ctx, generation: u64) -> (HeaderValue, String) {
        let (cookie, session) = self.sessions.lock().expect("sessions lock").create(
            Instant::now(),
            generation,
            Some(ctx.client),
            &ctx.agent,
        );
        (session_cookie(&cookie), session.csrf)
    }

    fn set_flash(&self, ctx: &Ctx, error: bool, text: impl Into<String>) {
        if let Some(cookie) = &ctx.cookie {
            let gen = ctx.settings.generation;
            if let Some(s) =
                self.sessions
                    .lock()
                    .expect("sessions lock")
                    .touch(cookie, Instant::now(), gen)
            {
                s.flash = Some(auth::Flash {
                    error,
                    text: text.into(),
                });
            }
        }
    }

    fn take_flash(&self, ctx: &Ctx) -> Option<auth::Flash> {
        let cookie = ctx.cookie.as_ref()?;
        let gen = ctx.settings.generation;
        self.sessions
            .lock()
            .expect("sessions lock")
            .touch(cookie, Instant::now(), gen)
            .and_then(|s| s.flash.take())
    }
}

fn session_cookie(value: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict"
    ))
    .expect("hex cookie is a valid header")
}

fn clear_cookie(name: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
    ))
    .expect("valid header")
}

/// What a handler knows about the request before it looks at the body.
pub struct Ctx {
    pub client: IpAddr,
    pub agent: String,
    pub settings: SiteSettings,
    /// The session cookie's value, when it names a live session.
    pub cookie: Option<String>,
    pub session: Option<auth::Session>,
    /// The API token's id, when `Authorization: Bearer` carries a valid one.
    pub token: Option<u64>,
    /// The double-submit cookie of the claim and login forms.
    pub pre: Option<String>,
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

impl FromRequestParts<Shared> for Ctx {
    type Rejection = Fail;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        app: &Shared,
    ) -> Result<Ctx, Fail> {
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
        let agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let settings = app.settings()?;
        let mut cookie = cookie_value(&parts.headers, SESSION_COOKIE);
        let session = cookie.as_ref().and_then(|c| {
            app.sessions
                .lock()
                .expect("sessions lock")
                .touch(c, Instant::now(), settings.generation)
                .map(|s| s.clone())
        });
        if session.is_none() {
            cookie = None;
        }
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|t| settings.token_id(t.trim()));
        let pre = cookie_value(&parts.headers, PRE_COOKIE);
        Ok(Ctx {
            client,
            agent,
            settings,
            cookie,
            session,
            token,
            pre,
        })
    }
}

/// The samples the backend kept that still fall in the graph's hour, at most [`HISTORY_LEN`].
fn kept_samples(backend: &dyn AdminBackend, now: u64) -> std::collections::VecDeque<Sample> {
    let mut samples = match backend.load_samples() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "the transfer graph starts empty: its samples can't be read");
            Vec::new()
        }
    };
    let since = now.saturating_sub(GRAPH_SPAN.as_secs());
    samples.retain(|s| s.at >= since && s.at <= now);
    samples.sort_by_key(|s| s.at);
    let from = samples.len().saturating_sub(HISTORY_LEN);
    samples.drain(..from);
    samples.into()
}

/// Why a request was refused, rendered as a page or as JSON by the caller's kind.
#[derive(Debug)]
pub enum Fail {
    /// Not logged in (pages redirect to the login page; the API answers 401).
    Unauthenticated,
    /// Not claimed yet (pages redirect to the claim page; the API answers 409).
    Unclaimed,
    /// Missing or wrong CSRF token, or a cross-site request.
    Forbidden(String),
    NotFound(String),
    Invalid(String),
    /// Clashes with what is there (a space already held).
    Conflict(String),
    Unavailable(String),
    TooMany(Duration),
    Internal(String),
}

impl Fail {
    pub fn backend(e: BackendError) -> Fail {
        match e {
            BackendError::NotFound(m) => Fail::NotFound(m),
            BackendError::Invalid(m) | BackendError::BadCode { message: m, .. } => Fail::Invalid(m),
            BackendError::Conflict(m) => Fail::Conflict(m),
            BackendError::Unavailable(m) => Fail::Unavailable(m),
            e @ BackendError::Io { .. } => Fail::internal(e.to_string()),
            BackendError::Internal(m) => Fail::internal(m),
        }
    }

    pub fn internal(m: impl Into<String>) -> Fail {
        let m = m.into();
        tracing::error!(error = %m, "admin request failed");
        Fail::Internal(m)
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Fail::Unauthenticated => StatusCode::UNAUTHORIZED,
            Fail::Unclaimed => StatusCode::CONFLICT,
            Fail::Forbidden(_) => StatusCode::FORBIDDEN,
            Fail::NotFound(_) => StatusCode::NOT_FOUND,
            Fail::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Fail::Conflict(_) => StatusCode::CONFLICT,
            Fail::Unavailable(_) => StatusCode::CONFLICT,
            Fail::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            Fail::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Fail::Unauthenticated => "log in first".into(),
            Fail::Unclaimed => "this seeder is not claimed yet".into(),
            Fail::Forbidden(m)
            | Fail::NotFound(m)
            | Fail::Invalid(m)
            | Fail::Conflict(m)
            | Fail::Unavailable(m)
            | Fail::Internal(m) => m.clone(),
            Fail::TooMany(wait) => format!(
                "too many failed attempts; try again in {} s",
                wait.as_secs().max(1)
            ),
        }
    }
}

impl From<BackendError> for Fail {
    fn from(e: BackendError) -> Fail {
        Fail::backend(e)
    }
}

/// Plain rejection (used where the caller's kind is unknown, like the `Ctx` extractor).
impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        let mut r = (self.status(), self.message()).into_response();
        if let Fail::TooMany(wait) = self {
            if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

/// The host part of a `Host` header value (`[::1]:80` → `::1`, `seeder.local:8080` →
/// `seeder.local`).
fn host_name(value: &str) -> &str {
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match value.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => value,
    }
}

/// Whether `host` names this device: an IP literal or one of the configured names.
pub fn host_allowed(config: &AdminConfig, host: &str) -> bool {
    let name = host_name(host).trim_end_matches('.').to_ascii_lowercase();
    if name.parse::<IpAddr>().is_ok() {
        return true;
    }
    config.hosts.iter().any(|h| h.eq_ignore_ascii_case(&name))
}

/// Why a request's `Host` can't even be compared with this device's names. RFC 9112 §3.2 asks
/// for 400 in each case: two servers that each pick a different one of two `Host` headers (a
/// cache and this one, say) would disagree on what the request is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostError {
    #[error("the request has {0} Host headers; send exactly one")]
    Several(usize),
    #[error("the request has no Host header; send one naming this seeder")]
    Missing,
    #[error("the Host header {0:?} is not a host name or address with an optional port")]
    Invalid(String),
}

/// Longest part of a bad `Host` value quoted back in the error.
const QUOTED_HOST_CHARS: usize = 64;

/// The host a request is for: its one `Host` header, or the authority of an absolute request
/// target, which RFC 9112 §3.2.2 says wins over the header.
pub fn request_host(headers: &HeaderMap, uri: &axum::http::Uri) -> Result<String, HostError> {
    let values: Vec<&HeaderValue> = headers.get_all(header::HOST).iter().collect();
    if values.len() > 1 {
        return Err(HostError::Several(values.len()));
    }
    let invalid = |raw: &[u8]| {
        HostError::Invalid(
            String::from_utf8_lossy(raw)
                .chars()
                .take(QUOTED_HOST_CHARS)
                .collect(),
        )
    };
    let header = match values.first() {
        Some(v) => match v.to_str() {
            Ok(text) if valid_host(text) => Some(text.to_string()),
            _ => return Err(invalid(v.as_bytes())),
        },
        None => None,
    };
    match (uri.authority(), header) {
        (Some(a), _) if valid_host(a.as_str()) => Ok(a.as_str().to_string()),
        (Some(a), _) => Err(invalid(a.as_str().as_bytes())),
        (None, Some(h)) => Ok(h),
        (None, None) => Err(HostError::Missing),
    }
}

/// Whether `text` is `host[:port]` as a `Host` header may carry it: a bracketed IPv6 address
/// or a name of letters, digits, `-`, `_` and `.` (which covers IPv4 addresses), then at most
/// a decimal port. Stricter than RFC 3986's reg-name, which also allows percent escapes and
/// punctuation that no name of this device has.
fn valid_host(text: &str) -> bool {
    let port_ok =
        |port: &str| port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok();
    if let Some(rest) = text.strip_prefix('[') {
        let Some((address, after)) = rest.split_once(']') else {
            return false;
        };
        return address.parse::<std::net::Ipv6Addr>().is_ok()
            && (after.is_empty() || after.strip_prefix(':').is_some_and(port_ok));
    }
    let (name, port) = match text.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (text, None),
    };
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && port.is_none_or(port_ok)
}

/// Host check, cross-site check, security headers: around every request.
async fn guard(State(app): State<Shared>, request: Request, next: Next) -> Response {
    let host = request_host(request.headers(), request.uri());
    let mut response = match host {
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        Ok(h) if host_allowed(&app.config, &h) => {
            if is_state_changing(request.method()) && !same_origin(request.headers(), &h) {
                (
                    StatusCode::FORBIDDEN,
                    "cross-site request refused".to_string(),
                )
                    .into_response()
            } else {
                next.run(request).await
            }
        }
        Ok(_) => (
            StatusCode::MISDIRECTED_REQUEST,
            "this seeder answers only to its own names (seeder.local, its IP address)",
        )
            .into_response(),
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        // Same-origin referrers only: browsers then send a real `Origin` on our own forms.
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

fn is_state_changing(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A browser's request must come from this site: `Sec-Fetch-Site` says so directly in current
/// browsers; otherwise `Origin` (or, lacking it, `Referer`) must name this host. Clients
/// sending none of these (curl, scripts) are judged by their CSRF or API token instead.
fn same_origin(headers: &HeaderMap, host: &str) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return site == "same-origin" || site == "none";
    }
    let origin = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    match origin {
        None => true,
        Some("null") => false,
        Some(o) => {
            let rest = o
                .strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
                .unwrap_or("");
            let authority = rest.split('/').next().unwrap_or("");
            authority.eq_ignore_ascii_case(host)
        }
    }
}

/// The whole site as a router, ready to serve.
pub fn router(app: Shared) -> Router {
    Router::new()
        .merge(pages::routes())
        .nest("/api/v1", api::routes())
        .route("/metrics", axum::routing::get(api::metrics))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .layer(axum::middleware::from_fn(server::body_deadline))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

/// Serve the site on `listener` until `shutdown` resolves, within the default [`Limits`],
/// sampling the transfer counters for the dashboard's graph meanwhile.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, app, Limits::default(), shutdown).await
}

/// [`serve`] within the given `limits`.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Shared,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sampler = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tick.tick().await;
                app.sample();
            }
        })
    };
    let result = server::run(listener, router(app.clone()), limits, shutdown).await;
    sampler.abort();
    // The graph's last minutes since the previous save survive a restart.
    app.save_history();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_and_ip_literals_are_allowed_and_other_names_are_not() {
        let c = AdminConfig {
            hosts: vec!["seeder.local".into(), "localhost".into()],
            version: "0".into(),
            ctl: "seeder ctl".into(),
        };
        for ok in [
            "seeder.local",
            "SEEDER.LOCAL:80",
            "seeder.local.",
            "192.168.1.20",
            "192.168.1.20:8080",
            "[::1]:8080",
            "localhost:8080",
        ] {
            assert!(host_allowed(&c, ok), "{ok}");
        }
        for bad in ["evil.example", "seeder.local.evil.example", ""] {
            assert!(!host_allowed(&c, bad), "{bad}");
        }
    }

    #[test]
    fn cross_site_origins_are_told_apart_from_our_own() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h, "seeder.local"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://seeder.local"),
        );
        assert!(same_origin(&h, "seeder.local"));
        assert!(!same_origin(&h, "seeder.local:8080"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&h, "seeder.local"));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h, "seeder.local"));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(
            same_origin(&h, "seeder.local"),
            "the browser's own word wins"
        );
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://seeder.local"),
        );
        assert!(!same_origin(&h, "seeder.local"));
    }
}
