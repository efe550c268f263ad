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

    // Grants and the disabled flag outlive the entry, and deleting it says so.
    dave.grant(user("frank"), "CREATE_DATA_SOURCE")
        .await
        .unwrap();
    dave.set_user_disabled(user("frank"), true).await.unwrap();
    let said = dave.delete_user(user("frank")).await.unwrap();
    assert!(said.contains("directory entry deleted"), "{said}");
    assert!(
        said.contains("grants CREATE_DATA_SOURCE stay") && said.contains("revoke"),
        "{said}"
    );
    assert!(
        said.contains("stays disabled") && said.contains("enable"),
        "{said}"
    );
    let f = dave.list_users().await.unwrap();
    let f = f
        .iter()
        .find(|u| u.subject == "frank")
        .expect("still listed: grants and the flag stay");
    assert_eq!((f.origin.as_str(), f.disabled), ("", true));
    assert!(f.groups.is_empty() && f.attributes.is_empty());
    let said = dave.delete_user(user("frank")).await.unwrap();
    assert!(
        said.contains("had no directory entry") && said.contains("grants CREATE_DATA_SOURCE stay"),
        "{said}"
    );
    dave.revoke(user("frank"), "CREATE_DATA_SOURCE")
        .await
        .unwrap();
    dave.set_user_disabled(user("frank"), false).await.unwrap();
    let said = dave.delete_user(user("frank")).await.unwrap();
    assert!(
        said.contains("had no directory entry (grants and the disabled flag are separate"),
        "{said}"
    );
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
    assert!(summary.contains("policies removed: hash-pii"), "{summary}");

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

#[tokio::test]
async fn administration_cannot_bypass_policies_or_lock_itself_out() {
    let server = TestServer::demo().await;
    let dave = server.connect("dave").await;
    let data = server.dir.path().join("data");
    // zed may register data sources into the schema `zed`, nothing more.
    dave.grant(user("zed"), "CREATE_DATA_SOURCE").await.unwrap();
    dave.put_user(
        user("zed"),
        &[],
        &[("veil.schemas".into(), vec!["zed".into()])],
    )
    .await
    .unwrap();
    let zed = server.connect("zed").await;
    let register = |name: &str, location: &std::path::Path| veil_proto::RegisterDatasetRequest {
        name: name.into(),
        format: "parquet".into(),
        location: location.display().to_string(),
        ..Default::default()
    };
    // The governed trials file (or its folder) can't be re-registered raw.
    for location in [data.join("clinical/trials.parquet"), data.join("clinical")] {
        let e = zed
            .register_dataset(register("zed.raw", &location))
            .await
            .unwrap_err();
        assert_eq!(code(&e), Code::PermissionDenied, "{e}");
        assert!(e.to_string().contains("bypass"), "{e}");
    }
    let e = zed
        .register_dataset(register("zed.rel", std::path::Path::new("data/x.parquet")))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");

    // A dataset carrying tags a global policy targets is dropped by governors only.
    std::fs::create_dir_all(data.join("zed")).unwrap();
    std::fs::copy(
        data.join("clinical/trials.parquet"),
        data.join("zed/own.parquet"),
    )
    .unwrap();
    zed.register_dataset(register("zed.own", &data.join("zed/own.parquet")))
        .await
        .unwrap();
    dave.set_column_tags("zed.own", "ssn", &["PII.ssn".into()])
        .await
        .unwrap();
    let e = zed.drop_dataset("zed.own").await.unwrap_err();
    assert_eq!(code(&e), Code::PermissionDenied, "{e}");
    assert!(e.to_string().contains("GOVERNANCE"), "{e}");
    // ... and the owner can't untag it either.
    let e = zed
        .set_column_tags("zed.own", "ssn", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::PermissionDenied, "{e}");
    // ... nor shed its tags by registering their own files again.
    let e = zed
        .register_dataset(register("zed.copy", &data.join("zed/own.parquet")))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::PermissionDenied, "{e}");
    // Names differ by more than case, so none can shadow another.
    let e = zed
        .register_dataset(register("Zed.Own", &data.join("zed")))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::AlreadyExists, "{e}");

    // Grants say what really happened.
    let again = dave.grant(user("zed"), "CREATE_DATA_SOURCE").await.unwrap();
    assert!(again.contains("already has"), "{again}");
    let config_grant = dave.grant(user("dave"), "AUDIT").await.unwrap();
    assert!(config_grant.contains("config file"), "{config_grant}");
    let none = dave.revoke(user("zed"), "AUDIT").await.unwrap();
    assert!(none.contains("does not have"), "{none}");

    // An administrator can't lock themselves out.
    let e = dave
        .set_user_disabled(user("dave"), true)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");
    let e = dave
        .put_user(user("zed"), &["".into()], &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");
    let e = dave.put_user(user(" zed"), &[], &[]).await.unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");

    // A config policy naming a runtime dataset keeps it from being dropped
    // (the policy would name nothing, and the config would no longer load).
    let path = server.config_path.clone();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("{text}\n[[policies]]\nname = \"zed-own-readers\"\ndataset = \"zed.own\"\nsubscription = {{ groups = [\"analysts\"] }}\n"),
    )
    .unwrap();
    dave.reload().await.unwrap();
    let e = dave.drop_dataset("zed.own").await.unwrap_err();
    assert_eq!(code(&e), Code::FailedPrecondition, "{e}");
    assert!(e.to_string().contains("zed-own-readers"), "{e}");

    // The audit shows the attempt and its outcome, and never "ok" for a refusal.
    let audit: Vec<serde_json::Value> = dave
        .audit_tail(500)
        .await
        .unwrap()
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let register_events: Vec<&str> = audit
        .iter()
        .filter(|e| e["action"] == "admin.register_dataset" && e["subject"] == "zed")
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        register_events,
        [
            "permission_denied",
            "permission_denied",
            "invalid_argument",
            "permitted",
            "ok",
            "permission_denied",
            "already_exists"
        ]
    );
    assert!(
        !audit
            .iter()
            .any(|e| e["action"] == "admin.drop_dataset" && e["status"] == "ok"),
        "the refused drop is not recorded as done"
    );
    server.stop().await;
}
