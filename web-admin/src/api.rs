/*!
The JSON API under `/api/v1` and the Prometheus metrics at `/metrics`. The same operations as
the pages, over the same backend. A request is authenticated by a session cookie (then every
state-changing call needs the session's token in `X-CSRF-Token`) or by an API token
(`Authorization: Bearer …`, made on the settings page; no CSRF needed, since browsers never
send it on their own).

The routes are built from [`crate::openapi::OPERATIONS`], the same table the OpenAPI document
is made from, so the two can't drift apart.

Not for: HTML.
*/

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::backend::*;
use crate::openapi::OPERATIONS;
use crate::pages;
use crate::{auth, format, Ctx, Fail, Shared};

/// Header carrying the session's CSRF token on state-changing API calls.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A failure as JSON: `{"error": "…"}`.
pub struct ApiFail(pub Fail);

impl From<Fail> for ApiFail {
    fn from(f: Fail) -> ApiFail {
        ApiFail(f)
    }
}

impl From<BackendError> for ApiFail {
    fn from(e: BackendError) -> ApiFail {
        ApiFail(Fail::backend(e))
    }
}

impl IntoResponse for ApiFail {
    fn into_response(self) -> Response {
        let mut r = (self.0.status(), Json(json!({ "error": self.0.message() }))).into_response();
        if let Fail::TooMany(wait) = self.0 {
            if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

type ApiResult<T> = Result<Json<T>, ApiFail>;

/// Proof that a request may use the admin operations: a valid API token, or a session with,
/// for a change, its CSRF token in `X-CSRF-Token`. Only its extractor makes one, and axum runs
/// a handler's extractors in order with the body's last, so a handler that takes a `Caller`
/// before its body answers a stranger 401 (or 403, 409) before anything reads or parses what
/// they sent: only callers who may use an operation learn how its body should look.
pub struct Caller(Ctx);

/// The same for operations a session only may do (see [`authorize_session`]).
pub struct SessionCaller(Ctx);

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiFail;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Caller, ApiFail> {
        let ctx = Ctx::from_request_parts(parts, app).await?;
        authorize(&ctx, &parts.method, &parts.headers)?;
        Ok(Caller(ctx))
    }
}

impl FromRequestParts<Shared> for SessionCaller {
    type Rejection = ApiFail;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<SessionCaller, ApiFail> {
        let ctx = Ctx::from_request_parts(parts, app).await?;
        authorize_session(&ctx, &parts.method, &parts.headers)?;
        Ok(SessionCaller(ctx))
    }
}

/// Who may call: a token, or a session (plus its CSRF token for changes).
fn authorize(ctx: &Ctx, method: &Method, headers: &HeaderMap) -> Result<(), Fail> {
    if !ctx.settings.claimed() {
        return Err(Fail::Unclaimed);
    }
    if ctx.token.is_some() {
        return Ok(());
    }
    authorize_session(ctx, method, headers)
}

/// A session only (tokens can't change the password, make more tokens or set root's SSH keys).
fn authorize_session(ctx: &Ctx, method: &Method, headers: &HeaderMap) -> Result<(), Fail> {
    if !ctx.settings.claimed() {
        return Err(Fail::Unclaimed);
    }
    let session = ctx.session.as_ref().ok_or(Fail::Unauthenticated)?;
    if crate::is_state_changing(method) {
        let sent = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !auth::same_secret(sent, &session.csrf) {
            return Err(Fail::Forbidden(
                "missing or wrong X-CSRF-Token header".into(),
            ));
        }
    }
    Ok(())
}

/// The handler of an operation of the table, by its id.
pub fn handler(id: &str) -> Option<MethodRouter<Shared>> {
    Some(match id {
        "openapi" => get(openapi_doc),
        "claim" => post(claim),
        "getSession" => get(session_get),
        "login" => post(session_create),
        "logout" => delete(session_delete),
        "status" => get(status),
        "listSpaces" => get(spaces),
        "addSpace" => post(space_add),
        "removeSpace" => delete(space_remove),
        "listAgreements" => get(agreements),
        "createAgreement" => post(agreement_create),
        "updateAgreement" => put(agreement_update),
        "deleteAgreement" => delete(agreement_delete),
        "peers" => get(peers),
        "addPartner" => post(partner_add),
        "removePartner" => delete(partner_remove),
        "disks" => get(disks),
        "prepareDisk" => post(disk_prepare),
        "logs" => get(logs),
        "getSettings" => get(settings_get),
        "updateSettings" => put(settings_put),
        "changePassword" => post(password_change),
        "getSsh" => get(ssh_get),
        "setSsh" => put(ssh_put),
        "createToken" => post(token_create),
        "revokeToken" => delete(token_revoke),
        _ => return None,
    })
}

pub fn routes() -> Router<Shared> {
    let mut paths: std::collections::BTreeMap<&str, MethodRouter<Shared>> = Default::default();
    for op in OPERATIONS {
        let h = handler(op.id).expect("every operation of the table has a handler");
        let entry = paths.remove(op.path).unwrap_or_default();
        paths.insert(op.path, entry.merge(h));
    }
    paths
        .into_iter()
        .fold(Router::new(), |r, (path, mr)| r.route(path, mr))
        .fallback(|| async { ApiFail(Fail::NotFound("no such API operation".into())) })
        .layer(axum::middleware::from_fn(json_errors))
}

/// Refusals made before a handler runs (a body that isn't the documented JSON, a path
/// parameter that isn't a number, a body over the limit, a method the path doesn't have)
/// come from axum as plain text; API clients get every error as `{"error": …}`.
async fn json_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    // Rejection texts are short; anything longer is cut rather than buffered.
    let text = match axum::body::to_bytes(body, 4096).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("refused")
            .to_ascii_lowercase()
    } else {
        text
    };
    let mut r = (status, Json(json!({ "error": message }))).into_response();
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            r.headers_mut().insert(k.clone(), v.clone());
        }
    }
    r
}

async fn openapi_doc(State(app): State<Shared>) -> Json<serde_json::Value> {
    Json(crate::openapi::document(&app.config.version))
}

#[derive(Deserialize, Serialize)]
pub struct ClaimBody {
    pub setup_code: String,
    pub password: String,
}

#[derive(Serialize)]
pub struct SessionInfo {
    pub csrf: String,
    pub device_name: String,
}

fn with_cookie(cookie: HeaderValue, body: SessionInfo) -> Response {
    let mut r = Json(body).into_response();
    r.headers_mut().insert(header::SET_COOKIE, cookie);
    r
}

async fn claim(State(app): State<Shared>, ctx: Ctx, Json(b): Json<ClaimBody>) -> Response {
    let form = pages::ClaimForm {
        setup_code: b.setup_code,
        password_again: b.password.clone(),
        password: b.password,
        pre: String::new(),
        method: "code".into(),
    };
    match pages::claim_inner(&app, &ctx, form).await {
        Ok((cookie, csrf)) => with_cookie(
            cookie,
            SessionInfo {
                csrf,
                device_name: ctx.settings.device_name.clone(),
            },
        ),
        Err(e) => ApiFail(e).into_response(),
    }
}

#[derive(Deserialize)]
pub struct LoginBody {
    pub password: String,
}

async fn session_create(State(app): State<Shared>, ctx: Ctx, Json(b): Json<LoginBody>) -> Response {
    match pages::login_inner(&app, &ctx, &b.password).await {
        Ok((cookie, csrf)) => with_cookie(
            cookie,
            SessionInfo {
                csrf,
                device_name: ctx.settings.device_name.clone(),
            },
        ),
        Err(Fail::Invalid(m)) => ApiFail(Fail::Forbidden(m)).into_response(),
        Err(e) => ApiFail(e).into_response(),
    }
}

async fn session_get(SessionCaller(ctx): SessionCaller) -> ApiResult<SessionInfo> {
    let s = ctx.session.as_ref().ok_or(Fail::Unauthenticated)?;
    Ok(Json(SessionInfo {
        csrf: s.csrf.clone(),
        device_name: ctx.settings.device_name.clone(),
    }))
}

async fn session_delete(State(app): State<Shared>, SessionCaller(ctx): SessionCaller) -> Response {
    if let Some(c) = &ctx.cookie {
        app.sessions.lock().expect("sessions lock").remove(c);
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        crate::clear_cookie(crate::SESSION_COOKIE),
    );
    r
}

#[derive(Serialize)]
pub struct Status {
    pub device_name: String,
    #[serde(flatten)]
    pub overview: Overview,
}

async fn status(State(app): State<Shared>, Caller(ctx): Caller) -> ApiResult<Status> {
    let overview = app.backend.overview()?;
    Ok(Json(Status {
        device_name: ctx.settings.device_name.clone(),
        overview,
    }))
}

async fn spaces(State(app): State<Shared>, _: Caller) -> ApiResult<Vec<SpaceInfo>> {
    Ok(Json(app.backend.spaces()?))
}

async fn space_add(
    State(app): State<Shared>,
    _: Caller,
    Json(b): Json<AddSpace>,
) -> Result<(StatusCode, Json<SpaceInfo>), ApiFail> {
    let s = app.backend.add_space(&b)?;
    tracing::info!(space = %s.name, "space added through the API");
    Ok((StatusCode::CREATED, Json(s)))
}

#[derive(Deserialize)]
pub struct PurgeQuery {
    #[serde(default)]
    pub purge: bool,
}

async fn space_remove(
    State(app): State<Shared>,
    _: Caller,
    Path(name): Path<String>,
    Query(q): Query<PurgeQuery>,
) -> Result<StatusCode, ApiFail> {
    app.backend.remove_space(&name, q.purge)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn agreements(State(app): State<Shared>, _: Caller) -> ApiResult<Vec<Agreement>> {
    Ok(Json(app.backend.agreements()?))
}

async fn agreement_create(
    State(app): State<Shared>,
    _: Caller,
    Json(mut a): Json<Agreement>,
) -> Result<(StatusCode, Json<Agreement>), ApiFail> {
    a.id = 0;
    pages::check_agreement(&a)?;
    let saved = app.backend.save_agreement(&a)?;
    Ok((StatusCode::CREATED, Json(saved)))
}

async fn agreement_update(
    State(app): State<Shared>,
    _: Caller,
    Path(id): Path<u64>,
    Json(mut a): Json<Agreement>,
) -> ApiResult<Agreement> {
    if id == 0 {
        return Err(Fail::NotFound("no agreement 0".into()).into());
    }
    a.id = id;
    pages::check_agreement(&a)?;
    Ok(Json(app.backend.save_agreement(&a)?))
}

async fn agreement_delete(
    State(app): State<Shared>,
    _: Caller,
    Path(id): Path<u64>,
) -> Result<StatusCode, ApiFail> {
    app.backend.remove_agreement(id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn peers(State(app): State<Shared>, _: Caller) -> ApiResult<Peers> {
    Ok(Json(app.backend.peers()?))
}

#[derive(Deserialize)]
pub struct PartnerBody {
    pub address: String,
}

async fn partner_add(
    State(app): State<Shared>,
    _: Caller,
    Json(b): Json<PartnerBody>,
) -> Result<(StatusCode, Json<PartnerInfo>), ApiFail> {
    let p = app.backend.add_partner(b.address.trim())?;
    Ok((StatusCode::CREATED, Json(p)))
}

async fn partner_remove(
    State(app): State<Shared>,
    _: Caller,
    Path(node): Path<String>,
) -> Result<StatusCode, ApiFail> {
    app.backend.remove_partner(&node)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn disks(State(app): State<Shared>, _: Caller) -> ApiResult<DiskReport> {
    Ok(Json(app.backend.disks()?))
}

#[derive(Deserialize)]
pub struct PrepareBody {
    pub device: String,
    pub confirm: String,
}

async fn disk_prepare(
    State(app): State<Shared>,
    _: Caller,
    Json(b): Json<PrepareBody>,
) -> Result<StatusCode, ApiFail> {
    app.backend.prepare_disk(&b.device, b.confirm.trim())?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct LogsQuery {
    pub level: Option<String>,
    pub limit: Option<usize>,
}

async fn logs(
    State(app): State<Shared>,
    _: Caller,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Vec<LogLine>> {
    let level = match q.level.as_deref() {
        None => Level::Info,
        Some(l) => Level::parse(l).ok_or_else(|| {
            Fail::Invalid(format!(
                "{l:?} is not a level: trace, debug, info, warn or error"
            ))
        })?,
    };
    let limit = q.limit.unwrap_or(pages::LOG_LINES).min(1000);
    Ok(Json(app.backend.logs(level, limit)))
}

#[derive(Deserialize, Serialize)]
pub struct SettingsBody {
    pub device_name: String,
}

async fn settings_get(Caller(ctx): Caller) -> ApiResult<SettingsBody> {
    Ok(Json(SettingsBody {
        device_name: ctx.settings.device_name.clone(),
    }))
}

async fn settings_put(
    State(app): State<Shared>,
    _: Caller,
    Json(b): Json<SettingsBody>,
) -> ApiResult<SettingsBody> {
    let name = pages::check_device_name(&b.device_name)?;
    app.update_settings(|s| {
        s.device_name = name.clone();
        Ok(())
    })
    .await?;
    Ok(Json(SettingsBody { device_name: name }))
}

async fn ssh_get(State(app): State<Shared>, _: Caller) -> ApiResult<SshAccess> {
    Ok(Json(app.backend.ssh()?))
}

#[derive(Deserialize)]
pub struct SshBody {
    pub keys: Vec<String>,
}

/// Root's SSH keys: a session only (a monitoring token must not open a root shell).
async fn ssh_put(
    State(app): State<Shared>,
    _: SessionCaller,
    Json(b): Json<SshBody>,
) -> ApiResult<SshAccess> {
    let keys = crate::ssh::parse_keys(&b.keys.join("\n")).map_err(Fail::Invalid)?;
    pages::set_ssh(&app, &keys)?;
    Ok(Json(app.backend.ssh()?))
}

#[derive(Deserialize)]
pub struct PasswordBody {
    pub current: String,
    pub password: String,
}

async fn password_change(
    State(app): State<Shared>,
    SessionCaller(ctx): SessionCaller,
    Json(b): Json<PasswordBody>,
) -> Result<StatusCode, ApiFail> {
    pages::change_password(&app, &ctx, &b.current, &b.password, &b.password).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct TokenBody {
    pub name: String,
}

#[derive(Serialize)]
pub struct NewToken {
    pub id: u64,
    pub token: String,
}

async fn token_create(
    State(app): State<Shared>,
    _: SessionCaller,
    Json(b): Json<TokenBody>,
) -> Result<(StatusCode, Json<NewToken>), ApiFail> {
    let (id, token) = app
        .update_settings(|s| {
            let t = s
                .create_token(&b.name, format::now_unix())
                .map_err(Fail::Invalid)?;
            Ok((s.next_token_id - 1, t))
        })
        .await?;
    Ok((StatusCode::CREATED, Json(NewToken { id, token })))
}

async fn token_revoke(
    State(app): State<Shared>,
    _: Caller,
    Path(id): Path<u64>,
) -> Result<StatusCode, ApiFail> {
    app.update_settings(|s| {
        let before = s.tokens.len();
        s.tokens.retain(|t| t.id != id);
        if before == s.tokens.len() {
            return Err(Fail::NotFound(format!("no token {id}")));
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Prometheus text exposition of the dashboard's numbers. Needs a token or a session.
pub async fn metrics(State(app): State<Shared>, _: Caller) -> Response {
    let o = match app.backend.overview() {
        Ok(o) => o,
        Err(e) => return ApiFail::from(e).into_response(),
    };
    let spaces = app.backend.spaces().unwrap_or_default();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP seeder_{name} {help}\n# TYPE seeder_{name} {kind}\nseeder_{name} {value}\n"
        ));
    };
    metric(
        "uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
        o.uptime_secs.to_string(),
    );
    metric("spaces", "gauge", "Spaces held.", o.spaces.to_string());
    metric("feeds", "gauge", "Member feeds held.", o.feeds.to_string());
    metric(
        "held_bytes",
        "gauge",
        "Bytes of feed data held.",
        o.bytes_held.to_string(),
    );
    metric(
        "peers_connected",
        "gauge",
        "Peers connected now.",
        o.peers_connected.to_string(),
    );
    metric(
        "received_bytes_total",
        "counter",
        "Bytes received from peers since start.",
        o.bytes_received.to_string(),
    );
    metric(
        "sent_bytes_total",
        "counter",
        "Bytes sent to peers since start.",
        o.bytes_sent.to_string(),
    );
    metric(
        "warnings",
        "gauge",
        "Warnings shown on the dashboard.",
        o.warnings.len().to_string(),
    );
    if let Some(d) = &o.disk {
        metric(
            "disk_free_bytes",
            "gauge",
            "Free bytes on the data file system.",
            d.free_bytes.to_string(),
        );
        metric(
            "disk_total_bytes",
            "gauge",
            "Size of the data file system.",
            d.total_bytes.to_string(),
        );
    }
    if let Some(t) = o.temperature_c {
        metric(
            "temperature_celsius",
            "gauge",
            "SoC temperature.",
            format!("{t}"),
        );
    }
    if let Some(m) = o.memory {
        metric(
            "memory_available_bytes",
            "gauge",
            "Memory available.",
            m.available_bytes.to_string(),
        );
    }
    out.push_str("# HELP seeder_space_held_bytes Bytes held per space.\n# TYPE seeder_space_held_bytes gauge\n");
    for s in &spaces {
        out.push_str(&format!(
            "seeder_space_held_bytes{{space=\"{}\"}} {}\n",
            prometheus_label(&s.name),
            s.bytes
        ));
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        out,
    )
        .into_response()
}

fn prometheus_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
