/*!
The HTML pages, one module each (claim and login, dashboard, spaces, agreements, peers, disk,
logs, settings, and the live-update stream they listen to), and what they share: the layout,
the "signed in" extractor, [`PageError`], the not-found page and the static files.

A handler extracts who is asking ([`SignedIn`]) and its input, calls the backend, and renders
with maud; a failure is a [`PageError`] (`?` works on backend calls). A form's POST checks the
CSRF token, acts, and redirects back with a one-line message (post/redirect/get), so reloading
never repeats an action; a form whose typed text needs fixing is shown again with it instead.

Not for: JSON (see `api`). No inline script or style anywhere: the CSP forbids both, so bars
are `<progress>`/SVG attributes and behaviour lives in `/static/app.js`.
*/

mod agreements;
mod claim;
mod dashboard;
mod disk;
mod events;
mod logs;
mod peers;
mod settings;
mod spaces;

pub(crate) use agreements::check_agreement;
pub use claim::ClaimForm;
pub(crate) use claim::{claim_inner, login_inner};
pub use dashboard::{dashboard_inner, graph_points, Graph};
pub use events::{live_values, EVENT_EVERY};
pub use logs::LOG_LINES;
pub(crate) use settings::{change_password, check_device_name, set_ssh};

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;

use crate::auth::{self, Flash, Session};
use crate::backend::BackendError;
use crate::format;
use crate::{Ctx, Fail, Shared};

const CSS: &str = include_str!("../../static/app.css");
const JS: &str = include_str!("../../static/app.js");
const ICON: &str = include_str!("../../static/icon.svg");

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/", get(dashboard::page))
        .route("/claim", get(claim::claim_page).post(claim::claim))
        .route(
            "/claim/button",
            get(claim::button_status).post(claim::button_start),
        )
        .route("/login", get(claim::login_page).post(claim::login))
        .route("/logout", post(claim::logout))
        .route("/spaces", get(spaces::page).post(spaces::add))
        .route("/spaces/{name}/remove", post(spaces::remove))
        .route("/agreements", get(agreements::page).post(agreements::save))
        .route("/agreements/{id}/remove", post(agreements::remove))
        .route("/peers", get(peers::page).post(peers::add))
        .route("/peers/{node}/remove", post(peers::remove))
        .route("/disk", get(disk::page))
        .route("/disk/prepare", post(disk::prepare))
        .route("/logs", get(logs::page))
        .route("/settings", get(settings::page))
        .route("/settings/name", post(settings::name))
        .route("/settings/password", post(settings::password))
        .route("/settings/sessions", post(settings::sessions))
        .route("/settings/ssh", post(settings::ssh))
        .route("/settings/ssh/off", post(settings::ssh_off))
        .route("/settings/tokens", post(settings::token_create))
        .route("/settings/tokens/{id}/revoke", post(settings::token_revoke))
        .route("/events", get(events::events))
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

/// A page's failure: redirects for "who are you", an error page otherwise. Handlers return
/// `Result<_, PageError>`, so `?` takes a backend's refusal or a [`Fail`] straight to it.
#[derive(Debug)]
pub struct PageError(pub Fail);

impl From<Fail> for PageError {
    fn from(f: Fail) -> PageError {
        PageError(f)
    }
}

impl From<BackendError> for PageError {
    fn from(e: BackendError) -> PageError {
        PageError(Fail::backend(e))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        fail_page(self.0)
    }
}

/// A page handler's result.
pub type PageResult<T = Markup> = Result<T, PageError>;

/// The page for a path no route has: the site's own look (with the navigation when signed in),
/// and the way back to the dashboard. Paths under `/api/v1` never get here: the API answers
/// its own JSON 404.
pub async fn not_found(State(app): State<Shared>, ctx: Ctx) -> Response {
    let body = html! {
        h1 { "Page not found" }
        p { "This seeder has no page at this address: it may be mistyped, or the link may be old." }
        p { a href="/" { "Go to the dashboard" } }
    };
    let page = match &ctx.session {
        Some(session) if ctx.settings.claimed() => {
            layout_with(&app, &ctx, session, "", false, None, body)
        }
        _ => bare("Page not found", body),
    };
    (StatusCode::NOT_FOUND, page).into_response()
}

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
pub struct SignedIn(pub Ctx);

impl SignedIn {
    /// The session this request belongs to.
    pub fn session(&self) -> &Session {
        self.0
            .session
            .as_ref()
            .expect("a SignedIn is only made for a request with a session")
    }
}

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

/// A form that carries nothing but its CSRF token.
#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
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

/// Whether a failure is the admin's to fix on the same page (shown there as a message), rather
/// than an error page.
fn fixable(f: &Fail) -> bool {
    matches!(
        f,
        Fail::Invalid(_) | Fail::NotFound(_) | Fail::Conflict(_) | Fail::Unavailable(_)
    )
}

/// After a form's action: back to `to` with what happened as a one-line message.
fn done(app: &Shared, ctx: &Ctx, to: &str, result: Result<String, PageError>) -> Response {
    match result {
        Ok(message) => {
            app.set_flash(ctx, false, message);
            Redirect::to(to).into_response()
        }
        Err(PageError(f)) if fixable(&f) => {
            app.set_flash(ctx, true, f.message());
            Redirect::to(to).into_response()
        }
        Err(e) => e.into_response(),
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
    let flash = app.take_flash(ctx).map(|Flash { error, text }| {
        html! { p class=(if error { "flash error" } else { "flash" }) role="status" { (text) } }
    });
    layout_with(app, ctx, session, active, live, flash, body)
}

/// [`layout`] with the message at the top given (a form shown again with what to fix).
fn layout_with(
    app: &Shared,
    ctx: &Ctx,
    session: &Session,
    active: &str,
    live: bool,
    flash: Option<Markup>,
    body: Markup,
) -> Markup {
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
                @if let Some(message) = flash {
                    (message)
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
