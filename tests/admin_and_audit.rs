//! Who may call which action, what gets audited, and what happens when the
//! audit can't be written.

use prost::Message;
use tonic::Code;
use veil_client::{ClientError, Connection, Scan};
use veil_proto::*;
use veil_tests::{TestServer, row_count, strings};

fn code(e: &ClientError) -> Code {
    e.code()
        .unwrap_or_else(|| panic!("expected a status, got {e}"))
}

fn user(subject: &str) -> Option<UserRef> {
    Some(UserRef {
        issuer: String::new(),
        subject: subject.into(),
    })
}

async fn audit_events(dave: &Connection) -> Vec<serde_json::Value> {
    dave.action(
        actions::AUDIT_TAIL,
        AuditTailRequest { limit: 500 }.encode_to_vec(),
    )
    .await
    .unwrap()
    .iter()
    .map(|b| serde_json::from_slice(b).unwrap())
    .collect()
}

fn policy_body(json: &str) -> Vec<u8> {
    PolicyWriteRequest {
        spec_json: json.into(),
        expected_version: 0,
    }
    .encode_to_vec()
}

/// The permission table: each action, a body, and whether alice (an analyst
/// with no permissions) and dave (owner, all permissions) may call it.
#[tokio::test]
async fn each_action_checks_its_permission_and_is_audited() {
    let server = TestServer::demo().await;
    let data = server.dir.path().join("data");
    std::fs::create_dir_all(data.join("extra")).unwrap();
    std::fs::write(
        data.join("extra/people.json"),
        "{\"id\": 1, \"email\": \"a@x.com\"}\n{\"id\": 2, \"email\": \"b@x.com\"}\n",
    )
    .unwrap();
    let register = RegisterDatasetRequest {
        name: "extra.people".into(),
        format: "json".into(),
        location: data.join("extra/people.json").display().to_string(),
        ..Default::default()
    };
    type Row<'a> = (&'a str, Vec<u8>, Option<Code>, Option<Code>);
    let table: Vec<Row> = vec![
        (actions::WHOAMI, vec![], None, None),
        (
            actions::SEARCH,
            veil_proto::SearchRequest {
                query: "ssn".into(),
                limit: 0,
            }
            .encode_to_vec(),
            None,
            None,
        ),
        (
            actions::DESCRIBE,
            DescribeRequest {
                dataset: "clinical.trials".into(),
            }
            .encode_to_vec(),
            None,
            None,
        ),
        (
            actions::REGISTER_DATASET,
            register.encode_to_vec(),
            Some(Code::PermissionDenied),
            None,
        ),
        (
            actions::SET_DESCRIPTION,
            SetDescriptionRequest {
                dataset: "clinical.trials".into(),
                column: "age".into(),
                description: "Age in years".into(),
            }
            .encode_to_vec(),
            Some(Code::PermissionDenied),
            None,
        ),
        (
            actions::SET_COLUMN_TAGS,
            SetColumnTagsRequest {
                dataset: "clinical.trials".into(),
                column: "age".into(),
                tags: vec!["PII.age".into()],
            }
            .encode_to_vec(),
            Some(Code::PermissionDenied),
            None,
        ),
        (
            actions::SET_EXPERTS,
            SetExpertsRequest {
                dataset: "clinical.trials".into(),
                experts: user("erin").into_iter().collect(),
            }
            .encode_to_vec(),
            Some(Code::PermissionDenied),
            // Declared in the config file: named there.
            Some(Code::FailedPrecondition),
        ),
        (
            actions::ACCELERATE,
            veil_proto::AccelerateRequest {
                dataset: "clinical.trials".into(),
                max_staleness_secs: 60,
                ..Default::default()
            }
            .encode_to_vec(),
            Some(Code::PermissionDenied),
            // Declared in the config file (and files, not a database).
            Some(Code::FailedPrecondition),
        ),
        (
            actions::REFRESH,
            veil_proto::RefreshRequest {
                dataset: "clinical.trials".into(),
            }
            .encode_to_vec(),
            Some(Code::PermissionDenied),
            // Not accelerated.
            Some(Code::FailedPrecondition),
        ),
        (
            actions::DP_BUDGET,
            veil_proto::DpBudgetRequest {
                dataset: "clinical.trials".into(),
            }
            .encode_to_vec(),
            // Anyone may ask; the demo's trials have no DP policy.
            Some(Code::FailedPrecondition),
            Some(Code::FailedPrecondition),
        ),
        (
            actions::DISCOVER,
            DiscoverRequest {
                dataset: "clinical.trials".into(),
                sample_rows: 200,
                min_confidence: 0,
            }
            .encode_to_vec(),
            Some(Code::PermissionDenied),
            None,
        ),
        (
            actions::DECIDE_TAG_PROPOSAL,
            DecideTagProposalRequest {
                dataset: "clinical.trials".into(),
                column: "state".into(),
                tag: "PII.nothing".into(),
                accept: true,
                tag_as: String::new(),
            }
            .encode_to_vec(),
            Some(Code::PermissionDenied),
            // No such proposal is pending.
            Some(Code::NotFound),
        ),
        (
            actions::SET_USER_DISABLED,
            SetUserDisabledRequest {
                user: user("erin"),
                disabled: false,
            }
            .encode_to_vec(),
            Some(Code::PermissionDenied),
            None,
        ),
        (
            actions::GRANT_PERMISSION,
            PermissionRequest {
                user: user("erin"),
                permission: "AUDIT".into(),
            }
            .encode_to_vec(),
            Some(Code::PermissionDenied),
            None,
        ),
        (
            actions::REVOKE_PERMISSION,
            PermissionRequest {
                user: user("erin"),
                permission: "AUDIT".into(),
            }
            .encode_to_vec(),
            Some(Code::PermissionDenied),
            None,
        ),
        (
            actions::AUDIT_TAIL,
            AuditTailRequest { limit: 5 }.encode_to_vec(),
            Some(Code::PermissionDenied),
            None,
        ),
        (
            actions::PUT_USER,
            PutUserRequest {
                user: user("frank"),
                groups: vec!["analysts".into()],
                attributes: vec![],
            }
            .encode_to_vec(),
            Some(Code::PermissionDenied),
            None,
        ),
        (
            actions::LIST_USERS,
            ListUsersRequest {}.encode_to_vec(),
            Some(Code::PermissionDenied),
            None,
        ),
        (
            actions::DELETE_USER,
            DeleteUserRequest {
                user: user("frank"),
            }
            .encode_to_vec(),
            Some(Code::PermissionDenied),
            None,
        ),
        (
            actions::RELOAD,
            ReloadRequest {}.encode_to_vec(),
            Some(Code::PermissionDenied),
            None,
        ),
        (
            actions::CREATE_POLICY,
            policy_body(
                r#"{"name": "t", "dataset": "clinical.trials", "columns": ["amount"], "mask": "null"}"#,
            ),
            Some(Code::PermissionDenied),
            None,
        ),
        (
            actions::UPDATE_POLICY,
            policy_body(
                r#"{"name": "t", "dataset": "clinical.trials", "columns": ["amount"], "mask": {"round": {"digits": -1}}}"#,
            ),
            Some(Code::PermissionDenied),
            None,
        ),
        (
            actions::LIST_POLICIES,
            ListPoliciesRequest::default().encode_to_vec(),
            None,
            None,
        ),
        (
            actions::EXPLAIN,
            ExplainRequest {
                user: user("erin"),
                dataset: "clinical.trials".into(),
                ..Default::default()
            }
            .encode_to_vec(),
            Some(Code::PermissionDenied),
            None,
        ),
        (
            actions::PROFILE_K_ANONYMITY,
            ProfileKAnonymityRequest {
                dataset: "clinical.trials".into(),
                columns: vec!["age".into()],
            }
            .encode_to_vec(),
            Some(Code::PermissionDenied),
            None,
        ),
        (
            actions::REQUEST_UNMASK,
            RequestUnmaskRequest::default().encode_to_vec(),
            Some(Code::InvalidArgument),
            Some(Code::InvalidArgument),
        ),
        (
            actions::APPROVE_UNMASK,
            DecideAccessRequest {
                request_id: "nope".into(),
                note: String::new(),
            }
            .encode_to_vec(),
            Some(Code::NotFound),
            Some(Code::NotFound),
        ),
        (
            actions::DENY_UNMASK,
            DecideAccessRequest {
                request_id: "nope".into(),
                note: String::new(),
            }
            .encode_to_vec(),
            Some(Code::NotFound),
            Some(Code::NotFound),
        ),
        (
            actions::LIST_UNMASK_REQUESTS,
            ListAccessRequestsRequest::default().encode_to_vec(),
            None,
            None,
        ),
        (
            actions::UNMASK_RESULT,
            UnmaskResultRequest {
                request_id: "nope".into(),
            }
            .encode_to_vec(),
            Some(Code::NotFound),
            Some(Code::NotFound),
        ),
        (
            actions::DELETE_POLICY,
            DeletePolicyRequest {
                name: "t".into(),
                expected_version: 0,
            }
            .encode_to_vec(),
            // Not a policy alice can list (she owns nothing): it answers
            // like a missing one.
            Some(Code::NotFound),
            None,
        ),
        (
            actions::REQUEST_ACCESS,
            RequestAccessRequest {
                dataset: "clinical.trials".into(),
                reason: "r".into(),
            }
            .encode_to_vec(),
            Some(Code::FailedPrecondition),
            Some(Code::FailedPrecondition),
        ),
        (
            actions::APPROVE_ACCESS,
            DecideAccessRequest {
                request_id: "nope".into(),
                note: String::new(),
            }
            .encode_to_vec(),
            Some(Code::NotFound),
            Some(Code::NotFound),
        ),
        (
            actions::DENY_ACCESS,
            DecideAccessRequest {
                request_id: "nope".into(),
                note: String::new(),
            }
            .encode_to_vec(),
            Some(Code::NotFound),
            Some(Code::NotFound),
        ),
        (
            actions::LIST_ACCESS_REQUESTS,
            ListAccessRequestsRequest::default().encode_to_vec(),
            None,
            None,
        ),
        (
            actions::REVOKE_ACCESS,
            RevokeAccessRequest {
                dataset: "clinical.trials".into(),
                user: user("bob"),
                note: String::new(),
            }
            .encode_to_vec(),
            Some(Code::NotFound),
            Some(Code::NotFound),
        ),
        (
            actions::DROP_DATASET,
            DropDatasetRequest {
                name: "extra.people".into(),
            }
            .encode_to_vec(),
            Some(Code::NotFound),
            None,
        ),
    ];
    let alice = server.connect("alice").await;
    let dave = server.connect("dave").await;
    let pinned: Vec<&str> = table.iter().map(|r| r.0).collect();
    for (listed, _) in dave.list_actions().await.unwrap() {
        if veil::flight::sql::ACTIONS.contains(&listed.as_str()) {
            // Flight SQL's protocol actions: tests/flight_sql.rs.
            continue;
        }
        assert!(
            pinned.contains(&listed.as_str()),
            "{listed} is offered but missing from this permission table"
        );
    }
    for (name, body, for_alice, for_dave) in table {
        let a = alice.action(name, body.clone()).await;
        assert_eq!(
            a.as_ref().err().map(code),
            for_alice,
            "alice calling {name}: {a:?}"
        );
        let d = dave.action(name, body).await;
        assert_eq!(
            d.as_ref().err().map(code),
            for_dave,
            "dave calling {name}: {d:?}"
        );
    }
    // Denials are in the audit, with who and what.
    let events = audit_events(&dave).await;
    let denied: Vec<_> = events
        .iter()
        .filter(|e| e["subject"] == "alice" && e["status"] == "permission_denied")
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    for a in [
        "admin.register_dataset",
        "admin.grant_permission",
        "admin.audit_tail",
        "admin.set_user_disabled",
        "admin.put_user",
        "admin.list_users",
        "admin.reload",
    ] {
        assert!(
            denied.iter().any(|d| d == a),
            "{a} denial audited: {denied:?}"
        );
    }
    assert!(events.iter().any(|e| e["subject"] == "dave"
        && e["action"] == "admin.register_dataset"
        && e["status"] == "ok"));
    // Tagging age PII.age brought the global hash policy into force, and the
    // reload in the table kept that runtime tag.
    let out = alice
        .scan(
            "clinical.trials",
            Scan {
                columns: vec!["age".into()],
                limit: Some(3),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(
        strings(&out, "age")
            .iter()
            .all(|d| d.as_ref().unwrap().len() == 32)
    );
    // What the config file describes is read-only at run time.
    let e = dave
        .action(
            actions::SET_COLUMN_TAGS,
            SetColumnTagsRequest {
                dataset: "clinical.trials".into(),
                column: "ssn".into(),
                tags: vec![],
            }
            .encode_to_vec(),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::FailedPrecondition, "{e}");
    assert!(e.to_string().contains("config file"), "{e}");
    server.stop().await;
}

#[tokio::test]
async fn registered_datasets_are_owner_only_confined_and_drift_safe() {
    let server = TestServer::demo().await;
    let data = server.dir.path().join("data");
    let dave = server.connect("dave").await;
    let alice = server.connect("alice").await;

    // A hive-partitioned parquet folder.
    let events = data.join("events");
    for (year, rows) in [("2024", 3usize), ("2025", 2)] {
        let dir = events.join(format!("year={year}"));
        std::fs::create_dir_all(&dir).unwrap();
        veil::demo::write_trials(&dir.join("part-0.parquet"), rows).unwrap();
    }
    let req = RegisterDatasetRequest {
        name: "ops.events".into(),
        format: "parquet".into(),
        location: events.display().to_string(),
        hive_partitioned: true,
        ..Default::default()
    };
    dave.action(actions::REGISTER_DATASET, req.encode_to_vec())
        .await
        .unwrap();
    let out = dave
        .scan(
            "ops.events",
            Scan {
                columns: vec!["participant_id".into(), "year".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(row_count(&out), 5);
    let mut years = strings(&out, "year");
    years.sort();
    assert_eq!(
        years
            .iter()
            .filter(|y| y.as_deref() == Some("2024"))
            .count(),
        3
    );
    let filtered = dave
        .scan("ops.events", Scan::default().with_filter("year = '2025'"))
        .await
        .unwrap();
    assert_eq!(row_count(&filtered), 2);
    // Readable by its owner only until a subscription policy opens it.
    assert_eq!(
        code(&alice.scan("ops.events", Scan::default()).await.unwrap_err()),
        Code::NotFound
    );
    assert!(
        !alice
            .list_datasets()
            .await
            .unwrap()
            .contains(&"ops.events".to_string())
    );

    // Schema drift: a new file with an extra column is read, the column is not.
    let drift = events.join("year=2026");
    std::fs::create_dir_all(&drift).unwrap();
    {
        use arrow::array::{ArrayRef, StringArray};
        let base = veil::demo::trials_batch(4, 7);
        let mut fields: Vec<_> = base.schema().fields().iter().cloned().collect();
        fields.push(std::sync::Arc::new(arrow::datatypes::Field::new(
            "secret_notes",
            arrow::datatypes::DataType::Utf8,
            false,
        )));
        let mut cols: Vec<ArrayRef> = base.columns().to_vec();
        cols.push(std::sync::Arc::new(StringArray::from(vec![
            "s1", "s2", "s3", "s4",
        ])));
        let batch = arrow::record_batch::RecordBatch::try_new(
            std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
            cols,
        )
        .unwrap();
        let file = std::fs::File::create(drift.join("part-0.parquet")).unwrap();
        let mut w = datafusion_parquet_writer(file, batch.schema());
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
    let out = dave.scan("ops.events", Scan::default()).await.unwrap();
    assert_eq!(row_count(&out), 9);
    assert!(
        out[0].schema().field_with_name("secret_notes").is_err(),
        "drifted column is not served"
    );
    let e = dave
        .scan(
            "ops.events",
            Scan {
                columns: vec!["secret_notes".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument);
    let e = dave
        .sql("SELECT secret_notes FROM ops.events")
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument);

    // Locations outside the roots, and reserved names, are refused.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("x.csv"), "a,b\n1,2\n").unwrap();
    for (name, location, want) in [
        (
            "ops.outside",
            outside.path().join("x.csv").display().to_string(),
            Code::PermissionDenied,
        ),
        (
            "ops.dotdot",
            format!("{}/../../etc/passwd", data.display()),
            Code::PermissionDenied,
        ),
        (
            "veil.audit",
            events.display().to_string(),
            Code::InvalidArgument,
        ),
        (
            "ops.events",
            events.display().to_string(),
            Code::AlreadyExists,
        ),
    ] {
        let req = RegisterDatasetRequest {
            name: name.into(),
            format: "parquet".into(),
            location,
            hive_partitioned: true,
            ..Default::default()
        };
        let e = dave
            .action(actions::REGISTER_DATASET, req.encode_to_vec())
            .await
            .unwrap_err();
        assert!(
            code(&e) == want || (name == "ops.dotdot" && code(&e) == Code::InvalidArgument),
            "{name}: {e}"
        );
    }
    // CSV with a header, registered and read back.
    std::fs::write(data.join("costs.csv"), "site,cost\nA,10\nB,20\n").unwrap();
    let req = RegisterDatasetRequest {
        name: "ops.costs".into(),
        format: "csv".into(),
        location: data.join("costs.csv").display().to_string(),
        ..Default::default()
    };
    dave.action(actions::REGISTER_DATASET, req.encode_to_vec())
        .await
        .unwrap();
    let out = dave
        .sql("SELECT sum(cost) AS total FROM ops.costs")
        .await
        .unwrap();
    assert_eq!(strings(&out, "total"), vec![Some("30".to_string())]);
    dave.action(
        actions::DROP_DATASET,
        DropDatasetRequest {
            name: "ops.costs".into(),
        }
        .encode_to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(
        code(&dave.sql("SELECT * FROM ops.costs").await.unwrap_err()),
        Code::NotFound
    );
    server.stop().await;
}

fn datafusion_parquet_writer(
    file: std::fs::File,
    schema: arrow::datatypes::SchemaRef,
) -> veil_tests::ParquetWriter {
    veil_tests::parquet_writer(file, schema)
}

#[tokio::test]
async fn reads_are_audited_with_policies_and_counts() {
    let server = TestServer::demo().await;
    let alice = server.connect("alice").await;
    let n = row_count(
        &alice
            .scan("clinical.trials", Scan::default())
            .await
            .unwrap(),
    );
    let dave = server.connect("dave").await;
    // read.end is recorded as the stream completes; give the writer a moment
    // by reading the audit until it shows up (bounded).
    let mut ends = Vec::new();
    for _ in 0..50 {
        ends = audit_events(&dave)
            .await
            .into_iter()
            .filter(|e| e["subject"] == "alice" && e["action"] == "read.end")
            .collect();
        let total: u64 = ends.iter().map(|e| e["rows"].as_u64().unwrap_or(0)).sum();
        if total as usize == n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let total: u64 = ends.iter().map(|e| e["rows"].as_u64().unwrap()).sum();
    assert_eq!(total as usize, n, "rows served are audited");
    let e = &ends[0];
    assert_eq!(e["dataset"], "clinical.trials");
    assert_eq!(e["rows_filtered"], true);
    assert!(
        e["masked_columns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "clinical.trials.ssn")
    );
    assert!(!e["policies"].as_array().unwrap().is_empty());
    assert!(e["bytes"].as_u64().unwrap() > 0);
    let events = audit_events(&dave).await;
    assert!(
        events
            .iter()
            .any(|e| e["subject"] == "alice" && e["action"] == "read.start")
    );
    assert!(
        events
            .iter()
            .any(|e| e["subject"] == "alice" && e["action"] == "plan")
    );
    // No literal values in audit records: a filter's constant is not stored.
    let _ = alice
        .scan(
            "clinical.trials",
            Scan::default().with_filter("email = 'needle-123@example.com'"),
        )
        .await
        .unwrap();
    // Nor a constant in an unaliased expression, which names its column
    // (`clinical.trials.email = Utf8("...")`), in every event of the read:
    // whoever reads the audit may not read the dataset.
    for sql in [
        "SELECT participant_id, email = 'needle-456@example.com' FROM clinical.trials LIMIT 1",
        "SELECT count(*) FILTER (WHERE email = 'needle-789@example.com') FROM clinical.trials",
        "SELECT age + 424242, regexp_like(email, 'needle-(9)+') FROM clinical.trials LIMIT 1",
    ] {
        alice.sql(sql).await.unwrap();
    }
    let events = audit_events(&dave).await;
    let text = serde_json::to_string(&events).unwrap();
    for needle in [
        "needle-123",
        "needle-456",
        "needle-789",
        "424242",
        "needle-(9)",
    ] {
        assert!(!text.contains(needle), "{needle} in the audit");
    }
    assert!(
        events.iter().any(|e| e["action"] == "read.start"
            && e["columns"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == "count(*) FILTER (WHERE clinical.trials.email = Utf8(?))")),
        "the expression's shape stays"
    );
    // Authentication failures are audited too.
    let bad = server.connect_token("garbage").await;
    let _ = bad.list_datasets().await;
    assert!(
        audit_events(&dave)
            .await
            .iter()
            .any(|e| e["action"] == "auth.failure")
    );
    server.stop().await;
}

#[tokio::test]
async fn nothing_is_served_when_the_audit_cannot_be_written() {
    let server = TestServer::demo().await;
    let alice = server.connect("alice").await;
    let info = alice
        .scan_info("clinical.trials", &Scan::default())
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let db = rusqlite::Connection::open(server.db_path()).unwrap();
    db.execute_batch("CREATE TRIGGER no_audit BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'disk full'); END;").unwrap();
    let e = alice.read_ticket(ticket.clone()).await.unwrap_err();
    assert_eq!(code(&e), Code::Unavailable, "{e}");
    let e = alice
        .scan("clinical.trials", Scan::default())
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::Unavailable);
    let e = alice.list_datasets().await.unwrap_err();
    assert_eq!(code(&e), Code::Unavailable);
    db.execute_batch("DROP TRIGGER no_audit;").unwrap();
    assert!(
        row_count(&alice.read_ticket(ticket).await.unwrap()) > 0,
        "serving resumes with the audit"
    );
    server.stop().await;
}

/// A read's plan starts while its start event commits, but none of its
/// messages (not even the schema) leaves before the commit: with the audit
/// failing, a raw `DoGet` receives nothing but the error.
#[tokio::test]
async fn a_read_whose_start_cannot_be_recorded_sends_not_even_its_schema() {
    let server = TestServer::demo().await;
    let alice = server.connect("alice").await;
    let info = alice
        .scan_info("clinical.trials", &Scan::default())
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let raw_read = || async {
        let channel = tonic::transport::Endpoint::from_shared(server.address.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = arrow_flight::flight_service_client::FlightServiceClient::new(channel);
        let mut request = tonic::Request::new(ticket.clone());
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", server.token("alice")).parse().unwrap(),
        );
        let mut messages = 0;
        let outcome = match client.do_get(request).await {
            Err(status) => Err(status),
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(_)) => messages += 1,
                        Ok(None) => break Ok(()),
                        Err(status) => break Err(status),
                    }
                }
            }
        };
        (messages, outcome)
    };
    let (messages, outcome) = raw_read().await;
    assert!(
        outcome.is_ok() && messages >= 2,
        "schema and rows: {messages}"
    );
    let db = rusqlite::Connection::open(server.db_path()).unwrap();
    db.execute_batch("CREATE TRIGGER no_audit BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'disk full'); END;").unwrap();
    for _ in 0..5 {
        let (messages, outcome) = raw_read().await;
        assert_eq!(messages, 0, "nothing leaves before the start is recorded");
        assert_eq!(outcome.unwrap_err().code(), Code::Unavailable);
    }
    db.execute_batch("DROP TRIGGER no_audit;").unwrap();
    let (messages, outcome) = raw_read().await;
    assert!(outcome.is_ok() && messages >= 2);
    server.stop().await;
}

#[tokio::test]
async fn disabled_users_are_denied_whatever_the_token_says() {
    let server = TestServer::demo().await;
    let dave = server.connect("dave").await;
    let erin = server.connect("erin").await;
    assert!(erin.list_datasets().await.is_ok());
    dave.action(
        actions::SET_USER_DISABLED,
        SetUserDisabledRequest {
            user: user("erin"),
            disabled: true,
        }
        .encode_to_vec(),
    )
    .await
    .unwrap();
    // Even a fresh token with extra groups.
    let fresh = server
        .connect_token(&server.token_with("erin", &["privileged"], &[]))
        .await;
    assert_eq!(
        code(&fresh.list_datasets().await.unwrap_err()),
        Code::PermissionDenied
    );
    dave.action(
        actions::SET_USER_DISABLED,
        SetUserDisabledRequest {
            user: user("erin"),
            disabled: false,
        }
        .encode_to_vec(),
    )
    .await
    .unwrap();
    assert!(erin.list_datasets().await.is_ok());
    // Grants at run time take effect on the next request; config grants are read-only.
    assert_eq!(
        code(&erin.action(actions::AUDIT_TAIL, vec![]).await.unwrap_err()),
        Code::PermissionDenied
    );
    dave.action(
        actions::GRANT_PERMISSION,
        PermissionRequest {
            user: user("erin"),
            permission: "AUDIT".into(),
        }
        .encode_to_vec(),
    )
    .await
    .unwrap();
    assert!(erin.action(actions::AUDIT_TAIL, vec![]).await.is_ok());
    dave.action(
        actions::REVOKE_PERMISSION,
        PermissionRequest {
            user: user("erin"),
            permission: "audit".into(),
        }
        .encode_to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(
        code(&erin.action(actions::AUDIT_TAIL, vec![]).await.unwrap_err()),
        Code::PermissionDenied
    );
    let e = dave
        .action(
            actions::REVOKE_PERMISSION,
            PermissionRequest {
                user: user("dave"),
                permission: "AUDIT".into(),
            }
            .encode_to_vec(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        code(&e),
        Code::FailedPrecondition,
        "config grants live in the config file"
    );
    let e = dave
        .action(
            actions::GRANT_PERMISSION,
            PermissionRequest {
                user: user("erin"),
                permission: "ROOT".into(),
            }
            .encode_to_vec(),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument);
    server.stop().await;
}

/// Every audit event in the store, read directly (after the server stopped).
fn stored_events(db: &std::path::Path) -> Vec<serde_json::Value> {
    let db = rusqlite::Connection::open(db).unwrap();
    let mut stmt = db
        .prepare("SELECT body FROM audit_events ORDER BY seq")
        .unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|b| serde_json::from_str(&b.unwrap()).unwrap())
        .collect()
}

/// Set `[audit] auth_failure_window_secs` in the demo's config.
fn with_auth_failure_window(dir: &std::path::Path, secs: u64) {
    let config = dir.join("veil.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[audit]\nauth_failure_window_secs = {secs}\n"),
    )
    .unwrap();
}

/// Failed attempts the events stand for: one per `auth.failure`, `rows` per
/// `auth.failure.aggregate`.
fn failed_attempts(events: &[serde_json::Value]) -> u64 {
    events
        .iter()
        .map(|e| match e["action"].as_str().unwrap() {
            "auth.failure" => 1,
            "auth.failure.aggregate" => e["rows"].as_u64().unwrap(),
            _ => 0,
        })
        .sum()
}

fn is_auth_failure(e: &serde_json::Value) -> bool {
    e["action"]
        .as_str()
        .is_some_and(|a| a.starts_with("auth.failure"))
}

/// A flood of bad tokens is not a store write per attempt: the first per
/// (client, reason) is recorded at once, the rest counted and recorded as
/// one event when the server stops; the counts add up to every attempt, no
/// event holds a token, and a real user in the middle of it is served and
/// audited as ever.
#[tokio::test]
async fn a_flood_of_failed_authentications_is_aggregated_in_the_audit() {
    // A window longer than the test: only shutdown flushes.
    let server = TestServer::demo_with(|dir| with_auth_failure_window(dir, 3600)).await;
    // Same claims, broken signature (its first character changed): the
    // second reason.
    let good = server.token("alice");
    let (signed, signature) = good.rsplit_once('.').unwrap();
    let flipped = if signature.starts_with('A') { 'B' } else { 'A' };
    let forged = format!("{signed}.{flipped}{}", &signature[1..]);
    let garbage = server.connect_token("not-a-jwt-flood-marker").await;
    let tampered = server.connect_token(&forged).await;
    let alice = server.connect("alice").await;
    let dave = server.connect("dave").await;
    for i in 0..500 {
        let conn = if i % 2 == 0 { &garbage } else { &tampered };
        let e = conn.list_datasets().await.unwrap_err();
        assert_eq!(code(&e), Code::Unauthenticated, "{e}");
        if i == 250 {
            assert!(!alice.list_datasets().await.unwrap().is_empty());
        }
    }
    let during = audit_events(&dave).await;
    let failures: Vec<_> = during.iter().filter(|e| is_auth_failure(e)).collect();
    assert_eq!(
        failures.len(),
        2,
        "one recorded failure per reason until the window ends: {failures:?}"
    );
    assert!(
        during
            .iter()
            .any(|e| e["action"] == "list" && e["subject"] == "alice" && e["status"] == "ok"),
        "the real user is audited as ever"
    );
    let dir = server.stop_keeping_files().await;
    let events = stored_events(&dir.path().join("veil.db"));
    let failures: Vec<_> = events
        .iter()
        .filter(|e| is_auth_failure(e))
        .cloned()
        .collect();
    assert_eq!(failures.len(), 4, "{failures:#?}");
    assert_eq!(failed_attempts(&failures), 500);
    for e in failures
        .iter()
        .filter(|e| e["action"] == "auth.failure.aggregate")
    {
        assert_eq!(e["status"], "unauthenticated");
        assert_eq!(e["client_address"], "127.0.0.1");
        assert_eq!(e["rows"], 249);
        assert!(e["duration_ms"].as_u64().is_some());
        assert_eq!(e["subject"], "");
    }
    let text = serde_json::to_string(&failures).unwrap();
    assert!(!text.contains("flood-marker"), "no token in the audit");
    assert!(!text.contains(&signature[1..]), "no token in the audit");
    assert!(!text.contains(signed), "no token in the audit");
    // Each aggregate carries the reason of its recorded first.
    for e in failures.iter().filter(|e| e["action"] == "auth.failure") {
        assert!(
            failures
                .iter()
                .any(|a| a["action"] == "auth.failure.aggregate" && a["message"] == e["message"]),
            "{e}"
        );
    }
}

/// The counts are flushed when each window ends, not only at shutdown.
#[tokio::test]
async fn failed_authentications_are_flushed_every_window() {
    let server = TestServer::demo_with(|dir| with_auth_failure_window(dir, 1)).await;
    let bad = server.connect_token("not-a-jwt").await;
    let dave = server.connect("dave").await;
    for _ in 0..20 {
        let e = bad.list_datasets().await.unwrap_err();
        assert_eq!(code(&e), Code::Unauthenticated);
    }
    // Bounded wait for the window's flush (1 s windows).
    let mut attempts = 0;
    for _ in 0..100 {
        let events: Vec<_> = audit_events(&dave)
            .await
            .into_iter()
            .filter(is_auth_failure)
            .collect();
        attempts = failed_attempts(&events);
        if attempts == 20 {
            // A first and an aggregate per window the attempts spanned.
            assert!(events.len() <= 6, "{events:#?}");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(attempts, 20, "the aggregate arrives without a shutdown");
    server.stop().await;
}

/// Naming a dataset the caller reads but doesn't administer lists the
/// policies on it they may list (none here), never "not found" (found by
/// an outside review); one they can't see stays not found.
#[tokio::test]
async fn listing_the_policies_of_a_dataset_one_reads() {
    let server = TestServer::demo().await;
    let alice = server.connect("alice").await;
    let all = alice.list_policies(None).await.unwrap();
    let named = alice.list_policies(Some("clinical.trials")).await.unwrap();
    assert!(named.iter().all(|p| all.contains(p)), "{named:?}");
    let e = alice
        .list_policies(Some("clinical.nothing_here"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not found"), "{e}");
    // Its owner lists every policy on it.
    let dave = server.connect("dave").await;
    assert!(
        !dave
            .list_policies(Some("clinical.trials"))
            .await
            .unwrap()
            .is_empty()
    );
    server.stop().await;
}
