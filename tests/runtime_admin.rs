//! Runtime administration: the directory, config-declared records being
//! read-only, and reloading the config without dropping running reads.

use arrow_flight::FlightClient;
use futures::StreamExt;
use tonic::Code;
use veil_client::{ClientError, Scan};
use veil_proto::UserRef;
use veil_tests::{TestServer, row_count, strings};

fn user(subject: &str) -> UserRef {
    UserRef {
        issuer: String::new(),
        subject: subject.into(),
    }
}

fn code(e: &ClientError) -> Code {
    e.code()
        .unwrap_or_else(|| panic!("expected a status, got {e}"))
}

#[tokio::test]
async fn directory_entries_change_access_on_the_next_request() {
    let server = TestServer::demo().await;
    let dave = server.connect("dave").await;
    // frank's token says nothing; the directory makes him a NY analyst.
    let frank = server.connect("frank").await;
    assert_eq!(
        code(
            &frank
                .scan("clinical.trials", Scan::default())
                .await
                .unwrap_err()
        ),
        Code::NotFound
    );
    dave.put_user(
        user("frank"),
        &["analysts".into()],
        &[("state".into(), vec!["NY".into(), "TX".into()])],
    )
    .await
    .unwrap();
    let out = frank
        .scan("clinical.trials", Scan::default().with_columns(&["state"]))
        .await
        .unwrap();
    let states: std::collections::BTreeSet<_> =
        strings(&out, "state").into_iter().flatten().collect();
    assert_eq!(
        states.into_iter().collect::<Vec<_>>(),
        ["NY", "TX"],
        "multi-valued attribute"
    );

    let users = dave.list_users().await.unwrap();
    let f = users.iter().find(|u| u.subject == "frank").unwrap();
    assert_eq!(f.origin, "runtime");
    assert_eq!(f.groups, ["analysts"]);
    let a = users.iter().find(|u| u.subject == "alice").unwrap();
    assert_eq!(a.origin, "config");
    let d = users.iter().find(|u| u.subject == "dave").unwrap();
    assert!(d.permissions.contains(&"USER_ADMIN".to_string()));

    // Config-declared entries are read-only at run time, and say where they live.
    for e in [
        dave.put_user(user("alice"), &["privileged".into()], &[])
            .await
            .unwrap_err(),
        dave.delete_user(user("alice")).await.unwrap_err(),
        dave.revoke(user("dave"), "AUDIT").await.unwrap_err(),
    ] {
        assert_eq!(code(&e), Code::FailedPrecondition, "{e}");
        assert!(e.to_string().contains("config file"), "{e}");
    }

    dave.delete_user(user("frank")).await.unwrap();
    assert_eq!(
        code(
            &frank
                .scan("clinical.trials", Scan::default())
                .await
                .unwrap_err()
        ),
        Code::NotFound,
        "without the directory entry frank is not an analyst"
    );
    // Bad requests are refused precisely.
    let e = dave
        .put_user(
            UserRef {
                issuer: String::new(),
                subject: " ".into(),
            },
            &[],
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument);
    // Every change is in the audit.
    let audit = dave.audit_tail(100).await.unwrap();
    for action in ["admin.put_user", "admin.delete_user", "admin.list_users"] {
        assert!(
            audit.iter().any(|e| e.contains(&format!("\"{action}\""))),
            "{action} audited"
        );
    }
    server.stop().await;
}

fn is_hash(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test]
async fn reload_changes_enforcement_without_dropping_a_running_scan() {
    let server = TestServer::demo_with(|dir| {
        let p = dir.join("veil.toml");
        let text = std::fs::read_to_string(&p).unwrap();
        // Small batches, so a scan is still streaming when the reload lands.
        std::fs::write(
            &p,
            text.replace(
                "rows_per_endpoint = 40000",
                "rows_per_endpoint = 40000\nbatch_size = 500",
            ),
        )
        .unwrap();
    })
    .await;
    let dave = server.connect("dave").await;
    let alice = server.connect("alice").await;

    // Start a scan and read its first batch.
    let info = alice
        .scan_info("clinical.trials", &Scan::default().with_columns(&["ssn"]))
        .await
        .unwrap();
    let channel =
        tonic::transport::Endpoint::from_shared(server.address.replacen("grpc://", "http://", 1))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut flight = FlightClient::new(channel);
    flight
        .add_header(
            "authorization",
            &format!("Bearer {}", server.token("alice")),
        )
        .unwrap();
    let mut stream = flight
        .do_get(info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert!(
        strings(&[first], "ssn")
            .iter()
            .flatten()
            .all(|s| is_hash(s))
    );

    // A broken config is refused and changes nothing.
    let path = server.config_path.clone();
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{good}\n[[policies]]\nname = \"bad\"\n")).unwrap();
    let e = dave.reload().await.unwrap_err();
    assert_eq!(code(&e), Code::FailedPrecondition, "{e}");

    // Remove the hash policy and reload.
    let without_hash = good.replace(
        "[[policies]]\nname = \"hash-pii\"\ntags = [\"PII\"]\nmask = \"hash\"\nexcept = { groups = [\"privileged\"] }\n",
        "",
    );
    assert_ne!(without_hash, good);
    std::fs::write(&path, &without_hash).unwrap();
    let summary = dave.reload().await.unwrap();
    assert!(summary.starts_with("reloaded"), "{summary}");

    // The running scan finishes under the policy it started with ...
    let mut rest = Vec::new();
    while let Some(batch) = stream.next().await {
        rest.push(batch.unwrap());
    }
    assert!(row_count(&rest) > 0, "the scan was still streaming");
    assert!(strings(&rest, "ssn").iter().flatten().all(|s| is_hash(s)));
    // ... and the next request uses the new one.
    let now = alice
        .scan(
            "clinical.trials",
            Scan::default().with_columns(&["ssn"]).with_limit(5),
        )
        .await
        .unwrap();
    assert!(
        strings(&now, "ssn")
            .iter()
            .flatten()
            .all(|s| s.len() == 11 && &s[3..4] == "-")
    );

    // Only governors reload; the attempt and the reload are audited.
    assert_eq!(
        code(&alice.reload().await.unwrap_err()),
        Code::PermissionDenied
    );
    let audit = dave.audit_tail(200).await.unwrap();
    assert!(audit.iter().any(|e| e.contains("\"config.reload\"")));
    assert!(
        audit
            .iter()
            .any(|e| e.contains("\"admin.reload\"") && e.contains("\"alice\""))
    );
    server.stop().await;
}
