//! The same attempts to read around the policies (`adversarial/attacks.rs`),
//! with the demo's `clinical.trials` rows in a PostgreSQL table, and those
//! particular to a database: a probe that would fail on a hidden row never
//! reaches the database, and neither does a filter on a masked column.
//!
//! PostgreSQL: `VEIL_TEST_POSTGRES_URL`, skipped with `VEIL_TEST_SKIP_POSTGRES=1`.

#[path = "adversarial/attacks.rs"]
mod attacks;

use veil_client::Scan;
use veil_tests::{TestServer, row_count};

async fn demo() -> Option<TestServer> {
    TestServer::demo_trials_in_postgres().await
}

/// A probe that fails on a hidden row alone must not fail for alice: it
/// runs above her row filter, never in the database (where the filter's
/// rows and the probe's would meet in one WHERE).
#[tokio::test]
async fn a_probe_on_hidden_rows_runs_above_the_policy_not_in_the_database() {
    let Some(server) = demo().await else { return };
    let alice = server.connect("alice").await;
    // The division fails on some row of another state: it must not run in
    // the database (where it would meet that row), nor below the row filter.
    let raw = veil_tests::raw_trials();
    let states = veil_tests::strings(&raw, "state");
    let ids = veil_tests::strings(&raw, "participant_id");
    let hidden = states
        .iter()
        .zip(&ids)
        .find(|(s, _)| s.as_deref() != Some("CA"))
        .map(|(_, id)| id.clone().unwrap())
        .unwrap();
    for filter in [
        format!("1000 / (participant_id - {hidden}) > -100000"),
        format!("CASE WHEN participant_id = {hidden} THEN 1 / (age - age) ELSE 1 END = 1"),
        format!("participant_id >= {hidden} AND 1000 / (participant_id - {hidden}) > -100000"),
    ] {
        // Each fails on the hidden row alone: alice's read succeeds.
        let b = alice
            .scan(
                "clinical.trials",
                Scan::default().with_filter(filter.clone()),
            )
            .await
            .unwrap_or_else(|e| panic!("{filter}: {e}"));
        assert!(row_count(&b) > 0, "{filter}");
        assert!(
            veil_tests::strings(&b, "state")
                .iter()
                .all(|s| s.as_deref() == Some("CA")),
            "{filter}"
        );
    }
    // A LIKE pattern ending in its escape: PostgreSQL fails it on a row
    // its match reaches (whether that row is hidden or not), so it never
    // goes to the database; a visible prefix and a hidden one answer alike.
    let hidden_state = states
        .iter()
        .flatten()
        .find(|s| !s.starts_with('C'))
        .unwrap();
    // bob has no row policy, so his filters go into the database: the
    // pattern must still stay in Veil.
    let bob = server.connect("bob").await;
    for prefix in ["C".to_string(), hidden_state[..1].to_string()] {
        let filter = format!("state LIKE '{prefix}\\'");
        for reader in [&alice, &bob] {
            let out = reader
                .scan(
                    "clinical.trials",
                    Scan::default().with_filter(filter.clone()),
                )
                .await
                .unwrap_or_else(|e| panic!("{filter}: {e}"));
            assert_eq!(row_count(&out), 0, "{filter}");
        }
    }
    // The hidden row itself, by an unmasked column: nothing.
    let out = alice
        .scan(
            "clinical.trials",
            Scan::default().with_filter(format!("participant_id = {hidden}")),
        )
        .await
        .unwrap();
    assert_eq!(row_count(&out), 0);
    server.stop().await;
}
