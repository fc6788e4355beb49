//! schemathesis (from PyPI) against the admin API of a real `seeder serve`: it reads the
//! OpenAPI document the daemon serves, generates requests for every operation, sends them
//! with an API token, and checks that no response is a server error and that responses match
//! the documented schemas.
//!
//! Needs the `schemathesis` command (`$SCHEMATHESIS`, or on `PATH`; `.ci/run` installs it in
//! a virtualenv). Without it the test says so and passes, except under CI, where it fails.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{claim, free_udp_port, http, Seeder};

fn schemathesis() -> Option<String> {
    if let Ok(p) = std::env::var("SCHEMATHESIS") {
        return Some(p);
    }
    Command::new("schemathesis")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| "schemathesis".to_string())
}

#[test]
fn generated_requests_for_every_documented_operation_never_get_a_server_error() {
    let Some(st) = schemathesis() else {
        common::skip("schemathesis (pip install schemathesis)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let seed = Seeder::start(&dir.path().join("seeder"), free_udp_port());
    let admin = seed.status()["admin"].as_str().unwrap().to_string();
    let code = seed.ctl(&["setup-code"]).trim().to_string();

    // Claim over the API, then make a token for the fuzzer.
    let (cookie, csrf) = claim(&admin, &code);
    let (status, _, body) = http(
        &admin,
        "POST",
        "/api/v1/tokens",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        r#"{"name":"schemathesis"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let token = serde_json::from_str::<serde_json::Value>(&body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();

    let out = Command::new(&st)
        .args([
            "run",
            &format!("http://{admin}/api/v1/openapi.json"),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--header",
            &format!("Authorization: Bearer {token}"),
            // The session too, for the operations only a session may call.
            "--header",
            &format!("Cookie: {cookie}"),
            "--header",
            &format!("X-CSRF-Token: {csrf}"),
            // Revoking tokens (ours is id 1) or logging out would leave later requests
            // refused.
            "--exclude-operation-id",
            "revokeToken",
            "--exclude-operation-id",
            "logout",
            "--max-examples",
            "25",
            "--seed",
            "1",
        ])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        // It keeps a cache of its own in the working folder.
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis found failures");
    assert!(
        !stdout.contains("Authentication failed"),
        "operations were refused for want of authentication"
    );
    // The daemon is still healthy afterwards.
    assert_eq!(http(&admin, "GET", "/api/v1/openapi.json", &[], "").0, 200);

    // A forgotten password: root resets it on the device; the token and the session stop
    // working, the page asks to be claimed again, with a new code.
    let new_code = seed.ctl(&["reset-password"]).trim().to_string();
    assert!(!new_code.is_empty() && new_code != code);
    let auth = format!("Bearer {token}");
    let (status, _, body) = http(
        &admin,
        "GET",
        "/api/v1/status",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("not claimed"));
    let (status, _, _) = http(&admin, "GET", "/api/v1/session", &[("Cookie", &cookie)], "");
    assert_eq!(status, 409);
    let (status, _, body) = http(
        &admin,
        "POST",
        "/api/v1/claim",
        &[],
        &format!(r#"{{"setup_code":"{new_code}","password":"a new admin password"}}"#),
    );
    assert_eq!(status, 200, "{body}");
}
