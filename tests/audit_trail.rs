//! The audit trail's tamper evidence, end to end: a server records a mixed
//! session, stops (checkpointing its chain), and `veil audit verify` passes;
//! then each kind of tampering with the stored events, in SQLite and in
//! PostgreSQL, makes it fail and name the first broken link.

use std::path::Path;
use std::process::Command;

use veil::audit::chain::link_mac;
use veil::secrets::{KeyPurpose, MasterKey, encode_hex};
use veil_client::Scan;
use veil_tests::pg::{Schema, postgres_url};
use veil_tests::{TestServer, veil_bin};

/// Reads, a denial and an admin action by several users.
async fn mixed_session(server: &TestServer) {
    let alice = server.connect("alice").await;
    let bob = server.connect("bob").await;
    let dave = server.connect("dave").await;
    alice
        .scan(
            "clinical.trials",
            Scan::default().with_columns(&["state", "age"]),
        )
        .await
        .unwrap();
    bob.scan("clinical.trials", Scan::default().with_limit(5))
        .await
        .unwrap();
    let _ = bob.action("veil.audit_tail", Vec::new()).await.unwrap_err();
    dave.list_datasets().await.unwrap();
    alice.list_datasets().await.unwrap();
}

/// `veil audit verify` on the config: success and its report.
fn verify(config: &Path) -> (bool, String) {
    let out = Command::new(veil_bin())
        .args(["audit", "verify", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The store under test, reached directly (as an attacker with database
/// access would).
enum Db {
    Lite(rusqlite::Connection),
    Pg(tokio_postgres::Client),
}

impl Db {
    async fn exec(&self, sql: &str) {
        match self {
            Db::Lite(c) => c.execute_batch(sql).unwrap(),
            Db::Pg(c) => c.batch_execute(sql).await.unwrap(),
        }
    }

    /// (node_id, node_seq, body) of every chained event, in chain order.
    async fn events(&self) -> Vec<(String, i64, String)> {
        let sql = "SELECT node_id, node_seq, body FROM audit_events WHERE node_seq IS NOT NULL ORDER BY node_id, node_seq";
        match self {
            Db::Lite(c) => {
                let mut stmt = c.prepare(sql).unwrap();
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            }
            Db::Pg(c) => c
                .query(sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect(),
        }
    }

    /// Copy the audit tables aside, to restore after each tampering.
    async fn save(&self) {
        self.exec(
            "CREATE TABLE saved_events AS SELECT * FROM audit_events;
             CREATE TABLE saved_heads AS SELECT * FROM audit_heads;",
        )
        .await;
    }

    async fn restore(&self) {
        self.exec(
            "DELETE FROM audit_events; INSERT INTO audit_events SELECT * FROM saved_events;
             DELETE FROM audit_heads; INSERT INTO audit_heads SELECT * FROM saved_heads;",
        )
        .await;
    }
}

/// Every tampering the chain must catch, each verified then undone.
async fn tamperings_are_caught(db: &Db, config: &Path, key: &MasterKey) {
    let (ok, report) = verify(config);
    assert!(ok, "an untouched audit verifies: {report}");
    assert!(report.contains(": ok, events 1 to "), "{report}");
    let events = db.events().await;
    assert!(events.len() >= 8, "the session was audited: {events:?}");
    let node = &events[0].0;
    db.save().await;

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "an altered event",
            "UPDATE audit_events SET body = replace(body, '\"alice\"', '\"mallory\"') WHERE node_seq = 3".into(),
            "event 3",
        ),
        (
            "an altered column",
            "UPDATE audit_events SET action = 'tampered' WHERE node_seq = 2".into(),
            "event 2",
        ),
        (
            "a deleted event",
            "DELETE FROM audit_events WHERE node_seq = 4".into(),
            "event 4 is missing",
        ),
        (
            "a truncated tail, head moved back",
            format!(
                "DELETE FROM audit_events WHERE node_seq > 5;
                 UPDATE audit_heads SET seq = 5, mac = (SELECT mac FROM saved_events WHERE node_id = '{node}' AND node_seq = 5);"
            ),
            "truncated",
        ),
        (
            "a truncated tail, head untouched",
            "DELETE FROM audit_events WHERE node_seq > 5".into(),
            "truncated",
        ),
        (
            "everything deleted",
            "DELETE FROM audit_events; DELETE FROM audit_heads;".into(),
            "deleted",
        ),
        (
            "a purge no checkpoint records",
            format!(
                "DELETE FROM audit_events WHERE node_seq <= 2;
                 UPDATE audit_heads SET purged_through = 2, purged_mac = (SELECT mac FROM saved_events WHERE node_id = '{node}' AND node_seq = 2);"
            ),
            "no purge checkpoint",
        ),
    ];
    for (what, sql, expected) in cases {
        db.exec(&sql).await;
        let (ok, report) = verify(config);
        assert!(!ok, "{what} must fail verification: {report}");
        assert!(
            report.contains("BROKEN") && report.contains(expected),
            "{what}: {report}"
        );
        db.restore().await;
        assert!(verify(config).0, "restored after {what}");
    }

    // Re-hashing the chain with a key that isn't the audit key (an
    // attacker without the master key), head included.
    let forged = MasterKey::from_bytes([0x42; 32]).derive(KeyPurpose::AuditChain);
    assert_ne!(forged, key.derive(KeyPurpose::AuditChain));
    let mut prev = [0u8; 32];
    let mut sql = String::new();
    for (n, seq, body) in events.iter().filter(|e| &e.0 == node) {
        let body = body.replace("\"alice\"", "\"mallory\"");
        let mac = link_mac(&forged, n, *seq as u64, &prev, &body);
        prev = mac;
        sql.push_str(&format!(
            "UPDATE audit_events SET body = '{}', mac = '{}' WHERE node_id = '{n}' AND node_seq = {seq};\n",
            body.replace('\'', "''"),
            encode_hex(&mac)
        ));
    }
    sql.push_str(&format!(
        "UPDATE audit_heads SET mac = '{}' WHERE node_id = '{node}';",
        encode_hex(&prev)
    ));
    db.exec(&sql).await;
    let (ok, report) = verify(config);
    assert!(!ok && report.contains("event 1 does not match"), "{report}");
    db.restore().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_audit_chain_catches_every_tampering() {
    let server = TestServer::demo().await;
    mixed_session(&server).await;
    let config = server.config_path.clone();
    let db_path = server.db_path();
    let key = MasterKey::load(&server.dir.path().join("master.key")).unwrap();
    let dir = server.stop_keeping_files().await;
    let checkpoints = std::fs::read_to_string(dir.path().join("audit-checkpoints.jsonl")).unwrap();
    assert!(
        checkpoints.contains("\"kind\":\"head\""),
        "stopping checkpoints the chain: {checkpoints}"
    );
    // `veil audit export | head`: a reader that leaves early is not an
    // error (here it leaves before the first line, so the first write
    // meets a closed pipe).
    let mut export = Command::new(veil_bin())
        .args(["audit", "export", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(export.stdout.take());
    let out = export.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("cannot write"),
        "{stderr}"
    );
    let db = Db::Lite(rusqlite::Connection::open(db_path).unwrap());
    tamperings_are_caught(&db, &config, &key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_audit_chain_catches_every_tampering() {
    let Some(url) = postgres_url() else { return };
    let schema = Schema::create(&url).await;
    let store = format!(
        "\n[store]\nbackend = \"postgres\"\nurl = \"{url}\"\nschema = \"{}\"\npool_size = 4\n",
        schema.name
    );
    let server = TestServer::demo_with(|dir| {
        let config = dir.join("veil.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(&config, format!("{text}{store}")).unwrap();
    })
    .await;
    mixed_session(&server).await;
    let config = server.config_path.clone();
    let key = MasterKey::load(&server.dir.path().join("master.key")).unwrap();
    let _dir = server.stop_keeping_files().await;
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("SET search_path TO {}", schema.name))
        .await
        .unwrap();
    tamperings_are_caught(&Db::Pg(client), &config, &key).await;
    schema.drop_now().await;
}

/// Every value of an Int64 column across batches.
fn ints(batches: &[arrow::record_batch::RecordBatch], column: &str) -> Vec<Option<i64>> {
    use arrow::array::{Array, Int64Array};
    batches
        .iter()
        .flat_map(|b| {
            let a = b
                .column_by_name(column)
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .clone();
            (0..a.len())
                .map(move |i| a.is_valid(i).then(|| a.value(i)))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_is_a_dataset_only_auditors_read() {
    let server = TestServer::demo().await;
    let alice = server.connect("alice").await;
    let dave = server.connect("dave").await;
    let served = veil_tests::row_count(
        &alice
            .scan(
                "clinical.trials",
                Scan::default().with_columns(&["state", "age"]),
            )
            .await
            .unwrap(),
    );
    mixed_session(&server).await;

    // Who read which columns of which dataset, under which policies, with
    // how many rows: a filter on the user, as in a notebook.
    let reads = dave
        .scan(
            "veil.audit",
            Scan::default().with_filter(
                "user = 'alice' AND action = 'read.end' AND dataset = 'clinical.trials' AND status = 'ok'",
            ),
        )
        .await
        .unwrap();
    // Two scans, each read through its endpoints (one read.end per DoGet).
    let n = veil_tests::row_count(&reads);
    assert!(n >= 2 && n.is_multiple_of(2), "{n}");
    assert_eq!(
        veil_tests::strings(&reads, "columns"),
        vec![Some("state,age".to_string()); n]
    );
    let total: i64 = ints(&reads, "rows").iter().map(|r| r.unwrap()).sum();
    assert_eq!(total, 2 * served as i64, "rows served are audited");
    let policies = veil_tests::strings(&reads, "policies");
    assert!(
        policies
            .iter()
            .all(|p| p.as_deref().is_some_and(|p| p.contains('@'))),
        "{policies:?}"
    );
    // alice's rows are filtered to her state.
    let filtered: Vec<bool> = reads
        .iter()
        .flat_map(|b| {
            let a = b
                .column_by_name("rows_filtered")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::BooleanArray>()
                .unwrap()
                .clone();
            a.iter().map(|v| v == Some(true)).collect::<Vec<_>>()
        })
        .collect();
    assert!(filtered.len() == n && filtered.iter().all(|f| *f));
    // Denials too; and SQL over it.
    let denied = dave
        .scan(
            "veil.audit",
            Scan::default().with_filter("user = 'bob' AND status = 'permission_denied'"),
        )
        .await
        .unwrap();
    assert!(veil_tests::row_count(&denied) >= 1);
    let by_user = dave
        .sql("SELECT user, count(*) AS n FROM veil.audit GROUP BY user ORDER BY user")
        .await
        .unwrap();
    let users = veil_tests::strings(&by_user, "user");
    assert!(
        users.contains(&Some("alice".into())) && users.contains(&Some("bob".into())),
        "{users:?}"
    );

    // Only AUDIT holders are subscribed: to anyone else it doesn't exist.
    assert!(
        dave.list_datasets()
            .await
            .unwrap()
            .contains(&"veil.audit".to_string())
    );
    assert!(
        !alice
            .list_datasets()
            .await
            .unwrap()
            .contains(&"veil.audit".to_string())
    );
    let hidden = alice.scan("veil.audit", Scan::default()).await.unwrap_err();
    let missing = alice
        .scan("veil.nothing", Scan::default())
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Some(tonic::Code::NotFound), "{hidden}");
    assert_eq!(
        hidden.to_string().replace("veil.audit", "X"),
        missing.to_string().replace("veil.nothing", "X")
    );
    assert!(alice.sql("SELECT count(*) FROM veil.audit").await.is_err());

    // Its dictionary is built in: governed by policies, never edited or dropped.
    for e in [
        dave.drop_dataset("veil.audit").await.unwrap_err(),
        dave.set_description("veil.audit", None, "x")
            .await
            .unwrap_err(),
        dave.set_column_tags("veil.audit", "user", &["PII".to_string()])
            .await
            .unwrap_err(),
    ] {
        assert_eq!(e.code(), Some(tonic::Code::FailedPrecondition), "{e}");
        assert!(e.to_string().contains("built in"), "{e}");
    }
    assert_eq!(
        veil_tests::row_count(
            &dave
                .scan("veil.audit", Scan::default().with_limit(1))
                .await
                .unwrap()
        ),
        1
    );

    // Search shows it to auditors only, and never records the words.
    assert!(alice.search("audit trail", 0).await.unwrap().is_empty());
    let hits = dave.search("audit trail", 0).await.unwrap();
    assert_eq!(
        hits.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
        ["veil.audit"]
    );
    let searches = dave
        .scan(
            "veil.audit",
            Scan::default().with_filter("action = 'admin.search' AND status = 'ok'"),
        )
        .await
        .unwrap();
    assert_eq!(veil_tests::row_count(&searches), 2);
    let text = format!("{:?}", veil_tests::strings(&searches, "message"));
    assert!(!text.contains("trail"), "{text}");
    server.stop().await;
}
