//! The governance runner, black-box: every action checks its requirement
//! before anything else happens, whatever kind the requirement is, and a
//! refused call is never recorded as permitted; an allowed one is recorded
//! as permitted before its outcome.

use prost::Message;
use tonic::Code;
use veil_client::ClientError;
use veil_proto::{
    DecideAccessRequest, DeletePolicyRequest, DescribeRequest, DiscoverRequest, DropDatasetRequest,
    ExplainRequest, ProfileKAnonymityRequest, RevokeAccessRequest, SetColumnTagsRequest,
    SetDescriptionRequest, UserRef, actions,
};
use veil_tests::TestServer;

fn code(e: &ClientError) -> Code {
    e.code()
        .unwrap_or_else(|| panic!("expected a status, got {e}"))
}

async fn audit(server: &TestServer) -> Vec<serde_json::Value> {
    server
        .connect("dave")
        .await
        .audit_tail(5000)
        .await
        .unwrap()
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

/// erin (an analyst: no permission, owns nothing) calls every action she
/// may not take, each with a request naming a dataset she reads
/// (`clinical.trials`) or one that doesn't exist. Each is refused with the
/// code its requirement gives, and none is ever recorded as permitted.
#[tokio::test]
async fn refused_actions_are_never_recorded_as_permitted() {
    let server = TestServer::demo().await;
    let erin = server.connect("erin").await;
    let trials = "clinical.trials";
    let nobody = UserRef {
        issuer: String::new(),
        subject: "alice".into(),
    };
    let cases: Vec<(&str, Vec<u8>, Code)> = vec![
        // Permissions, checked before the body is even read.
        (
            actions::RELOAD,
            b"not a message".to_vec(),
            Code::PermissionDenied,
        ),
        (actions::AUDIT_TAIL, vec![], Code::PermissionDenied),
        (actions::LIST_USERS, vec![], Code::PermissionDenied),
        (actions::GRANT_PERMISSION, vec![], Code::PermissionDenied),
        (actions::PUT_USER, vec![], Code::PermissionDenied),
        (actions::REGISTER_DATASET, vec![], Code::PermissionDenied),
        // Ownership: a dataset she reads is refused, a missing one is not found.
        (
            actions::DROP_DATASET,
            DropDatasetRequest {
                name: trials.into(),
            }
            .encode_to_vec(),
            Code::PermissionDenied,
        ),
        (
            actions::SET_DESCRIPTION,
            SetDescriptionRequest {
                dataset: trials.into(),
                description: "mine now".into(),
                ..Default::default()
            }
            .encode_to_vec(),
            Code::PermissionDenied,
        ),
        (
            actions::SET_COLUMN_TAGS,
            SetColumnTagsRequest {
                dataset: "nowhere.nothing".into(),
                column: "ssn".into(),
                tags: vec![],
            }
            .encode_to_vec(),
            Code::NotFound,
        ),
        (
            actions::DISCOVER,
            DiscoverRequest {
                dataset: trials.into(),
                ..Default::default()
            }
            .encode_to_vec(),
            Code::PermissionDenied,
        ),
        (
            actions::EXPLAIN,
            ExplainRequest {
                dataset: trials.into(),
                user: Some(nobody.clone()),
                ..Default::default()
            }
            .encode_to_vec(),
            Code::PermissionDenied,
        ),
        (
            actions::PROFILE_K_ANONYMITY,
            ProfileKAnonymityRequest {
                dataset: trials.into(),
                columns: vec!["age".into()],
            }
            .encode_to_vec(),
            Code::PermissionDenied,
        ),
        // Policy authorship: a global policy needs GOVERNANCE.
        (
            actions::CREATE_POLICY,
            veil_proto::PolicyWriteRequest {
                spec_json: r#"{"name": "mine", "tags": ["PII"], "mask": "null"}"#.into(),
                expected_version: 0,
            }
            .encode_to_vec(),
            Code::PermissionDenied,
        ),
        (
            actions::DELETE_POLICY,
            DeletePolicyRequest {
                name: "no-such-policy".into(),
                ..Default::default()
            }
            .encode_to_vec(),
            Code::NotFound,
        ),
        // Approval rights: requests she can't decide don't exist for her.
        (
            actions::APPROVE_ACCESS,
            DecideAccessRequest {
                request_id: "00000000-0000-0000-0000-000000000000".into(),
                note: String::new(),
            }
            .encode_to_vec(),
            Code::NotFound,
        ),
        (
            actions::REVOKE_ACCESS,
            RevokeAccessRequest {
                dataset: trials.into(),
                user: Some(nobody.clone()),
                note: String::new(),
            }
            .encode_to_vec(),
            Code::NotFound,
        ),
        (
            actions::APPROVE_UNMASK,
            DecideAccessRequest {
                request_id: "00000000-0000-0000-0000-000000000000".into(),
                note: String::new(),
            }
            .encode_to_vec(),
            Code::NotFound,
        ),
    ];
    for (name, body, expected) in &cases {
        let e = erin.action(name, body.clone()).await.unwrap_err();
        assert_eq!(code(&e), *expected, "{name}: {e}");
    }
    // An action Veil doesn't have is refused and recorded too.
    let e = erin
        .action("veil.no_such_action", vec![])
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");

    let events = audit(&server).await;
    let erins: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["subject"] == "erin" && e["action"].as_str().unwrap().starts_with("admin."))
        .collect();
    for (name, _, expected) in &cases {
        let action = format!("admin.{}", name.trim_start_matches("veil."));
        let statuses: Vec<&str> = erins
            .iter()
            .filter(|e| e["action"] == action.as_str())
            .map(|e| e["status"].as_str().unwrap())
            .collect();
        let word = match expected {
            Code::PermissionDenied => "permission_denied",
            Code::NotFound => "not_found",
            other => panic!("no audit word for {other:?}"),
        };
        assert_eq!(statuses, [word], "{name}: refused once, never permitted");
    }
    assert!(
        erins
            .iter()
            .any(|e| e["action"] == "admin.no_such_action" && e["status"] == "invalid_argument"),
        "the unknown action is audited"
    );
    server.stop().await;
}

/// An allowed call is recorded as permitted before its outcome, and both
/// records name what the call was about.
#[tokio::test]
async fn allowed_actions_are_recorded_before_their_outcome() {
    let server = TestServer::demo().await;
    let dave = server.connect("dave").await;
    dave.action(
        actions::DESCRIBE,
        DescribeRequest {
            dataset: "clinical.trials".into(),
        }
        .encode_to_vec(),
    )
    .await
    .unwrap();
    // A refusal by state after the requirement passed: permitted, then the
    // error (never `ok`).
    let e = dave
        .action(
            actions::SET_DESCRIPTION,
            SetDescriptionRequest {
                dataset: "clinical.trials".into(),
                column: "no_such_column".into(),
                description: "x".into(),
            }
            .encode_to_vec(),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");

    let events = audit(&server).await;
    let of = |action: &str| -> Vec<(String, String)> {
        events
            .iter()
            .filter(|e| e["subject"] == "dave" && e["action"] == action)
            .map(|e| {
                (
                    e["status"].as_str().unwrap().to_string(),
                    e["dataset"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    let trials = "clinical.trials".to_string();
    assert_eq!(
        of("admin.describe"),
        [
            ("permitted".into(), trials.clone()),
            ("ok".into(), trials.clone())
        ]
    );
    assert_eq!(
        of("admin.set_description"),
        [
            ("permitted".into(), trials.clone()),
            ("invalid_argument".into(), trials.clone())
        ]
    );
    // ListActions offers every action, each with what it does.
    let listed = dave.list_actions().await.unwrap();
    let (own, protocol): (Vec<_>, Vec<_>) =
        listed.iter().partition(|(n, _)| n.starts_with("veil."));
    assert_eq!(own.len(), 37, "{listed:?}");
    assert!(listed.iter().all(|(_, d)| !d.is_empty()));
    // The rest are Flight SQL's, exactly.
    let protocol: Vec<&str> = protocol.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(protocol, veil::flight::sql::ACTIONS);
    server.stop().await;
}
