/*!
Claiming the seeder, logging in and out: the only pages a stranger sees. Proving the device is
in hand (setup code or the board's button), setting the password, starting a session.

Not for: changing the password later (see `settings`).
*/

use std::time::Instant;

use axum::extract::State;
use axum::Form;
use axum::Json;

use super::*;
use crate::backend::{Level, Warning};
use crate::{ButtonWait, BUTTON_WAIT, PRE_COOKIE};

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

pub(super) async fn claim_page(State(app): State<Shared>, ctx: Ctx) -> Response {
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
                p.hint { "On the appliance it is in " code { "SEEDER-SETUP.TXT" } " on the SD card's small partition and on the serial console; elsewhere run " code { (app.config.ctl) " setup-code" } " on the device." }
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

pub(super) fn password_fields() -> Markup {
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
pub(super) async fn button_start(
    State(app): State<Shared>,
    ctx: Ctx,
    Form(f): Form<PreForm>,
) -> PageResult<Response> {
    if ctx.settings.claimed() {
        return Ok(Redirect::to("/login").into_response());
    }
    pre_ok(&ctx, &f.pre)?;
    let Some(baseline) = app.backend.button_presses() else {
        return Err(Fail::Unavailable("this board has no claim button".into()).into());
    };
    *app.button.lock().expect("button lock") = Some(ButtonWait {
        pre: f.pre,
        baseline,
        started: Instant::now(),
    });
    app.backend.waiting_for_button(true);
    tracing::info!("admin page waits for the board's button");
    Ok(Redirect::to("/claim#claim-button").into_response())
}

/// Whether the button was pressed since this browser started waiting (polled by app.js).
pub(super) async fn button_status(State(app): State<Shared>, ctx: Ctx) -> Json<serde_json::Value> {
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

pub(super) async fn claim(
    State(app): State<Shared>,
    ctx: Ctx,
    Form(f): Form<ClaimForm>,
) -> PageResult<Response> {
    if ctx.settings.claimed() {
        return Ok(Redirect::to("/login").into_response());
    }
    pre_ok(&ctx, &f.pre)?;
    Ok(match claim_inner(&app, &ctx, f).await {
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
        Err(e) => return Err(e.into()),
    })
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
        app.backend.setup_code_matches(f.setup_code.trim())?
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

pub(super) async fn login_page(State(app): State<Shared>, ctx: Ctx) -> Response {
    if !ctx.settings.claimed() {
        return Redirect::to("/claim").into_response();
    }
    if ctx.session.is_some() {
        return Redirect::to("/").into_response();
    }
    let (cookie, pre) = pre_token();
    let mut r = login_form(&ctx, &app.config.ctl, &pre, None).into_response();
    r.headers_mut().insert(header::SET_COOKIE, cookie);
    r
}

/// `ctl`: the command that reaches this daemon where it runs (see [`crate::AdminConfig`]).
fn login_form(ctx: &Ctx, ctl: &str, pre: &str, error: Option<&str>) -> Markup {
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
            p.hint { "Forgot it? Run " code { (ctl) " reset-password" } " on the device, then claim it again." }
        },
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    password: String,
    #[serde(default)]
    pre: String,
}

pub(super) async fn login(
    State(app): State<Shared>,
    ctx: Ctx,
    Form(f): Form<LoginForm>,
) -> PageResult<Response> {
    pre_ok(&ctx, &f.pre)?;
    Ok(match login_inner(&app, &ctx, &f.password).await {
        Ok((cookie, _)) => {
            let mut r = Redirect::to("/").into_response();
            r.headers_mut().append(header::SET_COOKIE, cookie);
            r
        }
        Err(Fail::Invalid(m)) => {
            let mut r = (
                StatusCode::UNAUTHORIZED,
                login_form(&ctx, &app.config.ctl, &f.pre, Some(&m)),
            )
                .into_response();
            r.headers_mut().remove(header::SET_COOKIE);
            r
        }
        Err(e) => return Err(e.into()),
    })
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

pub(super) async fn logout(
    State(app): State<Shared>,
    SignedIn(ctx): SignedIn,
    Form(f): Form<CsrfForm>,
) -> PageResult<Response> {
    need_csrf(&ctx, &f.csrf)?;
    if let Some(c) = &ctx.cookie {
        app.sessions.lock().expect("sessions lock").remove(c);
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        crate::clear_cookie(crate::SESSION_COOKIE),
    );
    Ok(r)
}
