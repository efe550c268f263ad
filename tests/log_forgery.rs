//! Nothing a caller sends can write a line of its own into the server's log:
//! a validly signed token whose subject holds a newline and a fake log line,
//! and dataset names, SQL and filters carrying one, against the real `veil`
//! binary's stderr, in both log formats (`--log-format text|json`).

use std::ffi::OsStr;

use veil::auth::jwt::TokenMinter;
use veil::config::Config;
use veil::model::identity::Attributes;
use veil_client::{Connection, Scan};
use veil_tests::process::ServeProcess;
use veil_tests::row_count;

/// What an attacker wants to see as a line of its own.
const FORGED: &str = "\n2026-01-01T00:00:00Z  INFO veil: forged";

fn subject() -> String {
    format!("mallory{FORGED}\r\u{1b}[2K\u{2028}")
}

/// Start the demo with `format`, send every hostile value, stop it, and
/// return its log. `RUST_LOG=debug`, so as much as possible is logged.
async fn attacked_log(format: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let server = ServeProcess::start(
        dir.path(),
        "veil",
        [
            OsStr::new("--demo"),
            OsStr::new("--data-dir"),
            data.as_os_str(),
            OsStr::new("--log-format"),
            OsStr::new(format),
        ],
        "debug",
    );
    let cfg = Config::load(&data.join("veil.toml")).unwrap();
    let minter = TokenMinter::from_config(&cfg.auth, &cfg.base_dir).unwrap();
    let token = minter
        .mint(&subject(), &[], &Attributes::new(), 600)
        .unwrap();
    let conn = Connection::connect(&server.address, &token).await.unwrap();

    // A read ("read finished" logs the subject).
    let sites = conn.scan("clinical.sites", Scan::default()).await.unwrap();
    assert!(row_count(&sites) > 0);
    // A dataset name, SQL (a literal and an identifier) and filters; each
    // fails or matches nothing, and whatever is logged of them is escaped.
    let _ = conn
        .scan(&format!("clinical.sites{FORGED}"), Scan::default())
        .await;
    let _ = conn
        .sql(&format!(
            "SELECT * FROM clinical.sites WHERE site = '{FORGED}'"
        ))
        .await;
    let _ = conn
        .sql(&format!("SELECT \"x{FORGED}\" FROM clinical.sites"))
        .await;
    let _ = conn
        .sql(&format!("SELECT * FROM \"clinical{FORGED}\".sites"))
        .await;
    let _ = conn
        .scan(
            "clinical.sites",
            Scan::default().with_filter(format!("site = '{FORGED}'")),
        )
        .await;
    let _ = conn
        .scan(
            "clinical.sites",
            Scan::default().with_filter(format!("\"x{FORGED}\" > 1")),
        )
        .await;
    drop(conn);
    server.stop()
}

/// Every line is the server's own: none starts with the forged timestamp,
/// and none holds a raw control character or line separator.
fn assert_no_forged_line(log: &str) {
    assert!(
        log.contains("forged"),
        "the payload never reached the log:\n{log}"
    );
    for line in log.lines() {
        assert!(
            !line.starts_with("2026-01-01T00:00:00Z"),
            "forged line {line:?} in:\n{log}"
        );
        assert!(
            !line
                .chars()
                .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}'),
            "raw control character in {line:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_values_cannot_forge_text_log_lines() {
    let log = attacked_log("text").await;
    assert_no_forged_line(&log);
    // The subject was logged, escaped.
    assert!(
        log.contains(r"user=mallory\n2026-01-01T00:00:00Z  INFO veil: forged\r\u{1b}[2K\u{2028}"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_values_cannot_forge_json_log_lines() {
    let log = attacked_log("json").await;
    assert_no_forged_line(&log);
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    // Each line is one event, and the subject reads back exactly as sent.
    assert!(
        events
            .iter()
            .any(|e| e["fields"]["user"] == subject().as_str()),
        "{log}"
    );
}
