/*!
The dashboard: the device's state at a glance (warnings, replication figures, the transfer
graph of the last hour, disk and machine), kept current by the live stream (`events`).

Not for: changing anything; every action lives on its own page.
*/

use axum::extract::State;

use super::*;
use crate::{Sample, GRAPH_SPAN};

/// The graph's plot area inside its SVG `viewBox` (0 0 [`VIEW_W`] [`VIEW_H`]): room on the
/// left for the rate labels and below for the time labels. About as wide as the dashboard's
/// card, so the labels' 11 units (app.css) show near their size in pixels.
const PLOT_LEFT: f64 = 58.0;
const PLOT_RIGHT: f64 = 254.0;
const PLOT_TOP: f64 = 8.0;
const PLOT_BOTTOM: f64 = 92.0;
const VIEW_W: u32 = 260;
const VIEW_H: u32 = 110;
/// Ticks under the graph, in minutes before now; every other one is labelled (five labels
/// don't fit in the card's width at a readable size).
const TIME_MARKS: [u64; 5] = [60, 45, 30, 15, 0];

/// The transfer graph's lines: points of two SVG polylines, time on x (the last
/// [`GRAPH_SPAN`], now on the right), bytes per second on y (0 at the bottom, `peak` at the top).
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    pub rx: String,
    pub tx: String,
    /// The highest rate drawn, in bytes per second.
    pub peak: u64,
}

impl Graph {
    /// The rate at the top of the y axis: the peak, or 1 B/s when idle (the lines' scale).
    pub fn top(&self) -> u64 {
        self.peak.max(1)
    }
}

/// The graph of `samples` as seen at `now` (Unix seconds). A window in which a counter went
/// down (the daemon restarted and counts from 0 again) has no known rate and is left out.
pub fn graph_points(samples: &[Sample], now: u64) -> Graph {
    let span = GRAPH_SPAN.as_secs().max(1);
    let since = now.saturating_sub(span);
    let rates: Vec<(u64, f64, f64)> = samples
        .windows(2)
        .filter(|w| w[1].at >= since && w[1].at <= now && w[1].at > w[0].at)
        .filter(|w| {
            w[1].bytes_received >= w[0].bytes_received && w[1].bytes_sent >= w[0].bytes_sent
        })
        .map(|w| {
            let dt = (w[1].at - w[0].at) as f64;
            (
                w[1].at,
                (w[1].bytes_received - w[0].bytes_received) as f64 / dt,
                (w[1].bytes_sent - w[0].bytes_sent) as f64 / dt,
            )
        })
        .collect();
    let peak = rates
        .iter()
        .map(|(_, a, b)| a.max(*b))
        .fold(0.0f64, f64::max);
    // Scale against at least 1 B/s so an idle graph is a flat line at the bottom.
    let max = peak.max(1.0);
    let line = |pick: fn(&(u64, f64, f64)) -> f64| {
        rates
            .iter()
            .map(|r| {
                let x = PLOT_LEFT + (r.0 - since) as f64 / span as f64 * (PLOT_RIGHT - PLOT_LEFT);
                let y = PLOT_BOTTOM - pick(r) / max * (PLOT_BOTTOM - PLOT_TOP);
                format!("{x:.1},{y:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    Graph {
        rx: line(|r| r.1),
        tx: line(|r| r.2),
        peak: peak as u64,
    }
}

/// The graph with its axes: rates on the left (0 and the peak, in bytes per second), minutes
/// before now along the bottom, and a legend for the two lines.
fn graph_svg(g: &Graph) -> Markup {
    let span_min = GRAPH_SPAN.as_secs() / 60;
    let x_of = |min_ago: u64| {
        PLOT_RIGHT - min_ago as f64 / span_min.max(1) as f64 * (PLOT_RIGHT - PLOT_LEFT)
    };
    html! {
        figure.graph {
            svg.graph viewBox=(format!("0 0 {VIEW_W} {VIEW_H}")) role="img"
                aria-label="Transfer rate over the last hour: received and sent bytes per second" {
                line.axis x1=(PLOT_LEFT) y1=(PLOT_TOP) x2=(PLOT_LEFT) y2=(PLOT_BOTTOM) {}
                line.axis x1=(PLOT_LEFT) y1=(PLOT_BOTTOM) x2=(PLOT_RIGHT) y2=(PLOT_BOTTOM) {}
                text.y-label x=(PLOT_LEFT - 4.0) y=(PLOT_TOP + 8.0) text-anchor="end" data-live="graph_max" {
                    (format::bytes(g.top())) "/s"
                }
                text.y-label x=(PLOT_LEFT - 4.0) y=(PLOT_BOTTOM) text-anchor="end" { "0 B/s" }
                @for m in TIME_MARKS {
                    line.tick x1=(x_of(m)) y1=(PLOT_BOTTOM) x2=(x_of(m)) y2=(PLOT_BOTTOM + 3.0) {}
                }
                @for m in TIME_MARKS.into_iter().step_by(2) {
                    text.x-label x=(x_of(m)) y=(PLOT_BOTTOM + 14.0)
                        text-anchor=(if m == 0 { "end" } else if m == span_min { "start" } else { "middle" }) {
                        @if m == 0 { "now" } @else { "−" (m) " min" }
                    }
                }
                polyline #graph-rx.rx points=(g.rx) {}
                polyline #graph-tx.tx points=(g.tx) {}
            }
            figcaption.legend {
                span.key.rx { "In (received)" }
                span.key.tx { "Out (sent)" }
                span.hint { "bytes per second, last hour" }
            }
        }
    }
}

/// The in and out rates over the newest two samples.
pub(super) fn rate(samples: &[Sample]) -> (String, String) {
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

pub(super) async fn page(State(app): State<Shared>, SignedIn(ctx): SignedIn) -> PageResult {
    dashboard_inner(&app, &ctx)
}

/// The dashboard as HTML (public for the render benchmark).
pub fn dashboard_inner(app: &Shared, ctx: &Ctx) -> PageResult {
    let session = need_session(ctx)?;
    let o = app.backend.overview()?;
    let history = app.history();
    let graph = graph_points(&history, format::now_unix());
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
                (graph_svg(&graph))
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
