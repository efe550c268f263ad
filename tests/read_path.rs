//! The governed read path as the demo's users experience it, over a real
//! Flight connection on 127.0.0.1.

use arrow::datatypes::DataType;
use arrow_flight::FlightDescriptor;
use std::collections::BTreeSet;
use veil_client::Scan;
use veil_tests::{TestServer, row_count, strings};

fn ids(batches: &[arrow::record_batch::RecordBatch]) -> Vec<i64> {
    let mut v: Vec<i64> = strings(batches, "participant_id")
        .into_iter()
        .map(|s| s.unwrap().parse().unwrap())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn analysts_see_masked_values_and_only_their_state() {
    let server = TestServer::demo().await;
    let raw = veil_tests::raw_trials();
    let raw_ca = strings(&raw, "state")
        .iter()
        .filter(|s| s.as_deref() == Some("CA"))
        .count();

    let alice = server.connect("alice").await;
    let batches = alice
        .scan("clinical.trials", Scan::default())
        .await
        .unwrap();
    assert_eq!(
        row_count(&batches),
        raw_ca,
        "alice sees exactly the CA rows"
    );
    assert!(
        strings(&batches, "state")
            .iter()
            .all(|s| s.as_deref() == Some("CA"))
    );
    let raw_ssns: BTreeSet<_> = strings(&raw, "ssn").into_iter().collect();
    for ssn in strings(&batches, "ssn") {
        let ssn = ssn.unwrap();
        assert_eq!(ssn.len(), 32, "hashed");
        assert!(!raw_ssns.contains(&Some(ssn)));
    }
    assert!(
        strings(&batches, "ip_address")
            .iter()
            .all(|s| s.as_deref() == Some("0.0.0.0"))
    );
    assert!(
        strings(&batches, "date_of_birth")
            .iter()
            .all(Option::is_none)
    );
    // The same value hashes alike within the dataset: names repeat.
    let names: BTreeSet<_> = strings(&batches, "name").into_iter().collect();
    assert!(
        names.len() <= 144,
        "12 x 12 distinct names hash to at most 144 values"
    );

    let bob = server.connect("bob").await;
    let all = bob.scan("clinical.trials", Scan::default()).await.unwrap();
    assert_eq!(
        row_count(&all),
        veil::demo::DEMO_ROWS,
        "privileged sees every row"
    );
    let bob_ssns: BTreeSet<_> = strings(&all, "ssn").into_iter().collect();
    assert_eq!(bob_ssns, raw_ssns, "privileged sees raw values");

    let erin = server.connect("erin").await;
    assert_eq!(
        row_count(&erin.scan("clinical.trials", Scan::default()).await.unwrap()),
        0,
        "no state attribute, no rows"
    );
    server.stop().await;
}

#[tokio::test]
async fn unsubscribed_users_cannot_tell_the_dataset_exists() {
    let server = TestServer::demo().await;
    let carol = server.connect("carol").await;
    assert_eq!(
        carol.list_datasets().await.unwrap(),
        vec!["clinical.sites".to_string()]
    );
    let hidden = carol
        .scan("clinical.trials", Scan::default())
        .await
        .unwrap_err();
    let missing = carol
        .scan("clinical.nothing", Scan::default())
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Some(tonic::Code::NotFound));
    let (veil_client::ClientError::Status(h), veil_client::ClientError::Status(m)) =
        (hidden, missing)
    else {
        panic!()
    };
    assert_eq!(
        h.message().replace("trials", "X"),
        m.message().replace("nothing", "X"),
        "same answer, byte for byte"
    );
    let hidden = carol.describe("clinical.trials").await.unwrap_err();
    assert_eq!(hidden.code(), Some(tonic::Code::NotFound));
    // Path descriptors and SQL give the same answer.
    let e = carol
        .flight_info(FlightDescriptor::new_path(vec![
            "clinical".into(),
            "trials".into(),
        ]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::NotFound));
    let e = carol
        .sql("SELECT count(*) FROM clinical.trials")
        .await
        .unwrap_err();
    let m = carol
        .sql("SELECT count(*) FROM clinical.nothing")
        .await
        .unwrap_err();
    assert_eq!(e.code(), m.code());
    assert_eq!(
        e.to_string().replace("trials", "X"),
        m.to_string().replace("nothing", "X")
    );
    server.stop().await;
}

#[tokio::test]
async fn endpoints_split_the_scan_and_their_union_is_the_whole() {
    let server = TestServer::demo().await;
    let bob = server.connect("bob").await;
    let info = bob
        .scan_info("clinical.trials", &Scan::default())
        .await
        .unwrap();
    assert!(
        info.endpoint.len() >= 3,
        "120k rows at 40k per endpoint: {} endpoints",
        info.endpoint.len()
    );
    assert_eq!(
        info.total_records,
        veil::demo::DEMO_ROWS as i64,
        "no row policy for bob: exact count"
    );
    let mut union = Vec::new();
    for ep in &info.endpoint {
        let ticket = ep.ticket.clone().unwrap();
        let first = bob.read_ticket(ticket.clone()).await.unwrap();
        let retry = bob.read_ticket(ticket).await.unwrap();
        assert_eq!(
            ids(&first),
            ids(&retry),
            "a retried DoGet returns the same rows"
        );
        union.extend(ids(&first));
    }
    union.sort();
    let single = bob
        .sql("SELECT participant_id FROM clinical.trials")
        .await
        .unwrap();
    assert_eq!(
        union,
        ids(&single),
        "the union of all endpoints equals a single-endpoint read"
    );
    assert_eq!(union.len(), veil::demo::DEMO_ROWS);

    // With a row policy, the count is unknown up front.
    let alice = server.connect("alice").await;
    let info = alice
        .scan_info("clinical.trials", &Scan::default())
        .await
        .unwrap();
    assert_eq!(info.total_records, -1);
    server.stop().await;
}

#[tokio::test]
async fn scan_columns_filter_limit_and_schema() {
    let server = TestServer::demo().await;
    let alice = server.connect("alice").await;
    let scan = Scan {
        columns: vec!["participant_id".into(), "ssn".into(), "age".into()],
        filter: Some("age > 80".into()),
        limit: None,
    };
    let batches = alice.scan("clinical.trials", scan).await.unwrap();
    assert!(row_count(&batches) > 0);
    let schema = batches[0].schema();
    assert_eq!(schema.fields().len(), 3);
    assert_eq!(
        schema.field_with_name("ssn").unwrap().data_type(),
        &DataType::Utf8,
        "Utf8, never Utf8View"
    );
    assert!(
        strings(&batches, "age")
            .iter()
            .all(|a| a.as_ref().unwrap().parse::<i32>().unwrap() > 80)
    );
    let limited = alice
        .scan("clinical.trials", Scan::default().with_limit(7))
        .await
        .unwrap();
    assert_eq!(row_count(&limited), 7);
    let info = alice
        .flight_info(veil_client::scan_descriptor(
            "clinical.trials",
            &Scan::default().with_limit(7),
        ))
        .await
        .unwrap();
    assert_eq!(info.endpoint.len(), 1, "a limit is served by one endpoint");
    for f in info.clone().try_decode_schema().unwrap().fields() {
        assert!(!matches!(
            f.data_type(),
            DataType::Utf8View | DataType::BinaryView
        ));
    }
    let schema = alice
        .schema(veil_client::scan_descriptor(
            "clinical.trials",
            &Scan::default(),
        ))
        .await
        .unwrap();
    let read = alice
        .scan("clinical.trials", Scan::default().with_limit(1))
        .await
        .unwrap();
    assert_eq!(
        schema.fields(),
        read[0].schema().fields(),
        "GetSchema is the schema DoGet sends"
    );
    assert_eq!(
        schema.field_with_name("ssn").unwrap().data_type(),
        &DataType::Utf8
    );
    let bob_schema = server
        .connect("bob")
        .await
        .schema(veil_client::scan_descriptor(
            "clinical.trials",
            &Scan::default(),
        ))
        .await
        .unwrap();
    assert_eq!(
        bob_schema
            .field_with_name("date_of_birth")
            .unwrap()
            .data_type(),
        &DataType::Date32,
        "unmasked for bob"
    );
    let desc = alice.describe("clinical.trials").await.unwrap();
    let ssn = desc.columns.iter().find(|c| c.name == "ssn").unwrap();
    assert_eq!(ssn.mask, "hash");
    assert_eq!(ssn.data_type, "Utf8");
    assert!(ssn.tags.contains(&"PII.ssn".to_string()));
    assert!(desc.rows_filtered);
    let unknown = alice
        .scan(
            "clinical.trials",
            Scan {
                columns: vec!["nope".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Some(tonic::Code::InvalidArgument));
    server.stop().await;
}

#[tokio::test]
async fn sql_joins_and_aggregates_across_readable_datasets() {
    let server = TestServer::demo().await;
    let alice = server.connect("alice").await;
    let out = alice
        .sql("SELECT s.site, count(*) AS n FROM clinical.trials t JOIN clinical.sites s ON t.state = s.state GROUP BY s.site")
        .await
        .unwrap();
    assert_eq!(
        strings(&out, "site"),
        vec![Some("CA University Hospital".to_string())],
        "only CA rows join"
    );
    let carol = server.connect("carol").await;
    let sites = carol
        .sql("SELECT count(*) AS n FROM clinical.sites")
        .await
        .unwrap();
    assert_eq!(strings(&sites, "n"), vec![Some("10".to_string())]);
    server.stop().await;
}

/// A direct read (README, "Direct reads"): a `DoGet` whose ticket carries
/// the command answers exactly as `GetFlightInfo` then `DoGet`, audited as
/// a read; one in several parts is declined and `sql` falls back; what a
/// caller may not read answers as what doesn't exist; a malformed command
/// is refused and audited.
#[tokio::test]
async fn direct_reads_answer_as_two_calls_do() {
    use veil_client::{ClientError, sql_descriptor};
    let server = TestServer::demo().await;
    let alice = server.connect("alice").await;
    for query in [
        "SELECT state, count(*) AS n FROM clinical.trials GROUP BY state ORDER BY state",
        "SELECT participant_id, ssn FROM clinical.trials ORDER BY participant_id LIMIT 50",
    ] {
        let cmd = sql_descriptor(query).cmd;
        let direct = alice.read_direct(&cmd).await.unwrap();
        let info = alice.flight_info(sql_descriptor(query)).await.unwrap();
        assert_eq!(info.endpoint.len(), 1, "{query}");
        let two_calls = alice.read_all(info).await.unwrap();
        assert!(row_count(&direct) > 0, "{query}");
        assert_eq!(
            arrow::compute::concat_batches(&direct[0].schema(), &direct).unwrap(),
            arrow::compute::concat_batches(&two_calls[0].schema(), &two_calls).unwrap(),
            "{query}"
        );
    }
    // alice's row policy and masks hold on the direct path.
    let mine = alice
        .read_direct(&sql_descriptor("SELECT state, ssn FROM clinical.trials LIMIT 1000000").cmd)
        .await
        .unwrap();
    assert!(
        strings(&mine, "state")
            .iter()
            .all(|s| s.as_deref() == Some("CA"))
    );
    let raw_ssns: BTreeSet<Option<String>> = strings(&veil_tests::raw_trials(), "ssn")
        .into_iter()
        .collect();
    assert!(
        strings(&mine, "ssn").iter().all(|s| !raw_ssns.contains(s)),
        "no raw ssn through a direct read"
    );

    // Several parts: declined, and `sql` reads the endpoints instead.
    let bob = server.connect("bob").await;
    let query = "SELECT participant_id FROM clinical.trials";
    match bob.read_direct(&sql_descriptor(query).cmd).await {
        Err(ClientError::Status(s)) => {
            assert_eq!(s.code(), tonic::Code::FailedPrecondition, "{s:?}");
            assert!(s.message().starts_with("[READ_IN_PARTS]"), "{s:?}");
        }
        other => panic!("a read in parts is declined: {other:?}"),
    }
    let all = bob.sql(query).await.unwrap();
    assert_eq!(ids(&all).len(), veil::demo::DEMO_ROWS);

    // carol may not read clinical.trials: it answers as a name that
    // exists nowhere.
    let carol = server.connect("carol").await;
    let mut answers = Vec::new();
    for name in ["clinical.trials", "clinical.nothing"] {
        let cmd = sql_descriptor(&format!("SELECT count(*) FROM {name}")).cmd;
        match carol.read_direct(&cmd).await {
            Err(ClientError::Status(s)) => answers.push((s.code(), s.message().replace(name, "X"))),
            other => panic!("{name}: {other:?}"),
        }
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0].0, tonic::Code::NotFound);

    // A malformed command: refused, audited.
    for body in [&b""[..], b"\x00\x01garbage"] {
        match alice.read_direct(body).await {
            Err(ClientError::Status(s)) => {
                assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
                assert!(s.message().contains("unknown command"), "{s:?}");
            }
            other => panic!("a malformed direct ticket is refused: {other:?}"),
        }
    }
    let dave = server.connect("dave").await;
    let audit = dave.audit_tail(200).await.unwrap();
    let has = |needle: &str| audit.iter().filter(|e| e.contains(needle)).count();
    assert!(
        audit
            .iter()
            .filter(|e| e.contains("\"invalid_argument\"") && e.contains("unknown command"))
            .count()
            >= 2,
        "{audit:?}"
    );
    assert!(has("direct read declined: ") >= 1, "{audit:?}");
    assert!(
        audit.iter().any(|e| e.contains("\"read.start\"")
            && e.contains("direct read ")
            && e.contains("\"alice\"")),
        "{audit:?}"
    );
    server.stop().await;
}
