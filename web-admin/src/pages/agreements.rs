/*!
The Agreements page: the organisations this seeder backs up and on what terms (contact,
spaces, quota, start and review dates, notes), with a form to record or edit one.

Not for: enforcing the quota (the backend does), nor the spaces themselves (see `spaces`).
*/

use axum::extract::{Path, Query, State};
use axum::Form;

use super::*;
use crate::backend::Agreement;

#[derive(Deserialize)]
pub struct EditQuery {
    edit: Option<u64>,
}

pub(super) async fn page(
    State(app): State<Shared>,
    signed: SignedIn,
    Query(q): Query<EditQuery>,
) -> PageResult {
    let (ctx, session) = (&signed.0, signed.session());
    let list = app.backend.agreements()?;
    let spaces = app.backend.spaces()?;
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
            label { "Start date" input type="date" name="start" value=(editing.start); }
            label { "Review date" input type="date" name="review" value=(editing.review); }
            label { "Notes" textarea name="notes" rows="3" maxlength="4000" { (editing.notes) } }
            button type="submit" { "Save" }
        }
    };
    Ok(layout(&app, ctx, session, "/agreements", false, body))
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
    // Both checked as YYYY-MM-DD above: as text they order as the dates do.
    if !a.start.is_empty() && !a.review.is_empty() && a.review < a.start {
        return Err(Fail::Invalid(format!(
            "the review date {} is before the start date {}",
            a.review, a.start
        )));
    }
    Ok(())
}

pub(super) async fn save(
    State(app): State<Shared>,
    SignedIn(ctx): SignedIn,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let result = save_agreement(&app, &ctx, &pairs);
    done(&app, &ctx, "/agreements", result)
}

fn save_agreement(
    app: &Shared,
    ctx: &Ctx,
    pairs: &[(String, String)],
) -> Result<String, PageError> {
    let (csrf, a) = agreement_from_pairs(pairs)?;
    need_csrf(ctx, &csrf)?;
    check_agreement(&a)?;
    let saved = app.backend.save_agreement(&a)?;
    Ok(format!("Agreement with {} saved.", saved.organisation))
}

pub(super) async fn remove(
    State(app): State<Shared>,
    SignedIn(ctx): SignedIn,
    Path(id): Path<u64>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let result = need_csrf(&ctx, &f.csrf)
        .map_err(PageError::from)
        .and_then(|_| Ok(app.backend.remove_agreement(id)?))
        .map(|()| "Agreement deleted.".to_string());
    done(&app, &ctx, "/agreements", result)
}
