//! Every page and API call of the admin site through axum's router with `oneshot`, over the
//! in-memory backend: who may do what (unclaimed, unauthenticated, wrong CSRF token, wrong
//! setup code, rate limits, foreign Host and Origin headers), and that each operation does
//! what it says. The real daemon behind a real browser is tested in the seeder crate.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;
use web_admin::memory::MemoryBackend;
use web_admin::openapi::{Access, OPERATIONS};
use web_admin::{AdminBackend, AdminConfig, App};

const CODE: &str = "1234-5678-9abc-def0-1234";
const PASSWORD: &str = "correct horse battery";

struct Site {
    router: Router,
    backend: Arc<MemoryBackend>,
}

#[derive(Default, Clone)]
struct Browser {
    session: Option<String>,
    pre: Option<String>,
    csrf: Option<String>,
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Reply {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

fn site() -> Site {
    let backend = Arc::new(MemoryBackend::new(CODE));
    let app = App::new(
        backend.clone() as Arc<dyn AdminBackend>,
        AdminConfig {
            hosts: vec!["seeder.local".into(), "localhost".into()],
            version: "test".into(),
            ctl: "seeder ctl".into(),
        },
    );
    Site {
        router: web_admin::router(app),
        backend,
    }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(&s[i..j])
}

impl Site {
    async fn send(&self, b: &mut Browser, req: Request<Body>) -> Reply {
        let r = self.router.clone().oneshot(req).await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        for c in headers.get_all(header::SET_COOKIE) {
            let c = c.to_str().unwrap();
            let (kv, _) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            let v = (!v.is_empty()).then(|| v.to_string());
            match k {
                "seeder_session" => b.session = v,
                "seeder_pre" => b.pre = v,
                _ => {}
            }
        }
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body).to_string();
        if let Some(csrf) = between(&body, "name=\"csrf\" value=\"", "\"") {
            b.csrf = Some(csrf.to_string());
        }
        Reply {
            status,
            headers,
            body,
        }
    }

    fn request(b: &Browser, method: &str, path: &str) -> axum::http::request::Builder {
        let mut cookies = Vec::new();
        if let Some(s) = &b.session {
            cookies.push(format!("seeder_session={s}"));
        }
        if let Some(p) = &b.pre {
            cookies.push(format!("seeder_pre={p}"));
        }
        let mut r = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "seeder.local");
        if !cookies.is_empty() {
            r = r.header(header::COOKIE, cookies.join("; "));
        }
        r
    }

    async fn get(&self, b: &mut Browser, path: &str) -> Reply {
        let req = Self::request(b, "GET", path).body(Body::empty()).unwrap();
        self.send(b, req).await
    }

    async fn post_form(&self, b: &mut Browser, path: &str, fields: &[(&str, &str)]) -> Reply {
        let body = fields
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect::<Vec<_>>()
            .join("&");
        let req = Self::request(b, "POST", path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        self.send(b, req).await
    }

    async fn api(
        &self,
        b: &mut Browser,
        method: &str,
        path: &str,
        json: Option<serde_json::Value>,
        auth: Auth<'_>,
    ) -> Reply {
        let mut r = Self::request(b, method, &format!("/api/v1{path}"));
        match auth {
            Auth::Csrf => {
                if let Some(c) = &b.csrf {
                    r = r.header("x-csrf-token", c.as_str());
                }
            }
            Auth::Token(t) => r = r.header(header::AUTHORIZATION, format!("Bearer {t}")),
            Auth::None => {}
        }
        let body = match json {
            Some(j) => {
                r = r.header(header::CONTENT_TYPE, "application/json");
                Body::from(j.to_string())
            }
            None => Body::empty(),
        };
        self.send(b, r.body(body).unwrap()).await
    }

    /// Claim through the page and return the logged-in browser.
    async fn claimed(&self) -> Browser {
        let mut b = Browser::default();
        let page = self.get(&mut b, "/claim").await;
        let pre = between(&page.body, "name=\"pre\" value=\"", "\"")
            .unwrap()
            .to_string();
        let r = self
            .post_form(
                &mut b,
                "/claim",
                &[
                    ("pre", &pre),
                    ("method", "code"),
                    ("setup_code", CODE),
                    ("password", PASSWORD),
                    ("password_again", PASSWORD),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        assert!(b.session.is_some());
        let r = self.get(&mut b, "/").await;
        assert_eq!(r.status, StatusCode::OK);
        b
    }

    /// Make an API token from a logged-in browser's session; returns its id and itself.
    async fn token(&self, b: &mut Browser, name: &str) -> (u64, String) {
        let r = self
            .api(
                b,
                "POST",
                "/tokens",
                Some(serde_json::json!({ "name": name })),
                Auth::Csrf,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        (
            v["id"].as_u64().unwrap(),
            v["token"].as_str().unwrap().to_string(),
        )
    }

    async fn login(&self, b: &mut Browser, password: &str) -> Reply {
        let page = self.get(b, "/login").await;
        let pre = between(&page.body, "name=\"pre\" value=\"", "\"")
            .unwrap_or("")
            .to_string();
        self.post_form(b, "/login", &[("pre", &pre), ("password", password)])
            .await
    }
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Csrf,
    Token(&'a str),
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|c| match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (c as char).to_string()
            }
            _ => format!("%{c:02X}"),
        })
        .collect()
}

/// Pages a logged-in admin can open.
const PAGES: [&str; 7] = [
    "/",
    "/spaces",
    "/agreements",
    "/peers",
    "/disk",
    "/logs",
    "/settings",
];

/// A concrete path for an operation's template.
fn concrete(path: &str) -> String {
    path.replace("{name}", "nosuch")
        .replace("{id}", "999")
        .replace("{node_id}", &"ee".repeat(32))
}

#[tokio::test]
async fn an_unclaimed_device_shows_only_the_claim_page() {
    let s = site();
    let mut b = Browser::default();
    for p in PAGES {
        let r = s.get(&mut b, p).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{p}");
        assert_eq!(r.location(), "/claim", "{p}");
    }
    assert_eq!(s.get(&mut b, "/login").await.location(), "/claim");
    let r = s.get(&mut b, "/claim").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Claim this seeder"));
    let r = s.api(&mut b, "GET", "/status", None, Auth::None).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body.contains("not claimed"));
}

#[tokio::test]
async fn a_claim_with_a_wrong_setup_code_is_refused_and_the_right_one_claims_once() {
    let s = site();
    let mut b = Browser::default();
    let page = s.get(&mut b, "/claim").await;
    let pre = between(&page.body, "name=\"pre\" value=\"", "\"")
        .unwrap()
        .to_string();
    let r = s
        .post_form(
            &mut b,
            "/claim",
            &[
                ("pre", &pre),
                ("setup_code", "0000-0000-0000-0000-0000"),
                ("password", PASSWORD),
                ("password_again", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body.contains("not this seeder&#39;s setup code")
            || r.body.contains("not this seeder's setup code"),
        "{}",
        r.body
    );
    assert!(b.session.is_none());

    // Without the form's double-submit token (a cross-site form) even the right code fails.
    let r = s
        .post_form(
            &mut b,
            "/claim",
            &[
                ("pre", "forged"),
                ("setup_code", CODE),
                ("password", PASSWORD),
                ("password_again", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let code_before = s.backend.setup_code();
    let _b = s.claimed().await;
    assert_ne!(
        s.backend.setup_code(),
        code_before,
        "a used code is renewed"
    );
    // A second claim (with the old code, over the API) is refused.
    let mut other = Browser::default();
    let r = s
        .api(
            &mut other,
            "POST",
            "/claim",
            Some(serde_json::json!({ "setup_code": code_before, "password": "another password" })),
            Auth::None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("already claimed"));
}

#[tokio::test]
async fn the_board_button_claims_only_when_pressed_while_the_page_waits() {
    let s = site();
    let mut b = Browser::default();
    let page = s.get(&mut b, "/claim").await;
    assert!(page.body.contains("Wait for the button"));
    let pre = between(&page.body, "name=\"pre\" value=\"", "\"")
        .unwrap()
        .to_string();
    let claim = [
        ("pre", pre.as_str()),
        ("method", "button"),
        ("password", PASSWORD),
        ("password_again", PASSWORD),
    ];
    // A press before the wait doesn't count.
    s.backend.press_button();
    let r = s.post_form(&mut b, "/claim/button", &[("pre", &pre)]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(s.backend.is_waiting_for_button());
    assert!(s
        .get(&mut b, "/claim/button")
        .await
        .body
        .contains("waiting"));
    let r = s.post_form(&mut b, "/claim", &claim).await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "not pressed yet"
    );
    s.backend.press_button();
    assert!(s
        .get(&mut b, "/claim/button")
        .await
        .body
        .contains("pressed"));
    let r = s.post_form(&mut b, "/claim", &claim).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(!s.backend.is_waiting_for_button());
    assert_eq!(s.get(&mut b, "/").await.status, StatusCode::OK);
}

#[tokio::test]
async fn every_page_and_api_call_refuses_the_unauthenticated() {
    let s = site();
    let _admin = s.claimed().await;
    let mut stranger = Browser::default();
    for p in PAGES {
        let r = s.get(&mut stranger, p).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{p}");
        assert_eq!(r.location(), "/login", "{p}");
    }
    for (path, fields) in [
        (
            "/spaces",
            vec![("csrf", "x"), ("seed_code", "seed-abcdefgh")],
        ),
        ("/spaces/a/remove", vec![("csrf", "x"), ("confirm", "a")]),
        ("/peers", vec![("csrf", "x"), ("address", "h:1#00")]),
        ("/agreements", vec![("csrf", "x"), ("organisation", "o")]),
        (
            "/disk/prepare",
            vec![("csrf", "x"), ("device", "/dev/sda"), ("confirm", "TD123")],
        ),
        ("/settings/name", vec![("csrf", "x"), ("device_name", "n")]),
        ("/settings/tokens", vec![("csrf", "x"), ("name", "n")]),
        ("/logout", vec![("csrf", "x")]),
    ] {
        let r = s.post_form(&mut stranger, path, &fields).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(r.location(), "/login", "{path}");
        // A form that isn't one gets the same answer: nothing looks at it first.
        let r = s.post_form(&mut stranger, path, &[("garbage", "")]).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(r.location(), "/login", "{path}");
    }
    for op in OPERATIONS.iter().filter(|o| o.access != Access::Public) {
        // An empty object lacks every required field, so a body check would answer 422.
        let body = op.body.map(|_| serde_json::json!({}));
        let r = s
            .api(
                &mut stranger,
                &op.method.to_uppercase(),
                &concrete(op.path),
                body,
                Auth::None,
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{} {}: {}",
            op.method,
            op.path,
            r.body
        );
    }
    let r = s.get(&mut stranger, "/metrics").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = s.get(&mut stranger, "/events").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = s
        .api(
            &mut stranger,
            "GET",
            "/spaces",
            None,
            Auth::Token("sdr_guess"),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(s.backend.spaces().unwrap().is_empty());
}

#[tokio::test]
async fn a_wrong_csrf_token_is_refused_and_changes_nothing() {
    let s = site();
    let mut b = s.claimed().await;
    let good = b.csrf.clone().unwrap();
    let r = s
        .post_form(
            &mut b,
            "/spaces",
            &[("csrf", "wrong"), ("seed_code", "seed-abcdefgh")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = s
        .post_form(&mut b, "/spaces", &[("seed_code", "seed-abcdefgh")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(s.backend.spaces().unwrap().is_empty());

    b.csrf = Some("wrong".into());
    let r = s
        .api(
            &mut b,
            "POST",
            "/spaces",
            Some(serde_json::json!({ "seed_code": "seed-abcdefgh" })),
            Auth::Csrf,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    b.csrf = None;
    let r = s
        .api(
            &mut b,
            "POST",
            "/spaces",
            Some(serde_json::json!({ "seed_code": "seed-abcdefgh" })),
            Auth::Csrf,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(s.backend.spaces().unwrap().is_empty());

    b.csrf = Some(good);
    let r = s
        .api(
            &mut b,
            "POST",
            "/spaces",
            Some(serde_json::json!({ "seed_code": "seed-abcdefgh", "name": "office" })),
            Auth::Csrf,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(s.backend.spaces().unwrap().len(), 1);
}

#[tokio::test]
async fn failed_logins_are_rate_limited_with_backoff_even_for_the_right_password() {
    let s = site();
    let _admin = s.claimed().await;
    let mut b = Browser::default();
    for _ in 0..web_admin::auth::FREE_FAILURES + 1 {
        let r = s.login(&mut b, "wrong password").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r.body.contains("wrong password"));
    }
    let r = s.login(&mut b, "wrong password").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    let r = s.login(&mut b, PASSWORD).await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "waits even when right"
    );
    assert!(b.session.is_none());
    // The API shares the limiter.
    let r = s
        .api(
            &mut b,
            "POST",
            "/session",
            Some(serde_json::json!({ "password": PASSWORD })),
            Auth::None,
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_login_with_the_right_password_starts_a_session_and_logout_ends_it() {
    let s = site();
    let mut admin = s.claimed().await;
    let csrf = admin.csrf.clone().unwrap();
    let r = s.post_form(&mut admin, "/logout", &[("csrf", &csrf)]).await;
    assert_eq!(r.location(), "/login");
    assert!(admin.session.is_none());
    let r = s.get(&mut admin, "/").await;
    assert_eq!(r.location(), "/login");
    let r = s.login(&mut admin, PASSWORD).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let set = r
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("seeder_session="))
        .unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert_eq!(s.get(&mut admin, "/").await.status, StatusCode::OK);
}

#[tokio::test]
async fn other_host_names_and_cross_site_posts_are_refused_and_headers_are_strict() {
    let s = site();
    let mut b = s.claimed().await;
    let req = Request::builder()
        .uri("/")
        .header(header::HOST, "attacker.example")
        .body(Body::empty())
        .unwrap();
    let r = s.send(&mut b, req).await;
    assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST);
    let mut req = Site::request(&b, "GET", "/").body(Body::empty()).unwrap();
    req.headers_mut().insert(
        header::HOST,
        header::HeaderValue::from_static("192.168.1.20:8080"),
    );
    assert_eq!(s.send(&mut b, req).await.status, StatusCode::OK);

    let csrf = b.csrf.clone().unwrap();
    let req = Site::request(&b, "POST", "/settings/name")
        .header(header::ORIGIN, "http://attacker.example")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("csrf={csrf}&device_name=pwned")))
        .unwrap();
    assert_eq!(s.send(&mut b, req).await.status, StatusCode::FORBIDDEN);

    for p in ["/", "/claim", "/static/app.js", "/api/v1/openapi.json"] {
        let r = s.get(&mut b, p).await;
        let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{p}"
        );
        assert!(csp.contains("frame-ancestors 'none'"));
        assert_eq!(r.headers[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(r.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }
    // No inline script or style anywhere in the pages (the CSP would block them).
    for p in PAGES {
        let r = s.get(&mut b, p).await;
        assert!(
            !r.body.contains("<script>") && !r.body.contains(" style="),
            "{p}"
        );
    }
}

#[tokio::test]
async fn a_stranger_gets_401_for_a_garbage_body_and_only_an_admin_learns_what_is_wrong_with_it() {
    let s = site();
    let mut admin = s.claimed().await;
    let (_, token) = s.token(&mut admin, "monitoring").await;
    // Not even JSON, and with a field of the wrong type where it stops.
    let garbage = |b: &Browser, auth: Auth<'_>, path: &str| {
        let mut r = Site::request(b, "POST", &format!("/api/v1{path}"))
            .header(header::CONTENT_TYPE, "application/json");
        match auth {
            Auth::Csrf => r = r.header("x-csrf-token", b.csrf.clone().unwrap_or_default()),
            Auth::Token(t) => r = r.header(header::AUTHORIZATION, format!("Bearer {t}")),
            Auth::None => {}
        }
        r.body(Body::from("{\"seed_code\": [1, 2")).unwrap()
    };
    let mut stranger = Browser::default();
    for path in [
        "/spaces",
        "/peers",
        "/disks/prepare",
        "/password",
        "/tokens",
    ] {
        let req = garbage(&stranger, Auth::None, path);
        let r = s.send(&mut stranger, req).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}: {}", r.body);
        assert!(r.body.contains("log in first"), "{path}: {}", r.body);
        assert!(!r.body.contains("seed_code"), "{path}: {}", r.body);
    }
    // A session without its CSRF token is refused before the body too.
    let mut no_csrf = Browser {
        csrf: None,
        ..admin.clone()
    };
    let req = garbage(&no_csrf, Auth::None, "/spaces");
    let r = s.send(&mut no_csrf, req).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    // A token may not change the password, whatever it sends.
    let req = garbage(&stranger, Auth::Token(&token), "/password");
    let r = s.send(&mut stranger, req).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    // Those who may call are told what is wrong with the body.
    for auth in [Auth::Csrf, Auth::Token(&token)] {
        let req = garbage(&admin, auth, "/spaces");
        let r = s.send(&mut admin, req).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert!(r.body.contains("seed_code"), "{}", r.body);
    }
    assert!(s.backend.spaces().unwrap().is_empty());
}

#[tokio::test]
async fn two_host_headers_or_an_invalid_host_get_400() {
    let s = site();
    let mut b = Browser::default();
    for hosts in [
        &["seeder.local", "attacker.example"][..],
        &["attacker.example", "seeder.local"],
        &["seeder.local", "seeder.local"],
    ] {
        let mut req = Request::builder().uri("/claim");
        for h in hosts {
            req = req.header(header::HOST, *h);
        }
        let r = s.send(&mut b, req.body(Body::empty()).unwrap()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{hosts:?}");
        assert_eq!(r.body, "the request has 2 Host headers; send exactly one");
    }
    for bad in [
        "",
        "seeder.local:http",
        "seeder.local:99999",
        "admin@seeder.local",
        "seeder.local/x",
        "seeder local",
        "[::1",
        "[not-v6]:80",
        "a:b:80",
    ] {
        let req = Request::builder()
            .uri("/claim")
            .header(header::HOST, bad)
            .body(Body::empty())
            .unwrap();
        let r = s.send(&mut b, req).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert!(r.body.starts_with("the Host header"), "{bad:?}: {}", r.body);
    }
    let req = Request::builder()
        .uri("/claim")
        .header(header::HOST, b"seeder.local\xff".as_slice())
        .body(Body::empty())
        .unwrap();
    assert_eq!(s.send(&mut b, req).await.status, StatusCode::BAD_REQUEST);
    let req = Request::builder()
        .uri("/claim")
        .body(Body::empty())
        .unwrap();
    let r = s.send(&mut b, req).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("no Host header"), "{}", r.body);
    for good in [
        "seeder.local",
        "SEEDER.local:8080",
        "[::1]:80",
        "192.168.1.20",
    ] {
        let req = Request::builder()
            .uri("/claim")
            .header(header::HOST, good)
            .body(Body::empty())
            .unwrap();
        assert_eq!(s.send(&mut b, req).await.status, StatusCode::OK, "{good}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_body_that_never_finishes_is_refused_at_the_deadline() {
    use futures_util::StreamExt;
    let s = site();
    let mut b = Browser::default();
    let started = tokio::time::Instant::now();
    let body = futures_util::stream::iter([Ok::<_, std::io::Error>(
        axum::body::Bytes::from_static(b"{\"password\": \"cor"),
    )])
    .chain(futures_util::stream::pending());
    let req = Site::request(&b, "POST", "/api/v1/session")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .unwrap();
    let r = s.send(&mut b, req).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.body.contains("did not arrive within 10 s"), "{}", r.body);
    assert_eq!(started.elapsed(), web_admin::server::BODY_DEADLINE);
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let s = site();
    let mut b = s.claimed().await;
    let csrf = b.csrf.clone().unwrap();
    let notes = "x".repeat(web_admin::MAX_BODY + 1);
    let r = s
        .post_form(
            &mut b,
            "/agreements",
            &[("csrf", &csrf), ("organisation", "o"), ("notes", &notes)],
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn spaces_are_added_with_clear_messages_for_typos_and_removed_only_with_typed_confirmation() {
    let s = site();
    let mut b = s.claimed().await;
    let csrf = b.csrf.clone().unwrap();
    let r = s
        .post_form(
            &mut b,
            "/spaces",
            &[("csrf", &csrf), ("seed_code", "sede-typo")],
        )
        .await;
    // Shown again at once, with what was typed, rather than redirected to an empty form.
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body.contains("flash error") && r.body.contains("is not a seed code"),
        "{}",
        r.body
    );
    assert!(r.body.contains(r#"value="sede-typo""#), "{}", r.body);
    let r = s
        .post_form(
            &mut b,
            "/spaces",
            &[
                ("csrf", &csrf),
                ("seed_code", "seed-abcdefgh"),
                ("name", "office"),
                ("quota", "20G"),
            ],
        )
        .await;
    assert_eq!(r.location(), "/spaces");
    let page = s.get(&mut b, "/spaces").await;
    assert!(page.body.contains("Now holding office"));
    assert!(page.body.contains("data-live=\"space:office:bytes\""));
    assert!(
        !page.body.contains("epoch"),
        "a space without roles shows no membership"
    );
    assert_eq!(s.backend.spaces().unwrap()[0].quota_bytes, Some(20 << 30));
    // Its membership log reached the seeder: counts, never names.
    s.backend.set_membership(
        "office",
        Some(web_admin::backend::SpaceMembership {
            devices: 4,
            epoch: 2,
        }),
    );
    let page = s.get(&mut b, "/spaces").await;
    assert!(page.body.contains("4 devices · epoch 2"), "{}", page.body);
    let r = s.api(&mut b, "GET", "/spaces", None, Auth::Csrf).await;
    let listed: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        listed[0]["membership"],
        serde_json::json!({ "devices": 4, "epoch": 2 })
    );

    let r = s
        .post_form(
            &mut b,
            "/spaces/office/remove",
            &[("csrf", &csrf), ("confirm", "offic")],
        )
        .await;
    assert_eq!(r.location(), "/spaces");
    assert_eq!(
        s.backend.spaces().unwrap().len(),
        1,
        "not removed without the exact name"
    );
    assert!(s
        .get(&mut b, "/spaces")
        .await
        .body
        .contains("nothing was removed"));
    s.post_form(
        &mut b,
        "/spaces/office/remove",
        &[("csrf", &csrf), ("confirm", "office"), ("purge", "1")],
    )
    .await;
    assert!(s.backend.spaces().unwrap().is_empty());
}

#[tokio::test]
async fn agreements_show_use_against_quota_and_flag_overdue_reviews() {
    let s = site();
    let mut b = s.claimed().await;
    let csrf = b.csrf.clone().unwrap();
    s.post_form(
        &mut b,
        "/spaces",
        &[
            ("csrf", &csrf),
            ("seed_code", "seed-abcdefgh"),
            ("name", "office"),
        ],
    )
    .await;
    s.backend.grow("office", 3 << 20);
    let r = s
        .post_form(
            &mut b,
            "/agreements",
            &[
                ("csrf", &csrf),
                ("organisation", "Partner Org"),
                ("contact", "it@partner.example"),
                ("spaces", "office"),
                ("quota", "10M"),
                ("start", "2024-01-01"),
                ("review", "2025-01-01"),
                ("notes", "yearly"),
            ],
        )
        .await;
    assert_eq!(r.location(), "/agreements");
    let page = s.get(&mut b, "/agreements").await;
    assert!(page.body.contains("Agreement with Partner Org saved"));
    assert!(page.body.contains("Review was due on 2025-01-01"));
    assert!(page.body.contains("3.0 MiB of 10.0 MiB"), "{}", page.body);
    let bad = s
        .post_form(
            &mut b,
            "/agreements",
            &[
                ("csrf", &csrf),
                ("organisation", "X"),
                ("review", "2025-02-30"),
            ],
        )
        .await;
    assert_eq!(bad.location(), "/agreements");
    assert!(s
        .get(&mut b, "/agreements")
        .await
        .body
        .contains("is not a date"));
    assert_eq!(s.backend.agreements().unwrap().len(), 1);
    // A review before the start is a typo, not an agreement.
    s.post_form(
        &mut b,
        "/agreements",
        &[
            ("csrf", &csrf),
            ("organisation", "Y"),
            ("start", "2027-05-01"),
            ("review", "2026-01-01"),
        ],
    )
    .await;
    assert!(s
        .get(&mut b, "/agreements")
        .await
        .body
        .contains("is before the start date"));
    assert_eq!(s.backend.agreements().unwrap().len(), 1);
}

#[tokio::test]
async fn every_page_renders_for_an_admin_and_the_whole_site_weighs_under_100_kb() {
    let s = site();
    let mut b = s.claimed().await;
    let mut heaviest = 0;
    for p in PAGES {
        let r = s.get(&mut b, p).await;
        assert_eq!(r.status, StatusCode::OK, "{p}");
        assert!(r.body.contains("<nav>"), "{p}");
        let (head_end, body_start) = (
            r.body.find("</head>").unwrap(),
            r.body.find("<body").unwrap(),
        );
        assert!(
            head_end < body_start && r.body.ends_with("</body></html>"),
            "{p}: well formed"
        );
        heaviest = heaviest.max(r.body.len());
    }
    let css = s.get(&mut b, "/static/app.css").await.body.len();
    let js = s.get(&mut b, "/static/app.js").await.body.len();
    let weight = heaviest + css + js;
    eprintln!("page_weight_bytes {weight}");
    assert!(weight < 100 * 1024, "{weight} bytes");
    let peers = s.get(&mut b, "/peers").await;
    assert!(peers.body.contains("<svg"), "QR code of our address");
    // What this seeder relays for others, with both ends and the bytes carried.
    assert!(
        peers.body.contains("table class=\"relaying\"")
            && peers.body.contains(&"ef".repeat(8))
            && peers.body.contains("4.0 KiB"),
        "{}",
        peers.body
    );
    let logs = s.get(&mut b, "/logs?level=warn").await;
    assert!(logs.body.contains("partner unreachable") && !logs.body.contains("seeder ready"));
}

#[tokio::test]
async fn tokens_authorise_the_api_and_metrics_without_csrf_and_can_be_revoked() {
    let s = site();
    let mut b = s.claimed().await;
    let (token_id, token) = s.token(&mut b, "prometheus").await;
    let mut script = Browser::default();
    let t = Auth::Token(&token);
    let r = s
        .api(
            &mut script,
            "POST",
            "/spaces",
            Some(serde_json::json!({ "seed_code": "seed-abcdefgh", "name": "office" })),
            t,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    s.backend.grow("office", 4096);
    let r = s.api(&mut script, "GET", "/spaces", None, t).await;
    assert!(r.body.contains("\"bytes\":4096"));
    let r = s
        .api(
            &mut script,
            "POST",
            "/agreements",
            Some(serde_json::json!({ "organisation": "Org", "spaces": ["office"] })),
            t,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["id"]
        .as_u64()
        .unwrap();
    let r = s
        .api(
            &mut script,
            "PUT",
            &format!("/agreements/{id}"),
            Some(serde_json::json!({ "organisation": "Org 2" })),
            t,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s
        .api(&mut script, "DELETE", &format!("/agreements/{id}"), None, t)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let node = "ab".repeat(32);
    let r = s
        .api(
            &mut script,
            "POST",
            "/peers",
            Some(serde_json::json!({ "address": format!("partner.example:7428#{node}") })),
            t,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = s.api(&mut script, "GET", "/peers", None, t).await;
    assert!(r.body.contains("partner.example:7428"));
    assert!(r.body.contains("\"relaying\":[{"), "{}", r.body);
    let r = s
        .api(&mut script, "DELETE", &format!("/peers/{node}"), None, t)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = s
        .api(
            &mut script,
            "PUT",
            "/settings",
            Some(serde_json::json!({ "device_name": "office seeder" })),
            t,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s.api(&mut script, "GET", "/status", None, t).await;
    assert!(r.body.contains("office seeder"));
    let r = s
        .api(
            &mut script,
            "POST",
            "/tokens",
            Some(serde_json::json!({ "name": "more" })),
            t,
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "tokens can't make tokens"
    );

    let req = Site::request(&script, "GET", "/metrics")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let r = s.send(&mut script, req).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("seeder_held_bytes 4096"), "{}", r.body);
    assert!(r
        .body
        .contains("seeder_space_held_bytes{space=\"office\"} 4096"));

    let r = s
        .api(
            &mut b,
            "DELETE",
            &format!("/tokens/{token_id}"),
            None,
            Auth::Csrf,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = s.api(&mut script, "GET", "/spaces", None, t).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "revoked");
}

#[tokio::test]
async fn every_documented_operation_has_a_route_and_the_document_lists_them() {
    let s = site();
    let mut b = s.claimed().await;
    let (_, token) = s.token(&mut b, "t").await;
    let doc = s
        .api(&mut b, "GET", "/openapi.json", None, Auth::None)
        .await;
    let doc: serde_json::Value = serde_json::from_str(&doc.body).unwrap();
    for op in OPERATIONS {
        assert_eq!(
            doc["paths"][op.path][op.method]["operationId"], op.id,
            "{} {} documented",
            op.method, op.path
        );
        assert!(web_admin::api::handler(op.id).is_some(), "{}", op.id);
        if op.id == "logout" || op.id == "changePassword" || op.id == "claim" || op.id == "login" {
            continue;
        }
        let auth = if op.access == Access::Session {
            Auth::Csrf
        } else {
            Auth::Token(&token)
        };
        let body = op.body.map(|_| serde_json::json!({}));
        let r = s
            .api(
                &mut b,
                &op.method.to_uppercase(),
                &concrete(op.path),
                body,
                auth,
            )
            .await;
        // An unrouted path gives axum's empty 404 or a 405; ours always explain themselves.
        assert_ne!(
            r.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{} {}",
            op.method,
            op.path
        );
        assert!(
            r.status != StatusCode::NOT_FOUND || r.body.contains("error"),
            "{} {} is not routed",
            op.method,
            op.path
        );
        assert!(
            !r.status.is_server_error(),
            "{} {}: {}",
            op.method,
            op.path,
            r.body
        );
    }
    let r = s
        .api(&mut b, "GET", "/nosuch", None, Auth::Token(&token))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn live_updates_stream_the_byte_counts_to_a_logged_in_page() {
    let s = site();
    let mut b = s.claimed().await;
    let csrf = b.csrf.clone().unwrap();
    s.post_form(
        &mut b,
        "/spaces",
        &[
            ("csrf", &csrf),
            ("seed_code", "seed-abcdefgh"),
            ("name", "office"),
        ],
    )
    .await;
    s.backend.grow("office", 5 << 20);
    let req = Site::request(&b, "GET", "/events")
        .body(Body::empty())
        .unwrap();
    let r = s.router.clone().oneshot(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = r.into_body();
    let frame = body.frame().await.unwrap().unwrap();
    let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
    assert!(text.starts_with("event: status"), "{text}");
    assert!(
        text.contains("\"space:office:bytes\":\"5.0 MiB\""),
        "{text}"
    );
}

#[tokio::test]
async fn a_password_reset_on_the_device_ends_every_session_and_unclaims_it() {
    let s = site();
    let mut b = s.claimed().await;
    let blob = s.backend.load_site().unwrap();
    s.backend
        .save_site(&web_admin::unclaim_blob(blob.as_deref()).unwrap())
        .unwrap();
    let r = s.get(&mut b, "/").await;
    assert_eq!(r.location(), "/claim");
}

#[tokio::test]
async fn changing_the_password_needs_the_current_one_and_ends_other_sessions() {
    let s = site();
    let mut a = s.claimed().await;
    let mut other = Browser::default();
    assert_eq!(
        s.login(&mut other, PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );
    let csrf = a.csrf.clone().unwrap();
    let new = "a much better password";
    let r = s
        .post_form(
            &mut a,
            "/settings/password",
            &[
                ("csrf", &csrf),
                ("current", "not it at all"),
                ("password", new),
                ("password_again", new),
            ],
        )
        .await;
    assert_eq!(r.location(), "/settings");
    assert!(s
        .get(&mut a, "/settings")
        .await
        .body
        .contains("current password is wrong"));
    let csrf = a.csrf.clone().unwrap();
    let r = s
        .post_form(
            &mut a,
            "/settings/password",
            &[
                ("csrf", &csrf),
                ("current", PASSWORD),
                ("password", new),
                ("password_again", new),
            ],
        )
        .await;
    assert_eq!(r.location(), "/settings");
    assert_eq!(
        s.get(&mut a, "/settings").await.status,
        StatusCode::OK,
        "this browser stays in"
    );
    assert_eq!(
        s.get(&mut other, "/").await.location(),
        "/login",
        "others are out"
    );
    assert_eq!(s.login(&mut other, new).await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn ssh_is_turned_on_with_a_pasted_public_key_only_from_a_session_and_off_again() {
    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIwnWsr/fUQ15eEir+ie9Z+yETlvZOCTfS3q9GOHyrSm admin@laptop";
    let s = site();
    let mut b = s.claimed().await;
    let page = s.get(&mut b, "/settings").await;
    assert!(page.body.contains("SSH is off."), "{}", page.body);

    // A private key pasted by mistake: refused, named, nothing stored.
    let csrf = b.csrf.clone().unwrap();
    let r = s
        .post_form(
            &mut b,
            "/settings/ssh",
            &[
                ("csrf", &csrf),
                ("keys", "-----BEGIN OPENSSH PRIVATE KEY-----"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = s.get(&mut b, r.location()).await;
    assert!(page.body.contains(".pub"), "{}", page.body);
    assert!(s.backend.ssh().unwrap().keys.is_empty());

    // The public key: SSH on, the key listed.
    let csrf = b.csrf.clone().unwrap();
    let r = s
        .post_form(&mut b, "/settings/ssh", &[("csrf", &csrf), ("keys", KEY)])
        .await;
    let page = s.get(&mut b, r.location()).await;
    assert!(page.body.contains("SSH is on for root with that key."));
    assert!(page.body.contains("…fS3q9GOHyrSm admin@laptop"));
    assert_eq!(s.backend.ssh().unwrap().keys, vec![KEY.to_string()]);

    // An API token can read but never hand out a root shell.
    let (_, token) = s.token(&mut b, "monitor").await;
    let mut script = Browser::default();
    let r = s
        .api(&mut script, "GET", "/ssh", None, Auth::Token(&token))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("admin@laptop"));
    let r = s
        .api(
            &mut script,
            "PUT",
            "/ssh",
            Some(serde_json::json!({ "keys": [] })),
            Auth::Token(&token),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(s.backend.ssh().unwrap().keys.len(), 1);

    // The session turns it off through the API.
    let r = s
        .api(
            &mut b,
            "PUT",
            "/ssh",
            Some(serde_json::json!({ "keys": [] })),
            Auth::Csrf,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(s.backend.ssh().unwrap().keys.is_empty());
}

#[tokio::test]
async fn password_and_setup_code_attempts_made_at_once_are_answered_429_without_hashing() {
    // 100 wrong setup codes at once from one address: the first few are counted before any
    // answer, so the rest wait (429) instead of all passing the back-off check together.
    let s = site();
    let claims: Vec<_> = (0..100)
        .map(|_| {
            let router = s.router.clone();
            let req = Request::builder()
                .method("POST")
                .uri("/api/v1/claim")
                .header(header::HOST, "seeder.local")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    r#"{"setup_code":"0000-0000-0000-0000-0000","password":"a long enough one"}"#,
                ))
                .unwrap();
            async move { router.oneshot(req).await.unwrap().status() }
        })
        .collect();
    let mut statuses = Vec::new();
    for c in claims {
        statuses.push(tokio::spawn(c));
    }
    let mut too_many = 0;
    for st in statuses {
        if st.await.unwrap() == StatusCode::TOO_MANY_REQUESTS {
            too_many += 1;
        }
    }
    assert!(too_many >= 95, "{too_many} of 100 setup codes answered 429");

    // 100 wrong passwords at once: one argon2 at a time, the others 429 at once.
    let s = site();
    let _admin = s.claimed().await;
    let logins: Vec<_> = (0..100)
        .map(|_| {
            let router = s.router.clone();
            let req = Request::builder()
                .method("POST")
                .uri("/api/v1/session")
                .header(header::HOST, "seeder.local")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"password":"not the password"}"#))
                .unwrap();
            tokio::spawn(async move { router.oneshot(req).await.unwrap().status() })
        })
        .collect();
    let mut too_many = 0;
    for l in logins {
        if l.await.unwrap() == StatusCode::TOO_MANY_REQUESTS {
            too_many += 1;
        }
    }
    assert!(too_many >= 95, "{too_many} of 100 logins answered 429");
}

#[tokio::test]
async fn a_mistyped_seed_code_keeps_the_typed_value_and_marks_the_bad_group() {
    let s = site();
    let mut b = s.claimed().await;
    let csrf = b.csrf.clone().unwrap();
    // The in-memory backend reports a group with a `u` in it as the suspect one.
    let typed = "seed-abcde-fguhj-kmnpq";
    let r = s
        .post_form(
            &mut b,
            "/spaces",
            &[
                ("csrf", &csrf),
                ("seed_code", typed),
                ("name", "office"),
                ("quota", "20G"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.body.contains("flash error") && r.body.contains("has a typo"));
    assert!(
        r.body.contains(&format!(
            r#"name="seed_code" required autocomplete="off" placeholder="seed-…" value="{typed}""#
        )),
        "the typed code is kept: {}",
        r.body
    );
    assert!(r.body.contains(r#"value="office""#) && r.body.contains(r#"value="20G""#));
    assert!(
        r.body.contains("seed-abcde-<mark>fguhj</mark>-kmnpq"),
        "the suspect group is marked: {}",
        r.body
    );
    assert!(s.backend.spaces().unwrap().is_empty());
    // The form still works from there.
    let r = s
        .post_form(
            &mut b,
            "/spaces",
            &[("csrf", &csrf), ("seed_code", "seed-abcde-fghjk-kmnpq")],
        )
        .await;
    assert_eq!(r.location(), "/spaces");
    assert_eq!(s.backend.spaces().unwrap().len(), 1);
}

#[tokio::test]
async fn a_refused_peer_code_stays_in_the_form() {
    let s = site();
    let mut b = s.claimed().await;
    let csrf = b.csrf.clone().unwrap();
    let r = s
        .post_form(
            &mut b,
            "/peers",
            &[("csrf", &csrf), ("address", "192.0.2.9:7428#abc")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.body.contains("flash error") && r.body.contains("64 hex characters"));
    assert!(
        r.body.contains(r#"value="192.0.2.9:7428#abc""#),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn an_unknown_path_gets_a_styled_not_found_page_with_a_way_to_the_dashboard() {
    let s = site();
    let mut stranger = Browser::default();
    let r = s.get(&mut stranger, "/no/such/page").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.body.contains(r#"href="/static/app.css""#), "{}", r.body);
    assert!(r.body.contains("Page not found") && r.body.contains(r#"<a href="/">"#));
    // Signed in, it has the site's navigation too.
    let mut b = s.claimed().await;
    let r = s.get(&mut b, "/spaces/typo").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.contains("<nav>") && r.body.contains("Go to the dashboard"));
}

#[tokio::test]
async fn an_unknown_api_path_still_answers_json() {
    let s = site();
    let mut b = s.claimed().await;
    for path in ["/nothing-here", "/spaces/x/y/z"] {
        let r = s.api(&mut b, "GET", path, None, Auth::Csrf).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert!(r.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert!(v["error"].is_string(), "{}", r.body);
    }
}

#[tokio::test]
async fn agreement_dates_are_labelled_without_a_format_the_date_input_does_not_show() {
    let s = site();
    let mut b = s.claimed().await;
    let page = s.get(&mut b, "/agreements").await;
    assert!(!page.body.contains("YYYY"), "{}", page.body);
    assert!(page
        .body
        .contains(r#"Start date<input type="date" name="start""#));
    assert!(page
        .body
        .contains(r#"Review date<input type="date" name="review""#));
}

#[tokio::test]
async fn the_traffic_graph_has_axes_time_labels_and_a_legend() {
    let s = site();
    let mut b = s.claimed().await;
    let page = s.get(&mut b, "/").await;
    let graph = between(&page.body, "<figure class=\"graph\">", "</figure>").unwrap();
    assert_eq!(graph.matches("class=\"axis\"").count(), 2, "{graph}");
    assert!(graph.contains("0 B/s") && graph.contains("data-live=\"graph_max\""));
    for label in ["−60 min", "−30 min", "now"] {
        assert!(graph.contains(label), "{label}: {graph}");
    }
    assert!(graph.contains("In (received)") && graph.contains("Out (sent)"));
}

#[tokio::test]
async fn the_graph_samples_survive_a_restart_through_the_backend() {
    let backend = Arc::new(MemoryBackend::new(CODE));
    let config = AdminConfig {
        hosts: vec!["seeder.local".into()],
        version: "test".into(),
        ctl: "seeder ctl".into(),
    };
    let now = web_admin::format::now_unix();
    let app = App::new(backend.clone() as Arc<dyn AdminBackend>, config.clone());
    // An hour and more of samples, one a minute: the ring keeps its newest HISTORY_LEN.
    for i in 0..200u64 {
        app.record(web_admin::Sample {
            at: now - (200 - i) * 60,
            bytes_received: i * 1000,
            bytes_sent: i * 10,
        });
    }
    app.save_history();
    let kept = backend.load_samples().unwrap();
    assert_eq!(
        kept.len(),
        web_admin::HISTORY_LEN.min(web_admin::SAMPLES_KEPT)
    );
    assert_eq!(kept.last().unwrap().bytes_received, 199 * 1000);
    drop(app);

    // A new start reads them back, but only those of the last hour.
    let app = App::new(backend.clone() as Arc<dyn AdminBackend>, config);
    let history = app.history();
    assert_eq!(
        history.len(),
        60,
        "samples older than the graph's hour are dropped"
    );
    assert!(history.iter().all(|s| s.at >= now - 3600));
    assert_eq!(history.last().unwrap().bytes_received, 199 * 1000);
    let graph = web_admin::pages::graph_points(&history, now);
    assert_eq!(graph.peak, 1000 / 60);
    assert_eq!(graph.rx.split(' ').count(), 59);
}

#[tokio::test]
async fn the_claim_and_login_pages_name_the_command_that_reaches_this_daemon() {
    let backend = Arc::new(MemoryBackend::new(CODE));
    let app = App::new(
        backend.clone() as Arc<dyn AdminBackend>,
        AdminConfig {
            hosts: vec!["seeder.local".into()],
            version: "test".into(),
            ctl: "seeder ctl --data /srv/seeder".into(),
        },
    );
    let site = Site {
        router: web_admin::router(app),
        backend,
    };
    let mut b = Browser::default();
    let claim = site.get(&mut b, "/claim").await;
    assert!(
        claim
            .body
            .contains("seeder ctl --data /srv/seeder setup-code"),
        "{}",
        claim.body
    );
    assert!(!claim.body.contains("sudo seeder ctl setup-code"));
    site.claimed().await;
    let mut stranger = Browser::default();
    let login = site.get(&mut stranger, "/login").await;
    assert!(
        login
            .body
            .contains("seeder ctl --data /srv/seeder reset-password"),
        "{}",
        login.body
    );
}
