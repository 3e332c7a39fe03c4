//! Faults: NATS down while changes are made, the service killed between commit and publish,
//! PostgreSQL unreachable. Nothing is lost, nothing is half-written.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use testkit::{eventually, stream_events, Control, Nats, ScratchDb, ADMIN_KEY};

fn create_users(c: &Control, names: &[&str]) {
    for n in names {
        let r = c.send(
            "POST",
            ADMIN_KEY,
            "/v1/users",
            &format!(r#"{{"name":"{n}","password":"pw"}}"#),
        );
        assert_eq!(r.0, 201, "{r:?}");
    }
}

fn revisions(nats: &Nats) -> Vec<i64> {
    stream_events(&nats.url())
        .iter()
        .map(|e| e["revision"].as_i64().unwrap())
        .collect()
}

#[test]
fn nats_outage_loses_no_event_and_keeps_order() {
    let db = ScratchDb::new();
    let mut nats = Nats::start();
    let c = Control::start(&db.url(), &nats.url());
    create_users(&c, &["u1", "u2"]);
    eventually(10, "first events", || revisions(&nats) == [1, 2]);
    nats.kill();
    // The API keeps accepting changes: they wait in the outbox.
    create_users(&c, &["u3", "u4", "u5"]);
    assert_eq!(c.delete(ADMIN_KEY, "/v1/users/u1").0, 204);
    eventually(10, "backlog visible", || {
        c.metric("zcproxy_control_outbox_backlog") >= 4.0
    });
    nats.restart();
    eventually(30, "all events after the outage", || {
        revisions(&nats) == [1, 2, 3, 4, 5, 6]
    });
    assert_eq!(
        db.value("SELECT count(*) FROM outbox WHERE sent_at IS NULL"),
        "0"
    );
    assert!(c.metric("zcproxy_control_publish_failures_total") >= 1.0);
}

#[test]
fn killed_between_commit_and_publish_publishes_after_restart() {
    let db = ScratchDb::new();
    let mut nats = Nats::start();
    nats.kill(); // nothing can be published
    let c = Control::start(&db.url(), &nats.url());
    create_users(&c, &["a", "b", "c"]);
    assert_eq!(
        db.value("SELECT count(*) FROM outbox WHERE sent_at IS NULL"),
        "3"
    );
    c.kill9();
    nats.restart();
    let c = Control::start(&db.url(), &nats.url());
    eventually(30, "events published by the restarted service", || {
        revisions(&nats) == [1, 2, 3]
    });
    assert_eq!(
        db.value("SELECT count(*) FROM outbox WHERE sent_at IS NULL"),
        "0"
    );
    drop(c);
}

/// A TCP relay to PostgreSQL that the test can cut.
struct Cut {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Cut {
    fn start() -> Cut {
        let listener = TcpListener::bind(("127.0.0.1", testkit::free_port())).unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", 5432)) else {
                    continue;
                };
                conns2
                    .lock()
                    .unwrap()
                    .extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Cut { port, up, conns }
    }
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[test]
fn database_outage_gives_503_problems_and_no_partial_writes() {
    let db = ScratchDb::new();
    let nats = Nats::start();
    let cut = Cut::start();
    let url = format!(
        "{}/{}",
        testkit::PG.replace("5432", &cut.port.to_string()),
        db.name
    );
    let c = Control::start(&url, &nats.url());
    assert_eq!(
        c.send(
            "POST",
            ADMIN_KEY,
            "/v1/users",
            r#"{"name":"before","password":"pw"}"#
        )
        .0,
        201
    );
    cut.cut();
    let r = c.send(
        "POST",
        ADMIN_KEY,
        "/v1/users",
        r#"{"name":"during","password":"pw"}"#,
    );
    assert_eq!(r.0, 503, "{r:?}");
    assert!(r.2.starts_with("application/problem+json"));
    let r = c.get_anon("/readyz");
    assert_eq!(r.0, 503);
    assert_eq!(c.get(ADMIN_KEY, "/v1/users").0, 503);
    cut.restore();
    eventually(20, "ready again", || c.get_anon("/readyz").0 == 200);
    // Nothing of the failed write exists: no user, no revision, no outbox row, no audit row.
    assert_eq!(
        db.value("SELECT count(*) FROM users WHERE name = 'during'"),
        "0"
    );
    assert_eq!(db.value("SELECT revision FROM policy_state"), "1");
    assert_eq!(db.value("SELECT count(*) FROM outbox"), "1");
    assert_eq!(db.value("SELECT count(*) FROM audit_log"), "1");
    assert_eq!(
        c.send(
            "POST",
            ADMIN_KEY,
            "/v1/users",
            r#"{"name":"after","password":"pw"}"#
        )
        .0,
        201
    );
}
