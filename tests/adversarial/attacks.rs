//! Attempts to read around the policies. Each must fail, or return only
//! policy-applied data, and never panic the server. Included by
//! `adversarial.rs` (the demo's `clinical.trials` as parquet files) and by
//! `adversarial_databases.rs` (the same rows in a PostgreSQL table): the
//! includer's `demo()` says which.

use super::demo;
use arrow_flight::{FlightDescriptor, Ticket};
use prost::Message;
use tonic::Code;
use veil::flight::tickets::TicketSigner;
use veil::secrets::{KeyPurpose, MasterKey};
use veil_client::{ClientError, Scan};
use veil_proto::{ScanCommand, TicketBody, TicketCommand};
use veil_tests::{row_count, strings};

pub(crate) fn code(e: &ClientError) -> Code {
    e.code()
        .unwrap_or_else(|| panic!("expected a status, got {e}"))
}

/// A raw SSN of a row alice can see (CA) and one of a row she can't.
fn raw_ssns() -> (String, String, i64) {
    let raw = veil_tests::raw_trials();
    let states = strings(&raw, "state");
    let ssns = strings(&raw, "ssn");
    let ids = strings(&raw, "participant_id");
    let ca = states
        .iter()
        .position(|s| s.as_deref() == Some("CA"))
        .unwrap();
    let other = states
        .iter()
        .position(|s| s.as_deref() != Some("CA"))
        .unwrap();
    (
        ssns[ca].clone().unwrap(),
        ssns[other].clone().unwrap(),
        ids[other].clone().unwrap().parse().unwrap(),
    )
}

#[tokio::test]
async fn filters_and_functions_see_only_masked_values() {
    let Some(server) = demo().await else { return };
    let alice = server.connect("alice").await;
    let (visible_ssn, _, _) = raw_ssns();
    // Equality with a raw value matches nothing.
    for filter in [
        format!("ssn = '{visible_ssn}'"),
        format!("upper(ssn) = upper('{visible_ssn}')"),
    ] {
        let out = alice
            .scan(
                "clinical.trials",
                Scan::default().with_filter(filter.clone()),
            )
            .await
            .unwrap();
        assert_eq!(row_count(&out), 0, "{filter} must not match raw values");
    }
    // Functions and patterns evaluate on the masked value: the rows they keep
    // are exactly those whose *hash* matches, whatever the raw values are.
    let all = strings(
        &alice
            .scan(
                "clinical.trials",
                Scan {
                    columns: vec!["ssn".into()],
                    ..Default::default()
                },
            )
            .await
            .unwrap(),
        "ssn",
    );
    let prefix = &visible_ssn[..3];
    let expected = all
        .iter()
        .filter(|h| h.as_ref().unwrap().starts_with(prefix))
        .count();
    for filter in [
        format!("substr(ssn, 1, 3) = '{prefix}'"),
        format!("ssn LIKE '{prefix}%'"),
    ] {
        let out = alice
            .scan(
                "clinical.trials",
                Scan::default().with_filter(filter.clone()),
            )
            .await
            .unwrap();
        assert_eq!(
            row_count(&out),
            expected,
            "{filter} compares the hash, not the raw value"
        );
        assert!(
            strings(&out, "ssn")
                .iter()
                .all(|h| h.as_ref().unwrap().starts_with(prefix))
        );
    }
    let out = alice
        .sql("SELECT substr(ssn, 1, 3) AS p, length(ssn) AS l FROM clinical.trials LIMIT 50")
        .await
        .unwrap();
    for (p, l) in strings(&out, "p").into_iter().zip(strings(&out, "l")) {
        assert_eq!(l.as_deref(), Some("32"));
        assert!(!p.unwrap().contains('-'));
    }
    // The hash UDF is not callable: no dictionary of hashes can be built.
    let e = alice
        .sql(&format!("SELECT veil_mask_hash('{visible_ssn}')"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument);
    server.stop().await;
}

#[tokio::test]
async fn errors_on_hidden_rows_do_not_leak() {
    let Some(server) = demo().await else { return };
    let (_, _, hidden_id) = raw_ssns();
    let filter = format!("1000 / (participant_id - {hidden_id}) > -100000");
    // Bob sees the row: the division fails for him, which proves the probe.
    let bob = server.connect("bob").await;
    let e = bob
        .scan(
            "clinical.trials",
            Scan::default().with_filter(filter.clone()),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");
    // Alice doesn't: the policy filter runs first, below the barrier.
    let alice = server.connect("alice").await;
    let out = alice
        .scan("clinical.trials", Scan::default().with_filter(filter))
        .await
        .unwrap();
    assert!(row_count(&out) > 0);
    let out = alice.sql(&format!("SELECT count(*) AS n FROM clinical.trials WHERE 1000 / (participant_id - {hidden_id}) > -100000")).await.unwrap();
    assert!(!strings(&out, "n").is_empty());
    server.stop().await;
}

#[tokio::test]
async fn raw_tables_files_and_other_datasets_are_unreachable() {
    let Some(server) = demo().await else { return };
    let carol = server.connect("carol").await;
    let alice = server.connect("alice").await;
    let parquet = server.dir.path().join("data/clinical/trials.parquet");
    let missing = carol
        .sql("SELECT * FROM clinical.nothing")
        .await
        .unwrap_err();
    for sql in [
        "SELECT * FROM __veil_source".to_string(),
        format!("SELECT * FROM '{}'", parquet.display()),
        format!("SELECT * FROM 'file://{}'", parquet.display()),
        "SELECT * FROM veil.clinical.trials".to_string(),
        "SELECT * FROM clinical.sites WHERE state IN (SELECT state FROM clinical.trials)"
            .to_string(),
        "SELECT * FROM clinical.sites WHERE EXISTS (SELECT 1 FROM clinical.trials)".to_string(),
        "SELECT (SELECT max(ssn) FROM clinical.trials) FROM clinical.sites".to_string(),
    ] {
        let e = carol.sql(&sql).await.unwrap_err();
        assert!(
            matches!(code(&e), Code::InvalidArgument | Code::NotFound),
            "{sql}: {e}"
        );
        assert!(
            !e.to_string().contains("ssn") || sql.contains("ssn"),
            "{sql}: {e}"
        );
    }
    // Hidden and missing tables give the same kind of answer in SQL.
    let hidden = carol
        .sql("SELECT * FROM clinical.trials")
        .await
        .unwrap_err();
    assert_eq!(code(&hidden), code(&missing));
    for sql in [
        "EXPLAIN SELECT * FROM clinical.sites",
        "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc'",
        "COPY (SELECT 1) TO '/tmp/x.csv'",
        "SET datafusion.execution.batch_size = 1",
        "SELECT 1; SELECT 2",
        "DROP TABLE clinical.sites",
        "INSERT INTO clinical.sites VALUES ('x', 'y', 1)",
        "SHOW TABLES",
        "",
    ] {
        let e = alice.sql(sql).await.unwrap_err();
        assert_eq!(code(&e), Code::InvalidArgument, "{sql}: {e}");
    }
    // A scan filter is one expression over the dataset, not a subquery.
    let e = alice
        .scan(
            "clinical.sites",
            Scan::default().with_filter("state IN (SELECT state FROM clinical.trials)"),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument);
    server.stop().await;
}

#[tokio::test]
async fn forged_expired_foreign_and_stale_tickets_are_rejected() {
    let Some(server) = demo().await else { return };
    let alice = server.connect("alice").await;
    let bob = server.connect("bob").await;
    let info = alice
        .scan_info("clinical.trials", &Scan::default())
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    assert!(row_count(&alice.read_ticket(ticket.clone()).await.unwrap()) > 0);

    // Someone else's ticket.
    let e = bob.read_ticket(ticket.clone()).await.unwrap_err();
    assert_eq!(code(&e), Code::PermissionDenied);
    // Forged: flipped bytes, garbage, empty.
    let mut bytes = ticket.ticket.to_vec();
    let n = bytes.len();
    bytes[n - 3] ^= 0x5a;
    for t in [bytes, b"garbage".to_vec(), vec![], vec![0xff; 100_000]] {
        let e = alice.read_ticket(Ticket::new(t)).await.unwrap_err();
        assert_eq!(code(&e), Code::InvalidArgument);
    }
    // A ticket re-signed with another key (an attacker without the master key).
    let body = TicketBody {
        issuer: "veil-demo".into(),
        subject: "alice".into(),
        expires_at_ms: i64::MAX,
        command: Some(TicketCommand::Scan(ScanCommand {
            dataset: "clinical.trials".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let forged = TicketSigner::from_master(&MasterKey::from_bytes([9; 32])).sign(body.clone());
    // Right cipher key, wrong signing key: still rejected.
    let master = MasterKey::load(&server.dir.path().join("master.key")).unwrap();
    let half = TicketSigner::new(
        MasterKey::from_bytes([9; 32]).derive(KeyPurpose::Tickets),
        master.derive(KeyPurpose::TicketCipher),
    )
    .sign(body.clone());
    assert_eq!(
        code(&alice.read_ticket(Ticket::new(half)).await.unwrap_err()),
        Code::InvalidArgument
    );
    assert_eq!(
        code(&alice.read_ticket(Ticket::new(forged)).await.unwrap_err()),
        Code::InvalidArgument
    );
    // Expired, though correctly signed.
    let signer = TicketSigner::from_master(&master);
    let expired = signer.sign(TicketBody {
        expires_at_ms: 1,
        ..body.clone()
    });
    assert_eq!(
        code(&alice.read_ticket(Ticket::new(expired)).await.unwrap_err()),
        Code::FailedPrecondition
    );
    // A valid ticket claiming a part of bob's rows still goes through alice's
    // policies: it is re-planned under her identity.
    let carol = server.connect("carol").await;
    let for_carol = signer.sign(TicketBody {
        subject: "carol".into(),
        ..body.clone()
    });
    assert_eq!(
        code(&carol.read_ticket(Ticket::new(for_carol)).await.unwrap_err()),
        Code::NotFound
    );

    // Stale: alice is disabled after the ticket was issued.
    let dave = server.connect("dave").await;
    dave.action(
        veil_proto::actions::SET_USER_DISABLED,
        veil_proto::SetUserDisabledRequest {
            user: Some(veil_proto::UserRef {
                issuer: String::new(),
                subject: "alice".into(),
            }),
            disabled: true,
        }
        .encode_to_vec(),
    )
    .await
    .unwrap();
    let e = alice.read_ticket(ticket).await.unwrap_err();
    assert_eq!(code(&e), Code::PermissionDenied, "{e}");
    server.stop().await;
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated() {
    use base64::Engine;
    let Some(server) = demo().await else { return };
    let good = server.token("alice");
    let parts: Vec<&str> = good.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let alg_none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    let wrong_key = {
        let claims: serde_json::Value =
            serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&[7u8; 32]),
        )
        .unwrap()
    };
    let secret = std::fs::read_to_string(server.dir.path().join("jwt.secret")).unwrap();
    let sign = |claims: serde_json::Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.trim().as_bytes()),
        )
        .unwrap()
    };
    let now = chrono_now();
    let expired = sign(
        serde_json::json!({"iss": "veil-demo", "sub": "alice", "aud": "veil", "iat": now - 7200, "exp": now - 3600}),
    );
    let wrong_aud = sign(
        serde_json::json!({"iss": "veil-demo", "sub": "alice", "aud": "other", "iat": now, "exp": now + 60}),
    );
    let wrong_iss = sign(
        serde_json::json!({"iss": "evil", "sub": "alice", "aud": "veil", "iat": now, "exp": now + 60}),
    );
    let too_long = sign(
        serde_json::json!({"iss": "veil-demo", "sub": "alice", "aud": "veil", "iat": now, "exp": now + 30 * 86400}),
    );
    let no_exp =
        sign(serde_json::json!({"iss": "veil-demo", "sub": "alice", "aud": "veil", "iat": now}));
    assert!(server.connect_token(&sign(serde_json::json!({"iss": "veil-demo", "sub": "alice", "aud": "veil", "iat": now, "exp": now + 60}))).await.list_datasets().await.is_ok());
    for (what, token) in [
        ("alg none", alg_none),
        ("wrong key", wrong_key),
        ("expired", expired),
        ("wrong audience", wrong_aud),
        ("wrong issuer", wrong_iss),
        ("too long lifetime", too_long),
        ("no exp", no_exp),
        ("garbage", "not-a-jwt".into()),
        ("empty", String::new()),
    ] {
        let conn = server.connect_token(&token).await;
        let e = conn.list_datasets().await.unwrap_err();
        assert_eq!(code(&e), Code::Unauthenticated, "{what}: {e}");
        let e = conn
            .scan("clinical.sites", Scan::default())
            .await
            .unwrap_err();
        assert_eq!(code(&e), Code::Unauthenticated, "{what}");
    }
    server.stop().await;
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn malformed_requests_get_precise_errors_and_no_panic() {
    let Some(server) = demo().await else { return };
    let alice = server.connect("alice").await;
    let cases = [
        FlightDescriptor::new_cmd(b"\xff\xfe garbage".to_vec()),
        FlightDescriptor::new_cmd(
            veil_proto::Any {
                type_url: "type.googleapis.com/other.Thing".into(),
                value: vec![1, 2],
            }
            .encode_to_vec(),
        ),
        FlightDescriptor::new_cmd(
            veil_proto::Any {
                type_url: "type.googleapis.com/veil.v1.ScanCommand".into(),
                value: vec![0xff, 0xff],
            }
            .encode_to_vec(),
        ),
        FlightDescriptor::new_path(vec![]),
        FlightDescriptor::new_path(vec!["a".into(), "b".into(), "c".into()]),
    ];
    for d in cases {
        let e = alice.flight_info(d).await.unwrap_err();
        assert_eq!(code(&e), Code::InvalidArgument, "{e}");
    }
    for filter in [
        "",
        "age >",
        "age > 1; DROP TABLE x",
        &"(".repeat(5000),
        "nope = 1",
    ] {
        let r = alice
            .scan(
                "clinical.trials",
                Scan {
                    filter: Some(filter.to_string()),
                    limit: Some(1),
                    ..Default::default()
                },
            )
            .await;
        if filter.is_empty() {
            assert!(r.is_ok());
        } else {
            assert_eq!(code(&r.unwrap_err()), Code::InvalidArgument, "{filter:.20}");
        }
    }
    let deep = format!("SELECT {}1{} AS x", "(".repeat(3000), ")".repeat(3000));
    assert_eq!(
        code(&alice.sql(&deep).await.unwrap_err()),
        Code::InvalidArgument
    );
    let e = alice.action("veil.nope", vec![]).await.unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument);
    let e = alice
        .action(veil_proto::actions::DESCRIBE, vec![0xff, 0xff, 0xff])
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument);
    // The server is still healthy.
    assert!(alice.list_datasets().await.is_ok());
    // Malformed descriptors are audited like any other refused request.
    let dave = server.connect("dave").await;
    let events = dave
        .action(
            veil_proto::actions::AUDIT_TAIL,
            veil_proto::AuditTailRequest { limit: 500 }.encode_to_vec(),
        )
        .await
        .unwrap();
    let refused_plans = events
        .iter()
        .map(|b| serde_json::from_slice::<serde_json::Value>(b).unwrap())
        .filter(|e| {
            e["subject"] == "alice" && e["action"] == "plan" && e["status"] == "invalid_argument"
        })
        .count();
    assert!(
        refused_plans >= 5,
        "every malformed descriptor is audited: {refused_plans}"
    );
    server.stop().await;
}

#[tokio::test]
async fn long_and_deep_expressions_are_refused_without_crashing() {
    let Some(server) = demo().await else { return };
    let carol = server.connect("carol").await;
    let chain = vec!["1"; 5000].join("+");
    let e = carol
        .sql(&format!("SELECT {chain} AS x"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");
    let ors = vec!["beds = 1"; 3000].join(" OR ");
    let e = carol
        .scan("clinical.sites", Scan::default().with_filter(ors))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");
    let huge = format!("SELECT '{}' AS x", "y".repeat(300 * 1024));
    assert_eq!(
        code(&carol.sql(&huge).await.unwrap_err()),
        Code::InvalidArgument
    );
    // Set-operation and join chains, and huge CASEs, are bounded too.
    let unions = vec!["SELECT 1 AS x"; 7000].join(" UNION ALL ");
    assert_eq!(
        code(&carol.sql(&unions).await.unwrap_err()),
        Code::InvalidArgument
    );
    let joins: String = (1..300)
        .map(|i| format!(" JOIN clinical.sites s{i} ON s{i}.state = s0.state"))
        .collect();
    let e = carol
        .sql(&format!(
            "SELECT count(*) AS n FROM clinical.sites s0{joins}"
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument);
    let case: String = (0..2500)
        .map(|i| format!(" WHEN beds = {i} THEN true"))
        .collect();
    let e = carol
        .scan(
            "clinical.sites",
            Scan::default().with_filter(format!("CASE{case} END")),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument);
    // A long but legitimate query (over 64 KiB) plans and reads.
    let long_in: String = (0..12000)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let out = carol
        .sql(&format!(
            "SELECT count(*) AS n FROM clinical.sites WHERE beds IN ({long_in})"
        ))
        .await
        .unwrap();
    assert_eq!(strings(&out, "n"), vec![Some("10".to_string())]);
    // Functions whose output size an argument chooses are capped.
    for sql in [
        "SELECT length(repeat('x', 2147483647)) AS n",
        "SELECT length(lpad('x', 2147483647)) AS n",
        "SELECT length(rpad(site, 100000000)) AS n FROM clinical.sites",
        "SELECT length(repeat(site, beds * 1000000)) AS n FROM clinical.sites",
    ] {
        let e = carol.sql(sql).await.unwrap_err();
        assert_eq!(code(&e), Code::ResourceExhausted, "{sql}: {e}");
        assert!(e.to_string().contains("MiB"), "{sql}: {e}");
    }
    let out = carol
        .sql("SELECT length(repeat(site, 3)) AS n, lpad(state, 4, '*') AS p FROM clinical.sites")
        .await
        .unwrap();
    assert_eq!(strings(&out, "p")[0].as_deref().map(str::len), Some(4));
    // Reasonable queries still work, and the server is alive.
    let ok = vec!["1"; 50].join("+");
    assert!(carol.sql(&format!("SELECT {ok} AS x")).await.is_ok());
    assert!(carol.list_datasets().await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn dataset_names_resolve_case_insensitively_with_parts_applied() {
    let Some(server) = demo().await else { return };
    let alice = server.connect("alice").await;
    let cols = Scan {
        columns: vec!["participant_id".into()],
        ..Default::default()
    };
    let lower = row_count(&alice.scan("clinical.trials", cols.clone()).await.unwrap());
    let mixed = row_count(&alice.scan("CLINICAL.Trials", cols).await.unwrap());
    assert_eq!(
        lower, mixed,
        "each endpoint reads its own part, whatever the case"
    );
    server.stop().await;
}
