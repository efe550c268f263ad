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
