//! Snapshots of the optimised logical plan and the physical plan for
//! representative policies, showing where the barrier, the masks, the row
//! policies and the caller's own operators sit. A change of plan shape
//! (a mask moved above the barrier, a user filter pushed below it, an
//! extra pass over the data) fails here and shows as a diff.
//!
//! `target_partitions` is fixed at 2 (`demo_engine`); the data directory's
//! path is replaced by `[data]`. Review a changed plan with
//! `cargo insta review` or rerun with `INSTA_UPDATE=always` and read the
//! diff before committing it.

use super::tests::{demo_engine_with, principal};
use super::*;
use datafusion::physical_plan::displayable;

/// Policies added to the demo's for these plans: a conditional mask and
/// k-anonymity (the demo already hashes PII, replaces IP addresses by a
/// constant, nulls birth dates and keeps each analyst to their state).
const EXTRA: &str = r#"
[[policies]]
name = "diagnosis-outside-large-payments"
dataset = "clinical.trials"
columns = ["diagnosis"]
mask = "null"
mask_where = "amount < 1000"
except = { groups = ["privileged"] }

[[policies]]
name = "sites-k-anonymous"
dataset = "clinical.sites"
columns = ["state"]
mask = { k_anonymity = { k = 2 } }
except = { groups = ["privileged"] }
"#;

/// The plans of `sql` for `user`, as text with the data directory hidden.
async fn plans(user: &str, sql: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (engine, snap) = demo_engine_with(dir.path(), EXTRA).await;
    let engine = Arc::new(engine);
    let scope = engine.scope(&principal(&snap, user)).await.unwrap();
    let q = engine
        .plan(
            &scope,
            &Command::Sql(SqlCommand {
                query: sql.into(),
                ..Default::default()
            }),
            None,
            None,
        )
        .await
        .unwrap();
    let text = format!(
        "-- {user}: {sql}\n\n-- logical\n{}\n\n-- physical\n{}",
        q.logical.display_indent(),
        displayable(q.physical.as_ref()).indent(true)
    );
    let data = std::fs::canonicalize(dir.path()).unwrap();
    text.replace(data.to_string_lossy().trim_start_matches('/'), "[data]")
        .replace(
            dir.path().to_string_lossy().trim_start_matches('/'),
            "[data]",
        )
}

#[tokio::test]
async fn a_keyed_hash_and_a_row_filter() {
    insta::assert_snapshot!(plans("alice", "SELECT ssn, state FROM clinical.trials").await);
}

#[tokio::test]
async fn a_conditional_mask() {
    insta::assert_snapshot!(plans("alice", "SELECT diagnosis FROM clinical.trials").await);
}

#[tokio::test]
async fn k_anonymity() {
    insta::assert_snapshot!(plans("alice", "SELECT state, beds FROM clinical.sites").await);
}

#[tokio::test]
async fn a_user_filter_and_aggregate_on_top() {
    insta::assert_snapshot!(
        plans(
            "alice",
            "SELECT state, count(*) AS n, avg(amount) AS mean FROM clinical.trials \
             WHERE email LIKE '%a%' AND amount > 10 GROUP BY state ORDER BY state"
        )
        .await
    );
}

/// The same query unmasked (bob is privileged): no masks, no row filter,
/// the barrier still in place.
#[tokio::test]
async fn the_same_query_for_a_privileged_user() {
    insta::assert_snapshot!(
        plans(
            "bob",
            "SELECT state, count(*) AS n, avg(amount) AS mean FROM clinical.trials \
             WHERE email LIKE '%a%' AND amount > 10 GROUP BY state ORDER BY state"
        )
        .await
    );
}
