/*!
The Peers page: this seeder's own peer code (and QR code), who is connected now, whose
connections it relays, and the partner seeders it keeps connected, with adding one by its
peer code. A peer code that doesn't read comes back in the form as it was typed.

Not for: the spaces peers open (see `spaces`), nor how connections are made (the daemon's).
*/

use axum::extract::{Path, State};
use axum::Form;
use maud::PreEscaped;

use super::*;

/// A peer code as an SVG QR code.
fn qr_svg(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color>()
            .min_dimensions(160, 160)
            .build(),
    )
}

pub(super) async fn page(State(app): State<Shared>, signed: SignedIn) -> PageResult {
    render(&app, &signed, "", None)
}

/// The page, with the add form holding `typed` and, when it was refused, why.
fn render(app: &Shared, signed: &SignedIn, typed: &str, refused: Option<Markup>) -> PageResult {
    let (ctx, session) = (&signed.0, signed.session());
    let p = app.backend.peers()?;
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
            label { "Peer code (seeder:…) or HOST:PORT#NODEID" input name="address" required autocomplete="off" value=(typed); }
            button type="submit" { "Add" }
        }
    };
    Ok(match refused {
        Some(message) => layout_with(app, ctx, session, "/peers", false, Some(message), body),
        None => layout(app, ctx, session, "/peers", false, body),
    })
}

#[derive(Deserialize)]
pub struct PartnerForm {
    #[serde(default)]
    csrf: String,
    address: String,
}

pub(super) async fn add(
    State(app): State<Shared>,
    signed: SignedIn,
    Form(f): Form<PartnerForm>,
) -> PageResult<Response> {
    let ctx = &signed.0;
    need_csrf(ctx, &f.csrf)?;
    match app.backend.add_partner(f.address.trim()) {
        Ok(p) => {
            app.set_flash(ctx, false, format!("Partner {} added.", p.address));
            Ok(Redirect::to("/peers").into_response())
        }
        Err(e) => {
            let fail = Fail::backend(e.clone());
            if !fixable(&fail) {
                return Err(fail.into());
            }
            // The code goes to the backend trimmed, so a suspect span is into the trimmed text.
            let message = super::spaces::refusal(&e, f.address.trim());
            let page = render(&app, &signed, &f.address, Some(message))?;
            Ok((fail.status(), page).into_response())
        }
    }
}

pub(super) async fn remove(
    State(app): State<Shared>,
    SignedIn(ctx): SignedIn,
    Path(node): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let result = need_csrf(&ctx, &f.csrf)
        .map_err(PageError::from)
        .and_then(|_| Ok(app.backend.remove_partner(&node)?))
        .map(|()| "Partner forgotten.".to_string());
    done(&app, &ctx, "/peers", result)
}
