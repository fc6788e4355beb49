/*!
The HTML pages: claim, login, dashboard, spaces, agreements, peers, disk, logs, settings, and
the live-update stream they listen to. Each handler checks who is asking, calls the backend,
and renders with maud; a form's POST checks the CSRF token, acts, and redirects back with a
one-line message (post/redirect/get), so reloading never repeats an action.

Not for: JSON (see `api`). No inline script or style anywhere: the CSP forbids both, so bars
are `<progress>`/SVG attributes and behaviour lives in `/static/app.js`.
*/

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Deserialize;

use crate::auth::{self, Flash, Session};
use crate::backend::*;
use crate::format;
use crate::{ButtonWait, Ctx, Fail, Shared, BUTTON_WAIT, PRE_COOKIE};

const CSS: &str = include_str!("../static/app.css");
const JS: &str = include_str!("../static/app.js");
const ICON: &str = include_str!("../static/icon.svg");

/// Log lines shown on the logs page.
pub const LOG_LINES: usize = 300;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/", get(dashboard))
        .route("/claim", get(claim_page).post(claim))
        .route("/claim/button", get(button_status).post(button_start))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/spaces", get(spaces_page).post(space_add))
        .route("/spaces/{name}/remove", post(space_remove))
        .route("/agreements", get(agreements_page).post(agreement_save))
        .route("/agreements/{id}/remove", post(agreement_remove))
        .route("/peers", get(peers_page).post(partner_add))
        .route("/peers/{node}/remove", post(partner_remove))
        .route("/disk", get(disk_page))
        .route("/disk/prepare", post(disk_prepare))
        .route("/logs", get(logs_page))
        .route("/settings", get(settings_page))
        .route("/settings/name", post(settings_name))
        .route("/settings/password", post(settings_password))
        .route("/settings/sessions", post(settings_sessions))
        .route("/settings/ssh", post(settings_ssh))
        .route("/settings/ssh/off", post(settings_ssh_off))
        .route("/settings/tokens", post(token_create))
        .route("/settings/tokens/{id}/revoke", post(token_revoke))
        .route("/events", get(events))
        .route("/static/app.css", get(css))
        .route("/static/app.js", get(js))
        .route("/static/icon.svg", get(icon))
        .route("/favicon.ico", get(icon))
}

fn static_file(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn css() -> Response {
    static_file(CSS, "text/css; charset=utf-8")
}

async fn icon() -> Response {
    static_file(ICON, "image/svg+xml")
}

async fn js() -> Response {
    static_file(JS, "text/javascript; charset=utf-8")
}

/// A page's failure: redirects for "who are you", an error page otherwise.
fn fail_page(f: Fail) -> Response {
    match f {
        Fail::Unclaimed => Redirect::to("/claim").into_response(),
        Fail::Unauthenticated => Redirect::to("/login").into_response(),
        other => {
            let status = other.status();
            let body = bare(
                "Error",
                html! {
                    h1 { "Something went wrong" }
                    p.error { (other.message()) }
                    p { a href="/" { "Back to the dashboard" } }
                },
            );
            let mut r = (status, body).into_response();
            if let Fail::TooMany(wait) = other {
                if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            r
        }
    }
}

/// The session of a page request, or the redirect that gets one.
fn need_session(ctx: &Ctx) -> Result<&Session, Fail> {
    if !ctx.settings.claimed() {
        return Err(Fail::Unclaimed);
    }
    ctx.session.as_ref().ok_or(Fail::Unauthenticated)
}

/// A page request from a logged-in browser. Only its extractor makes one, and axum runs a
/// handler's extractors in order with the form's last, so a handler that takes a `SignedIn`
/// sends a stranger to the login (or claim) page before anything reads or parses the form.
/// The form's CSRF token is checked after, with [`need_csrf`]: it travels in the form.
pub struct SignedIn(Ctx);

impl FromRequestParts<Shared> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<SignedIn, Response> {
        let ctx = Ctx::from_request_parts(parts, app)
            .await
            .map_err(fail_page)?;
        need_session(&ctx).map_err(fail_page)?;
        Ok(SignedIn(ctx))
    }
}

/// For a form's POST: a session and its CSRF token.
fn need_csrf<'a>(ctx: &'a Ctx, token: &str) -> Result<&'a Session, Fail> {
    let s = need_session(ctx)?;
    if !auth::same_secret(token, &s.csrf) {
        return Err(Fail::Forbidden(
            "the form's security token is missing or old: reload the page and try again".into(),
        ));
    }
    Ok(s)
}

fn done(app: &Shared, ctx: &Ctx, to: &str, result: Result<String, Fail>) -> Response {
    match result {
        Ok(message) => {
            app.set_flash(ctx, false, message);
            Redirect::to(to).into_response()
        }
        Err(f @ (Fail::Invalid(_) | Fail::NotFound(_) | Fail::Unavailable(_))) => {
            app.set_flash(ctx, true, f.message());
            Redirect::to(to).into_response()
        }
        Err(f) => fail_page(f),
    }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · seeder" }
            link rel="icon" href="/static/icon.svg" type="image/svg+xml";
            link rel="stylesheet" href="/static/app.css";
            script src="/static/app.js" defer {}
        }
    }
}

/// A page without navigation (claim, login, errors).
fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.bare {
                main { (body) }
            }
        }
    }
}

const NAV: [(&str, &str); 7] = [
    ("/", "Dashboard"),
    ("/spaces", "Spaces"),
    ("/agreements", "Agreements"),
    ("/peers", "Peers"),
    ("/disk", "Disk"),
    ("/logs", "Logs"),
    ("/settings", "Settings"),
];

fn layout(
    app: &Shared,
    ctx: &Ctx,
    session: &Session,
    active: &str,
    live: bool,
    body: Markup,
) -> Markup {
    let flash = app.take_flash(ctx);
    let title = NAV
        .iter()
        .find(|(p, _)| *p == active)
        .map_or("Seeder", |(_, t)| t);
    html! {
        (DOCTYPE)
        html lang="en" {
        (head(title))
        body data-live=[live.then_some("1")] {
            header {
                strong.device { (ctx.settings.device_name) }
                nav {
                    @for (path, label) in NAV {
                        a href=(path) aria-current=[(path == active).then_some("page")] { (label) }
                    }
                }
                form.logout method="post" action="/logout" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button type="submit" { "Log out" }
                }
            }
            main {
                @if let Some(Flash { error, text }) = flash {
                    p class=(if error { "flash error" } else { "flash" }) role="status" { (text) }
                }
                (body)
            }
            footer { "seeder " (app.config.version) }
        }
        }
    }
}

fn csrf_field(s: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

fn bar(used: u64, total: u64) -> Markup {
    html! {
        progress value=(used) max=(total.max(1)) {
            (format::bytes(used)) " of " (format::bytes(total))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Claim and login

#[derive(Deserialize)]
pub struct ClaimForm {
    #[serde(default)]
    pub(crate) setup_code: String,
    pub(crate) password: String,
    pub(crate) password_again: String,
    #[serde(default)]
    pub(crate) pre: String,
    /// `code` or `button`.
    #[serde(default)]
    pub(crate) method: String,
}

/// A fresh double-submit token as a cookie, and the value for the form.
fn pre_token() -> (HeaderValue, String) {
    let v = auth::random_hex(16);
    let cookie = HeaderValue::from_str(&format!(
        "{PRE_COOKIE}={v}; Path=/; HttpOnly; SameSite=Strict"
    ))
    .expect("hex cookie is a valid header");
    (cookie, v)
}

fn pre_ok(ctx: &Ctx, form_value: &str) -> Result<(), Fail> {
    match &ctx.pre {
        Some(c) if !form_value.is_empty() && auth::same_secret(c, form_value) => Ok(()),
        _ => Err(Fail::Forbidden(
            "the form's security token is missing or old: reload the page and try again".into(),
        )),
    }
}

async fn claim_page(State(app): State<Shared>, ctx: Ctx) -> Response {
    if ctx.settings.claimed() {
        return Redirect::to("/login").into_response();
    }
    let (cookie, pre) = pre_token();
    let has_button = app.backend.button_presses().is_some();
    // Errors (like a missing data disk) concern whoever is at the device, claimed or not.
    let errors: Vec<Warning> = app
        .backend
        .overview()
        .map(|o| o.warnings)
        .unwrap_or_default()
        .into_iter()
        .filter(|w| w.level == Level::Error)
        .collect();
    let body = bare(
        "Claim this seeder",
        html! {
            @for w in &errors { p.error role="alert" { (w.message) } }
            h1 { "Claim this seeder" }
            p { "Nobody owns this seeder yet. Prove you have the device in hand, then choose the admin password." }
            form method="post" action="/claim" {
                input type="hidden" name="pre" value=(pre);
                input type="hidden" name="method" value="code";
                label { "Setup code"
                    input name="setup_code" autocomplete="off" required
                        placeholder="xxxx-xxxx-xxxx-xxxx-xxxx";
                }
                p.hint { "On the appliance it is in " code { "SEEDER-SETUP.TXT" } " on the SD card's small partition and on the serial console; elsewhere run " code { "sudo seeder ctl setup-code" } "." }
                (password_fields())
                button type="submit" { "Claim" }
            }
            @if has_button {
                h2 { "Or press the board's button" }
                form method="post" action="/claim" id="claim-button" {
                    input type="hidden" name="pre" value=(pre);
                    input type="hidden" name="method" value="button";
                    p { "Press " strong { "Wait for the button" } ", then briefly press the power button on the board within two minutes." }
                    button type="submit" formaction="/claim/button" { "Wait for the button" }
                    p #button-state role="status" { }
                    (password_fields())
                    button type="submit" { "Claim with the button" }
                }
            }
        },
    );
    let mut r = body.into_response();
    r.headers_mut().insert(header::SET_COOKIE, cookie);
    r
}

fn password_fields() -> Markup {
    html! {
        label { "New admin password (at least " (auth::MIN_PASSWORD_CHARS) " characters)"
            input type="password" name="password" autocomplete="new-password" required
                minlength=(auth::MIN_PASSWORD_CHARS);
        }
        label { "The same password again"
            input type="password" name="password_again" autocomplete="new-password" required;
        }
    }
}

#[derive(Deserialize)]
pub struct PreForm {
    #[serde(default)]
    pre: String,
}

/// Start waiting for the board's button (the claim form's first step).
async fn button_start(State(app): State<Shared>, ctx: Ctx, Form(f): Form<PreForm>) -> Response {
    if ctx.settings.claimed() {
        return Redirect::to("/login").into_response();
    }
    if let Err(e) = pre_ok(&ctx, &f.pre) {
        return fail_page(e);
    }
    let Some(baseline) = app.backend.button_presses() else {
        return fail_page(Fail::Unavailable("this board has no claim button".into()));
    };
    *app.button.lock().expect("button lock") = Some(ButtonWait {
        pre: f.pre,
        baseline,
        started: Instant::now(),
    });
    app.backend.waiting_for_button(true);
    tracing::info!("admin page waits for the board's button");
    Redirect::to("/claim#claim-button").into_response()
}

/// Whether the button was pressed since this browser started waiting (polled by app.js).
async fn button_status(State(app): State<Shared>, ctx: Ctx) -> Json<serde_json::Value> {
    let state = button_state(&app, ctx.pre.as_deref());
    Json(serde_json::json!({ "state": state }))
}

fn button_state(app: &Shared, pre: Option<&str>) -> &'static str {
    let wait = app.button.lock().expect("button lock").clone();
    match (wait, pre) {
        (Some(w), Some(pre)) if auth::same_secret(&w.pre, pre) => {
            if w.started.elapsed() > BUTTON_WAIT {
                "expired"
            } else if app.backend.button_presses().unwrap_or(0) > w.baseline {
                "pressed"
            } else {
                "waiting"
            }
        }
        _ => "idle",
    }
}

async fn claim(State(app): State<Shared>, ctx: Ctx, Form(f): Form<ClaimForm>) -> Response {
    if ctx.settings.claimed() {
        return Redirect::to("/login").into_response();
    }
    if let Err(e) = pre_ok(&ctx, &f.pre) {
        return fail_page(e);
    }
    match claim_inner(&app, &ctx, f).await {
        Ok((cookie, _csrf)) => {
            let mut r = Redirect::to("/").into_response();
            r.headers_mut().append(header::SET_COOKIE, cookie);
            r.headers_mut()
                .append(header::SET_COOKIE, crate::clear_cookie(PRE_COOKIE));
            r
        }
        Err(Fail::Invalid(m)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            bare(
                "Claim",
                html! {
                    h1 { "Claim this seeder" }
                    p.error role="alert" { (m) }
                    p { a href="/claim" { "Try again" } }
                },
            ),
        )
            .into_response(),
        Err(e) => fail_page(e),
    }
}

/// Check a claim and set the password; shared with the API. Returns the session cookie and
/// CSRF token.
pub(crate) async fn claim_inner(
    app: &Shared,
    ctx: &Ctx,
    f: ClaimForm,
) -> Result<(HeaderValue, String), Fail> {
    if ctx.settings.claimed() {
        return Err(Fail::Invalid("this seeder is already claimed".into()));
    }
    app.begin_attempt(ctx.client)?;
    let proven = if f.method == "button" {
        button_state(app, ctx.pre.as_deref()) == "pressed"
    } else {
        app.backend
            .setup_code_matches(f.setup_code.trim())
            .map_err(Fail::backend)?
    };
    if !proven {
        app.attempt_failed(ctx.client);
        return Err(Fail::Invalid(if f.method == "button" {
            "the button was not pressed in time: start waiting again".into()
        } else {
            "that is not this seeder's setup code".into()
        }));
    }
    auth::check_new_password(&f.password, &f.password_again)
        .map_err(|e| Fail::Invalid(e.to_string()))?;
    let password = f.password;
    let turn = app.hash_turn()?;
    let hash = app
        .hash(turn, move || auth::hash_password(&password))
        .await?
        .map_err(|e| Fail::internal(e.to_string()))?;
    let generation = app
        .update_settings(|s| {
            if s.claimed() {
                return Err(Fail::Invalid("this seeder is already claimed".into()));
            }
            s.password_hash = Some(hash);
            s.generation += 1;
            Ok(s.generation)
        })
        .await?;
    app.attempt_succeeded(ctx.client);
    *app.button.lock().expect("button lock") = None;
    app.backend.waiting_for_button(false);
    if let Err(e) = app.backend.renew_setup_code() {
        tracing::warn!(error = %e, "setup code not renewed after the claim");
    }
    tracing::info!(client = %ctx.client, "seeder claimed");
    Ok(app.login(ctx, generation))
}

async fn login_page(ctx: Ctx) -> Response {
    if !ctx.settings.claimed() {
        return Redirect::to("/claim").into_response();
    }
    if ctx.session.is_some() {
        return Redirect::to("/").into_response();
    }
    let (cookie, pre) = pre_token();
    let mut r = login_form(&ctx, &pre, None).into_response();
    r.headers_mut().insert(header::SET_COOKIE, cookie);
    r
}

fn login_form(ctx: &Ctx, pre: &str, error: Option<&str>) -> Markup {
    bare(
        "Log in",
        html! {
            h1 { "Log in to " (ctx.settings.device_name) }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form method="post" action="/login" {
                input type="hidden" name="pre" value=(pre);
                label { "Password"
                    input type="password" name="password" autocomplete="current-password" required autofocus;
                }
                button type="submit" { "Log in" }
            }
            p.hint { "Forgot it? Run " code { "sudo seeder ctl reset-password" } " on the device, then claim it again." }
        },
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    password: String,
    #[serde(default)]
    pre: String,
}

async fn login(State(app): State<Shared>, ctx: Ctx, Form(f): Form<LoginForm>) -> Response {
    if let Err(e) = pre_ok(&ctx, &f.pre) {
        return fail_page(e);
    }
    match login_inner(&app, &ctx, &f.password).await {
        Ok((cookie, _)) => {
            let mut r = Redirect::to("/").into_response();
            r.headers_mut().append(header::SET_COOKIE, cookie);
            r
        }
        Err(Fail::Invalid(m)) => {
            let mut r =
                (StatusCode::UNAUTHORIZED, login_form(&ctx, &f.pre, Some(&m))).into_response();
            r.headers_mut().remove(header::SET_COOKIE);
            r
        }
        Err(e) => fail_page(e),
    }
}

/// Check a password and start a session; shared with the API.
pub(crate) async fn login_inner(
    app: &Shared,
    ctx: &Ctx,
    password: &str,
) -> Result<(HeaderValue, String), Fail> {
    let Some(hash) = ctx.settings.password_hash.clone() else {
        return Err(Fail::Unclaimed);
    };
    let turn = app.hash_turn()?;
    app.begin_attempt(ctx.client)?;
    let password = password.to_string();
    let ok = app
        .hash(turn, move || auth::verify_password(&password, &hash))
        .await?;
    if !ok {
        app.attempt_failed(ctx.client);
        return Err(Fail::Invalid("wrong password".into()));
    }
    app.attempt_succeeded(ctx.client);
    tracing::info!(client = %ctx.client, "admin logged in");
    Ok(app.login(ctx, ctx.settings.generation))
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(app): State<Shared>,
    SignedIn(ctx): SignedIn,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(e) = need_csrf(&ctx, &f.csrf) {
        return fail_page(e);
    }
    if let Some(c) = &ctx.cookie {
        app.sessions.lock().expect("sessions lock").remove(c);
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        crate::clear_cookie(crate::SESSION_COOKIE),
    );
    r
}

// ---------------------------------------------------------------------------------------------
// Dashboard

/// Transfer rate graph: points of an SVG polyline, 300 × 60, newest on the right.
pub fn graph_points(samples: &[crate::Sample]) -> (String, String, u64) {
    let rates: Vec<(f64, f64)> = samples
        .windows(2)
        .map(|w| {
            let dt = w[1].at.saturating_sub(w[0].at).max(1) as f64;
            (
                w[1].bytes_received.saturating_sub(w[0].bytes_received) as f64 / dt,
                w[1].bytes_sent.saturating_sub(w[0].bytes_sent) as f64 / dt,
            )
        })
        .collect();
    let peak = rates.iter().map(|(a, b)| a.max(*b)).fold(0.0f64, f64::max);
    // Scale against at least 1 B/s so an idle graph is a flat line at the bottom.
    let max = peak.max(1.0);
    let n = crate::HISTORY_LEN.saturating_sub(1).max(1) as f64;
    let offset = n - rates.len() as f64;
    let line = |pick: fn(&(f64, f64)) -> f64| {
        rates
            .iter()
            .enumerate()
            .map(|(i, r)| {
                format!(
                    "{:.1},{:.1}",
                    (offset + i as f64) * 300.0 / n,
                    60.0 - pick(r) / max * 58.0
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    (line(|r| r.0), line(|r| r.1), peak as u64)
}

fn rate(samples: &[crate::Sample]) -> (String, String) {
    match samples {
        [.., a, b] => {
            let dt = b.at.saturating_sub(a.at).max(1);
            (
                format!(
                    "{}/s",
                    format::bytes(b.bytes_received.saturating_sub(a.bytes_received) / dt)
                ),
                format!(
                    "{}/s",
                    format::bytes(b.bytes_sent.saturating_sub(a.bytes_sent) / dt)
                ),
            )
        }
        _ => ("–".into(), "–".into()),
    }
}

async fn dashboard(State(app): State<Shared>, ctx: Ctx) -> Response {
    match dashboard_inner(&app, &ctx) {
        Ok(m) => m.into_response(),
        Err(e) => fail_page(e),
    }
}

/// The dashboard as HTML (public for the render benchmark).
pub fn dashboard_inner(app: &Shared, ctx: &Ctx) -> Result<Markup, Fail> {
    let session = need_session(ctx)?;
    let o = app.backend.overview().map_err(Fail::backend)?;
    let history = app.history();
    let (rx_line, tx_line, max) = graph_points(&history);
    let (rx_rate, tx_rate) = rate(&history);
    let body = html! {
        h1 { (ctx.settings.device_name) }
        p.sub { "seeder " (o.version) " · up " (format::duration(o.uptime_secs))
            " · node " code.id { (&o.node_id[..o.node_id.len().min(16)]) "…" } }
        @if !o.warnings.is_empty() {
            section.warnings aria-label="Warnings" {
                @for w in &o.warnings {
                    p class=(format!("warning {}", w.level.as_str())) { (w.message) }
                }
            }
        } @else {
            p.ok { "All is well." }
        }
        section.cards {
            div.card {
                h2 { "Replication" }
                dl {
                    dt { "Spaces" } dd data-live="spaces" { (o.spaces) }
                    dt { "Feeds" } dd data-live="feeds" { (o.feeds) }
                    dt { "Held" } dd data-live="bytes_held" { (format::bytes(o.bytes_held)) }
                    dt { "Peers" } dd data-live="peers" { (o.peers_connected) }
                    dt { "In" } dd data-live="rx_rate" { (rx_rate) }
                    dt { "Out" } dd data-live="tx_rate" { (tx_rate) }
                }
                svg.graph viewBox="0 0 300 60" role="img" aria-label="Transfer rate, last ten minutes" {
                    polyline #graph-rx.rx points=(rx_line) {}
                    polyline #graph-tx.tx points=(tx_line) {}
                }
                p.hint { "last 10 min · peak " span data-live="graph_max" { (format::bytes(max)) "/s" } }
            }
            div.card {
                h2 { "Disk" }
                @if let Some(d) = &o.disk {
                    (bar(d.total_bytes - d.free_bytes.min(d.total_bytes), d.total_bytes))
                    p { (format::bytes(d.free_bytes)) " free of " (format::bytes(d.total_bytes)) }
                    p.hint { code { (d.path) } }
                } @else {
                    p { "unknown" }
                }
            }
            div.card {
                h2 { "Device" }
                dl {
                    @if let Some(l) = o.load {
                        dt { "Load" } dd { (format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2])) }
                    }
                    @if let Some(t) = o.temperature_c {
                        dt { "Temperature" } dd { (format!("{t:.0} °C")) }
                    }
                    @if let Some(m) = o.memory {
                        dt { "Memory" }
                        dd { (format::bytes(m.total_bytes - m.available_bytes.min(m.total_bytes))) " used of " (format::bytes(m.total_bytes)) }
                    }
                    dt { "Uptime" } dd { (format::duration(o.uptime_secs)) }
                }
            }
        }
    };
    Ok(layout(app, ctx, session, "/", true, body))
}

// ---------------------------------------------------------------------------------------------
// Spaces

fn health(s: &SpaceInfo, now: u64) -> String {
    if s.full {
        "full: new data is refused until room is made".into()
    } else if s.feeds == 0 {
        "waiting for the first member".into()
    } else if s.complete {
        match s.last_verified {
            Some(t) if t > 0 => {
                format!("held complete, last verified {}", format::ago(Some(t), now))
            }
            _ => "held complete, verified on arrival".into(),
        }
    } else {
        "catching up".into()
    }
}

async fn spaces_page(State(app): State<Shared>, ctx: Ctx) -> Response {
    let inner = || -> Result<Markup, Fail> {
        let session = need_session(&ctx)?;
        let spaces = app.backend.spaces().map_err(Fail::backend)?;
        let now = format::now_unix();
        let body = html! {
            h1 { "Spaces" }
            p { "Spaces this seeder holds. It stores their members' encrypted feeds and can read none of them." }
            @if spaces.is_empty() {
                p.empty { "No spaces yet. Add one with the seed code a member gives you (" code { "seeder space seed-code NAME" } ")." }
            }
            @for s in &spaces {
                article.space {
                    h2 { (s.name) }
                    p class=(if s.full { "health bad" } else { "health" }) data-live=(format!("space:{}:health", s.name)) { (health(s, now)) }
                    dl {
                        dt { "Feeds" } dd data-live=(format!("space:{}:feeds", s.name)) { (s.feeds) }
                        dt { "Held" } dd data-live=(format!("space:{}:bytes", s.name)) { (format::bytes(s.bytes)) }
                        dt { "Entries" } dd data-live=(format!("space:{}:entries", s.name)) { (s.entries) }
                        dt { "Last sync" } dd data-live=(format!("space:{}:last_sync", s.name)) { (format::ago(s.last_sync, now)) }
                        dt { "Peers" } dd data-live=(format!("space:{}:peers", s.name)) { (s.peers) }
                        dt { "Quota" } dd {
                            @if let Some(q) = s.quota_bytes { (bar(s.bytes, q)) " " (format::bytes(q)) } @else { "none" }
                        }
                    }
                    details {
                        summary { "Remove" }
                        form method="post" action=(format!("/spaces/{}/remove", s.name)) {
                            (csrf_field(session))
                            label { "Type the space's name, " strong { (s.name) } ", to confirm"
                                input name="confirm" autocomplete="off" required;
                            }
                            label.check { input type="checkbox" name="purge" value="1"; " Also delete its data and free the disk" }
                            button.danger type="submit" { "Remove " (s.name) }
                        }
                    }
                }
            }
            h2 { "Add a space" }
            form method="post" action="/spaces" {
                (csrf_field(session))
                label { "Seed code" input name="seed_code" required autocomplete="off" placeholder="seed-…"; }
                label { "Name (optional)" input name="name" autocomplete="off"; }
                label { "Quota (optional, like 20G)" input name="quota" autocomplete="off"; }
                button type="submit" { "Add" }
            }
        };
        Ok(layout(&app, &ctx, session, "/spaces", true, body))
    };
    match inner() {
        Ok(m) => m.into_response(),
        Err(e) => fail_page(e),
    }
}

#[derive(Deserialize)]
pub struct SpaceForm {
    #[serde(default)]
    csrf: String,
    seed_code: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    quota: String,
}

async fn space_add(
    State(app): State<Shared>,
    SignedIn(ctx): SignedIn,
    Form(f): Form<SpaceForm>,
) -> Response {
    let result = (|| {
        need_csrf(&ctx, &f.csrf)?;
        let quota = format::parse_size(&f.quota).map_err(Fail::Invalid)?;
        let name = Some(f.name.trim().to_string()).filter(|n| !n.is_empty());
        let s = app
            .backend
            .add_space(&AddSpace {
                seed_code: f.seed_code.clone(),
                name,
                quota_bytes: quota,
            })
            .map_err(Fail::backend)?;
        tracing::info!(space = %s.name, "space added from the admin page");
        Ok(format!("Now holding {}.", s.name))
    })();
    done(&app, &ctx, "/spaces", result)
}

#[derive(Deserialize)]
pub struct RemoveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
    #[serde(default)]
    purge: Option<String>,
}

async fn space_remove(
    State(app): State<Shared>,
    SignedIn(ctx): SignedIn,
    Path(name): Path<String>,
    Form(f): Form<RemoveForm>,
) -> Response {
    let result = (|| {
        need_csrf(&ctx, &f.csrf)?;
        if f.confirm.trim() != name {
            return Err(Fail::Invalid(format!(
                "type {name:?} exactly to remove it; nothing was removed"
            )));
        }
        let purge = f.purge.is_some();
        app.backend
            .remove_space(&name, purge)
            .map_err(Fail::backend)?;
        tracing::info!(space = %name, purge, "space removed from the admin page");
        Ok(if purge {
            format!("{name} removed and its data deleted.")
        } else {
            format!("{name} removed; its data stays on the disk.")
        })
    })();
    done(&app, &ctx, "/spaces", result)
}

// ---------------------------------------------------------------------------------------------
// Agreements

#[derive(Deserialize)]
pub struct EditQuery {
    edit: Option<u64>,
}

async fn agreements_page(
    State(app): State<Shared>,
    SignedIn(ctx): SignedIn,
    Query(q): Query<EditQuery>,
) -> Response {
    let inner = || -> Result<Markup, Fail> {
        let session = need_session(&ctx)?;
        let list = app.backend.agreements().map_err(Fail::backend)?;
        let spaces = app.backend.spaces().map_err(Fail::backend)?;
        let today = format::today();
        let editing = q
            .edit
            .and_then(|id| list.iter().find(|a| a.id == id).cloned())
            .unwrap_or_default();
        let body = html! {
            h1 { "Agreements" }
            p { "The organisations this seeder backs up, and on what terms." }
            @if list.is_empty() { p.empty { "No agreements yet." } }
            @for a in &list {
                article.agreement {
                    h2 { (a.organisation) }
                    @if !a.review.is_empty() && a.review.as_str() < today.as_str() {
                        p.warning.warn { "Review was due on " (a.review) "." }
                    }
                    dl {
                        dt { "Contact" } dd { (a.contact) }
                        dt { "Spaces" } dd { (a.spaces.join(", ")) }
                        dt { "Use" } dd {
                            @if let Some(q) = a.quota_bytes { (bar(a.used_bytes, q)) " " (format::bytes(a.used_bytes)) " of " (format::bytes(q)) }
                            @else { (format::bytes(a.used_bytes)) ", no quota" }
                        }
                        dt { "From" } dd { (a.start) }
                        dt { "Review" } dd { (a.review) }
                        @if !a.notes.is_empty() { dt { "Notes" } dd.notes { (a.notes) } }
                    }
                    p {
                        a href=(format!("/agreements?edit={}#edit", a.id)) { "Edit" }
                    }
                    form.inline method="post" action=(format!("/agreements/{}/remove", a.id)) {
                        (csrf_field(session))
                        button.danger type="submit" { "Delete" }
                    }
                }
            }
            h2 #edit { @if editing.id == 0 { "New agreement" } @else { "Edit " (editing.organisation) } }
            form method="post" action="/agreements" {
                (csrf_field(session))
                input type="hidden" name="id" value=(editing.id);
                label { "Organisation" input name="organisation" required value=(editing.organisation); }
                label { "Contact" input name="contact" value=(editing.contact); }
                fieldset {
                    legend { "Spaces" }
                    @if spaces.is_empty() { p.hint { "No spaces held yet." } }
                    @for s in &spaces {
                        label.check {
                            input type="checkbox" name="spaces" value=(s.name) checked[editing.spaces.contains(&s.name)];
                            " " (s.name)
                        }
                    }
                }
                label { "Quota for all its spaces (like 100G; empty for none)"
                    input name="quota" value=(editing.quota_bytes.map(|q| format!("{}M", q >> 20)).unwrap_or_default());
                }
                label { "Start (YYYY-MM-DD)" input type="date" name="start" value=(editing.start); }
                label { "Review (YYYY-MM-DD)" input type="date" name="review" value=(editing.review); }
                label { "Notes" textarea name="notes" rows="3" maxlength="4000" { (editing.notes) } }
                button type="submit" { "Save" }
            }
        };
        Ok(layout(&app, &ctx, session, "/agreements", false, body))
    };
    match inner() {
        Ok(m) => m.into_response(),
        Err(e) => fail_page(e),
    }
}

/// An agreement as a form sends it: `spaces` may repeat, so the body is read as pairs.
fn agreement_from_pairs(pairs: &[(String, String)]) -> Result<(String, Agreement), Fail> {
    let mut a = Agreement::default();
    let mut csrf = String::new();
    let mut quota = String::new();
    for (k, v) in pairs {
        match k.as_str() {
            "csrf" => csrf = v.clone(),
            "id" => a.id = v.trim().parse().unwrap_or(0),
            "organisation" => a.organisation = v.trim().to_string(),
            "contact" => a.contact = v.trim().to_string(),
            "spaces" => a.spaces.push(v.clone()),
            "quota" => quota = v.clone(),
            "start" => a.start = v.trim().to_string(),
            "review" => a.review = v.trim().to_string(),
            "notes" => a.notes = v.clone(),
            _ => {}
        }
    }
    a.quota_bytes = format::parse_size(&quota).map_err(Fail::Invalid)?;
    Ok((csrf, a))
}

/// Shape checks shared with the API.
pub(crate) fn check_agreement(a: &Agreement) -> Result<(), Fail> {
    if a.organisation.trim().is_empty() || a.organisation.len() > 200 {
        return Err(Fail::Invalid(
            "give the organisation's name (up to 200 characters)".into(),
        ));
    }
    if a.contact.len() > 400 || a.notes.len() > 4000 || a.spaces.len() > 256 {
        return Err(Fail::Invalid("contact or notes are too long".into()));
    }
    format::check_date(&a.start).map_err(Fail::Invalid)?;
    format::check_date(&a.review).map_err(Fail::Invalid)?;
    Ok(())
}

async fn agreement_save(
    State(app): State<Shared>,
    SignedIn(ctx): SignedIn,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let result = (|| {
        let (csrf, a) = agreement_from_pairs(&pairs)?;
        need_csrf(&ctx, &csrf)?;
        check_agreement(&a)?;
        let saved = app.backend.save_agreement(&a).map_err(Fail::backend)?;
        Ok(format!("Agreement with {} saved.", saved.organisation))
    })();
    done(&app, &ctx, "/agreements", result)
}

async fn agreement_remove(
    State(app): State<Shared>,
    SignedIn(ctx): SignedIn,
    Path(id): Path<u64>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let result = (|| {
        need_csrf(&ctx, &f.csrf)?;
        app.backend.remove_agreement(id).map_err(Fail::backend)?;
        Ok("Agreement deleted.".to_string())
    })();
    done(&app, &ctx, "/agreements", result)
}

// ---------------------------------------------------------------------------------------------
// Peers

/// A peer code as an SVG QR code.
fn qr_svg(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color>()
            .min_dimensions(160, 160)
            .build(),
    )
}

async fn peers_page(State(app): State<Shared>, ctx: Ctx) -> Response {
    let inner = || -> Result<Markup, Fail> {
        let session = need_session(&ctx)?;
        let p = app.backend.peers().map_err(Fail::backend)?;
        let now = format::now_unix();
        let own: Vec<String> = p
            .addresses
            .iter()
            .map(|a| format!("{a}#{}", p.node_id))
            .collect();
        let qr = Some(&p.peer_code)
            .filter(|c| !c.is_empty())
            .or(own.first())
            .and_then(|s| qr_svg(s));
        let body = html! {
            h1 { "Peers" }
            h2 { "This seeder" }
            @if !p.peer_code.is_empty() {
                p { "Give a partner organisation, or a member away from the office, this peer code: it holds every address this seeder is reached at." }
                p { code.id.peer-code { (p.peer_code) } }
            }
            @if let Some(svg) = qr { div.qr { (PreEscaped(svg)) } }
            @if !p.port_mapping.is_empty() {
                p { "Port mapping: " (p.port_mapping) }
            }
            @if !own.is_empty() {
                p { "On the LAN it is also reached at:" }
                @for a in &own { p { code.id { (a) } } }
            }
            h2 { "Connected now" }
            @if p.connected.is_empty() { p.empty { "Nobody is connected." } }
            @else {
                table {
                    thead { tr { th { "Node" } th { "Address" } th { "Reached" } th { "Since" } th { "In" } th { "Out" } } }
                    tbody {
                        @for c in &p.connected {
                            tr {
                                td { code { (&c.node_id[..c.node_id.len().min(16)]) } @if c.partner { " (partner)" } }
                                td { (c.address) }
                                td { (c.reached) }
                                td { (format::ago(Some(c.since), now)) }
                                td { (format::bytes(c.bytes_in)) }
                                td { (format::bytes(c.bytes_out)) }
                            }
                        }
                    }
                }
            }
            h2 { "Relaying" }
            @if !p.relay_budget.is_empty() {
                p { "Budget: " (p.relay_budget) "." }
            }
            @if p.relaying.is_empty() {
                p.empty { "This seeder carries no one else's connection now." }
            } @else {
                p { "Connections between peers that can't reach each other directly, carried by this seeder (end-to-end encrypted: it can't read them)." }
                table.relaying {
                    thead { tr { th { "From" } th { "To" } th { "Since" } th { "Carried" } } }
                    tbody {
                        @for r in &p.relaying {
                            tr {
                                td { code { (&r.from[..r.from.len().min(16)]) } }
                                td { code { (&r.to[..r.to.len().min(16)]) } }
                                td { (format::ago(Some(r.since), now)) }
                                td { (format::bytes(r.bytes)) }
                            }
                        }
                    }
                }
            }
            h2 { "Partner seeders" }
            @if p.partners.is_empty() { p.empty { "None configured." } }
            @for q in &p.partners {
                article.partner {
                    p {
                        @if q.address.is_empty() {
                            code { (&q.node_id[..q.node_id.len().min(16)]) "…" } " (reached through introductions)"
                        } @else {
                            code { (q.address) "#" (&q.node_id[..q.node_id.len().min(16)]) "…" }
                        }
                        " · " @if q.connected { "connected" } @else { "not connected, last seen " (format::ago(q.last_seen, now)) }
                    }
                    form.inline method="post" action=(format!("/peers/{}/remove", q.node_id)) {
                        (csrf_field(session))
                        button.danger type="submit" { "Forget" }
                    }
                }
            }
            h2 { "Add a partner seeder" }
            form method="post" action="/peers" {
                (csrf_field(session))
                label { "Peer code (seeder:…) or HOST:PORT#NODEID" input name="address" required autocomplete="off"; }
                button type="submit" { "Add" }
            }
        };
        Ok(layout(&app, &ctx, session, "/peers", false, body))
    };
    match inner() {
        Ok(m) => m.into_response(),
        Err(e) => fail_page(e),
    }
}

#[derive(Deserialize)]
pub struct PartnerForm {
    #[serde(default)]
    csrf: String,
    address: String,
}

async fn partner_add(
    State(app): State<Shared>,
    SignedIn(ctx): SignedIn,
    Form(f): Form<PartnerForm>,
) -> Response {
    let result = (|| {
        need_csrf(&ctx, &f.csrf)?;
        let p = app
            .backend
            .add_partner(f.address.trim())
            .map_err(Fail::backend)?;
        Ok(format!("Partner {} added.", p.address))
    })();
    done(&app, &ctx, "/peers", result)
}

async fn partner_remove(
    State(app): State<Shared>,
    SignedIn(ctx): SignedIn,
    Path(node): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let result = (|| {
        need_csrf(&ctx, &f.csrf)?;
        app.backend.remove_partner(&node).map_err(Fail::backend)?;
        Ok("Partner forgotten.".to_string())
    })();
    done(&app, &ctx, "/peers", result)
}

// ---------------------------------------------------------------------------------------------
// Disk

async fn disk_page(State(app): State<Shared>, ctx: Ctx) -> Response {
    let inner = || -> Result<Markup, Fail> {
        let session = need_session(&ctx)?;
        let r = app.backend.disks().map_err(Fail::backend)?;
        let body = html! {
            h1 { "Disk" }
            p { "Data folder " code { (r.data_dir) } ": " (r.data_disk) }
            table {
                thead { tr { th { "Device" } th { "Model" } th { "Serial" } th { "Size" } th { "File system" } th { "Mounted at" } th { "SMART" } } }
                tbody {
                    @for d in &r.disks {
                        tr {
                            td { code { (d.device) } }
                            td { (d.model) }
                            td { (d.serial) }
                            td { (format::bytes(d.size_bytes)) }
                            td { (d.filesystem.clone().unwrap_or_default()) @if let Some(l) = &d.label { " (" (l) ")" } }
                            td { (d.mountpoint.clone().unwrap_or_default()) }
                            td { (d.smart.clone().unwrap_or_else(|| "–".into())) }
                        }
                    }
                }
            }
            @for d in r.disks.iter().filter(|d| d.mountpoint.is_none() && !d.removable) {
                details {
                    summary { "Prepare " (d.device) " as the data disk" }
                    p.warning.error { "Everything on " (d.device) " (" (d.model) ", " (format::bytes(d.size_bytes)) ") will be erased." }
                    form method="post" action="/disk/prepare" {
                        (csrf_field(session))
                        input type="hidden" name="device" value=(d.device);
                        label { "Type the disk's serial number, " strong { (if d.serial.is_empty() { &d.model } else { &d.serial }) } ", to confirm"
                            input name="confirm" required autocomplete="off";
                        }
                        button.danger type="submit" { "Erase and prepare " (d.device) }
                    }
                }
            }
        };
        Ok(layout(&app, &ctx, session, "/disk", false, body))
    };
    match inner() {
        Ok(m) => m.into_response(),
        Err(e) => fail_page(e),
    }
}

#[derive(Deserialize)]
pub struct PrepareForm {
    #[serde(default)]
    csrf: String,
    device: String,
    #[serde(default)]
    confirm: String,
}

async fn disk_prepare(
    State(app): State<Shared>,
    SignedIn(ctx): SignedIn,
    Form(f): Form<PrepareForm>,
) -> Response {
    let result = (|| {
        need_csrf(&ctx, &f.csrf)?;
        app.backend
            .prepare_disk(&f.device, f.confirm.trim())
            .map_err(Fail::backend)?;
        Ok(format!("{} is now the data disk.", f.device))
    })();
    done(&app, &ctx, "/disk", result)
}

// ---------------------------------------------------------------------------------------------
// Logs

#[derive(Deserialize)]
pub struct LogQuery {
    level: Option<String>,
}

async fn logs_page(
    State(app): State<Shared>,
    SignedIn(ctx): SignedIn,
    Query(q): Query<LogQuery>,
) -> Response {
    let inner = || -> Result<Markup, Fail> {
        let session = need_session(&ctx)?;
        let level = q
            .level
            .as_deref()
            .and_then(Level::parse)
            .unwrap_or(Level::Info);
        let lines = app.backend.logs(level, LOG_LINES);
        let body = html! {
            h1 { "Logs" }
            form method="get" action="/logs" {
                label.inline { "Show "
                    select name="level" {
                        @for l in [Level::Debug, Level::Info, Level::Warn, Level::Error] {
                            option value=(l.as_str()) selected[l == level] { (l.as_str()) " and above" }
                        }
                    }
                }
                button type="submit" { "Filter" }
            }
            @if lines.is_empty() { p.empty { "No lines at this level." } }
            ol.log {
                @for l in lines.iter().rev() {
                    li class=(l.level.as_str()) {
                        time { (format_ms(l.at_ms)) } " " span.level { (l.level.as_str()) } " " span.target { (l.target) } " " (l.message)
                    }
                }
            }
        };
        Ok(layout(&app, &ctx, session, "/logs", false, body))
    };
    match inner() {
        Ok(m) => m.into_response(),
        Err(e) => fail_page(e),
    }
}

fn format_ms(ms: u64) -> String {
    format::datetime((ms / 1000) as i64)
}

// ---------------------------------------------------------------------------------------------
// Settings

async fn settings_page(State(app): State<Shared>, ctx: Ctx) -> Response {
    let inner = || -> Result<Markup, Fail> {
        let session = need_session(&ctx)?;
        let sessions = app.sessions.lock().expect("sessions lock").list();
        let now = Instant::now();
        let ssh = app.backend.ssh().map_err(Fail::backend)?;
        let body = html! {
            h1 { "Settings" }
            h2 { "Device name" }
            form method="post" action="/settings/name" {
                (csrf_field(session))
                label { "Name shown on these pages" input name="device_name" required maxlength="64" value=(ctx.settings.device_name); }
                button type="submit" { "Save" }
            }
            h2 { "Password" }
            form method="post" action="/settings/password" {
                (csrf_field(session))
                label { "Current password" input type="password" name="current" autocomplete="current-password" required; }
                (password_fields())
                button type="submit" { "Change password" }
            }
            p.hint { "Changing the password logs out every other session." }
            h2 { "Sessions" }
            ul {
                @for s in &sessions {
                    li {
                        (s.client.map(|c| c.to_string()).unwrap_or_default()) " · " (s.agent)
                        " · active " (format::duration(now.saturating_duration_since(s.last_seen).as_secs())) " ago"
                        @if s.id == session.id { " (this one)" }
                    }
                }
            }
            form method="post" action="/settings/sessions" {
                (csrf_field(session))
                button type="submit" { "Log out all other sessions" }
            }
            h2 { "SSH" }
            @if !ssh.available {
                p.hint { "SSH on this machine is set up by its own administrator, not from this page." }
            } @else if ssh.keys.is_empty() {
                p { "SSH is off. Paste a public key to let its owner log in as root (passwords are never accepted)." }
                form method="post" action="/settings/ssh" {
                    (csrf_field(session))
                    label { "Public key (the line in ~/.ssh/id_ed25519.pub)" textarea name="keys" rows="3" required placeholder="ssh-ed25519 AAAA… you@laptop" {} }
                    button type="submit" { "Turn SSH on" }
                }
            } @else {
                p { "SSH is on for root with these keys only:" }
                ul { @for k in &ssh.keys { li { code { (crate::ssh::short(k)) } } } }
                form method="post" action="/settings/ssh" {
                    (csrf_field(session))
                    label { "Public keys, one per line" textarea name="keys" rows="4" required { (ssh.keys.join("\n")) } }
                    button type="submit" { "Save keys" }
                }
                form method="post" action="/settings/ssh/off" {
                    (csrf_field(session))
                    button.danger type="submit" { "Turn SSH off" }
                }
            }
            h2 { "API tokens" }
            p { "For scripts and Prometheus: send " code { "Authorization: Bearer TOKEN" } " to " code { "/api/v1" } " or " code { "/metrics" } ". The API is described at " a href="/api/v1/openapi.json" { code { "/api/v1/openapi.json" } } "." }
            ul {
                @for t in &ctx.settings.tokens {
                    li {
                        (t.name) " "
                        form.inline method="post" action=(format!("/settings/tokens/{}/revoke", t.id)) {
                            (csrf_field(session))
                            button.danger type="submit" { "Revoke" }
                        }
                    }
                }
            }
            form method="post" action="/settings/tokens" {
                (csrf_field(session))
                label { "New token's name" input name="name" required maxlength="64" placeholder="prometheus"; }
                button type="submit" { "Create token" }
            }
        };
        Ok(layout(&app, &ctx, session, "/settings", false, body))
    };
    match inner() {
        Ok(m) => m.into_response(),
        Err(e) => fail_page(e),
    }
}

#[derive(Deserialize)]
pub struct SshForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    keys: String,
}

/// Shared with the API: check the keys, hand them to the backend, say what changed.
pub(crate) fn set_ssh(app: &Shared, keys: &[String]) -> Result<String, Fail> {
    app.backend.set_ssh_keys(keys).map_err(Fail::backend)?;
    tracing::warn!(keys = keys.len(), "SSH access changed from the admin page");
    Ok(match keys.len() {
        0 => "SSH is off.".to_string(),
        1 => "SSH is on for root with that key.".to_string(),
        n => format!("SSH is on for root with those {n} keys."),
    })
}

async fn settings_ssh(
    State(app): State<Shared>,
    SignedIn(ctx): SignedIn,
    Form(f): Form<SshForm>,
) -> Response {
    let result = (|| {
        need_csrf(&ctx, &f.csrf)?;
        let keys = crate::ssh::parse_keys(&f.keys).map_err(Fail::Invalid)?;
        if keys.is_empty() {
            return Err(Fail::Invalid(
                "paste a public key (or use \"Turn SSH off\")".into(),
            ));
        }
        set_ssh(&app, &keys)
    })();
    done(&app, &ctx, "/settings", result)
}

async fn settings_ssh_off(
    State(app): State<Shared>,
    SignedIn(ctx): SignedIn,
    Form(f): Form<CsrfForm>,
) -> Response {
    let result = need_csrf(&ctx, &f.csrf).and_then(|_| set_ssh(&app, &[]));
    done(&app, &ctx, "/settings", result)
}

#[derive(Deserialize)]
pub struct NameForm {
    #[serde(default)]
    csrf: String,
    device_name: String,
}

/// Shape check shared with the API.
pub(crate) fn check_device_name(name: &str) -> Result<String, Fail> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 64 || n.chars().any(char::is_control) {
        return Err(Fail::Invalid(
            "the device name needs 1 to 64 printable characters".into(),
        ));
    }
    Ok(n.to_string())
}

async fn settings_name(
    State(app): State<Shared>,
    SignedIn(ctx): SignedIn,
    Form(f): Form<NameForm>,
) -> Response {
    let result = async {
        need_csrf(&ctx, &f.csrf)?;
        let name = check_device_name(&f.device_name)?;
        app.update_settings(|s| {
            s.device_name = name.clone();
            Ok(())
        })
        .await?;
        Ok(format!("This seeder is now called {name}."))
    }
    .await;
    done(&app, &ctx, "/settings", result)
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    csrf: String,
    current: String,
    password: String,
    password_again: String,
}

async fn settings_password(
    State(app): State<Shared>,
    SignedIn(ctx): SignedIn,
    Form(f): Form<PasswordForm>,
) -> Response {
    let result = async {
        let session = need_csrf(&ctx, &f.csrf)?.clone();
        change_password(&app, &ctx, &f.current, &f.password, &f.password_again).await?;
        // The new generation ended every session, this one included: start a fresh one.
        Ok::<_, Fail>(session)
    }
    .await;
    match result {
        Ok(_) => {
            let settings = match app.settings() {
                Ok(s) => s,
                Err(e) => return fail_page(e),
            };
            let (cookie, _) = app.login(&ctx, settings.generation);
            let mut r = Redirect::to("/settings").into_response();
            r.headers_mut().insert(header::SET_COOKIE, cookie);
            r
        }
        Err(e) => done(&app, &ctx, "/settings", Err(e)),
    }
}

/// Check the current password, set a new one, end every session. Shared with the API.
pub(crate) async fn change_password(
    app: &Shared,
    ctx: &Ctx,
    current: &str,
    new: &str,
    again: &str,
) -> Result<(), Fail> {
    let hash = ctx.settings.password_hash.clone().ok_or(Fail::Unclaimed)?;
    let turn = app.hash_turn()?;
    app.begin_attempt(ctx.client)?;
    let current = current.to_string();
    let ok = app
        .hash(turn, move || auth::verify_password(&current, &hash))
        .await?;
    if !ok {
        app.attempt_failed(ctx.client);
        return Err(Fail::Invalid("the current password is wrong".into()));
    }
    app.attempt_succeeded(ctx.client);
    auth::check_new_password(new, again).map_err(|e| Fail::Invalid(e.to_string()))?;
    let new = new.to_string();
    let turn = app.hash_turn()?;
    let hash = app
        .hash(turn, move || auth::hash_password(&new))
        .await?
        .map_err(|e| Fail::internal(e.to_string()))?;
    app.update_settings(|s| {
        s.password_hash = Some(hash);
        s.generation += 1;
        Ok(())
    })
    .await?;
    tracing::info!("admin password changed");
    Ok(())
}

async fn settings_sessions(
    State(app): State<Shared>,
    SignedIn(ctx): SignedIn,
    Form(f): Form<CsrfForm>,
) -> Response {
    let result = (|| {
        let s = need_csrf(&ctx, &f.csrf)?;
        let n = app
            .sessions
            .lock()
            .expect("sessions lock")
            .remove_others(s.id);
        Ok(format!("{n} other session(s) logged out."))
    })();
    done(&app, &ctx, "/settings", result)
}

#[derive(Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    csrf: String,
    name: String,
}

async fn token_create(
    State(app): State<Shared>,
    SignedIn(ctx): SignedIn,
    Form(f): Form<TokenForm>,
) -> Response {
    let result = async {
        need_csrf(&ctx, &f.csrf)?;
        let token = app
            .update_settings(|s| {
                s.create_token(&f.name, format::now_unix())
                    .map_err(Fail::Invalid)
            })
            .await?;
        Ok(format!("New token (shown only now, copy it): {token}"))
    }
    .await;
    done(&app, &ctx, "/settings", result)
}

async fn token_revoke(
    State(app): State<Shared>,
    SignedIn(ctx): SignedIn,
    Path(id): Path<u64>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let result = async {
        need_csrf(&ctx, &f.csrf)?;
        app.update_settings(|s| {
            let before = s.tokens.len();
            s.tokens.retain(|t| t.id != id);
            if s.tokens.len() == before {
                return Err(Fail::NotFound(format!("no token {id}")));
            }
            Ok(())
        })
        .await?;
        Ok("Token revoked.".to_string())
    }
    .await;
    done(&app, &ctx, "/settings", result)
}

// ---------------------------------------------------------------------------------------------
// Live updates

/// Time between live updates.
pub const EVENT_EVERY: Duration = Duration::from_secs(1);

/// The values a page's `data-live` elements show, keyed by their attribute.
pub fn live_values(app: &Shared) -> Result<serde_json::Value, Fail> {
    let o = app.backend.overview().map_err(Fail::backend)?;
    let spaces = app.backend.spaces().map_err(Fail::backend)?;
    let history = app.history();
    let (rx_line, tx_line, max) = graph_points(&history);
    let (rx_rate, tx_rate) = rate(&history);
    let mut values = BTreeMap::new();
    values.insert("spaces".to_string(), o.spaces.to_string());
    values.insert("feeds".to_string(), o.feeds.to_string());
    values.insert("bytes_held".to_string(), format::bytes(o.bytes_held));
    values.insert("peers".to_string(), o.peers_connected.to_string());
    values.insert("rx_rate".to_string(), rx_rate);
    values.insert("tx_rate".to_string(), tx_rate);
    values.insert("graph_max".to_string(), format!("{}/s", format::bytes(max)));
    let now = format::now_unix();
    for s in &spaces {
        values.insert(format!("space:{}:health", s.name), health(s, now));
        values.insert(
            format!("space:{}:last_sync", s.name),
            format::ago(s.last_sync, now),
        );
        values.insert(format!("space:{}:peers", s.name), s.peers.to_string());
        values.insert(format!("space:{}:bytes", s.name), format::bytes(s.bytes));
        values.insert(format!("space:{}:feeds", s.name), s.feeds.to_string());
        values.insert(format!("space:{}:entries", s.name), s.entries.to_string());
    }
    Ok(serde_json::json!({
        "values": values,
        "graph": { "rx": rx_line, "tx": tx_line },
    }))
}

async fn events(State(app): State<Shared>, ctx: Ctx) -> Response {
    if let Err(e) = need_session(&ctx) {
        return (e.status(), e.message()).into_response();
    }
    let Ok(permit) = app.streams.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live pages open; close some",
        )
            .into_response();
    };
    let generation = ctx.settings.generation;
    let Some(cookie) = ctx.cookie.clone() else {
        return Fail::Unauthenticated.into_response();
    };
    let stream = futures_util::stream::unfold((app, permit, true), move |(app, permit, first)| {
        let cookie = cookie.clone();
        async move {
            if !first {
                tokio::time::sleep(EVENT_EVERY).await;
            }
            // The stream ends with the session (logout, expiry, password change).
            let alive = app
                .sessions
                .lock()
                .expect("sessions lock")
                .touch(&cookie, Instant::now(), generation)
                .is_some();
            if !alive {
                return None;
            }
            let event = match live_values(&app) {
                Ok(v) => Event::default().event("status").data(v.to_string()),
                Err(e) => Event::default().event("error").data(e.message()),
            };
            Some((
                Ok::<_, std::convert::Infallible>(event),
                (app, permit, false),
            ))
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
