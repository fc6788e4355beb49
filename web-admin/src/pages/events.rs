/*!
The live-update stream (`/events`, server-sent events) the pages with `data-live` elements
listen to: every second, the current figures and the graph's lines, while the session lasts.

Not for: rendering pages; the values here are the ones the pages render first.
*/

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};

use super::dashboard::rate;
use super::spaces::health;
use super::*;

/// Time between live updates.
pub const EVENT_EVERY: Duration = Duration::from_secs(1);

/// The values a page's `data-live` elements show, keyed by their attribute.
pub fn live_values(app: &Shared) -> Result<serde_json::Value, Fail> {
    let o = app.backend.overview()?;
    let spaces = app.backend.spaces()?;
    let history = app.history();
    let now = format::now_unix();
    let graph = graph_points(&history, now);
    let (rx_rate, tx_rate) = rate(&history);
    let mut values = BTreeMap::new();
    values.insert("spaces".to_string(), o.spaces.to_string());
    values.insert("feeds".to_string(), o.feeds.to_string());
    values.insert("bytes_held".to_string(), format::bytes(o.bytes_held));
    values.insert("peers".to_string(), o.peers_connected.to_string());
    values.insert("rx_rate".to_string(), rx_rate);
    values.insert("tx_rate".to_string(), tx_rate);
    values.insert(
        "graph_max".to_string(),
        format!("{}/s", format::bytes(graph.top())),
    );
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
        if let Some(m) = &s.membership {
            values.insert(format!("space:{}:members", s.name), m.summary());
        }
    }
    Ok(serde_json::json!({
        "values": values,
        "graph": { "rx": graph.rx, "tx": graph.tx },
    }))
}

pub(super) async fn events(State(app): State<Shared>, ctx: Ctx) -> Response {
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
