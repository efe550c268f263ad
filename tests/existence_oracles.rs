//! No existence oracles: whatever a caller can't see answers exactly like
//! something that doesn't exist, on every action.
//!
//! Each case calls one action twice as one caller, once with the name of a
//! dataset (or policy) hidden from them and once with a name nothing holds,
//! spelled alike, and requires the same answer: the same status code and
//! the same message once the name sent is replaced by `<NAME>`. Callers: a
//! plain reader, a `CREATE_DATA_SOURCE` holder who owns nothing, and the
//! owner of another dataset. In the demo, `clinical.trials` is hidden from
//! all three (it is open to analysts), and so are its policies.

use arrow_flight::FlightDescriptor;
use prost::Message;
use veil_client::{ClientError, Connection, Scan};
use veil_proto::{
    DecideTagProposalRequest, DeletePolicyRequest, DescribeRequest, DiscoverRequest,
    DropDatasetRequest, ExplainRequest, ListAccessRequestsRequest, ListPoliciesRequest,
    PolicyWriteRequest, ProfileKAnonymityRequest, RegisterDatasetRequest, RequestAccessRequest,
    RequestUnmaskRequest, RevokeAccessRequest, SetColumnTagsRequest, SetDescriptionRequest,
    SetExpertsRequest, UserRef, actions,
};
use veil_tests::TestServer;

fn user(subject: &str) -> UserRef {
    UserRef {
        issuer: String::new(),
        subject: subject.into(),
    }
}

/// An action's answer with the name sent replaced, so a hidden and a free
/// name can be compared; a successful answer keeps its bodies (ids, which
/// are random, replaced too).
fn answer(result: Result<Vec<String>, ClientError>, name: &str) -> String {
    let text = match result {
        Ok(bodies) => format!("ok {}", bodies.join("\n")),
        Err(ClientError::Status(s)) => format!("{:?}: {}", s.code(), s.message()),
        Err(e) => format!("client error: {e}"),
    };
    without_ids(&text.replace(name, "<NAME>"))
}

/// `text` with every UUID replaced by `<ID>`.
fn without_ids(text: &str) -> String {
    let is_uuid = |w: &[u8]| {
        w.len() == 36
            && w.iter().enumerate().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => *c == b'-',
                _ => c.is_ascii_hexdigit(),
            })
    };
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if i + 36 <= bytes.len() && is_uuid(&bytes[i..i + 36]) {
            out.push_str("<ID>");
            i += 36;
        } else {
            let c = text[i..].chars().next().unwrap_or_default();
            out.push(c);
            i += c.len_utf8().max(1);
        }
    }
    out
}

fn bodies(r: Result<Vec<bytes::Bytes>, ClientError>) -> Result<Vec<String>, ClientError> {
    r.map(|v| {
        v.iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    })
}

/// Every way a dataset's name reaches Veil: the read path and each action
/// taking a dataset. Returns (what was called, the answer).
async fn dataset_answers(conn: &Connection, name: &str, location: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let scan = conn
        .scan(name, Scan::default())
        .await
        .map(|b| vec![format!("{} batches", b.len())]);
    out.push(("scan".to_string(), answer(scan, name)));
    let path = FlightDescriptor::new_path(name.split('.').map(str::to_string).collect());
    let info = conn
        .flight_info(path.clone())
        .await
        .map(|i| vec![format!("{} endpoints", i.endpoint.len())]);
    out.push(("get_flight_info (path)".into(), answer(info, name)));
    let schema = conn
        .schema(path)
        .await
        .map(|s| vec![format!("{} fields", s.fields().len())]);
    out.push(("get_schema (path)".into(), answer(schema, name)));
    let preview = conn
        .preview(name, 3)
        .await
        .map(|b| vec![format!("{} batches", b.len())]);
    out.push(("preview".into(), answer(preview, name)));
    if !name.contains(char::is_whitespace) {
        let sql = conn
            .sql(&format!("SELECT count(*) FROM {name}"))
            .await
            .map(|b| vec![format!("{} batches", b.len())]);
        // SQL folds unquoted names to lower case.
        let sql = answer(sql, name).replace(&name.to_ascii_lowercase(), "<NAME>");
        out.push(("sql".into(), sql));
    }
    let search = conn
        .search(name, 50)
        .await
        .map(|hits| hits.into_iter().map(|h| h.name).collect::<Vec<_>>());
    out.push(("search".into(), answer(search, name)));

    let calls: Vec<(&str, Vec<u8>)> = vec![
        (
            actions::DESCRIBE,
            DescribeRequest {
                dataset: name.into(),
            }
            .encode_to_vec(),
        ),
        (
            actions::REGISTER_DATASET,
            RegisterDatasetRequest {
                name: name.into(),
                format: "csv".into(),
                location: location.into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            actions::DROP_DATASET,
            DropDatasetRequest { name: name.into() }.encode_to_vec(),
        ),
        (
            actions::SET_DESCRIPTION,
            SetDescriptionRequest {
                dataset: name.into(),
                description: "x".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            actions::SET_COLUMN_TAGS,
            SetColumnTagsRequest {
                dataset: name.into(),
                column: "ssn".into(),
                tags: vec!["PII.ssn".into()],
            }
            .encode_to_vec(),
        ),
        (
            actions::SET_EXPERTS,
            SetExpertsRequest {
                dataset: name.into(),
                experts: vec![user("carol")],
            }
            .encode_to_vec(),
        ),
        (
            actions::DISCOVER,
            DiscoverRequest {
                dataset: name.into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            actions::DECIDE_TAG_PROPOSAL,
            DecideTagProposalRequest {
                dataset: name.into(),
                column: "ssn".into(),
                tag: "pii.ssn".into(),
                accept: true,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            actions::PROFILE_K_ANONYMITY,
            ProfileKAnonymityRequest {
                dataset: name.into(),
                columns: vec!["state".into()],
            }
            .encode_to_vec(),
        ),
        (
            actions::EXPLAIN,
            ExplainRequest {
                user: Some(user("alice")),
                dataset: name.into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            actions::LIST_POLICIES,
            ListPoliciesRequest {
                dataset: name.into(),
            }
            .encode_to_vec(),
        ),
        (
            actions::REQUEST_ACCESS,
            RequestAccessRequest {
                dataset: name.into(),
                reason: "research".into(),
            }
            .encode_to_vec(),
        ),
        (
            actions::LIST_ACCESS_REQUESTS,
            ListAccessRequestsRequest {
                dataset: name.into(),
                all: true,
            }
            .encode_to_vec(),
        ),
        (
            actions::LIST_UNMASK_REQUESTS,
            ListAccessRequestsRequest {
                dataset: name.into(),
                all: true,
            }
            .encode_to_vec(),
        ),
        (
            actions::REVOKE_ACCESS,
            RevokeAccessRequest {
                dataset: name.into(),
                user: Some(user("alice")),
                note: String::new(),
            }
            .encode_to_vec(),
        ),
        (
            actions::REQUEST_UNMASK,
            RequestUnmaskRequest {
                dataset: name.into(),
                column: "ssn".into(),
                values: vec!["rv1.AAAA".into()],
                reason: "case 17".into(),
            }
            .encode_to_vec(),
        ),
        (
            actions::CREATE_POLICY,
            policy_write(&serde_json::json!({
                "name": "probe", "dataset": name, "subscription": {"anyone": true}
            })),
        ),
        (
            actions::UPDATE_POLICY,
            policy_write(&serde_json::json!({
                "name": "trials-for-analysts", "dataset": name, "subscription": {"anyone": true}
            })),
        ),
    ];
    for (action, body) in calls {
        let r = bodies(conn.action(action, body).await);
        out.push((action.to_string(), answer(r, name)));
    }
    out
}

fn policy_write(spec: &serde_json::Value) -> Vec<u8> {
    PolicyWriteRequest {
        spec_json: spec.to_string(),
        expected_version: 0,
    }
    .encode_to_vec()
}

/// Every way a policy's name reaches Veil, as `owned` (a dataset the caller
/// owns, if any) would write it.
async fn policy_answers(
    conn: &Connection,
    name: &str,
    owned: Option<&str>,
    subject: &str,
) -> Vec<(String, String)> {
    let mut specs = vec![
        (
            "create global",
            actions::CREATE_POLICY,
            serde_json::json!({"name": name, "tags": ["PII"], "mask": "null"}),
        ),
        (
            "update global",
            actions::UPDATE_POLICY,
            serde_json::json!({"name": name, "tags": ["PII"], "mask": "null"}),
        ),
        (
            "create restricted",
            actions::CREATE_POLICY,
            serde_json::json!({"name": name, "tags": ["contact"], "mask": "null", "restricted_to": [subject]}),
        ),
        (
            "update restricted",
            actions::UPDATE_POLICY,
            serde_json::json!({"name": name, "tags": ["contact"], "mask": "null", "restricted_to": [subject]}),
        ),
        (
            "update on the hidden dataset",
            actions::UPDATE_POLICY,
            serde_json::json!({"name": name, "dataset": "clinical.trials", "subscription": {"anyone": true}}),
        ),
    ];
    if let Some(d) = owned {
        specs.push((
            "create local",
            actions::CREATE_POLICY,
            serde_json::json!({"name": name, "dataset": d, "subscription": {"anyone": true}}),
        ));
        specs.push((
            "update local",
            actions::UPDATE_POLICY,
            serde_json::json!({"name": name, "dataset": d, "subscription": {"users": [subject]}}),
        ));
    }
    let mut out = Vec::new();
    for (what, action, spec) in specs {
        let r = bodies(conn.action(action, policy_write(&spec)).await);
        out.push((what.to_string(), answer(r, name)));
    }
    // Deleting removes what the creates above made (by id when the name is
    // ambiguous), so the next name starts from the same state.
    let delete = |name: String| async move {
        bodies(
            conn.action(
                actions::DELETE_POLICY,
                DeletePolicyRequest {
                    name,
                    expected_version: 0,
                }
                .encode_to_vec(),
            )
            .await,
        )
    };
    out.push(("delete".into(), answer(delete(name.into()).await, name)));
    let mut mine: Vec<(String, String)> = conn
        .list_policies(None)
        .await
        .unwrap()
        .iter()
        .map(|p| serde_json::from_str::<serde_json::Value>(p).unwrap())
        .filter(|p| p["name"] == name)
        .map(|p| {
            (
                p["scope"].to_string(),
                p["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    mine.sort();
    for (_, id) in mine {
        out.push(("delete by id".into(), answer(delete(id).await, name)));
    }
    out.push((
        "delete again".into(),
        answer(delete(name.into()).await, name),
    ));
    let listed = conn
        .list_policies(None)
        .await
        .map(|v| v.into_iter().filter(|p| p.contains(name)).collect());
    out.push(("list_policies".into(), answer(listed, name)));
    out
}

fn assert_alike(
    who: &str,
    hidden: &str,
    free: &str,
    a: &[(String, String)],
    b: &[(String, String)],
) {
    assert_eq!(a.len(), b.len());
    for ((what, x), (_, y)) in a.iter().zip(b) {
        assert_eq!(
            x, y,
            "{who}: {what} answers '{hidden}' (hidden) differently from '{free}' (free)"
        );
    }
}

/// The demo with three callers who can't see `clinical.trials`: carol
/// (a plain reader), yann (`CREATE_DATA_SOURCE`, schema `yann`, owns
/// nothing) and zoe (`CREATE_DATA_SOURCE`, owner of `zoe.notes`).
async fn setup() -> (
    TestServer,
    Vec<(&'static str, Connection, Option<&'static str>)>,
) {
    let server = TestServer::demo().await;
    let dave = server.connect("dave").await;
    for who in ["yann", "zoe"] {
        dave.grant(user(who), "CREATE_DATA_SOURCE").await.unwrap();
        dave.put_user(
            user(who),
            &["readers".into()],
            &[("veil.schemas".into(), vec![who.into()])],
        )
        .await
        .unwrap();
    }
    let notes = server.dir.path().join("data/zoe-notes.csv");
    std::fs::write(&notes, "id,email\n1,a@x.com\n").unwrap();
    let zoe = server.connect("zoe").await;
    zoe.register_dataset(RegisterDatasetRequest {
        name: "zoe.notes".into(),
        format: "csv".into(),
        location: notes.display().to_string(),
        ..Default::default()
    })
    .await
    .unwrap();
    // A dataset only its owner (a governor) sees, alone in its schema.
    std::fs::create_dir_all(server.dir.path().join("data/hr")).unwrap();
    let people = server.dir.path().join("data/hr/individuals.csv");
    std::fs::write(&people, "id,ssn,state\n1,123-45-6789,CA\n").unwrap();
    dave.register_dataset(RegisterDatasetRequest {
        name: "hrdata.individuals".into(),
        format: "csv".into(),
        location: people.display().to_string(),
        ..Default::default()
    })
    .await
    .unwrap();
    // A runtime policy on the hidden dataset, next to its config ones.
    dave.create_policy(
        &serde_json::json!({
            "name": "trials-secret-rule", "dataset": "clinical.trials",
            "columns": ["email"], "mask": "null"
        })
        .to_string(),
    )
    .await
    .unwrap();
    let callers = vec![
        ("carol", server.connect("carol").await, None),
        ("yann", server.connect("yann").await, None),
        ("zoe", zoe, Some("zoe.notes")),
    ];
    (server, callers)
}

#[tokio::test]
async fn hidden_datasets_answer_like_missing_ones_on_every_action() {
    let (server, callers) = setup().await;
    let location = server.dir.path().join("data/free.csv");
    std::fs::write(&location, "id\n1\n").unwrap();
    let location = location.display().to_string();
    let pairs = [
        ("clinical.trials", "clinical.trialz"),
        ("CLINICAL.Trials", "CLINICAL.Trialz"),
        ("Clinical.TRIALS", "Clinical.TRIALZ"),
        (" clinical.trials", " clinical.trialz"),
        ("clinical.trials ", "clinical.trialz "),
        ("hrdata.individuals", "hrdata.individualz"),
        ("HRDATA.Individuals", "HRDATA.Individualz"),
        // A schema that holds only hidden datasets, and one that is free.
        ("hrdata.newone", "hrfree.newone"),
    ];
    for (who, conn, _) in &callers {
        assert!(
            !conn
                .list_datasets()
                .await
                .unwrap()
                .contains(&"clinical.trials".to_string()),
            "{who} must not see clinical.trials"
        );
        for (hidden, free) in pairs {
            let a = dataset_answers(conn, hidden, &location).await;
            let b = dataset_answers(conn, free, &location).await;
            // The schema pair differs in the schema, not the name.
            let (a, b) = if hidden == "hrdata.newone" {
                let norm = |v: Vec<(String, String)>, s: &str| -> Vec<(String, String)> {
                    v.into_iter()
                        .map(|(w, x)| (w, x.replace(s, "<SCHEMA>")))
                        .collect()
                };
                (norm(a, "hrdata"), norm(b, "hrfree"))
            } else {
                (a, b)
            };
            assert_alike(who, hidden, free, &a, &b);
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn hidden_policies_answer_like_free_names() {
    let (server, callers) = setup().await;
    // Config policies on the hidden dataset, a runtime one, and (for
    // carol, who owns nothing and may register nothing) a global one.
    let hidden = [
        "rows-of-my-state",
        "trials-for-analysts",
        "trials-secret-rule",
        "null-dob",
    ];
    for (who, conn, owned) in &callers {
        for name in hidden {
            if name == "null-dob" && *who != "carol" {
                continue;
            }
            let free = format!("{}-free", &name[..name.len() - 5]);
            assert_eq!(free.len(), name.len());
            let a = policy_answers(conn, name, *owned, who).await;
            let b = policy_answers(conn, &free, *owned, who).await;
            assert_alike(who, name, &free, &a, &b);
        }
    }
    // Data owners list the global policies (the rules a tag brings), so a
    // tag change refused for touching one tells them nothing new.
    let (_, zoe, _) = &callers[2];
    let listed = zoe.list_policies(None).await.unwrap();
    assert!(
        listed.iter().any(|p| p.contains("\"null-dob\"")),
        "{listed:?}"
    );
    let e = zoe
        .set_column_tags("zoe.notes", "email", &["PHI.dob".into()])
        .await
        .unwrap_err();
    let ClientError::Status(s) = e else {
        panic!("{e}")
    };
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s}");
    let (_, carol, _) = &callers[0];
    assert!(carol.list_policies(None).await.unwrap().is_empty());

    // The owner's own names still collide inside her namespace.
    let (_, zoe, _) = &callers[2];
    let mine = serde_json::json!({
        "name": "trials-secret-rule", "dataset": "zoe.notes", "subscription": {"anyone": true}
    });
    zoe.create_policy(&mine.to_string()).await.unwrap();
    let e = zoe.create_policy(&mine.to_string()).await.unwrap_err();
    let ClientError::Status(s) = e else {
        panic!("{e}")
    };
    assert_eq!(s.code(), tonic::Code::AlreadyExists, "{s}");
    assert!(s.message().contains("created at run time"), "{s}");
    // Deleting by that name finds hers, not the hidden one of that name.
    zoe.delete_policy("trials-secret-rule").await.unwrap();
    let dave = server.connect("dave").await;
    let listed = dave.list_policies(Some("clinical.trials")).await.unwrap();
    assert!(
        listed.iter().any(|p| p.contains("trials-secret-rule")),
        "the governor's policy on the hidden dataset stays"
    );
    server.stop().await;
}

#[tokio::test]
async fn registering_needs_a_granted_schema_whatever_it_holds() {
    let (server, callers) = setup().await;
    let (_, zoe, _) = &callers[2];
    let file = server.dir.path().join("data/zoe-more.csv");
    std::fs::write(&file, "id\n1\n").unwrap();
    let register = |name: &str| RegisterDatasetRequest {
        name: name.into(),
        format: "csv".into(),
        location: file.display().to_string(),
        ..Default::default()
    };
    // Outside her schemas: refused alike, occupied or free.
    let mut seen = Vec::new();
    for (name, schema) in [
        ("hrdata.individuals", "hrdata"),
        ("hrfree.individuals", "hrfree"),
    ] {
        let e = zoe.register_dataset(register(name)).await.unwrap_err();
        let ClientError::Status(s) = e else {
            panic!("{e}")
        };
        assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s}");
        assert!(s.message().contains("veil.schemas"), "{s}");
        seen.push(s.message().replace(schema, "<SCHEMA>"));
    }
    assert_eq!(seen[0], seen[1]);
    // Inside it, her names are hers to see.
    zoe.register_dataset(register("zoe.more")).await.unwrap();
    let e = zoe
        .register_dataset(register("ZOE.Notes"))
        .await
        .unwrap_err();
    let ClientError::Status(s) = e else {
        panic!("{e}")
    };
    assert_eq!(s.code(), tonic::Code::AlreadyExists, "{s}");
    // Governors register anywhere.
    let dave = server.connect("dave").await;
    let other = server.dir.path().join("data/dave-new.csv");
    std::fs::write(&other, "id\n1\n").unwrap();
    dave.register_dataset(RegisterDatasetRequest {
        name: "clinical.extra".into(),
        format: "csv".into(),
        location: other.display().to_string(),
        ..Default::default()
    })
    .await
    .unwrap();
    server.stop().await;
}
