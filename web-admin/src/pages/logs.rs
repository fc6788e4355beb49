/*!
The Logs page: the daemon's recent log lines at a chosen level and above, newest first.

Not for: the log itself (the daemon keeps a bounded ring of recent lines; journald keeps all).
*/

use axum::extract::{Query, State};

use super::*;
use crate::backend::Level;

/// Log lines shown on the logs page.
pub const LOG_LINES: usize = 300;

#[derive(Deserialize)]
pub struct LogQuery {
    level: Option<String>,
}

pub(super) async fn page(
    State(app): State<Shared>,
    signed: SignedIn,
    Query(q): Query<LogQuery>,
) -> PageResult {
    let (ctx, session) = (&signed.0, signed.session());
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
    Ok(layout(&app, ctx, session, "/logs", false, body))
}

fn format_ms(ms: u64) -> String {
    format::datetime((ms / 1000) as i64)
}
