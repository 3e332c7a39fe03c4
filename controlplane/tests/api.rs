//! Every route against the real service, real PostgreSQL and a private NATS: success,
//! validation, authentication, authorisation, conflicts and not-found.

use serde_json::json;
use testkit::{Control, Nats, ScratchDb, ADMIN_KEY, READER_KEY};

fn setup() -> (ScratchDb, Nats, Control) {
    let db = ScratchDb::new();
    let nats = Nats::start();
    let control = Control::start(&db.url(), &nats.url());
    (db, nats, control)
}

fn is_problem(r: &(u16, serde_json::Value, String), status: u16) -> bool {
    r.0 == status && r.2.starts_with("application/problem+json") && r.1["status"] == status
}

#[test]
fn users_lifecycle_with_validation_and_pagination() {
    let (db, _nats, c) = setup();
    let r = c.send(
        "POST",
        ADMIN_KEY,
        "/v1/users",
        r#"{"name":"alice","password":"s3cret","max_tunnels":3}"#,
    );
    assert_eq!(r.0, 201, "{:?}", r.1);
    assert_eq!(r.1["name"], "alice");
    assert!(
        r.1.get("password").is_none() && r.1.get("password_hash").is_none(),
        "no secrets returned"
    );
    // Duplicate name: 409.
    let r = c.send(
        "POST",
        ADMIN_KEY,
        "/v1/users",
        r#"{"name":"alice","password":"x"}"#,
    );
    assert!(is_problem(&r, 409), "{r:?}");
    // Field-level validation: 422 with every offending field.
    let r = c.send(
        "POST",
        ADMIN_KEY,
        "/v1/users",
        r#"{"name":"bad name","password":"","max_tunnels":0}"#,
    );
    assert!(is_problem(&r, 422), "{r:?}");
    let fields: Vec<&str> = r.1["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "password", "max_tunnels"]);
    // Unknown fields, wrong types, broken JSON, huge bodies.
    assert!(is_problem(
        &c.send(
            "POST",
            ADMIN_KEY,
            "/v1/users",
            r#"{"name":"b","password":"x","admin":true}"#
        ),
        422
    ));
    assert!(is_problem(
        &c.send(
            "POST",
            ADMIN_KEY,
            "/v1/users",
            r#"{"name":5,"password":"x"}"#
        ),
        422
    ));
    assert!(is_problem(
        &c.send("POST", ADMIN_KEY, "/v1/users", r#"{"name":"#),
        400
    ));
    let huge = format!(r#"{{"name":"h","password":"{}"}}"#, "x".repeat(100_000));
    assert!(is_problem(
        &c.send("POST", ADMIN_KEY, "/v1/users", &huge),
        413
    ));
    // The password is stored only as an Argon2id hash.
    let stored = db.value("SELECT password_hash FROM users WHERE name = 'alice'");
    assert!(stored.starts_with("$argon2id$") && !stored.contains("s3cret"));

    for n in ["bob", "carol", "dave", "erin"] {
        assert_eq!(
            c.send(
                "POST",
                ADMIN_KEY,
                "/v1/users",
                &format!(
                    r#"{{"name":"{n}","password":"pw","enabled":{}}}"#,
                    n != "dave"
                )
            )
            .0,
            201
        );
    }
    let page = c.get(ADMIN_KEY, "/v1/users?limit=2");
    assert_eq!(page.0, 200);
    assert_eq!(page.1["items"].as_array().unwrap().len(), 2);
    assert_eq!(page.1["next"], "bob");
    let page2 = c.get(ADMIN_KEY, "/v1/users?limit=2&after=bob");
    assert_eq!(page2.1["items"][0]["name"], "carol");
    let disabled = c.get(ADMIN_KEY, "/v1/users?enabled=false");
    assert_eq!(disabled.1["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        c.get(ADMIN_KEY, "/v1/users?prefix=er").1["items"][0]["name"],
        "erin"
    );
    assert!(is_problem(&c.get(ADMIN_KEY, "/v1/users?limit=0"), 422));
    assert!(is_problem(&c.get(ADMIN_KEY, "/v1/users?limit=abc"), 400));

    // Update: password, enabled, limit (null clears it).
    let r = c.send(
        "PATCH",
        ADMIN_KEY,
        "/v1/users/alice",
        r#"{"enabled":false,"max_tunnels":null}"#,
    );
    assert_eq!(r.0, 200, "{r:?}");
    assert_eq!(r.1["enabled"], false);
    assert!(r.1.get("max_tunnels").is_none());
    let before = db.value("SELECT password_hash FROM users WHERE name = 'alice'");
    assert_eq!(
        c.send(
            "PATCH",
            ADMIN_KEY,
            "/v1/users/alice",
            r#"{"password":"new"}"#
        )
        .0,
        200
    );
    assert_ne!(
        db.value("SELECT password_hash FROM users WHERE name = 'alice'"),
        before
    );
    assert!(is_problem(
        &c.send(
            "PATCH",
            ADMIN_KEY,
            "/v1/users/nobody",
            r#"{"enabled":true}"#
        ),
        404
    ));
    assert!(is_problem(
        &c.send("PATCH", ADMIN_KEY, "/v1/users/alice", r#"{"password":""}"#),
        422
    ));
    assert_eq!(c.get(ADMIN_KEY, "/v1/users/alice").1["enabled"], false);
    assert!(is_problem(&c.get(ADMIN_KEY, "/v1/users/nobody"), 404));
    assert_eq!(c.delete(ADMIN_KEY, "/v1/users/bob").0, 204);
    assert!(is_problem(&c.delete(ADMIN_KEY, "/v1/users/bob"), 404));
    assert!(is_problem(&c.get(ADMIN_KEY, "/v1/nowhere"), 404));
}

#[test]
fn keys_roles_and_authentication() {
    let (_db, _nats, c) = setup();
    // No key, bad key, wrong scheme: 401 with WWW-Authenticate.
    assert!(is_problem(&c.get_anon("/v1/users"), 401));
    assert!(is_problem(&c.get("wrong", "/v1/users"), 401));
    let r = c.send(
        "POST",
        ADMIN_KEY,
        "/v1/api-keys",
        r#"{"name":"dataplane","role":"reader"}"#,
    );
    assert_eq!(r.0, 201, "{r:?}");
    let reader = r.1["key"].as_str().unwrap().to_string();
    let reader_id = r.1["id"].as_i64().unwrap();
    assert!(reader.starts_with("zcp_"));
    // A reader reads, but may not write: 403.
    assert_eq!(c.get(&reader, "/v1/users").0, 200);
    assert_eq!(c.get(&reader, "/v1/policy/snapshot").0, 200);
    // The reader key bootstrapped from the environment is a reader too.
    assert_eq!(c.get(testkit::READER_KEY, "/v1/policy/snapshot").0, 200);
    assert!(is_problem(
        &c.send(
            "POST",
            testkit::READER_KEY,
            "/v1/users",
            r#"{"name":"x","password":"y"}"#
        ),
        403
    ));
    assert!(is_problem(
        &c.send(
            "POST",
            &reader,
            "/v1/users",
            r#"{"name":"x","password":"y"}"#
        ),
        403
    ));
    assert!(is_problem(&c.get(&reader, "/v1/api-keys"), 403));
    // Listing never shows secrets.
    let list = c.get(ADMIN_KEY, "/v1/api-keys");
    assert!(!list.1.to_string().contains(&reader));
    assert!(!list.1.to_string().contains(testkit::READER_KEY));
    // bootstrap (admin), bootstrap-reader and the one created above.
    let items = list.1["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(items
        .iter()
        .any(|k| k["name"] == "bootstrap-reader" && k["role"] == "reader"));
    assert!(is_problem(
        &c.send(
            "POST",
            ADMIN_KEY,
            "/v1/api-keys",
            r#"{"name":"x","role":"root"}"#
        ),
        422
    ));
    assert!(is_problem(
        &c.send(
            "POST",
            ADMIN_KEY,
            "/v1/api-keys",
            r#"{"name":"","role":"admin"}"#
        ),
        422
    ));
    // Revoked keys stop working at once.
    assert_eq!(
        c.delete(ADMIN_KEY, &format!("/v1/api-keys/{reader_id}")).0,
        204
    );
    assert!(is_problem(&c.get(&reader, "/v1/users"), 401));
    assert!(is_problem(&c.delete(ADMIN_KEY, "/v1/api-keys/999999"), 404));
    // Health endpoints need no key.
    assert_eq!(c.get_anon("/healthz").0, 200);
    assert_eq!(c.get_anon("/readyz").0, 200);
    assert_eq!(c.get_anon("/openapi.json").1["openapi"], "3.0.3");
}

#[test]
fn rules_ordered_per_scope_with_reorder() {
    let (_db, _nats, c) = setup();
    let add = |path: &str, body: &str| c.send("POST", ADMIN_KEY, path, body);
    let a = add("/v1/rules", r#"{"action":"deny","ports":["25"]}"#);
    assert_eq!(a.0, 201, "{a:?}");
    let b = add(
        "/v1/rules",
        r#"{"action":"allow","destinations":["10.0.0.0/8"],"protocols":["connect"]}"#,
    );
    let first = add(
        "/v1/rules?position=0",
        r#"{"action":"deny","hosts":["*.ads.example"]}"#,
    );
    let ids: Vec<i64> = c.get(ADMIN_KEY, "/v1/rules").1["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            first.1["id"].as_i64().unwrap(),
            a.1["id"].as_i64().unwrap(),
            b.1["id"].as_i64().unwrap()
        ]
    );
    // Invalid rules are 422 with the reason.
    for bad in [
        r#"{"action":"maybe"}"#,
        r#"{"action":"deny","ports":["0"]}"#,
        r#"{"action":"deny","hosts":["*."]}"#,
        r#"{"action":"deny","destinations":["300.0.0.0/8"]}"#,
        r#"{"action":"deny","colour":"red"}"#,
    ] {
        assert!(is_problem(&add("/v1/rules", bad), 422), "{bad}");
    }
    let id = a.1["id"].as_i64().unwrap();
    let r = c.send(
        "PUT",
        ADMIN_KEY,
        &format!("/v1/rules/{id}"),
        r#"{"action":"deny","ports":["25","465"]}"#,
    );
    assert_eq!(r.0, 200);
    assert_eq!(
        c.get(ADMIN_KEY, &format!("/v1/rules/{id}")).1["ports"],
        json!(["25", "465"])
    );
    let reversed: Vec<i64> = ids.iter().rev().copied().collect();
    let r = c.send(
        "PUT",
        ADMIN_KEY,
        "/v1/rules/order",
        &json!({"ids": reversed}).to_string(),
    );
    assert_eq!(r.0, 200, "{r:?}");
    let now: Vec<i64> = r.1["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(now, reversed);
    assert!(is_problem(
        &c.send(
            "PUT",
            ADMIN_KEY,
            "/v1/rules/order",
            &json!({"ids": [ids[0]]}).to_string()
        ),
        409
    ));
    assert_eq!(c.delete(ADMIN_KEY, &format!("/v1/rules/{id}")).0, 204);
    assert!(is_problem(
        &c.get(ADMIN_KEY, &format!("/v1/rules/{id}")),
        404
    ));
    assert!(is_problem(
        &c.delete(ADMIN_KEY, &format!("/v1/rules/{id}")),
        404
    ));

    // Per-user rules live in the user's scope and show up in the snapshot.
    assert_eq!(
        c.send(
            "POST",
            ADMIN_KEY,
            "/v1/users",
            r#"{"name":"alice","password":"pw"}"#
        )
        .0,
        201
    );
    let u = add(
        "/v1/users/alice/rules",
        r#"{"action":"allow","ports":["22"]}"#,
    );
    assert_eq!(u.0, 201);
    let uid = u.1["id"].as_i64().unwrap();
    assert_eq!(
        c.get(ADMIN_KEY, "/v1/users/alice/rules").1["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A global rule id is not reachable through a user's scope.
    assert!(is_problem(
        &c.get(ADMIN_KEY, &format!("/v1/users/alice/rules/{}", ids[0])),
        404
    ));
    assert_eq!(
        c.send(
            "PUT",
            ADMIN_KEY,
            &format!("/v1/users/alice/rules/{uid}"),
            r#"{"action":"deny"}"#
        )
        .0,
        200
    );
    assert_eq!(
        c.send(
            "PUT",
            ADMIN_KEY,
            "/v1/users/alice/rules/order",
            &json!({"ids": [uid]}).to_string()
        )
        .0,
        200
    );
    assert!(is_problem(
        &add("/v1/users/nobody/rules", r#"{"action":"deny"}"#),
        404
    ));
    let snap = c.get(ADMIN_KEY, "/v1/policy/snapshot");
    assert_eq!(snap.1["users"][0]["rules"][0]["action"], "deny");
    assert_eq!(snap.1["rules"].as_array().unwrap().len(), 2);
    assert_eq!(
        c.delete(ADMIN_KEY, &format!("/v1/users/alice/rules/{uid}"))
            .0,
        204
    );
}

#[test]
fn every_change_bumps_the_revision_and_is_audited() {
    let (db, nats, c) = setup();
    // Every write names the revision it produced (clients wait for it on the proxies).
    let revisions = [
        c.revision_of("POST", "/v1/users", r#"{"name":"alice","password":"pw"}"#),
        c.revision_of("PATCH", "/v1/users/alice", r#"{"enabled":false}"#),
        c.revision_of("POST", "/v1/rules", r#"{"action":"deny","ports":["25"]}"#),
        c.revision_of("DELETE", "/v1/users/alice", ""),
    ];
    assert_eq!(revisions, [Some(1), Some(2), Some(3), Some(4)]);
    let snap = c.get(ADMIN_KEY, "/v1/policy/snapshot");
    assert_eq!(snap.1["revision"], 4);
    let audit = c.get(ADMIN_KEY, "/v1/audit");
    let actions: Vec<&str> = audit.1["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["user.delete", "rule.create", "user.update", "user.create"]
    );
    assert_eq!(audit.1["items"][0]["actor"], "api-key:1:bootstrap");
    assert_eq!(
        c.get(ADMIN_KEY, "/v1/audit?limit=1").1["next"],
        audit.1["items"][0]["id"]
    );
    // Append-only: the database itself refuses to rewrite history.
    let out = std::process::Command::new("psql")
        .args([&db.url(), "-c", "DELETE FROM audit_log"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("append-only"));
    // Every change reached NATS, in revision order, with the versioned format.
    testkit::eventually(10, "4 events in the stream", || {
        testkit::stream_events(&nats.url()).len() == 4
    });
    let events = testkit::stream_events(&nats.url());
    let revs: Vec<i64> = events
        .iter()
        .map(|e| e["revision"].as_i64().unwrap())
        .collect();
    assert_eq!(revs, [1, 2, 3, 4]);
    assert_eq!(events[0]["kind"], "user_upserted");
    assert_eq!(events[0]["version"], 1);
    assert_eq!(events[3]["kind"], "user_deleted");
    assert!(c.metric("zcproxy_control_events_published_total") >= 4.0);
    assert!(c.metric("zcproxy_control_http_requests_total") >= 5.0);
}

#[test]
fn settings_are_read_by_any_key_changed_by_admins_and_published() {
    let (_db, nats, c) = setup();
    // Fresh database: allow by default, nobody anonymous.
    let r = c.get(READER_KEY, "/v1/settings");
    assert_eq!(r.0, 200, "{r:?}");
    assert_eq!(
        r.1,
        json!({"default_action": "allow", "anonymous_clients": []})
    );
    let body = r#"{"default_action":"deny","anonymous_clients":["10.1.2.3/8","::1/128"]}"#;
    assert!(is_problem(
        &c.send("PUT", READER_KEY, "/v1/settings", body),
        403
    ));
    assert!(is_problem(
        &c.send("PUT", "wrong", "/v1/settings", body),
        401
    ));
    for bad in [
        r#"{"default_action":"maybe","anonymous_clients":[]}"#,
        r#"{"default_action":"deny","anonymous_clients":["not-a-net"]}"#,
        r#"{"default_action":"deny"}"#,
        r#"{"default_action":"deny","anonymous_clients":[],"extra":1}"#,
        r#"[]"#,
    ] {
        let r = c.send("PUT", ADMIN_KEY, "/v1/settings", bad);
        assert!(is_problem(&r, 422) || is_problem(&r, 400), "{bad}: {r:?}");
    }
    let many: Vec<String> = (0..101).map(|i| format!("10.0.{i}.0/24")).collect();
    let r = c.send(
        "PUT",
        ADMIN_KEY,
        "/v1/settings",
        &json!({"default_action": "deny", "anonymous_clients": many}).to_string(),
    );
    assert!(is_problem(&r, 422), "{r:?}");
    // A change: stored canonical, revisioned, audited, in the snapshot, published.
    assert_eq!(c.revision_of("PUT", "/v1/settings", body), Some(1));
    let want = json!({"default_action": "deny", "anonymous_clients": ["10.0.0.0/8", "::1/128"]});
    assert_eq!(c.get(READER_KEY, "/v1/settings").1, want);
    let snap = c.get(ADMIN_KEY, "/v1/policy/snapshot").1;
    assert_eq!(snap["default_action"], "deny");
    assert_eq!(snap["anonymous_clients"], want["anonymous_clients"]);
    let audit = c.get(ADMIN_KEY, "/v1/audit").1;
    assert_eq!(audit["items"][0]["action"], "settings.replace");
    assert_eq!(audit["items"][0]["details"]["after"], want);
    testkit::eventually(10, "the settings event", || {
        testkit::stream_events(&nats.url()).len() == 1
    });
    let event = &testkit::stream_events(&nats.url())[0];
    assert_eq!(event["kind"], "settings_changed");
    assert_eq!(event["revision"], 1);
    assert_eq!(event["anonymous_clients"], want["anonymous_clients"]);
}

#[test]
fn openapi_document_matches_the_routes() {
    let (_db, _nats, c) = setup();
    let spec = c.get_anon("/openapi.json").1;
    let paths = spec["paths"].as_object().unwrap();
    let mut checked = 0;
    for (path, item) in paths {
        let concrete = path.replace("{name}", "nobody").replace("{id}", "999999");
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let r = match method {
                "get" => c.get(ADMIN_KEY, &concrete),
                "delete" => c.delete(ADMIN_KEY, &concrete),
                m => c.send(&m.to_uppercase(), ADMIN_KEY, &concrete, "{}"),
            };
            assert_ne!(r.0, 405, "{method} {path} is documented but not routed");
            assert_ne!(
                r.1["detail"], "route not found",
                "{method} {path} is documented but not routed"
            );
            let documented = item[method]["responses"].as_object().unwrap();
            assert!(
                documented.contains_key(&r.0.to_string()),
                "{method} {path} answered undocumented {}",
                r.0
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 26, "every operation of the API is in the document");
}

#[test]
fn create_api_key_and_migrate_commands() {
    let (db, _nats, c) = setup();
    let bin = env!("CARGO_BIN_EXE_zcproxy-control");
    let out = std::process::Command::new(bin)
        .args(["migrate", "--database-url", &db.url()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(bin)
        .args([
            "create-api-key",
            "--database-url",
            &db.url(),
            "--name",
            "ops",
            "--role",
            "reader",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("zcp_"));
    assert_eq!(c.get(&key, "/v1/users").0, 200);
    assert_eq!(
        c.send("POST", &key, "/v1/users", r#"{"name":"x","password":"y"}"#)
            .0,
        403
    );
    // Without a database URL anywhere: a clear error, not a panic.
    let out = std::process::Command::new(bin)
        .arg("migrate")
        .env_remove("DATABASE_URL")
        .env_remove("ZCPROXY_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no database URL"));
}
