//! The proxy's TLS identity on the TCP port, with clients this project did not write
//! (Debian's openssl s_client and curl, Python's ssl): several certificates chosen by SNI,
//! unknown names answered with the default or refused, client certificates as users, and
//! certificates that must not be served (expired, not yet valid, key of another) failing
//! start-up with a clear error.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::certs::{certificate_authority, issued, self_signed};
use common::{curl, Proxy};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("zcproxy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The subject of the certificate the proxy presents to `openssl s_client` naming `sni`
/// (`None`: no SNI); empty when the handshake failed.
fn presented(addr: SocketAddr, sni: Option<&str>) -> String {
    let sni = match sni {
        Some(name) => format!("-servername {name}"),
        None => "-noservername".into(),
    };
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {addr} {sni} </dev/null 2>/dev/null | openssl x509 -noout -subject 2>/dev/null"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn tls_config(default: &(PathBuf, PathBuf), more: &[&(PathBuf, PathBuf)], extra: &str) -> String {
    let mut text = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n{extra}",
        default.0.display(),
        default.1.display()
    );
    for (cert, key) in more {
        text.push_str(&format!(
            "[[tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        ));
    }
    text
}

#[test]
fn the_certificate_is_chosen_by_sni() {
    let dir = Dir::new("tls-sni");
    let default = self_signed(&dir.0, "default", "DNS:localhost,IP:127.0.0.1");
    let a = self_signed(&dir.0, "proxy-a", "DNS:proxy-a.example");
    let wild = self_signed(&dir.0, "wild", "DNS:*.corp.example");
    let proxy = Proxy::builder()
        .config(&tls_config(&default, &[&a, &wild], ""))
        .start();
    for (sni, cn) in [
        (Some("proxy-a.example"), "proxy-a"),
        (Some("EU.corp.example"), "wild"),
        (Some("localhost"), "default"),
        (Some("unknown.example"), "default"),
        (Some("a.b.corp.example"), "default"),
        (None, "default"),
    ] {
        assert_eq!(
            presented(proxy.addr, sni),
            format!("subject=CN = {cn}"),
            "{sni:?}"
        );
    }
    drop(proxy);

    // Unknown names refused: a handshake alert, the known ones still served.
    let proxy = Proxy::builder()
        .config(&tls_config(
            &default,
            &[&a],
            "refuse_unknown_names = true\n",
        ))
        .start();
    assert_eq!(presented(proxy.addr, Some("unknown.example")), "");
    assert_eq!(
        presented(proxy.addr, Some("proxy-a.example")),
        "subject=CN = proxy-a"
    );
    assert_eq!(presented(proxy.addr, None), "subject=CN = default");
    assert!(
        proxy.metric("zcproxy_tls_handshakes_total", &["result=\"tls_error\""]) >= 1.0,
        "the refusal is counted"
    );
}

/// Starts the proxy on `config` expecting start-up to fail; what it printed.
fn start_fails(config: &str) -> String {
    let path = std::env::temp_dir().join(format!(
        "zcproxy-badtls-{}-{}.toml",
        std::process::id(),
        common::free_port()
    ));
    std::fs::write(&path, config).unwrap();
    let out = Command::new(common::bin())
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", common::free_port()))
        .arg("--admin")
        .arg(format!("127.0.0.1:{}", common::free_port()))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(!out.status.success(), "started with {config}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn certificates_that_must_not_be_served_fail_start_up() {
    let dir = Dir::new("tls-bad");
    let good = self_signed(&dir.0, "good", "DNS:localhost");
    let other = self_signed(&dir.0, "other", "DNS:other.example");
    // Expired, and not valid yet (rcgen sets the dates openssl 3.0's req cannot).
    let dated = |name: &str, from: i32, to: i32| {
        let mut params = rcgen::CertificateParams::new(vec![format!("{name}.example")]).unwrap();
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(to, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let paths = (
            dir.0.join(format!("{name}.pem")),
            dir.0.join(format!("{name}.key")),
        );
        std::fs::write(&paths.0, cert.pem()).unwrap();
        std::fs::write(&paths.1, key.serialize_pem()).unwrap();
        paths
    };
    let expired = dated("expired", 2001, 2002);
    let future = dated("future", 2090, 2091);
    let mismatched = (good.0.clone(), other.1.clone());
    for (config, needle) in [
        (tls_config(&expired, &[], ""), "not valid now"),
        (tls_config(&good, &[&future], ""), "not valid now"),
        (tls_config(&mismatched, &[], ""), "private key"),
        (
            tls_config(&good, &[], "client_ca = \"/nonexistent/ca.pem\"\n"),
            "client CAs",
        ),
    ] {
        let err = start_fails(&config);
        assert!(err.contains(needle), "{config}: {err}");
        assert!(
            err.contains(".pem") || err.contains(".key"),
            "names the file: {err}"
        );
    }
}

#[test]
fn a_client_certificate_names_the_user() {
    let dir = Dir::new("tls-client");
    let server = self_signed(&dir.0, "server", "DNS:localhost,IP:127.0.0.1");
    let (ca, ca_key) = certificate_authority(&dir.0, "clients-ca");
    let alice = issued(&dir.0, &ca, &ca_key, "alice");
    let mallory = issued(&dir.0, &ca, &ca_key, "mallory");
    // A certificate from a CA the proxy does not trust.
    let (rogue_ca, rogue_key) = certificate_authority(&dir.0, "rogue-ca");
    let rogue = issued(&dir.0, &rogue_ca, &rogue_key, "alice-rogue");
    let hash = policy::password::hash("unused-password").unwrap();
    let proxy = Proxy::builder()
        .config(&format!(
            "{}[[policy.rules]]\naction = \"allow\"\ndestinations = [\"127.0.0.0/8\"]\n[[policy.users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n",
            tls_config(&server, &[], &format!("client_ca = \"{}\"\n", ca.display()))
        ))
        .start();
    let origin = common::origin::start("127.0.0.1");
    let target = format!("http://{}/hello", origin.addr);
    let p = format!("https://localhost:{}", proxy.addr.port());
    let with_cert = |cert: &(PathBuf, PathBuf), tunnel: bool| {
        let (c, k) = (cert.0.to_str().unwrap(), cert.1.to_str().unwrap());
        let mut args = vec![
            "--proxy-cacert",
            server.0.to_str().unwrap(),
            "--proxy-cert",
            c,
            "--proxy-key",
            k,
            "-x",
            &p,
            "-w",
            "%{http_code}",
        ];
        if tunnel {
            args.push("-p");
        }
        args.push(&target);
        curl(&args)
    };
    // alice's certificate is alice: forwarded and tunnelled without a password.
    for tunnel in [false, true] {
        let (code, body, err) = with_cert(&alice, tunnel);
        assert_eq!(code, 0, "{err}");
        assert!(
            body.starts_with(b"hello"),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
    // A certificate naming no user, and none at all: credentials required.
    let (_, body, _) = with_cert(&mallory, false);
    assert!(
        String::from_utf8_lossy(&body).ends_with("407"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (_, body, err) = curl(&[
        "--proxy-cacert",
        server.0.to_str().unwrap(),
        "-x",
        &p,
        "-w",
        "%{http_code}",
        &target,
    ]);
    assert!(
        String::from_utf8_lossy(&body).ends_with("407"),
        "{}: {err}",
        String::from_utf8_lossy(&body)
    );
    // A certificate from an untrusted CA fails the handshake.
    let (code, _, _) = with_cert(&rogue, false);
    assert_ne!(code, 0, "a rogue certificate must not get through");

    // SOCKS5 inside TLS with the certificate: no-auth is enough (Python's ssl).
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/tls_client.py");
    let out = Command::new("python3")
        .arg(script)
        .args([
            "socks5-cert",
            &proxy.addr.to_string(),
            server.0.to_str().unwrap(),
            alice.0.to_str().unwrap(),
            alice.1.to_str().unwrap(),
            &origin.addr.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every stream of an HTTP/2 connection is the certificate's user (the Rust h2 client).
    let echo = common::echo_server();
    let h2_as = |cert: &(PathBuf, PathBuf)| {
        use rustls::pki_types::pem::PemObject;
        let chain = rustls::pki_types::CertificateDer::pem_file_iter(&cert.0)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&cert.1).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_file_iter(&server.0).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let addr = proxy.addr;
        common::h3::runtime().block_on(async move {
            let (mut client, _drive) =
                common::h2::open_tls_with(addr, std::sync::Arc::new(config)).await;
            let mut statuses = Vec::new();
            for _ in 0..3 {
                let (resp, _) = common::h2::connect(&mut client, &echo.to_string(), None).await;
                statuses.push(resp.status().as_u16());
            }
            statuses
        })
    };
    assert_eq!(h2_as(&alice), [200, 200, 200]);
    assert_eq!(h2_as(&mallory), [407, 407, 407]);

    // Required: without a certificate the handshake fails.
    drop(proxy);
    let proxy = Proxy::builder()
        .config(&tls_config(
            &server,
            &[],
            &format!(
                "client_ca = \"{}\"\nrequire_client_cert = true\n",
                ca.display()
            ),
        ))
        .allow_loopback()
        .start();
    let p = format!("https://localhost:{}", proxy.addr.port());
    let (code, _, _) = curl(&[
        "--proxy-cacert",
        server.0.to_str().unwrap(),
        "-x",
        &p,
        &target,
    ]);
    assert_ne!(code, 0);
}
