//! Transport security: TLS from the config, and no plaintext off loopback.

use tonic::Code;
use veil::config::Config;
use veil::server::{ServeOptions, start};
use veil_tests::TestServer;

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../service/tests/fixtures")
        .join(name)
}

#[tokio::test]
async fn tls_from_the_config_serves_encrypted_only() {
    let server = TestServer::demo_with(|dir| {
        std::fs::copy(fixture("tls_cert.pem"), dir.join("tls_cert.pem")).unwrap();
        std::fs::copy(fixture("tls_key.pem"), dir.join("tls_key.pem")).unwrap();
        let cfg = dir.join("veil.toml");
        let text = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(
            &cfg,
            format!("{text}\n[tls]\ncert_file = \"tls_cert.pem\"\nkey_file = \"tls_key.pem\"\n"),
        )
        .unwrap();
    })
    .await;
    let address = server.address.replacen("grpc://", "grpc+tls://", 1);
    let ca = std::fs::read(fixture("tls_ca.pem")).unwrap();
    let conn =
        veil_client::Connection::connect_tls(&address, &server.token("alice"), &ca, "localhost")
            .await
            .unwrap();
    assert!(
        conn.list_datasets()
            .await
            .unwrap()
            .contains(&"clinical.trials".to_string())
    );
    // `veil admin` reaches it by its grpc+tls:// address alone when the
    // system trusts the CA (SSL_CERT_FILE here), and says what to give when not.
    let port = server.address.rsplit(':').next().unwrap();
    // (On a blocking thread: the server answers on this test's runtime.)
    let admin = |trusted: std::path::PathBuf| {
        let mut cmd = std::process::Command::new(veil_tests::veil_bin());
        cmd.args([
            "admin",
            "--address",
            &format!("grpc+tls://localhost:{port}"),
            "whoami",
        ])
        .env("VEIL_TOKEN", server.token("alice"))
        .env("SSL_CERT_FILE", trusted)
        .env_remove("SSL_CERT_DIR")
        .env_remove("VEIL_CA_FILE");
        async move {
            tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap()
        }
    };
    let out = admin(fixture("tls_ca.pem")).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("alice"), "{out:?}");
    // Trusting only an unrelated certificate: the CA is unknown.
    let out = admin(fixture("tls_cert.pem")).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr.contains("certificate is not trusted") && stderr.contains("--ca-file"),
        "{stderr}"
    );
    // A plaintext client gets no answer from a TLS server.
    let plain = veil_client::Connection::connect(&server.address, &server.token("alice")).await;
    match plain {
        Err(_) => {}
        Ok(c) => assert!(c.list_datasets().await.is_err()),
    }
    server.stop().await;
}

#[tokio::test]
async fn plaintext_off_loopback_needs_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::load(&veil::demo::prepare(dir.path()).unwrap()).unwrap();
    let e = start(
        cfg.clone(),
        ServeOptions {
            listen: Some("0.0.0.0:0".into()),
            insecure: false,
        },
    )
    .await
    .unwrap_err();
    assert!(e.message().contains("--insecure"), "{e}");
    assert_eq!(e.code(), Code::FailedPrecondition);
    let running = start(
        cfg,
        ServeOptions {
            listen: Some("0.0.0.0:0".into()),
            insecure: true,
        },
    )
    .await
    .unwrap();
    running.stop().await.unwrap();
}

#[tokio::test]
async fn bad_tls_files_say_which_file_and_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::load(&veil::demo::prepare(dir.path()).unwrap()).unwrap();
    std::fs::write(dir.path().join("garbage.pem"), "not a certificate\n").unwrap();
    for (cert, key, says) in [
        ("garbage.pem", "tls_key.pem", "holds no certificate"),
        ("tls_cert.pem", "garbage.pem", "holds no private key"),
        ("tls_key.pem", "tls_cert.pem", "swapped"),
        // A key of another certificate: rustls's reason, not "transport error".
        (
            "tls_cert.pem",
            "rsa_private.pem",
            "TLS configuration is invalid: ",
        ),
        (
            "missing.pem",
            "tls_key.pem",
            "cannot read TLS certificate missing.pem",
        ),
    ] {
        for f in ["tls_cert.pem", "tls_key.pem", "rsa_private.pem"] {
            std::fs::copy(fixture(f), dir.path().join(f)).unwrap();
        }
        let mut cfg = cfg.clone();
        cfg.tls = Some(veil::config::TlsConfig {
            cert_file: cert.into(),
            key_file: key.into(),
        });
        let e = start(
            cfg,
            ServeOptions {
                listen: Some("127.0.0.1:0".into()),
                insecure: false,
            },
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("{cert} / {key} started"));
        assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
        assert!(e.message().contains(says), "{cert} / {key}: {e}");
        assert!(!e.message().ends_with("transport error"), "{e}");
    }
}

#[test]
fn the_demo_refuses_other_addresses_before_creating_anything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("veil-data");
    let out = std::process::Command::new(veil_tests::veil_bin())
        .args(["serve", "--demo", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(&data)
        .env_remove("VEIL_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("demo mode serves on loopback only, not on 0.0.0.0:0")
            && stderr.contains("--listen 127.0.0.1:PORT"),
        "{stderr}"
    );
    assert!(!stderr.contains("internal error"), "{stderr}");
    assert!(!data.exists(), "nothing is created for a refused demo");
}

#[test]
fn veil_admin_reads_addresses_like_the_python_client() {
    let run = |address: &str| {
        let out = std::process::Command::new(veil_tests::veil_bin())
            .args(["admin", "--address", address, "whoami"])
            .env("VEIL_TOKEN", "a-token")
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8(out.stderr).unwrap()
    };
    let e = run("http://127.0.0.1:9");
    assert!(
        e.contains("http:// is not spoken") && e.contains("grpc://127.0.0.1:9"),
        "{e}"
    );
    let e = run("127.0.0.1");
    assert!(
        e.contains("has no port") && e.contains("grpc://127.0.0.1:PORT"),
        "{e}"
    );
    // host:port alone is grpc://host:port: nothing listens on port 9.
    let e = run("127.0.0.1:9");
    assert!(
        e.contains("cannot connect to Veil at 127.0.0.1:9")
            && e.contains("check that the server runs there"),
        "{e}"
    );
}
