/*!
The API's description: one table of operations that both builds the router (`api::routes`)
and the OpenAPI 3.0 document served at `/api/v1/openapi.json`, plus the JSON schemas of the
bodies. A new operation is a row here and an arm in `api::handler`; a test checks every row
has a handler and every documented route answers.
*/

use serde_json::{json, Map, Value};

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone who reaches the device (the document itself, claiming, logging in).
    Public,
    /// A session (with `X-CSRF-Token` on changes) or an API token.
    Admin,
    /// A session only.
    Session,
}

/// One API operation.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    pub id: &'static str,
    pub method: &'static str,
    /// Relative to `/api/v1`, axum's and OpenAPI's `{param}` syntax.
    pub path: &'static str,
    pub summary: &'static str,
    pub access: Access,
    /// Schema name of the JSON body.
    pub body: Option<&'static str>,
    /// Success status and the schema of its JSON body (`None`: no body).
    pub ok: (u16, Option<&'static str>),
    /// Query parameters: (name, JSON type, description).
    pub query: &'static [(&'static str, &'static str, &'static str)],
}

const fn op(
    id: &'static str,
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    access: Access,
    body: Option<&'static str>,
    ok: (u16, Option<&'static str>),
) -> Operation {
    Operation {
        id,
        method,
        path,
        summary,
        access,
        body,
        ok,
        query: &[],
    }
}

use Access::*;

pub const OPERATIONS: &[Operation] = &[
    op("openapi", "get", "/openapi.json", "This document", Public, None, (200, Some("Any"))),
    op("claim", "post", "/claim", "Claim an unclaimed seeder with its setup code and set the admin password; starts a session", Public, Some("Claim"), (200, Some("Session"))),
    op("getSession", "get", "/session", "The current session's CSRF token", Session, None, (200, Some("Session"))),
    op("login", "post", "/session", "Log in with the admin password; sets the session cookie", Public, Some("Login"), (200, Some("Session"))),
    op("logout", "delete", "/session", "Log out", Session, None, (204, None)),
    op("status", "get", "/status", "The dashboard's figures and warnings", Admin, None, (200, Some("Status"))),
    op("listSpaces", "get", "/spaces", "Held spaces", Admin, None, (200, Some("SpaceList"))),
    op("addSpace", "post", "/spaces", "Hold a space given its seed code", Admin, Some("AddSpace"), (201, Some("Space"))),
    Operation {
        query: &[("purge", "boolean", "Also delete the space's data and free the disk")],
        ..op("removeSpace", "delete", "/spaces/{name}", "Stop holding a space", Admin, None, (204, None))
    },
    op("listAgreements", "get", "/agreements", "Agreements with the organisations backed up here", Admin, None, (200, Some("AgreementList"))),
    op("createAgreement", "post", "/agreements", "Record an agreement", Admin, Some("Agreement"), (201, Some("Agreement"))),
    op("updateAgreement", "put", "/agreements/{id}", "Replace an agreement", Admin, Some("Agreement"), (200, Some("Agreement"))),
    op("deleteAgreement", "delete", "/agreements/{id}", "Delete an agreement", Admin, None, (204, None)),
    op("peers", "get", "/peers", "Connected peers, partner seeders and this seeder's own address", Admin, None, (200, Some("Peers"))),
    op("addPartner", "post", "/peers", "Add a partner seeder (peer code or HOST:PORT#NODEID)", Admin, Some("AddPartner"), (201, Some("Partner"))),
    op("removePartner", "delete", "/peers/{node_id}", "Forget a partner seeder", Admin, None, (204, None)),
    op("disks", "get", "/disks", "Block devices and the data disk's state", Admin, None, (200, Some("DiskReport"))),
    op("prepareDisk", "post", "/disks/prepare", "Erase a disk and make it the data disk (confirm with its serial)", Admin, Some("PrepareDisk"), (204, None)),
    Operation {
        query: &[
            ("level", "string", "Lowest level shown: trace, debug, info (default), warn, error"),
            ("limit", "integer", "Most lines returned (default 300, at most 1000)"),
        ],
        ..op("logs", "get", "/logs", "Recent daemon log lines", Admin, None, (200, Some("LogList")))
    },
    op("getSettings", "get", "/settings", "Device settings", Admin, None, (200, Some("Settings"))),
    op("updateSettings", "put", "/settings", "Change device settings", Admin, Some("Settings"), (200, Some("Settings"))),
    op("changePassword", "post", "/password", "Change the admin password (ends every session)", Session, Some("ChangePassword"), (204, None)),
    op("getSsh", "get", "/ssh", "SSH access: the public keys allowed to log in as root (none: SSH off)", Admin, None, (200, Some("Ssh"))),
    op("setSsh", "put", "/ssh", "Set the public keys allowed to log in as root over SSH; an empty list turns SSH off", Session, Some("SetSsh"), (200, Some("Ssh"))),
    op("createToken", "post", "/tokens", "Create an API token (shown once)", Session, Some("CreateToken"), (201, Some("NewToken"))),
    op("revokeToken", "delete", "/tokens/{id}", "Revoke an API token", Admin, None, (204, None)),
];

fn obj(required: &[&str], props: Value) -> Value {
    json!({
        "type": "object",
        "required": required,
        "properties": props,
    })
}

fn s() -> Value {
    json!({ "type": "string" })
}

fn int() -> Value {
    json!({ "type": "integer", "format": "int64", "minimum": 0 })
}

fn nullable(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.insert("nullable".into(), Value::Bool(true));
    }
    v
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn schemas() -> Value {
    let warning = obj(
        &["level", "message"],
        json!({ "level": { "type": "string", "enum": ["trace", "debug", "info", "warn", "error"] }, "message": s() }),
    );
    let overview_props = json!({
        "device_name": s(),
        "version": s(),
        "node_id": s(),
        "uptime_secs": int(),
        "load": nullable(json!({ "type": "array", "items": { "type": "number" }, "minItems": 3, "maxItems": 3 })),
        "temperature_c": nullable(json!({ "type": "number" })),
        "memory": nullable(obj(&["total_bytes", "available_bytes"], json!({ "total_bytes": int(), "available_bytes": int() }))),
        "disk": nullable(obj(&["path", "total_bytes", "free_bytes"], json!({ "path": s(), "total_bytes": int(), "free_bytes": int() }))),
        "spaces": int(), "feeds": int(), "bytes_held": int(), "peers_connected": int(),
        "bytes_received": int(), "bytes_sent": int(),
        "warnings": { "type": "array", "items": warning },
    });
    let space = obj(
        &[
            "name",
            "address",
            "seed_code",
            "quota_bytes",
            "feeds",
            "entries",
            "bytes",
            "complete",
            "last_sync",
            "last_verified",
            "peers",
            "full",
            "membership",
        ],
        json!({
            "name": s(), "address": s(), "seed_code": s(), "quota_bytes": nullable(int()),
            "feeds": int(), "entries": int(), "bytes": int(), "complete": { "type": "boolean" },
            "last_sync": nullable(int()), "last_verified": nullable(int()), "peers": int(),
            "full": { "type": "boolean" },
            "membership": nullable(json!({
                "type": "object",
                "description": "A governed space's membership, in counts only; null for a space without roles",
                "required": ["devices", "epoch"],
                "properties": { "devices": int(), "epoch": int() },
            })),
        }),
    );
    let agreement = obj(
        &["organisation"],
        json!({
            "id": int(), "organisation": { "type": "string", "minLength": 1, "maxLength": 200 },
            "contact": s(), "spaces": { "type": "array", "items": s() },
            "quota_bytes": nullable(int()),
            "start": { "type": "string", "description": "YYYY-MM-DD or empty" },
            "review": { "type": "string", "description": "YYYY-MM-DD or empty" },
            "notes": s(), "used_bytes": int(),
        }),
    );
    let partner = obj(
        &["address", "node_id", "connected", "last_seen"],
        json!({ "address": s(), "node_id": s(), "connected": { "type": "boolean" }, "last_seen": nullable(int()) }),
    );
    let relayed = obj(
        &["from", "to", "since", "bytes"],
        json!({ "from": s(), "to": s(), "since": int(), "bytes": int() }),
    );
    let connected = obj(
        &[
            "node_id",
            "address",
            "since",
            "bytes_in",
            "bytes_out",
            "partner",
            "reached",
        ],
        json!({ "node_id": s(), "address": s(), "since": int(), "bytes_in": int(), "bytes_out": int(), "partner": { "type": "boolean" }, "reached": s() }),
    );
    let disk = obj(
        &[
            "device",
            "model",
            "serial",
            "size_bytes",
            "filesystem",
            "label",
            "mountpoint",
            "removable",
            "smart",
        ],
        json!({
            "device": s(), "model": s(), "serial": s(), "size_bytes": int(),
            "filesystem": nullable(s()), "label": nullable(s()), "mountpoint": nullable(s()),
            "removable": { "type": "boolean" }, "smart": nullable(s()),
        }),
    );
    let log = obj(
        &["at_ms", "level", "target", "message"],
        json!({ "at_ms": int(), "level": s(), "target": s(), "message": s() }),
    );
    json!({
        "Any": {},
        "Error": obj(&["error"], json!({ "error": s() })),
        "Claim": obj(&["setup_code", "password"], json!({ "setup_code": s(), "password": { "type": "string", "minLength": crate::auth::MIN_PASSWORD_CHARS } })),
        "Login": obj(&["password"], json!({ "password": s() })),
        "Session": obj(&["csrf", "device_name"], json!({ "csrf": s(), "device_name": s() })),
        "Status": obj(&["device_name", "version", "node_id", "uptime_secs", "spaces", "feeds", "bytes_held", "peers_connected", "bytes_received", "bytes_sent", "warnings"], overview_props),
        "Space": space.clone(),
        "SpaceList": { "type": "array", "items": space },
        "AddSpace": obj(&["seed_code"], json!({ "seed_code": s(), "name": nullable(s()), "quota_bytes": nullable(int()) })),
        "Agreement": agreement.clone(),
        "AgreementList": { "type": "array", "items": agreement },
        "Partner": partner.clone(),
        "AddPartner": obj(&["address"], json!({ "address": { "type": "string", "description": "a peer code (seeder:NODEID@ADDRESS:PORT,…) or HOST:PORT#NODEID" } })),
        "Peers": obj(&["node_id", "addresses", "peer_code", "port_mapping", "connected", "partners"], json!({
            "node_id": s(), "addresses": { "type": "array", "items": s() },
            "peer_code": s(), "port_mapping": s(),
            "connected": { "type": "array", "items": connected },
            "partners": { "type": "array", "items": partner },
            "relay_budget": s(),
            "relaying": { "type": "array", "items": relayed },
        })),
        "DiskReport": obj(&["data_dir", "data_disk", "disks"], json!({ "data_dir": s(), "data_disk": s(), "disks": { "type": "array", "items": disk } })),
        "Ssh": obj(&["available", "keys"], json!({ "available": { "type": "boolean" }, "keys": { "type": "array", "items": s() } })),
        "SetSsh": obj(&["keys"], json!({ "keys": { "type": "array", "items": s(), "maxItems": crate::ssh::MAX_KEYS } })),
        "PrepareDisk": obj(&["device", "confirm"], json!({ "device": s(), "confirm": s() })),
        "LogList": { "type": "array", "items": log },
        "Settings": obj(&["device_name"], json!({ "device_name": { "type": "string", "minLength": 1, "maxLength": 64 } })),
        "ChangePassword": obj(&["current", "password"], json!({ "current": s(), "password": s() })),
        "CreateToken": obj(&["name"], json!({ "name": { "type": "string", "minLength": 1, "maxLength": 64 } })),
        "NewToken": obj(&["id", "token"], json!({ "id": int(), "token": s() })),
    })
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": schema_ref("Error") } },
    })
}

/// The OpenAPI 3.0 document.
pub fn document(version: &str) -> Value {
    let mut paths = Map::new();
    for o in OPERATIONS {
        let mut params = Vec::new();
        for seg in o.path.split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
                let schema = if name == "id" { int() } else { s() };
                params.push(
                    json!({ "name": name, "in": "path", "required": true, "schema": schema }),
                );
            }
        }
        for (name, ty, description) in o.query {
            params.push(json!({ "name": name, "in": "query", "required": false, "description": description, "schema": { "type": ty } }));
        }
        let mut responses = Map::new();
        let (code, schema) = o.ok;
        responses.insert(
            code.to_string(),
            match schema {
                Some(name) => json!({
                    "description": "OK",
                    "content": { "application/json": { "schema": schema_ref(name) } },
                }),
                None => json!({ "description": "Done" }),
            },
        );
        responses.insert(
            "default".into(),
            error_response("Refused or failed; `error` says why"),
        );
        let mut operation = json!({
            "operationId": o.id,
            "summary": o.summary,
            "parameters": params,
            "responses": responses,
        });
        if let Some(body) = o.body {
            operation["requestBody"] = json!({
                "required": true,
                "content": { "application/json": { "schema": schema_ref(body) } },
            });
        }
        operation["security"] = match o.access {
            Access::Public => json!([]),
            Access::Admin => json!([{ "token": [] }, { "session": [], "csrf": [] }]),
            Access::Session => json!([{ "session": [], "csrf": [] }]),
        };
        let entry = paths
            .entry(o.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[o.method] = operation;
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Seeder admin API",
            "version": version,
            "description": "The operations of the seeder's admin page. Authenticate with a session (log in at /session; send the returned csrf value as X-CSRF-Token on changes) or with an API token made on the settings page (Authorization: Bearer).",
        },
        "servers": [{ "url": "/api/v1" }],
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "token": { "type": "http", "scheme": "bearer" },
                "session": { "type": "apiKey", "in": "cookie", "name": crate::SESSION_COOKIE },
                "csrf": { "type": "apiKey", "in": "header", "name": "X-CSRF-Token" },
            },
        },
    })
}
