/*!
`seeder bench admin`: the admin page of a real `seeder serve` holding 1,000 feeds (one
space, 100 entries each; `--feeds` for more), asked over loopback HTTP like a browser would.
Figures:

- `dashboard_ms_p50` / `dashboard_ms_p90`: request to last byte of the dashboard, which the
  daemon renders on every request from its per-space totals (kept current as feeds change,
  see `daemon::totals`) and a few index reads (target: ≤ 20 ms at 10,000 feeds);
- `spaces_page_ms_p50` / `spaces_page_ms_p90`: the spaces page, likewise;
- `status_api_ms_p50`: `/api/v1/status`, the dashboard's figures as JSON;
- `page_weight_kb`: the dashboard with its stylesheet and script, uncompressed (target ≤ 100).
*/

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Folder to work in. Default: the system's temporary folder.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Feeds (of 100 entries each) held.
    #[arg(long, default_value_t = 1000)]
    feeds: usize,
    /// Requests per page measured.
    #[arg(long, default_value_t = 50)]
    requests: usize,
}

/// One HTTP/1.1 request; returns the status, the response head and the body.
pub(super) fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String, Vec<u8>)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of the response head")?;
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    Ok((status, head, out[split + 4..].to_vec()))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0.0)
}

pub fn run(args: AdminArgs) -> Result<()> {
    let tmp = super::bench::work_dir(args.dir.as_deref(), "seeder-bench-admin-")?;
    let data = tmp.path().join("seeder");
    super::bench_sync::populate(&data, args.feeds)?;
    let code = {
        let store = crate::store::Store::open(&data, &crate::store::StoreConfig::default())?;
        let daemon = crate::daemon::backend::Daemon {
            registry: crate::daemon::registry::Registry::open(&store)?,
            store,
            started: Instant::now(),
            node_id: crate::net::NodeId([0; 32]),
            listen: "127.0.0.1:0".parse()?,
            admin: None,
            board: Default::default(),
            keep_free_percent: 5,
            activity: Default::default(),
            links: Default::default(),
            mapping: tokio::sync::watch::channel(crate::net::reach::Mapping::Off).1,
            relay_budget: (0, 0),
        };
        daemon.setup_code()?
    };
    let (seeder, _) = super::bench_sync::start_seeder(&data)?;
    let admin = seeder
        .admin
        .context("the seeder did not say where its admin page is")?;
    let (status, head, body) = http(
        admin,
        "POST",
        "/api/v1/claim",
        &[],
        &format!(r#"{{"setup_code":"{code}","password":"benchmark password"}}"#),
    )?;
    anyhow::ensure!(status == 200, "claim: {}", String::from_utf8_lossy(&body));
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .context("no session cookie")?
        .to_string();
    let headers = [("Cookie", cookie.as_str())];
    let measure = |path: &str| -> Result<(Vec<f64>, usize)> {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..args.requests {
            let t = Instant::now();
            let (status, _, body) = http(admin, "GET", path, &headers, "")?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(status == 200, "{path}: status {status}");
            size = body.len();
        }
        times.sort_by(f64::total_cmp);
        Ok((times, size))
    };
    let (dash, dash_size) = measure("/")?;
    let (spaces, _) = measure("/spaces")?;
    let (status_api, _) = measure("/api/v1/status")?;
    // The figures count only if the pages show every feed held.
    let (_, _, body) = http(admin, "GET", "/api/v1/status", &headers, "")?;
    let shown: serde_json::Value =
        serde_json::from_slice(&body).context("/api/v1/status is not JSON")?;
    anyhow::ensure!(
        shown["feeds"].as_u64() == Some(args.feeds as u64),
        "/api/v1/status shows {} feeds, not the {} held",
        shown["feeds"],
        args.feeds
    );
    let css = http(admin, "GET", "/static/app.css", &[], "")?.2.len();
    let js = http(admin, "GET", "/static/app.js", &[], "")?.2.len();
    drop(seeder);
    println!("dashboard_ms_p50 {:.2} ms", percentile(&dash, 0.5));
    println!("dashboard_ms_p90 {:.2} ms", percentile(&dash, 0.9));
    println!("spaces_page_ms_p50 {:.2} ms", percentile(&spaces, 0.5));
    println!("spaces_page_ms_p90 {:.2} ms", percentile(&spaces, 0.9));
    println!("status_api_ms_p50 {:.2} ms", percentile(&status_api, 0.5));
    println!(
        "page_weight_kb {:.1} kB",
        (dash_size + css + js) as f64 / 1024.0
    );
    println!("feeds_held {} count", args.feeds);
    Ok(())
}
