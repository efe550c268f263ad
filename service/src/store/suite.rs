//! The store contract, tested once and run against every backend.
//!
//! PostgreSQL tests connect to `VEIL_TEST_POSTGRES_URL` (default
//! `host=127.0.0.1 port=5432 user=postgres dbname=test`), each in a schema of
//! its own that is dropped afterwards. When the server is unreachable they
//! fail saying so, unless `VEIL_TEST_SKIP_POSTGRES=1` opts out.

use std::sync::Arc;

use super::postgres::{PostgresOptions, PostgresStore};
use super::sqlite::SqliteStore;
use super::{PolicyPut, PutMode, Store};
use crate::error::VeilError;
use crate::model::Origin;
use crate::model::dataset::{ColumnRecord, DatasetRecord, FileFormatKind, SourceSpec};
use crate::model::identity::{Identity, Permission, UserRecord};
use crate::model::policy::PolicySpec;
use crate::model::privacy::{DpAnswerRow, DpCharge, DpPut, DpSpent, DpView};
use crate::model::request::{AccessDecision, AccessRequest, RequestStatus};

pub(crate) const DEFAULT_TEST_POSTGRES: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

/// A PostgreSQL store in a fresh schema; `None` when opted out.
pub(crate) struct PgSchema {
    url: String,
    pub(crate) schema: String,
}

impl PgSchema {
    pub(crate) async fn create() -> Option<(PostgresStore, PgSchema)> {
        if std::env::var("VEIL_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
            eprintln!("VEIL_TEST_SKIP_POSTGRES=1: skipping the PostgreSQL run of this test");
            return None;
        }
        let url = std::env::var("VEIL_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| DEFAULT_TEST_POSTGRES.to_string());
        let schema = format!("veil_test_{}", uuid::Uuid::new_v4().simple());
        let store = PostgresStore::connect(&PostgresOptions {
            url: url.clone(),
            schema: schema.clone(),
            password: None,
            pool_size: 4,
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the PostgreSQL store tests need a server at '{url}' (VEIL_TEST_POSTGRES_URL): {e}. \
                 Start one, point VEIL_TEST_POSTGRES_URL at it, or set VEIL_TEST_SKIP_POSTGRES=1 to skip them"
            )
        });
        Some((store, PgSchema { url, schema }))
    }

    pub(crate) async fn drop_schema(self) {
        if let Ok((client, conn)) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await
        {
            let task = tokio::spawn(conn);
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
                .await;
            drop(client);
            let _ = task.await;
        }
    }
}

/// Runs each listed suite function against SQLite and PostgreSQL.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test]
                async fn $name() {
                    let store = std::sync::Arc::new(super::SqliteStore::in_memory().unwrap());
                    super::$name(store).await;
                }
            )*
        }
        mod postgres_backend {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some((store, schema)) = super::PgSchema::create().await else { return };
                    super::$name(std::sync::Arc::new(store)).await;
                    schema.drop_schema().await;
                }
            )*
        }
    };
}

on_both_backends!(
    every_change_bumps_the_version,
    config_grants_survive_runtime_revoke_and_reload_keeps_runtime_ones,
    unchanged_config_policies_keep_their_version,
    config_policies_come_back_ordered_by_name,
    directory_entries_and_disabling,
    datasets_replace_and_drop,
    master_key_check_is_recorded_then_enforced,
    concurrent_writers_each_move_the_version,
    runtime_policies_are_versioned_and_config_ones_read_only,
    policy_names_are_unique_within_their_namespace,
    access_requests_are_decided_once_and_approvals_admit,
    dp_answers_are_kept_once_per_window_and_charged_once,
    dp_ledgers_stop_at_their_cap_and_views_charge_once,
    dp_ledgers_count_delta_and_stop_at_its_cap,
    dp_answers_past_their_keeping_time_are_purged_with_their_views,
    dp_concurrent_draws_keep_one_answer_and_one_charge,
);

fn dataset(name: &str) -> DatasetRecord {
    DatasetRecord {
        id: format!("id-{name}"),
        name: name.into(),
        source: SourceSpec {
            format: FileFormatKind::Csv,
            location: "/x".into(),
            hive_partitioned: false,
            database: None,
        },
        description: String::new(),
        owners: vec![Identity::new("i", "o")],
        experts: vec![],
        tags: vec![],
        columns: vec![ColumnRecord {
            name: "a".into(),
            data_type: "Int64".into(),
            nullable: true,
            description: String::new(),
            tags: vec![],
            partition: false,
            from_config: false,
        }],
        origin: Origin::Runtime,
        event_time: None,
        tag_proposals: vec![],
    }
}

fn policy(name: &str, dataset: &str) -> PolicySpec {
    toml::from_str(&format!(
        "name = \"{name}\"\ndataset = \"{dataset}\"\nsubscription = {{ anyone = true }}"
    ))
    .unwrap()
}

/// Another body for policy `name` of `dataset` (same namespace).
fn policy_for(name: &str, dataset: &str, user: &str) -> PolicySpec {
    toml::from_str(&format!(
        "name = \"{name}\"\ndataset = \"{dataset}\"\nsubscription = {{ users = [\"{user}\"] }}"
    ))
    .unwrap()
}

async fn every_change_bumps_the_version(s: Arc<dyn Store>) {
    let v0 = s.version().await.unwrap();
    s.put_dataset(&dataset("a.b"), PutMode::Create)
        .await
        .unwrap();
    let v1 = s.version().await.unwrap();
    assert!(v1 > v0);
    assert!(matches!(
        s.put_dataset(&dataset("a.b"), PutMode::Create).await,
        Err(VeilError::AlreadyExists(_))
    ));
    assert_eq!(
        s.version().await.unwrap(),
        v1,
        "a refused write does not move the version"
    );
    let id = Identity::new("i", "u");
    assert!(
        s.grant(&id, Permission::Audit, Origin::Runtime)
            .await
            .unwrap()
    );
    assert!(
        !s.grant(&id, Permission::Audit, Origin::Runtime)
            .await
            .unwrap()
    );
    let v2 = s.version().await.unwrap();
    assert!(v2 > v1);
    assert_eq!(s.version().await.unwrap(), v2, "reads do not bump");
    let snap = s.snapshot().await.unwrap();
    assert_eq!(snap.version, v2);
    assert!(snap.datasets.contains_key("a.b"));
    assert!(snap.grants[&id].contains_key(&Permission::Audit));
}

async fn config_grants_survive_runtime_revoke_and_reload_keeps_runtime_ones(s: Arc<dyn Store>) {
    let id = Identity::new("i", "u");
    s.replace_config_directory(&[], &[(id.clone(), Permission::Governance)])
        .await
        .unwrap();
    assert!(
        !s.revoke(&id, Permission::Governance).await.unwrap(),
        "config grants are read-only"
    );
    s.grant(&id, Permission::Audit, Origin::Runtime)
        .await
        .unwrap();
    s.grant(&id, Permission::UserAdmin, Origin::Runtime)
        .await
        .unwrap();
    assert!(s.revoke(&id, Permission::Audit).await.unwrap());
    s.replace_config_directory(&[], &[]).await.unwrap();
    let snap = s.snapshot().await.unwrap();
    let grants: Vec<Permission> = snap.grants[&id].keys().copied().collect();
    assert_eq!(
        grants,
        [Permission::UserAdmin],
        "the reload dropped the config grant and kept the runtime one"
    );
}

async fn unchanged_config_policies_keep_their_version(s: Arc<dyn Store>) {
    let p = policy("p", "a.b");
    s.replace_config_policies(std::slice::from_ref(&p))
        .await
        .unwrap();
    let v = s.version().await.unwrap();
    let before = s.snapshot().await.unwrap().policies[0].clone();
    s.replace_config_policies(std::slice::from_ref(&p))
        .await
        .unwrap();
    assert_eq!(s.version().await.unwrap(), v);
    let changed = policy_for("p", "a.b", "alice");
    s.replace_config_policies(std::slice::from_ref(&changed))
        .await
        .unwrap();
    let after = s.snapshot().await.unwrap().policies[0].clone();
    assert_eq!(after.id, before.id, "an edited policy keeps its id");
    assert_eq!(after.version, before.version + 1);
    s.replace_config_policies(&[]).await.unwrap();
    assert!(s.snapshot().await.unwrap().policies.is_empty());
}

async fn config_policies_come_back_ordered_by_name(s: Arc<dyn Store>) {
    s.replace_config_policies(&[policy("y", "a.b"), policy("x", "a.b")])
        .await
        .unwrap();
    let snap = s.snapshot().await.unwrap();
    let names: Vec<&str> = snap.policies.iter().map(|p| p.spec.name.as_str()).collect();
    assert_eq!(names, ["x", "y"], "policies come back ordered by name");
    assert!(snap.policies.iter().all(|p| p.origin == Origin::Config));
}

async fn directory_entries_and_disabling(s: Arc<dyn Store>) {
    let id = Identity::new("i", "u");
    let mut user = UserRecord::default();
    user.groups.insert("analysts".into());
    user.attributes
        .insert("state".into(), ["CA".to_string()].into_iter().collect());
    s.put_user(&id, &user, Origin::Runtime).await.unwrap();
    s.set_user_disabled(&id, true).await.unwrap();
    let snap = s.snapshot().await.unwrap();
    assert_eq!(snap.users[&id], user);
    assert!(snap.disabled.contains(&id));
    s.set_user_disabled(&id, false).await.unwrap();
    assert!(s.delete_user(&id).await.unwrap());
    assert!(!s.delete_user(&id).await.unwrap());
    let snap = s.snapshot().await.unwrap();
    assert!(snap.users.is_empty() && snap.disabled.is_empty());

    let cfg_user = Identity::new("i", "c");
    s.replace_config_directory(&[(cfg_user.clone(), user.clone())], &[])
        .await
        .unwrap();
    assert!(
        !s.delete_user(&cfg_user).await.unwrap(),
        "config-declared users are not deleted at run time"
    );
}

async fn datasets_replace_and_drop(s: Arc<dyn Store>) {
    let mut d = dataset("a.b");
    s.put_dataset(&d, PutMode::Create).await.unwrap();
    d.description = "edited".into();
    s.put_dataset(&d, PutMode::Replace).await.unwrap();
    assert_eq!(
        s.snapshot().await.unwrap().datasets["a.b"].description,
        "edited"
    );
    let mut other = d.clone();
    other.id = "another".into();
    assert!(s.put_dataset(&other, PutMode::Replace).await.is_err());

    // Compare and swap: an edit based on a stale read writes nothing.
    let read = s.snapshot().await.unwrap().datasets["a.b"].clone();
    let (mut mine, mut theirs) = (read.clone(), read.clone());
    mine.columns[0].tags = vec!["PII.email".into()];
    theirs.description = "theirs".into();
    let version = s.version().await.unwrap();
    assert!(s.replace_dataset_if(&read, &theirs).await.unwrap());
    assert!(
        s.version().await.unwrap() > version,
        "a swap moves the version"
    );
    let version = s.version().await.unwrap();
    assert!(!s.replace_dataset_if(&read, &mine).await.unwrap());
    assert_eq!(
        s.version().await.unwrap(),
        version,
        "a refused swap changes nothing"
    );
    let stored = s.snapshot().await.unwrap().datasets["a.b"].clone();
    assert_eq!(
        stored, theirs,
        "the stale edit did not overwrite the other one"
    );
    mine = stored.clone();
    mine.columns[0].tags = vec!["PII.email".into()];
    assert!(s.replace_dataset_if(&stored, &mine).await.unwrap());
    assert_eq!(s.snapshot().await.unwrap().datasets["a.b"], mine);

    assert!(s.drop_dataset("a.b").await.unwrap());
    assert!(
        !s.replace_dataset_if(&mine, &mine).await.unwrap(),
        "a dropped dataset is not recreated"
    );
    assert!(!s.drop_dataset("a.b").await.unwrap());
    assert!(s.snapshot().await.unwrap().datasets.is_empty());
}

async fn master_key_check_is_recorded_then_enforced(s: Arc<dyn Store>) {
    s.check_master_key("aaaa").await.unwrap();
    s.check_master_key("aaaa").await.unwrap();
    let e = s.check_master_key("bbbb").await.unwrap_err();
    assert!(matches!(e, VeilError::FailedPrecondition(_)), "{e}");
    assert!(e.message().contains("master_key_file"), "{e}");
}

async fn concurrent_writers_each_move_the_version(s: Arc<dyn Store>) {
    let v0 = s.version().await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            s.grant(
                &Identity::new("i", format!("u{i}")),
                Permission::Audit,
                Origin::Runtime,
            )
            .await
            .unwrap()
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap());
    }
    assert_eq!(s.version().await.unwrap(), v0 + 8);
    assert_eq!(s.snapshot().await.unwrap().grants.len(), 8);
}

#[tokio::test]
async fn an_unreachable_postgres_is_a_clear_unavailable_error() {
    let e = PostgresStore::connect(&PostgresOptions {
        url: "host=127.0.0.1 port=1 user=veil dbname=veil connect_timeout=2".into(),
        schema: "veil".into(),
        password: None,
        pool_size: 1,
    })
    .await
    .unwrap_err();
    assert!(matches!(e, VeilError::Unavailable(_)), "{e}");
    assert!(e.message().contains("127.0.0.1:1/veil"), "{e}");
    assert!(e.message().contains("store.url"), "{e}");
    let e = PostgresStore::connect(&PostgresOptions {
        url: "host=127.0.0.1".into(),
        schema: "Robert'); DROP TABLE x;--".into(),
        password: None,
        pool_size: 1,
    })
    .await
    .unwrap_err();
    assert!(matches!(e, VeilError::FailedPrecondition(_)), "{e}");
}

async fn runtime_policies_are_versioned_and_config_ones_read_only(s: Arc<dyn Store>) {
    let v0 = s.version().await.unwrap();
    assert_eq!(
        s.put_policy(&policy("r", "a.b"), PolicyPut::Create)
            .await
            .unwrap(),
        1
    );
    assert!(matches!(
        s.put_policy(&policy("r", "a.b"), PolicyPut::Create).await,
        Err(VeilError::AlreadyExists(_))
    ));
    let v1 = s.version().await.unwrap();
    assert!(v1 > v0);
    // The same body again changes nothing, not even the state version.
    let same = PolicyPut::Update {
        expected_version: Some(1),
    };
    assert_eq!(s.put_policy(&policy("r", "a.b"), same).await.unwrap(), 1);
    assert_eq!(s.version().await.unwrap(), v1);
    assert_eq!(
        s.put_policy(&policy_for("r", "a.b", "alice"), same)
            .await
            .unwrap(),
        2
    );
    // A writer holding the old version loses instead of overwriting.
    assert!(matches!(
        s.put_policy(&policy_for("r", "a.b", "bob"), same).await,
        Err(VeilError::FailedPrecondition(_))
    ));
    let snap = s.snapshot().await.unwrap();
    let r = snap.policies.iter().find(|p| p.spec.name == "r").unwrap();
    assert_eq!(
        (r.version, r.origin, r.spec.subscription.is_some()),
        (2, Origin::Runtime, true)
    );
    assert_eq!(r.spec, policy_for("r", "a.b", "alice"));
    // Config policies can't be changed or deleted at run time; reloads
    // don't touch runtime ones.
    s.replace_config_policies(&[policy("c", "a.b")])
        .await
        .unwrap();
    let update = PolicyPut::Update {
        expected_version: None,
    };
    assert!(matches!(
        s.put_policy(&policy_for("c", "a.b", "alice"), update).await,
        Err(VeilError::FailedPrecondition(_))
    ));
    assert!(matches!(
        s.delete_policy("dataset:a.b", "c", None).await,
        Err(VeilError::FailedPrecondition(_))
    ));
    // A policy's namespace is part of its identity: updating "c" of
    // another dataset finds nothing.
    assert!(matches!(
        s.put_policy(&policy("c", "x.y"), update).await,
        Err(VeilError::NotFound(_))
    ));
    assert!(matches!(
        s.put_policy(&policy("nope", "x.y"), update).await,
        Err(VeilError::NotFound(_))
    ));
    assert!(matches!(
        s.delete_policy("dataset:a.b", "r", Some(1)).await,
        Err(VeilError::FailedPrecondition(_))
    ));
    assert!(matches!(
        s.delete_policy("dataset:c.d", "r", Some(2)).await,
        Err(VeilError::NotFound(_))
    ));
    s.delete_policy("dataset:a.b", "r", Some(2)).await.unwrap();
    assert!(matches!(
        s.delete_policy("dataset:a.b", "r", None).await,
        Err(VeilError::NotFound(_))
    ));
    let names: Vec<String> = s
        .snapshot()
        .await
        .unwrap()
        .policies
        .iter()
        .map(|p| p.spec.name.clone())
        .collect();
    assert_eq!(names, ["c"]);
}

/// Policy names are scoped (`PolicySpec::namespace`), so a name taken on
/// one dataset, by a config policy, or globally tells nobody writing in
/// another namespace anything.
async fn policy_names_are_unique_within_their_namespace(s: Arc<dyn Store>) {
    s.replace_config_policies(&[policy("p", "hidden.one")])
        .await
        .unwrap();
    let create = PolicyPut::Create;
    assert_eq!(s.put_policy(&policy("p", "a.b"), create).await.unwrap(), 1);
    assert_eq!(s.put_policy(&policy("p", "c.d"), create).await.unwrap(), 1);
    assert!(matches!(
        s.put_policy(&policy_for("p", "a.b", "alice"), create).await,
        Err(VeilError::AlreadyExists(_))
    ));
    // Dataset names are case-insensitive, and so are the namespaces.
    assert!(matches!(
        s.put_policy(&policy("p", "A.B"), create).await,
        Err(VeilError::AlreadyExists(_))
    ));
    // A config policy may share a runtime policy's name in another namespace.
    s.replace_config_policies(&[policy("p", "hidden.one"), policy("q", "x.y")])
        .await
        .unwrap();
    s.delete_policy("dataset:c.d", "p", None).await.unwrap();
    let snap = s.snapshot().await.unwrap();
    let mut left: Vec<(String, String)> = snap
        .policies
        .iter()
        .map(|p| {
            (
                p.spec.name.clone(),
                p.spec.dataset.clone().unwrap_or_default(),
            )
        })
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            ("p".to_string(), "a.b".to_string()),
            ("p".to_string(), "hidden.one".to_string()),
            ("q".to_string(), "x.y".to_string()),
        ]
    );
}

async fn access_requests_are_decided_once_and_approvals_admit(s: Arc<dyn Store>) {
    let alice = Identity::new("i", "alice");
    let request = |id: &str| AccessRequest {
        id: id.into(),
        dataset_id: "ds-1".into(),
        dataset: "a.b".into(),
        requester: alice.clone(),
        reason: "churn model".into(),
        status: RequestStatus::Pending,
        decided_by: None,
        decision_note: String::new(),
        created_ms: 1,
        decided_ms: None,
        unmask: None,
    };
    s.create_access_request(&request("r1")).await.unwrap();
    assert!(
        matches!(
            s.create_access_request(&request("r2")).await,
            Err(VeilError::AlreadyExists(_))
        ),
        "one open request per dataset and requester"
    );
    assert!(s.snapshot().await.unwrap().approvals.is_empty());
    let decide = |to| AccessDecision {
        to,
        by: Identity::new("i", "owner"),
        note: "ok".into(),
        at_ms: 2,
    };
    let r = s
        .decide_access_request(
            "r1",
            RequestStatus::Pending,
            &decide(RequestStatus::Approved),
        )
        .await
        .unwrap();
    assert_eq!(r.status, RequestStatus::Approved);
    assert!(
        matches!(
            s.decide_access_request("r1", RequestStatus::Pending, &decide(RequestStatus::Denied))
                .await,
            Err(VeilError::FailedPrecondition(_))
        ),
        "decided once"
    );
    assert!(s.snapshot().await.unwrap().approvals["ds-1"].contains(&alice));
    s.decide_access_request(
        "r1",
        RequestStatus::Approved,
        &decide(RequestStatus::Revoked),
    )
    .await
    .unwrap();
    assert!(s.snapshot().await.unwrap().approvals.is_empty());
    assert!(matches!(
        s.decide_access_request("zz", RequestStatus::Pending, &decide(RequestStatus::Denied))
            .await,
        Err(VeilError::NotFound(_))
    ));
    // Revoked: a new request may be made.
    s.create_access_request(&request("r3")).await.unwrap();
    let all = s.access_requests().await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["r1", "r3"]
    );
    // Unmask requests: several may be open, and an approved one releases
    // values but never admits to the dataset.
    let unmask = |id: &str| AccessRequest {
        id: id.into(),
        created_ms: 3,
        unmask: Some(crate::model::request::UnmaskDetails {
            column: "ssn".into(),
            policy: "p".into(),
            policy_label: "p@1".into(),
            values: vec!["rv1.x".into()],
        }),
        ..request(id)
    };
    s.decide_access_request("r3", RequestStatus::Pending, &decide(RequestStatus::Denied))
        .await
        .unwrap();
    s.create_access_request(&unmask("u1")).await.unwrap();
    s.create_access_request(&unmask("u2")).await.unwrap();
    let r = s
        .decide_access_request(
            "u1",
            RequestStatus::Pending,
            &decide(RequestStatus::Approved),
        )
        .await
        .unwrap();
    assert_eq!(r.unmask.unwrap().values, ["rv1.x"]);
    assert!(s.snapshot().await.unwrap().approvals.is_empty());
    let all = s.access_requests().await.unwrap();
    assert_eq!(all.len(), 4);
}

fn dp_row(key: &str, answer_id: &str, window: i64) -> DpAnswerRow {
    DpAnswerRow {
        key: key.into(),
        dataset_id: "d1".into(),
        answer_id: answer_id.into(),
        window,
        source_version: "v1".into(),
        created_ms: 5,
        expires_ms: 1_000 * (window + 1),
        answer: vec![0, 1, 2, 255],
    }
}

fn dp_charge(ledger: &str, cost: f64, cap: Option<f64>) -> DpCharge {
    DpCharge {
        ledger: ledger.into(),
        dataset_id: "d1".into(),
        period: 3,
        cost,
        cap,
        delta: 0.0,
        delta_cap: None,
    }
}

/// ε (or ρ) spent, no δ.
fn eps(value: f64) -> DpSpent {
    DpSpent { value, delta: 0.0 }
}

async fn dp_answers_are_kept_once_per_window_and_charged_once(s: Arc<dyn Store>) {
    let v0 = s.version().await.unwrap();
    assert_eq!(s.dp_answer("k").await.unwrap(), None);
    let charge = dp_charge("dataset", 0.5, Some(10.0));
    let put = s
        .put_dp_answer(&dp_row("k", "a1", 7), &charge)
        .await
        .unwrap();
    assert_eq!(
        put,
        DpPut::Kept {
            answer: dp_row("k", "a1", 7),
            charged: true
        }
    );
    // A second draw for the same window loses to the kept one, free.
    let put = s
        .put_dp_answer(&dp_row("k", "a2", 7), &charge)
        .await
        .unwrap();
    assert_eq!(
        put,
        DpPut::Kept {
            answer: dp_row("k", "a1", 7),
            charged: false
        }
    );
    // Renewed into window 8 (data unchanged); a later draw for window 8
    // still loses to it.
    assert!(s.renew_dp_answer("k", "a1", 8, 9_000).await.unwrap());
    let renewed = s.dp_answer("k").await.unwrap().unwrap();
    assert_eq!((renewed.window, renewed.expires_ms), (8, 9_000));
    let put = s
        .put_dp_answer(&dp_row("k", "a3", 8), &charge)
        .await
        .unwrap();
    assert!(matches!(put, DpPut::Kept { charged: false, ref answer } if answer.answer_id == "a1"));
    // A draw for window 9 replaces it; renewing the old draw does nothing.
    let put = s
        .put_dp_answer(&dp_row("k", "a4", 9), &charge)
        .await
        .unwrap();
    assert!(matches!(put, DpPut::Kept { charged: true, ref answer } if answer.answer_id == "a4"));
    assert!(!s.renew_dp_answer("k", "a1", 10, 11_000).await.unwrap());
    assert_eq!(s.dp_answer("k").await.unwrap().unwrap().answer_id, "a4");
    let ledgers = s.dp_ledgers(Some("d1"), 0).await.unwrap();
    assert_eq!(ledgers.len(), 1);
    assert!((ledgers[0].spent.value - 1.0).abs() < 1e-12, "{ledgers:?}");
    assert!(s.dp_ledgers(Some("d1"), 4).await.unwrap().is_empty());
    // None of it is policy: the state version stays.
    assert_eq!(s.version().await.unwrap(), v0);
}

async fn dp_ledgers_stop_at_their_cap_and_views_charge_once(s: Arc<dyn Store>) {
    let user = dp_charge("user:[\"i\",\"alice\"]", 1.0, Some(2.5));
    assert_eq!(
        s.view_dp_answer("a1", &user, 1).await.unwrap(),
        DpView::Charged { spent: eps(1.0) }
    );
    assert_eq!(
        s.view_dp_answer("a1", &user, 2).await.unwrap(),
        DpView::Seen { spent: eps(1.0) }
    );
    assert_eq!(
        s.view_dp_answer("a2", &user, 3).await.unwrap(),
        DpView::Charged { spent: eps(2.0) }
    );
    // The third would pass 2.5: refused, and not recorded as seen.
    assert_eq!(
        s.view_dp_answer("a3", &user, 4).await.unwrap(),
        DpView::OverBudget { spent: eps(2.0) }
    );
    let bigger = DpCharge {
        cap: Some(3.0),
        ..user.clone()
    };
    assert_eq!(
        s.view_dp_answer("a3", &bigger, 5).await.unwrap(),
        DpView::Charged { spent: eps(3.0) }
    );
    // Another period starts empty.
    let next = DpCharge {
        period: 4,
        ..user.clone()
    };
    assert_eq!(
        s.view_dp_answer("a9", &next, 6).await.unwrap(),
        DpView::Charged { spent: eps(1.0) }
    );
    // A fresh answer over the dataset's cap is not kept.
    let dataset = dp_charge("dataset", 1.0, Some(0.5));
    assert_eq!(
        s.put_dp_answer(&dp_row("k2", "b1", 1), &dataset)
            .await
            .unwrap(),
        DpPut::OverBudget { spent: eps(0.0) }
    );
    assert_eq!(s.dp_answer("k2").await.unwrap(), None);
}

async fn dp_ledgers_count_delta_and_stop_at_its_cap(s: Arc<dyn Store>) {
    // Each answer spends ε 0.1 and δ 1e-6; the ε cap is far, δ's is at 2e-6.
    let user = DpCharge {
        delta: 1e-6,
        delta_cap: Some(2e-6),
        ..dp_charge("user:[\"i\",\"bob\"]", 0.1, Some(100.0))
    };
    let spent = |n: f64| DpSpent {
        value: 0.1 * n,
        delta: 1e-6 * n,
    };
    let close = |a: DpSpent, b: DpSpent| {
        (a.value - b.value).abs() < 1e-12 && (a.delta - b.delta).abs() < 1e-18
    };
    match s.view_dp_answer("d1", &user, 1).await.unwrap() {
        DpView::Charged { spent: x } => assert!(close(x, spent(1.0)), "{x:?}"),
        other => panic!("{other:?}"),
    }
    match s.view_dp_answer("d2", &user, 2).await.unwrap() {
        DpView::Charged { spent: x } => assert!(close(x, spent(2.0)), "{x:?}"),
        other => panic!("{other:?}"),
    }
    // δ would pass its cap: refused though ε has room, nothing recorded.
    match s.view_dp_answer("d3", &user, 3).await.unwrap() {
        DpView::OverBudget { spent: x } => assert!(close(x, spent(2.0)), "{x:?}"),
        other => panic!("{other:?}"),
    }
    // An answer spending no δ still fits.
    let no_delta = DpCharge {
        delta: 0.0,
        ..user.clone()
    };
    match s.view_dp_answer("d3", &no_delta, 4).await.unwrap() {
        DpView::Charged { spent: x } => assert!(
            (x.value - 0.3).abs() < 1e-12 && (x.delta - 2e-6).abs() < 1e-18,
            "{x:?}"
        ),
        other => panic!("{other:?}"),
    }
    // Seen again: free, and says what was spent.
    match s.view_dp_answer("d1", &user, 5).await.unwrap() {
        DpView::Seen { spent: x } => assert!((x.delta - 2e-6).abs() < 1e-18, "{x:?}"),
        other => panic!("{other:?}"),
    }
    // The dataset's ledger counts δ the same way, and refuses past it.
    let dataset = DpCharge {
        delta: 1e-6,
        delta_cap: Some(1e-6),
        ..dp_charge("dataset", 0.1, None)
    };
    assert!(matches!(
        s.put_dp_answer(&dp_row("kd", "e1", 1), &dataset)
            .await
            .unwrap(),
        DpPut::Kept { charged: true, .. }
    ));
    assert!(matches!(
        s.put_dp_answer(&dp_row("ke", "e2", 1), &dataset)
            .await
            .unwrap(),
        DpPut::OverBudget { .. }
    ));
    assert_eq!(s.dp_answer("ke").await.unwrap(), None);
    let ledgers = s.dp_ledgers(Some("d1"), 0).await.unwrap();
    let of = |l: &str| ledgers.iter().find(|r| r.ledger == l).unwrap().spent;
    assert!((of("dataset").delta - 1e-6).abs() < 1e-18, "{ledgers:?}");
    assert!(
        (of("user:[\"i\",\"bob\"]").delta - 2e-6).abs() < 1e-18,
        "{ledgers:?}"
    );
}

async fn dp_answers_past_their_keeping_time_are_purged_with_their_views(s: Arc<dyn Store>) {
    let charge = dp_charge("dataset", 0.1, None);
    let user = dp_charge("user:[\"i\",\"carol\"]", 0.1, None);
    // "old" kept until 2,000 ms, "new" until 9,000 ms.
    for (key, id, window) in [("old", "p1", 1), ("new", "p2", 8)] {
        s.put_dp_answer(&dp_row(key, id, window), &charge)
            .await
            .unwrap();
        s.view_dp_answer(id, &user, 100).await.unwrap();
    }
    // A view reserved for a draw never kept (another node's won).
    s.view_dp_answer("lost", &user, 100).await.unwrap();
    // Nothing is past its time at 2,000 ms; no stray view is old enough.
    assert_eq!(s.purge_dp_answers(2_000, 0).await.unwrap(), 0);
    assert!(s.dp_answer("old").await.unwrap().is_some());
    // At 2,001 ms "old" goes with its view; the stray view goes once old.
    assert_eq!(s.purge_dp_answers(2_001, 101).await.unwrap(), 1);
    assert_eq!(s.dp_answer("old").await.unwrap(), None);
    assert!(s.dp_answer("new").await.unwrap().is_some());
    // p1's and the lost draw's views are gone (seeing them is a first view
    // again), p2's stays (seen: free).
    assert!(matches!(
        s.view_dp_answer("p1", &user, 200).await.unwrap(),
        DpView::Charged { .. }
    ));
    assert!(matches!(
        s.view_dp_answer("lost", &user, 200).await.unwrap(),
        DpView::Charged { .. }
    ));
    assert!(matches!(
        s.view_dp_answer("p2", &user, 200).await.unwrap(),
        DpView::Seen { .. }
    ));
    // A renewal keeps an answer longer, never shorter; a forgotten one
    // can't be renewed.
    assert!(s.renew_dp_answer("new", "p2", 9, 5_000).await.unwrap());
    let new = s.dp_answer("new").await.unwrap().unwrap();
    assert_eq!((new.window, new.expires_ms), (9, 9_000));
    assert!(!s.renew_dp_answer("old", "p1", 9, 50_000).await.unwrap());
    // A draw replaces an answer past its keeping time even in its window.
    s.put_dp_answer(&dp_row("late", "q1", 3), &charge)
        .await
        .unwrap();
    let again = DpAnswerRow {
        created_ms: 4_001,
        ..dp_row("late", "q2", 3)
    };
    assert!(matches!(
        s.put_dp_answer(&again, &charge).await.unwrap(),
        DpPut::Kept { charged: true, ref answer } if answer.answer_id == "q2"
    ));
    // An answer without a keeping time (kept before there were any) stays.
    let legacy = DpAnswerRow {
        expires_ms: 0,
        ..dp_row("legacy", "l1", 1)
    };
    s.put_dp_answer(&legacy, &charge).await.unwrap();
    s.purge_dp_answers(i64::MAX, 0).await.unwrap();
    assert!(s.dp_answer("legacy").await.unwrap().is_some());
    assert_eq!(s.dp_answer("new").await.unwrap(), None);
    // Ledgers stay.
    assert!(!s.dp_ledgers(Some("d1"), 0).await.unwrap().is_empty());
}

async fn dp_concurrent_draws_keep_one_answer_and_one_charge(s: Arc<dyn Store>) {
    let charge = dp_charge("dataset", 1.0, Some(100.0));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = Arc::clone(&s);
        let charge = charge.clone();
        tasks.push(tokio::spawn(async move {
            s.put_dp_answer(&dp_row("same", &format!("draw{i}"), 1), &charge)
                .await
                .unwrap()
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut charged = 0;
    for t in tasks {
        match t.await.unwrap() {
            DpPut::Kept { answer, charged: c } => {
                ids.insert(answer.answer_id);
                charged += usize::from(c);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(ids.len(), 1, "every node returns the same draw: {ids:?}");
    assert_eq!(charged, 1);
    let spent = s.dp_ledgers(Some("d1"), 0).await.unwrap()[0].spent;
    assert!((spent.value - 1.0).abs() < 1e-12);
}
