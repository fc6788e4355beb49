/*!
The Settings page: the device's name, the admin password, sessions, root's SSH keys and API
tokens. Password and SSH changes are shared with the API (`api` calls the functions here).

Not for: claiming (see `claim`), nor the site's stored form of these (`auth::SiteSettings`).
*/

use std::time::Instant;

use axum::extract::{Path, State};
use axum::Form;

use super::claim::password_fields;
use super::*;

pub(super) async fn page(State(app): State<Shared>, signed: SignedIn) -> PageResult {
    let (ctx, session) = (&signed.0, signed.session());
    let sessions = app.sessions.lock().expect("sessions lock").list();
    let now = Instant::now();
    let ssh = app.backend.ssh()?;
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
    Ok(layout(&app, ctx, session, "/settings", false, body))
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
    app.backend.set_ssh_keys(keys)?;
    tracing::warn!(keys = keys.len(), "SSH access changed from the admin page");
    Ok(match keys.len() {
        0 => "SSH is off.".to_string(),
        1 => "SSH is on for root with that key.".to_string(),
        n => format!("SSH is on for root with those {n} keys."),
    })
}

pub(super) async fn ssh(
    State(app): State<Shared>,
    SignedIn(ctx): SignedIn,
    Form(f): Form<SshForm>,
) -> Response {
    let result = set_ssh_from_form(&app, &ctx, &f);
    done(&app, &ctx, "/settings", result)
}

fn set_ssh_from_form(app: &Shared, ctx: &Ctx, f: &SshForm) -> Result<String, PageError> {
    need_csrf(ctx, &f.csrf)?;
    let keys = crate::ssh::parse_keys(&f.keys).map_err(Fail::Invalid)?;
    if keys.is_empty() {
        return Err(Fail::Invalid("paste a public key (or use \"Turn SSH off\")".into()).into());
    }
    Ok(set_ssh(app, &keys)?)
}

pub(super) async fn ssh_off(
    State(app): State<Shared>,
    SignedIn(ctx): SignedIn,
    Form(f): Form<CsrfForm>,
) -> Response {
    let result = need_csrf(&ctx, &f.csrf)
        .and_then(|_| set_ssh(&app, &[]))
        .map_err(PageError::from);
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

pub(super) async fn name(
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
        Ok::<_, PageError>(format!("This seeder is now called {name}."))
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

pub(super) async fn password(
    State(app): State<Shared>,
    SignedIn(ctx): SignedIn,
    Form(f): Form<PasswordForm>,
) -> PageResult<Response> {
    let result = async {
        let session = need_csrf(&ctx, &f.csrf)?.clone();
        change_password(&app, &ctx, &f.current, &f.password, &f.password_again).await?;
        // The new generation ended every session, this one included: start a fresh one.
        Ok::<_, Fail>(session)
    }
    .await;
    match result {
        Ok(_) => {
            let settings = app.settings()?;
            let (cookie, _) = app.login(&ctx, settings.generation);
            let mut r = Redirect::to("/settings").into_response();
            r.headers_mut().insert(header::SET_COOKIE, cookie);
            Ok(r)
        }
        Err(e) => Ok(done(&app, &ctx, "/settings", Err(e.into()))),
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

pub(super) async fn sessions(
    State(app): State<Shared>,
    SignedIn(ctx): SignedIn,
    Form(f): Form<CsrfForm>,
) -> Response {
    let result = need_csrf(&ctx, &f.csrf).map_err(PageError::from).map(|s| {
        let n = app
            .sessions
            .lock()
            .expect("sessions lock")
            .remove_others(s.id);
        format!("{n} other session(s) logged out.")
    });
    done(&app, &ctx, "/settings", result)
}

#[derive(Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    csrf: String,
    name: String,
}

pub(super) async fn token_create(
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
        Ok::<_, PageError>(format!("New token (shown only now, copy it): {token}"))
    }
    .await;
    done(&app, &ctx, "/settings", result)
}

pub(super) async fn token_revoke(
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
        Ok::<_, PageError>("Token revoked.".to_string())
    }
    .await;
    done(&app, &ctx, "/settings", result)
}
