/*!
The Spaces page: the spaces this seeder holds, how each is doing, adding one by its seed code
and removing one. A seed code with a typo comes back in the form as it was typed, with the
group of characters that most likely holds the typo marked in the message.

Not for: what a space holds (the seeder can't read it), nor agreements (see `agreements`).
*/

use std::ops::Range;

use axum::extract::{Path, State};
use axum::Form;

use super::*;
use crate::backend::{AddSpace, SpaceInfo};

pub(super) fn health(s: &SpaceInfo, now: u64) -> String {
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

pub(super) async fn page(State(app): State<Shared>, signed: SignedIn) -> PageResult {
    render(&app, &signed, &SpaceForm::default(), None)
}

/// The page, with the add form holding `typed` and, when it was refused, why.
fn render(
    app: &Shared,
    signed: &SignedIn,
    typed: &SpaceForm,
    refused: Option<Markup>,
) -> PageResult {
    let (ctx, session) = (&signed.0, signed.session());
    let spaces = app.backend.spaces()?;
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
                    @if let Some(m) = &s.membership {
                        dt { "Members" } dd data-live=(format!("space:{}:members", s.name)) { (m.summary()) }
                    }
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
            label { "Seed code" input name="seed_code" required autocomplete="off" placeholder="seed-…" value=(typed.seed_code); }
            label { "Name (optional)" input name="name" autocomplete="off" value=(typed.name); }
            label { "Quota (optional, like 20G)" input name="quota" autocomplete="off" value=(typed.quota); }
            button type="submit" { "Add" }
        }
    };
    Ok(match refused {
        Some(message) => layout_with(app, ctx, session, "/spaces", true, Some(message), body),
        None => layout(app, ctx, session, "/spaces", true, body),
    })
}

#[derive(Deserialize, Default)]
pub struct SpaceForm {
    #[serde(default)]
    csrf: String,
    seed_code: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    quota: String,
}

/// Add a space. A refusal the admin can fix (a typo, a bad quota, a name taken) shows the
/// page again, answering 422 or 409, with everything typed still in the form.
pub(super) async fn add(
    State(app): State<Shared>,
    signed: SignedIn,
    Form(f): Form<SpaceForm>,
) -> PageResult<Response> {
    let ctx = &signed.0;
    need_csrf(ctx, &f.csrf)?;
    let added = format::parse_size(&f.quota)
        .map_err(BackendError::Invalid)
        .and_then(|quota| {
            app.backend.add_space(&AddSpace {
                seed_code: f.seed_code.clone(),
                name: Some(f.name.trim().to_string()).filter(|n| !n.is_empty()),
                quota_bytes: quota,
            })
        });
    match added {
        Ok(s) => {
            tracing::info!(space = %s.name, "space added from the admin page");
            app.set_flash(ctx, false, format!("Now holding {}.", s.name));
            Ok(Redirect::to("/spaces").into_response())
        }
        Err(e) => {
            let fail = Fail::backend(e.clone());
            if !fixable(&fail) {
                return Err(fail.into());
            }
            let message = refusal(&e, &f.seed_code);
            let page = render(&app, &signed, &f, Some(message))?;
            Ok((fail.status(), page).into_response())
        }
    }
}

/// Why a space was not added, for the top of the page: with a typo, the code as it was typed
/// and the suspect group marked.
pub(super) fn refusal(e: &BackendError, typed: &str) -> Markup {
    let suspect = match e {
        BackendError::BadCode { suspect, .. } => suspect.clone(),
        _ => None,
    };
    html! {
        div.flash.error role="alert" {
            (e.to_string())
            @if let Some(span) = suspect.and_then(|r| marked(typed, r)) {
                br;
                code.typed { (span.0) mark { (span.1) } (span.2) }
            }
        }
    }
}

/// `text` cut around `span` (before, inside, after), if `span` lies on character boundaries.
fn marked(text: &str, span: Range<usize>) -> Option<(&str, &str, &str)> {
    let inside = text.get(span.clone())?;
    Some((text.get(..span.start)?, inside, text.get(span.end..)?))
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

pub(super) async fn remove(
    State(app): State<Shared>,
    SignedIn(ctx): SignedIn,
    Path(name): Path<String>,
    Form(f): Form<RemoveForm>,
) -> Response {
    let result = remove_space(&app, &ctx, &name, &f);
    done(&app, &ctx, "/spaces", result)
}

fn remove_space(app: &Shared, ctx: &Ctx, name: &str, f: &RemoveForm) -> Result<String, PageError> {
    need_csrf(ctx, &f.csrf)?;
    if f.confirm.trim() != name {
        return Err(Fail::Invalid(format!(
            "type {name:?} exactly to remove it; nothing was removed"
        ))
        .into());
    }
    let purge = f.purge.is_some();
    app.backend.remove_space(name, purge)?;
    tracing::info!(space = %name, purge, "space removed from the admin page");
    Ok(if purge {
        format!("{name} removed and its data deleted.")
    } else {
        format!("{name} removed; its data stays on the disk.")
    })
}
