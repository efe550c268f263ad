//! Two real `veil` processes sharing one PostgreSQL store on loopback.
//!
//! PostgreSQL comes from `VEIL_TEST_POSTGRES_URL` (default
//! `host=127.0.0.1 port=5432 user=postgres dbname=test`); each run uses a
//! schema of its own, dropped at the end. `VEIL_TEST_SKIP_POSTGRES=1` skips
//! these tests; otherwise an unreachable server fails them with that advice.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tonic::Code;
use veil::auth::jwt::TokenMinter;
use veil::config::Config;
use veil::model::identity::Attributes;
use veil_client::{Connection, Scan};
use veil_proto::UserRef;
use veil_tests::pg::{Schema, postgres_url};
use veil_tests::process::ServeProcess;
use veil_tests::{strings, veil_bin};

const HASH_PII: &str = "[[policies]]\nname = \"hash-pii\"\ntags = [\"PII\"]\nmask = \"hash\"\nexcept = { groups = [\"privileged\"] }\n";

/// A `veil serve --config CONFIG` process logging into `NAME.log` beside it.
fn node(config: &Path, name: &str) -> ServeProcess {
    let dir = config.parent().unwrap();
    ServeProcess::start(dir, name, [Path::new("--config"), config], "info")
}

fn is_raw_ssn(s: &str) -> bool {
    s.len() == 11 && s.as_bytes()[3] == b'-' && s.as_bytes()[6] == b'-'
}

/// Every SSN the caller sees, sorted (endpoints and partitions interleave).
async fn ssns(conn: &Connection) -> Result<Vec<String>, veil_client::ClientError> {
    let out = conn
        .scan("clinical.trials", Scan::default().with_columns(&["ssn"]))
        .await?;
    let mut v: Vec<String> = strings(&out, "ssn").into_iter().flatten().collect();
    v.sort();
    Ok(v)
}

fn alice_ref() -> UserRef {
    UserRef {
        issuer: String::new(),
        subject: "alice".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_postgres_state() {
    let Some(url) = postgres_url() else { return };
    let schema = Schema::create(&url).await;
    let dir = tempfile::tempdir().unwrap();
    let config = veil::demo::prepare(dir.path()).unwrap();
    let base = std::fs::read_to_string(&config).unwrap();
    let with_store = format!(
        "{base}\n[store]\nbackend = \"postgres\"\nurl = \"{url}\"\nschema = \"{}\"\npool_size = 4\n",
        schema.name
    );
    std::fs::write(&config, &with_store).unwrap();

    let cfg = Config::load(&config).unwrap();
    let minter = TokenMinter::from_config(&cfg.auth, &cfg.base_dir).unwrap();
    let token = |u: &str| minter.mint(u, &[], &Attributes::new(), 600).unwrap();

    // Each node gets its own file (its id; A also hands out every other
    // endpoint to B: tickets are valid on any node sharing the store and the
    // master key).
    let node_config = |name: &str, extra: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            with_store.replace(
                "data_dir = \".\"",
                &format!("data_dir = \".\"\nnode_id = \"node-{name}\"\n{extra}"),
            ),
        )
        .unwrap();
        path
    };
    let b = node(&node_config("b", ""), "b");
    let a = node(
        &node_config(
            "a",
            &format!(
                "endpoint_locations = [\"arrow-flight-reuse-connection://?\", \"{}\"]",
                b.address
            ),
        ),
        "a",
    );
    let dave_a = Connection::connect(&a.address, &token("dave"))
        .await
        .unwrap();
    let dave_b = Connection::connect(&b.address, &token("dave"))
        .await
        .unwrap();
    let alice_b = Connection::connect(&b.address, &token("alice"))
        .await
        .unwrap();

    // Both nodes hash with the same keys (same master key, checked).
    let before = ssns(&alice_b).await.unwrap();
    assert!(!before.is_empty() && before.iter().all(|s| s.len() == 32));
    let alice_a = Connection::connect(&a.address, &token("alice"))
        .await
        .unwrap();
    assert_eq!(ssns(&alice_a).await.unwrap(), before);

    // A directory change through A is enforced by B on its next request.
    dave_a.set_user_disabled(alice_ref(), true).await.unwrap();
    let e = ssns(&alice_b).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::PermissionDenied), "{e}");
    dave_b.set_user_disabled(alice_ref(), false).await.unwrap();
    assert_eq!(ssns(&alice_a).await.unwrap(), before);

    // A policy change applied by A (SIGHUP after editing the file) is
    // enforced by B, which was not reloaded.
    let without_hash = with_store.replace(HASH_PII, "");
    assert_ne!(
        without_hash, with_store,
        "the demo config has the hash-pii policy"
    );
    let a_toml = dir.path().join("a.toml");
    let a_text = std::fs::read_to_string(&a_toml).unwrap();
    std::fs::write(&a_toml, a_text.replace(HASH_PII, "")).unwrap();
    a.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = ssns(&alice_b).await.unwrap();
        if now.iter().all(|s| is_raw_ssn(s)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node B still hashes 20 s after node A reloaded: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Node A records the reload after applying it: poll for it (bounded).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let audit = dave_b.audit_tail(200).await.unwrap();
        if audit
            .iter()
            .any(|e| e.contains("\"config.reload\"") && e.contains("SIGHUP"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reload is in the shared audit within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A node with another master key refuses to join.
    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        without_hash.replace(
            "data_dir = \".\"",
            "data_dir = \".\"\nmaster_key_file = \"other.key\"",
        ),
    )
    .unwrap();
    let out = Command::new(veil_bin())
        .args(["serve", "--config"])
        .arg(&other)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("master_key_file"), "{stderr}");

    drop(a);
    drop(b);
    // One audit chain per node in the shared store; both verify.
    let out = Command::new(veil_bin())
        .args(["audit", "verify", "--config"])
        .arg(node_config("a", ""))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("node node-a: ok") && report.contains("node node-b: ok"),
        "{report}"
    );
    schema.drop_now().await;
}
