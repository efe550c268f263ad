//! Differential privacy through the engine, on the demo's
//! `clinical.trials` (120,000 participants, one row each): what is
//! answered and refused, how answers are kept and charged, and that the
//! noise is what the policy says.

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use super::DpReceipt;
use crate::engine::tests::{demo_engine_with, principal};
use crate::engine::{Command, Engine};
use crate::error::VeilError;
use crate::model::snapshot::Snapshot;
use veil_proto::{ScanCommand, SqlCommand};

/// A DP policy on the demo's trials for everyone but the privileged.
pub(crate) fn policy(epsilon: f64, extra: &str) -> String {
    format!(
        r#"
[[policies]]
name = "trials-dp"
dataset = "clinical.trials"
except = {{ groups = ["privileged"] }}
[policies.differential_privacy]
privacy_unit = "participant_id"
epsilon = {epsilon}
delta = 1e-6
latency_tolerance = "24h"
groupable = ["state", "diagnosis"]
columns.age = {{ lower = 0, upper = 100 }}
columns.amount = {{ lower = 0, upper = 5000, scale = 100 }}
public_groups = {{ diagnosis = ["hypertension", "type 2 diabetes", "asthma", "migraine", "arthritis", "none"] }}
{extra}
"#
    )
}

struct Dp {
    engine: Arc<Engine>,
    snap: Arc<Snapshot>,
    clock: Arc<AtomicI64>,
    _dir: tempfile::TempDir,
}

const DAY_MS: i64 = 86_400_000;

impl Dp {
    async fn new(epsilon: f64, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (engine, snap) = demo_engine_with(dir.path(), &policy(epsilon, extra)).await;
        // Mid-window, so a test's own steps never cross a boundary.
        let clock = Arc::new(AtomicI64::new(1_000 * DAY_MS + DAY_MS / 2));
        let tick = Arc::clone(&clock);
        let engine = engine.with_dp_clock(Arc::new(move || tick.load(Ordering::SeqCst)));
        Self {
            engine: Arc::new(engine),
            snap: Arc::new(snap.as_ref().clone()),
            clock,
            _dir: dir,
        }
    }

    async fn run(&self, user: &str, sql: &str) -> Result<(RecordBatch, DpReceipt), VeilError> {
        self.run_as(principal(&self.snap, user), sql).await
    }

    /// A user not in the directory, with alice's groups and attributes:
    /// another person who sees exactly her rows.
    fn alices_twin(&self) -> Arc<crate::model::identity::Principal> {
        let alice = principal(&self.snap, "alice");
        Arc::new(crate::auth::identity::principal(
            crate::model::identity::Identity::new("veil-demo", "frank"),
            alice.groups.clone(),
            alice.attributes.clone(),
            Default::default(),
            &crate::secrets::MasterKey::from_bytes([5; 32])
                .derive(crate::secrets::KeyPurpose::Fingerprint),
            Default::default(),
        ))
    }

    async fn run_as(
        &self,
        p: Arc<crate::model::identity::Principal>,
        sql: &str,
    ) -> Result<(RecordBatch, DpReceipt), VeilError> {
        let scope = self.engine.scope(&p).await?;
        let cmd = Command::Sql(SqlCommand {
            query: sql.into(),
            ..Default::default()
        });
        let planned = self.engine.plan(&scope, &cmd, None, None).await?;
        let batches: Vec<RecordBatch> = futures::TryStreamExt::try_collect(planned.execute()?)
            .await
            .map_err(crate::error::query::from_datafusion)?;
        let batch = datafusion::arrow::compute::concat_batches(&planned.schema, &batches).unwrap();
        let receipt = planned
            .dp
            .as_ref()
            .expect("a DP query")
            .lock()
            .unwrap()
            .clone()
            .expect("a receipt once executed");
        Ok((batch, receipt))
    }

    async fn refused(&self, user: &str, sql: &str) -> VeilError {
        match self.run(user, sql).await {
            Ok((b, _)) => panic!("{sql} was answered: {b:?}"),
            Err(e) => e,
        }
    }

    fn advance(&self, ms: i64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }
}

fn ints(b: &RecordBatch, col: usize) -> Vec<i64> {
    b.column(col).as_primitive::<Int64Type>().values().to_vec()
}

fn floats(b: &RecordBatch, col: usize) -> Vec<f64> {
    b.column(col)
        .as_primitive::<Float64Type>()
        .values()
        .to_vec()
}

fn strings(b: &RecordBatch, col: usize) -> Vec<String> {
    let c = datafusion::arrow::compute::cast(
        b.column(col),
        &datafusion::arrow::datatypes::DataType::Utf8,
    )
    .unwrap();
    c.as_string::<i32>()
        .iter()
        .map(|s| s.unwrap_or("").to_string())
        .collect()
}

/// A GROUP BY answer's counts by key (column 0 the key, 1 the count).
fn counts_by_key(b: &RecordBatch) -> std::collections::HashMap<String, i64> {
    strings(b, 0).into_iter().zip(ints(b, 1)).collect()
}

/// Each noisy count within `within` of the truth (a key the truth lacks:
/// 0, as a public key no row has).
fn near_truth(noisy: &RecordBatch, truth: &RecordBatch, within: i64, context: &str) {
    let truth = counts_by_key(truth);
    for (key, n) in counts_by_key(noisy) {
        let t = truth.get(&key).copied().unwrap_or(0);
        assert!((t - n).abs() <= within, "{context}: {key} rows {n} vs {t}");
    }
}

/// `sql` planned and run as `p`, its batches in one.
async fn sql_batch(
    engine: &Arc<Engine>,
    p: &Arc<crate::model::identity::Principal>,
    sql: &str,
) -> RecordBatch {
    let scope = engine.scope(p).await.unwrap();
    let cmd = Command::Sql(SqlCommand {
        query: sql.into(),
        ..Default::default()
    });
    let planned = engine.plan(&scope, &cmd, None, None).await.unwrap();
    let b: Vec<RecordBatch> = futures::TryStreamExt::try_collect(planned.execute().unwrap())
        .await
        .unwrap();
    datafusion::arrow::compute::concat_batches(&planned.schema, &b).unwrap()
}

#[tokio::test]
async fn aggregates_are_answered_near_the_truth_with_the_users_row_policy_below() {
    // ε = 50: noise of a few units, so bounding and filters show.
    let dp = Dp::new(50.0, "").await;
    // bob is exempt: the exact answers.
    let p = principal(&dp.snap, "bob");
    let scope = dp.engine.scope(&p).await.unwrap();
    let exact_sql = |sql: &str| {
        let engine = Arc::clone(&dp.engine);
        let scope = Arc::clone(&scope);
        let sql = sql.to_string();
        async move {
            let cmd = Command::Sql(SqlCommand {
                query: sql,
                ..Default::default()
            });
            let planned = engine.plan(&scope, &cmd, None, None).await.unwrap();
            assert!(planned.dp.is_none(), "bob is exempt");
            let b: Vec<RecordBatch> =
                futures::TryStreamExt::try_collect(planned.execute().unwrap())
                    .await
                    .unwrap();
            datafusion::arrow::compute::concat_batches(&planned.schema, &b).unwrap()
        }
    };
    let truth = exact_sql(
        "SELECT COUNT(*) AS n, SUM(age) AS s, AVG(amount) AS a, COUNT(DISTINCT participant_id) AS u FROM clinical.trials WHERE state = 'CA' AND age > 40",
    )
    .await;
    // alice sees CA only (her row policy): the same question without the
    // state filter answers for CA.
    let (noisy, receipt) = dp
        .run(
            "alice",
            "SELECT COUNT(*) AS n, SUM(age) AS s, AVG(amount) AS a, COUNT(DISTINCT participant_id) AS u FROM clinical.trials WHERE age > 40",
        )
        .await
        .unwrap();
    assert_eq!(noisy.num_rows(), 1);
    let n_true = ints(&truth, 0)[0];
    let n = ints(&noisy, 0)[0];
    // Four measurements share ε = 50: count noise scale 4/50.
    assert!((n - n_true).abs() <= 3, "count {n} vs {n_true}");
    let u = ints(&noisy, 3)[0];
    assert!((u - n_true).abs() <= 3, "units {u} vs {n_true}");
    // SUM(age): sensitivity 100, scale 400/50 = 8.
    let s_true = ints(&truth, 1)[0];
    let s = ints(&noisy, 1)[0];
    assert!((s - s_true).abs() <= 200, "sum {s} vs {s_true}");
    let a_true = floats(&truth, 2)[0];
    let a = floats(&noisy, 2)[0];
    assert!((a - a_true).abs() < 1.0, "avg {a} vs {a_true}");
    assert_eq!(receipt.epsilon, 50.0);
    assert_eq!(receipt.charged, 50.0);
    assert_eq!(receipt.unit, "epsilon");
    assert!(receipt.fresh);
}

#[tokio::test]
async fn public_keys_are_all_answered_and_private_keys_thresholded() {
    let dp = Dp::new(20.0, "").await;
    // Public keys: every diagnosis, including one no row has after WHERE.
    let (b, _) = dp
        .run(
            "alice",
            "SELECT diagnosis, COUNT(*) AS n FROM clinical.trials WHERE diagnosis <> 'asthma' GROUP BY diagnosis ORDER BY diagnosis",
        )
        .await
        .unwrap();
    let keys = strings(&b, 0);
    assert_eq!(
        keys,
        [
            "arthritis",
            "asthma",
            "hypertension",
            "migraine",
            "none",
            "type 2 diabetes"
        ]
    );
    let asthma = ints(&b, 1)[1];
    assert!(
        asthma.abs() <= 5,
        "asthma has no rows: a noisy zero, got {asthma}"
    );
    // Private keys (state): alice's rows are CA only, so only CA shows.
    let (b, _) = dp
        .run(
            "alice",
            "SELECT state, COUNT(*) FROM clinical.trials GROUP BY state",
        )
        .await
        .unwrap();
    assert_eq!(strings(&b, 0), ["CA"]);
    // HAVING, ORDER BY and LIMIT apply to the noisy answer.
    let (b, _) = dp
        .run(
            "alice",
            "SELECT diagnosis, COUNT(*) AS n FROM clinical.trials GROUP BY diagnosis HAVING COUNT(*) > 100 ORDER BY n DESC LIMIT 2",
        )
        .await
        .unwrap();
    assert_eq!(b.num_rows(), 2);
    let n = ints(&b, 1);
    assert!(n[0] >= n[1] && n[1] > 100);
}

#[tokio::test]
async fn every_other_shape_is_refused_with_a_stable_code() {
    let dp = Dp::new(1.0, "").await;
    let cases = [
        ("SELECT * FROM clinical.trials", "DP_ROW_LEVEL"),
        (
            "SELECT age FROM clinical.trials WHERE age > 3",
            "DP_ROW_LEVEL",
        ),
        ("SELECT DISTINCT state FROM clinical.trials", "DP_ROW_LEVEL"),
        (
            "SELECT state FROM clinical.trials GROUP BY state",
            "DP_ROW_LEVEL",
        ),
        ("SELECT MIN(age) FROM clinical.trials", "DP_FUNCTION"),
        ("SELECT MAX(amount) FROM clinical.trials", "DP_FUNCTION"),
        (
            "SELECT COUNT(*) FROM clinical.trials t JOIN clinical.sites s ON t.state = s.state",
            "DP_JOIN",
        ),
        (
            "SELECT COUNT(*) FROM clinical.trials a, clinical.trials b",
            "DP_JOIN",
        ),
        (
            "SELECT COUNT(*) FROM (SELECT * FROM clinical.trials) x",
            "DP_JOIN",
        ),
        (
            "SELECT COUNT(*) FROM clinical.trials UNION ALL SELECT 1",
            "DP_JOIN",
        ),
        (
            "SELECT COUNT(*) FROM clinical.trials WHERE state IN (SELECT state FROM clinical.sites)",
            "DP_JOIN",
        ),
        (
            "SELECT COUNT(*), ROW_NUMBER() OVER () FROM clinical.trials",
            "DP_FUNCTION",
        ),
        (
            "SELECT COUNT(*) FROM clinical.trials GROUP BY participant_id",
            "DP_GROUP_BY",
        ),
        (
            "SELECT COUNT(*) FROM clinical.trials GROUP BY email",
            "DP_GROUP_BY",
        ),
        (
            "SELECT COUNT(*) FROM clinical.trials GROUP BY age % 10",
            "DP_GROUP_BY",
        ),
        (
            "SELECT COUNT(*) FROM clinical.trials GROUP BY ROLLUP(state)",
            "DP_GROUP_BY",
        ),
        (
            "SELECT SUM(participant_id) FROM clinical.trials",
            "DP_COLUMN",
        ),
        (
            "SELECT COUNT(DISTINCT state) FROM clinical.trials",
            "DP_COLUMN",
        ),
        ("SELECT SUM(age * 2) FROM clinical.trials", "DP_FUNCTION"),
        (
            "SELECT COUNT(*) FILTER (WHERE age > 3) FROM clinical.trials",
            "DP_FUNCTION",
        ),
        (
            "SELECT COUNT(*) FROM clinical.trials WHERE 100 / (age - 40) > 1",
            "DP_FUNCTION",
        ),
        (
            "SELECT COUNT(*) FROM clinical.trials WHERE CAST(ssn AS INT) > 1",
            "DP_FUNCTION",
        ),
        (
            "SELECT COUNT(*) FROM clinical.trials WHERE state = 5",
            "DP_FUNCTION",
        ),
        (
            "SELECT COUNT(*) FROM clinical.trials WHERE regexp_like(name, '(a+)+$')",
            "DP_FUNCTION",
        ),
        (
            "SELECT COUNT(*) FROM clinical.trials WHERE substr(name, 1, 1) = 'A'",
            "DP_FUNCTION",
        ),
        // Predicates whose coerced form could fail on some rows (an AND
        // reaches its right side only for rows its left side keeps, so a
        // failure would tell of those rows).
        (
            "SELECT COUNT(*) FROM clinical.trials WHERE participant_id = 1 AND date_part('year', diagnosis) = 1",
            "DP_FUNCTION",
        ),
        (
            "SELECT COUNT(*) FROM clinical.trials WHERE participant_id = 1 AND date_part('foo', date_of_birth) = 1",
            "DP_FUNCTION",
        ),
        (
            "SELECT COUNT(*) FROM clinical.trials WHERE participant_id = 1 AND amount > CAST(1 AS DECIMAL(38,37))",
            "DP_FUNCTION",
        ),
        (
            "SELECT COUNT(*) FROM clinical.trials WHERE coalesce(amount, CAST(1 AS DECIMAL(38,37))) > 0",
            "DP_FUNCTION",
        ),
        (
            "SELECT COUNT(*) FROM clinical.trials WHERE age = CAST(1 AS DECIMAL(76,75))",
            "DP_FUNCTION",
        ),
        (
            "SELECT COUNT(*) FROM clinical.trials WHERE date_of_birth > CAST('2020-13-45' AS DATE)",
            "DP_FUNCTION",
        ),
        (
            "SELECT COUNT(*) FROM clinical.trials WHERE diagnosis LIKE '\\x%'",
            "DP_FUNCTION",
        ),
        (
            "SELECT COUNT(*) FROM clinical.trials WHERE TRY_CAST(amount AS DATE) IS NULL",
            "DP_FUNCTION",
        ),
        (
            "SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (epsilon => 1e-9) COUNT(*) FROM clinical.trials",
            "DP_OPTIONS",
        ),
        (
            "SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (epsilon => 2) COUNT(*) FROM clinical.trials",
            "DP_OPTIONS",
        ),
        (
            "SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (epsilon => 0.5) COUNT(*) FROM clinical.sites",
            "DP_OPTIONS",
        ),
        // δ alone is checked too (it was ignored without ε: found by an
        // outside review).
        (
            "SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (delta => 0) COUNT(*) FROM clinical.trials",
            "DP_OPTIONS",
        ),
        ("SELECT COUNT(*) FROM clinical.trials LIMIT 0", "DP_EMPTY"),
        (
            "SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (delta => 0.5) COUNT(*) FROM clinical.trials",
            "DP_OPTIONS",
        ),
    ];
    for (sql, code) in cases {
        let e = dp.refused("alice", sql).await;
        let m = e.message();
        assert!(
            m.contains(&format!("[{code}]")),
            "{sql}: expected {code}, got {e:?}"
        );
        assert!(!m.contains("123-"), "no value in {m}");
    }
    // Every function the query may not use is named, not only the first.
    let e = dp
        .refused(
            "alice",
            "SELECT COUNT(*), MIN(age), MAX(amount), MIN(amount) FROM clinical.trials",
        )
        .await;
    assert!(
        e.message().contains("[DP_FUNCTION]") && e.message().contains("MIN, MAX are not answered"),
        "{e:?}"
    );
    let e = dp
        .refused("alice", "SELECT MAX(age) FROM clinical.trials")
        .await;
    assert!(e.message().contains("MAX is not answered"), "{e:?}");
    // A scan (the Python `scan_as_pandas` path) is refused too.
    let p = principal(&dp.snap, "alice");
    let scope = dp.engine.scope(&p).await.unwrap();
    let scan = Command::Scan(ScanCommand {
        dataset: "clinical.trials".into(),
        limit: Some(5),
        ..Default::default()
    });
    let e = dp.engine.plan(&scope, &scan, None, None).await.unwrap_err();
    assert!(
        matches!(e, VeilError::PermissionDenied(ref m) if m.contains("[DP_ROW_LEVEL]")),
        "{e:?}"
    );
}

#[tokio::test]
async fn answers_are_kept_for_the_window_across_users_and_redrawn_only_when_data_changed() {
    let dp = Dp::new(1.0, "").await;
    let q = "SELECT diagnosis, COUNT(*) AS n FROM clinical.trials GROUP BY diagnosis ORDER BY diagnosis";
    let (first, r1) = dp.run("alice", q).await.unwrap();
    assert!(r1.fresh);
    // The same question, written differently: the same draw, no charge
    // for a user who saw it.
    let (again, r2) = dp
        .run("alice", "select DIAGNOSIS, count(*) as howmany from clinical.trials t group by t.diagnosis order by 1")
        .await
        .unwrap();
    assert_eq!(ints(&first, 1), ints(&again, 1));
    assert!(!r2.fresh);
    assert_eq!(r2.charged, 0.0);
    // Another user who sees the same rows gets the same draw (and pays
    // for their first view); carol may not read the dataset at all, and a
    // user with another row scope gets another draw.
    let (twin, r3) = dp.run_as(dp.alices_twin(), q).await.unwrap();
    assert_eq!(ints(&first, 1), ints(&twin, 1));
    assert!(!r3.fresh);
    assert_eq!(
        r3.charged, 1.0,
        "the twin's first view is charged to the twin"
    );
    let (_, r3) = dp.run_as(dp.alices_twin(), q).await.unwrap();
    assert_eq!(r3.charged, 0.0);
    let (other, r_erin) = dp.run("erin", q).await.unwrap();
    assert!(r_erin.fresh, "another row scope: another draw");
    assert_ne!(ints(&first, 1), ints(&other, 1));
    assert!(
        dp.run("carol", q).await.is_err(),
        "carol can't read the dataset"
    );
    let (later, r3) = dp.run("alice", q).await.unwrap();
    assert_eq!(ints(&first, 1), ints(&later, 1));
    assert_eq!(r3.charged, 0.0);
    // A new window with unchanged files: still the same answer.
    dp.advance(DAY_MS);
    let (next_day, r4) = dp.run("alice", q).await.unwrap();
    assert_eq!(ints(&first, 1), ints(&next_day, 1));
    assert!(!r4.fresh);
    // The data changes: the next window draws anew.
    let file = dp._dir.path().join("data/clinical/trials.parquet");
    crate::demo::write_trials(&file, 1_000).unwrap();
    dp.advance(DAY_MS);
    let p = principal(&dp.snap, "alice");
    let scope = dp.engine.scope(&p).await.unwrap();
    let _ = scope;
    let (changed, r5) = dp.run("alice", q).await.unwrap();
    assert!(r5.fresh, "new data in a new window: a new draw");
    assert_ne!(ints(&first, 1), ints(&changed, 1));
}

#[tokio::test]
async fn budgets_stop_averaging_attacks_and_say_when_they_reset() {
    let dp = Dp::new(
        1.0,
        "budget = { user_epsilon = 3, dataset_epsilon = 5, period = \"30d\" }",
    )
    .await;
    // An averaging attack: the same count asked in ways that each draw
    // anew. Three are paid for; the fourth is refused.
    let variants = [
        "SELECT COUNT(*) FROM clinical.trials WHERE age > 40",
        "SELECT COUNT(*) FROM clinical.trials WHERE age >= 41",
        "SELECT COUNT(*) FROM clinical.trials WHERE age > 40 AND age < 1000",
        "SELECT COUNT(*) FROM clinical.trials WHERE NOT age <= 40",
    ];
    let mut spent = Vec::new();
    for v in &variants[..3] {
        let (_, r) = dp.run("alice", v).await.unwrap();
        spent.push(r.spent);
        assert_eq!(r.budget, Some(3.0));
    }
    assert_eq!(spent, [1.0, 2.0, 3.0]);
    let e = dp.refused("alice", variants[3]).await;
    assert!(
        matches!(e, VeilError::ResourceExhausted(ref m) if m.contains("[DP_BUDGET]") && m.contains("resets at") && !m.contains("spend less")),
        "nothing left, so no cheaper question fits: {e:?}"
    );
    // Answers she has seen stay free.
    let (_, r) = dp.run("alice", variants[0]).await.unwrap();
    assert_eq!(r.charged, 0.0);
    // The dataset's budget bounds every user together: erin (another
    // row scope) can make two fresh draws, then the dataset is spent.
    dp.run("erin", variants[0]).await.unwrap();
    dp.run("erin", variants[1]).await.unwrap();
    let e = dp.refused("erin", variants[2]).await;
    assert!(
        matches!(e, VeilError::ResourceExhausted(ref m) if m.contains("this dataset")),
        "{e:?}"
    );
    // A new period resets both.
    dp.advance(31 * DAY_MS);
    dp.run("alice", variants[3]).await.unwrap();

    // With some ε left, the refusal says how to ask for less; asking for
    // less fits.
    let dp = Dp::new(1.0, "budget = { user_epsilon = 1.5, period = \"30d\" }").await;
    dp.run("alice", variants[0]).await.unwrap();
    let e = dp.refused("alice", variants[1]).await;
    assert!(
        matches!(e, VeilError::ResourceExhausted(ref m) if m.contains("epsilon 1 of 1.5 used, 0.5 left, a query costs 1;") && m.contains("DIFFERENTIAL_PRIVACY OPTIONS (epsilon =>")),
        "{e:?}"
    );
    let (_, r) = dp
        .run(
            "alice",
            &variants[1].replace(
                "SELECT",
                "SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (epsilon => 0.5)",
            ),
        )
        .await
        .unwrap();
    assert_eq!(r.charged, 0.5);
}

#[tokio::test]
async fn private_keys_spend_delta_and_cheap_queries_cannot_add_it_up() {
    // ε budget 3 at ε 1: by default δ may add up to 3 answers' worth.
    let dp = Dp::new(1.0, "budget = { user_epsilon = 3, period = \"30d\" }").await;
    let cheap = |i: i32| {
        format!(
            "SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (epsilon => 0.1) state, COUNT(*) FROM clinical.trials WHERE age > {i} GROUP BY state"
        )
    };
    // Public keys release nothing by threshold: no δ.
    let (_, r) = dp
        .run(
            "alice",
            "SELECT diagnosis, COUNT(*) FROM clinical.trials GROUP BY diagnosis",
        )
        .await
        .unwrap();
    assert_eq!((r.delta_charged, r.delta_spent), (0.0, 0.0));
    assert!((r.delta_budget.unwrap() - 3e-6).abs() < 1e-18, "{r:?}");
    assert_eq!(r.delta_remaining, r.delta_budget, "{r:?}");
    assert_eq!(r.budget_epsilon, Some(3.0), "{r:?}");
    // Each answer with private keys spends the policy's δ.
    for i in 0..3 {
        let (_, r) = dp.run("alice", &cheap(i)).await.unwrap();
        assert_eq!(r.delta_charged, 1e-6);
        assert!(
            (r.delta_spent - 1e-6 * f64::from(i + 1)).abs() < 1e-15,
            "{r:?}"
        );
        let left = 1e-6 * f64::from(2 - i);
        assert!((r.delta_remaining.unwrap() - left).abs() < 1e-15, "{r:?}");
    }
    // ε has room (1.3 of 3), δ has none: refused, naming δ, nothing charged.
    let e = dp.refused("alice", &cheap(3)).await;
    assert!(
        matches!(e, VeilError::ResourceExhausted(ref m) if m.contains("[DP_BUDGET]") && m.contains("delta")),
        "{e:?}"
    );
    let (_, r) = dp
        .run(
            "alice",
            "SELECT COUNT(*) FROM clinical.trials WHERE age > 1",
        )
        .await
        .unwrap();
    assert!((r.spent - 1.3 - 1.0).abs() < 1e-9, "{r:?}");
    assert!((r.delta_spent - 3e-6).abs() < 1e-15, "{r:?}");
    // Seen answers stay free.
    let (_, r) = dp.run("alice", &cheap(0)).await.unwrap();
    assert_eq!((r.charged, r.delta_charged), (0.0, 0.0));
}

#[tokio::test]
async fn an_explicit_delta_budget_binds_and_is_checked_when_written() {
    let dp = Dp::new(
        1.0,
        "budget = { user_epsilon = 10, user_delta = 1e-6, period = \"30d\" }",
    )
    .await;
    let q = |i: i32| {
        format!("SELECT state, COUNT(*) FROM clinical.trials WHERE age > {i} GROUP BY state")
    };
    dp.run("alice", &q(0)).await.unwrap();
    let e = dp.refused("alice", &q(1)).await;
    assert!(
        matches!(e, VeilError::ResourceExhausted(ref m) if m.contains("delta")),
        "{e:?}"
    );
    // A δ budget under one answer's δ, or on a policy that spends none,
    // is refused when written.
    let spec = |budget: &str, delta: &str| -> crate::model::policy::DifferentialPrivacySpec {
        toml::from_str(&format!(
            "privacy_unit = \"participant_id\"\nepsilon = 1.0\n{delta}\nlatency_tolerance = \"1h\"\nbudget = {budget}\n"
        ))
        .unwrap()
    };
    use crate::policy::differential_privacy::DpPolicy;
    let e = DpPolicy::validate(&spec(
        "{ user_delta = 1e-9, period = \"1d\" }",
        "delta = 1e-6",
    ))
    .unwrap_err();
    assert!(e.contains("user_delta"), "{e}");
    let e = DpPolicy::validate(&spec("{ dataset_delta = 1e-3, period = \"1d\" }", "")).unwrap_err();
    assert!(e.contains("spends no δ"), "{e}");
    let ok = DpPolicy::validate(&spec(
        "{ user_epsilon = 5, period = \"1d\" }",
        "delta = 1e-6",
    ))
    .unwrap();
    let b = ok.budgets.unwrap();
    assert!((b.user_delta.unwrap() - 5e-6).abs() < 1e-18, "{b:?}");
    assert_eq!(b.dataset_delta, None);
    // Under the Gaussian, ledgers count ρ, which grows faster than ε: the
    // default δ budget counts the answers the ρ budget pays for (more than
    // 10 of ε 1 in an ε budget of 10), each spending half the policy's δ.
    let gaussian = DpPolicy::validate(&spec(
        "{ user_epsilon = 10, period = \"1d\" }",
        "delta = 1e-6\nmechanism = \"gaussian\"",
    ))
    .unwrap();
    let answers = gaussian.privacy.budget_in_unit(10.0) / gaussian.privacy.cost();
    assert!(answers > 10.0, "{answers}");
    let cap = gaussian.budgets.unwrap().user_delta.unwrap();
    assert!(
        (cap - answers * 0.5e-6).abs() < 1e-15,
        "{cap} for {answers} answers"
    );
}

#[tokio::test]
async fn answers_nobody_asks_for_are_forgotten_then_drawn_anew() {
    // A window of a day, a budget period of 30 days: an answer of
    // unchanged files is kept 30 days past the last window it served.
    let dp = Dp::new(1.0, "budget = { user_epsilon = 100, period = \"30d\" }").await;
    let q = "SELECT diagnosis, COUNT(*) AS n FROM clinical.trials GROUP BY diagnosis ORDER BY diagnosis";
    let (first, r) = dp.run("alice", q).await.unwrap();
    assert!(r.fresh);
    // Asked again 20 days on: the same answer, renewed.
    dp.advance(20 * DAY_MS);
    let (again, r) = dp.run("alice", q).await.unwrap();
    assert!(!r.fresh);
    assert_eq!(ints(&first, 1), ints(&again, 1));
    // A sweep now forgets nothing.
    assert_eq!(dp.engine.dp_answers().purge().await.unwrap(), 0);
    // 32 days after that, past its keeping time: not served even before
    // the sweep, and drawn anew (paid).
    dp.advance(32 * DAY_MS);
    let (later, r) = dp.run("alice", q).await.unwrap();
    assert!(r.fresh, "{r:?}");
    assert_eq!(r.charged, 1.0);
    assert_ne!(ints(&first, 1), ints(&later, 1));
    // The question now holds the new draw, kept for its own time.
    assert_eq!(dp.engine.dp_answers().purge().await.unwrap(), 0);
    dp.advance(62 * DAY_MS);
    assert_eq!(dp.engine.dp_answers().purge().await.unwrap(), 1);
}

#[tokio::test]
async fn spending_less_with_options_costs_less_and_draws_apart() {
    let dp = Dp::new(1.0, "budget = { user_epsilon = 2, period = \"1d\" }").await;
    let (_, r) = dp
        .run(
            "alice",
            "SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (epsilon => 0.25) COUNT(*) FROM clinical.trials",
        )
        .await
        .unwrap();
    assert_eq!((r.epsilon, r.charged), (0.25, 0.25));
    let (_, r) = dp
        .run("alice", "SELECT COUNT(*) FROM clinical.trials")
        .await
        .unwrap();
    assert!(r.fresh, "another ε is another answer");
    assert_eq!(r.spent, 1.25);
}

/// ln(i!) for i in 0..=n.
fn ln_factorials(n: usize) -> Vec<f64> {
    let mut out = vec![0.0; n + 1];
    for i in 1..=n {
        out[i] = out[i - 1] + (i as f64).ln();
    }
    out
}

/// P[X >= k] for X ~ Binomial(n, p).
fn binomial_tail(lf: &[f64], n: usize, k: usize, p: f64) -> f64 {
    if p <= 0.0 {
        return if k == 0 { 1.0 } else { 0.0 };
    }
    if p >= 1.0 {
        return 1.0;
    }
    (k..=n)
        .map(|i| {
            (lf[n] - lf[i] - lf[n - i] + i as f64 * p.ln() + (n - i) as f64 * (1.0 - p).ln()).exp()
        })
        .sum()
}

/// The Clopper-Pearson interval of a binomial proportion, each side at
/// `alpha` (by bisection on the exact binomial tails).
fn clopper_pearson(k: usize, n: usize, alpha: f64) -> (f64, f64) {
    let lf = ln_factorials(n);
    let solve = |f: &dyn Fn(f64) -> f64| {
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        for _ in 0..60 {
            let mid = (lo + hi) / 2.0;
            if f(mid) < 0.0 { lo = mid } else { hi = mid }
        }
        (lo + hi) / 2.0
    };
    let lower = if k == 0 {
        0.0
    } else {
        solve(&|p| binomial_tail(&lf, n, k, p) - alpha)
    };
    let upper = if k == n {
        1.0
    } else {
        // P[X <= k] = 1 - P[X >= k+1], decreasing in p.
        solve(&|p| alpha - (1.0 - binomial_tail(&lf, n, k + 1, p)))
    };
    (lower, upper)
}

#[test]
fn clopper_pearson_matches_known_intervals() {
    // R: binom.test(7, 20)$conf.int at 95% = 0.1539092 0.5921885.
    let (lo, hi) = clopper_pearson(7, 20, 0.025);
    assert!(
        (lo - 0.1539092).abs() < 1e-4 && (hi - 0.5921885).abs() < 1e-4,
        "{lo} {hi}"
    );
}

/// An empirical privacy audit: neighbouring datasets D and D + one unit
/// (with many rows, in several groups), the answers Veil computes for
/// each, and many noisy releases of both. For the most telling events
/// (the answer at or above a threshold), the Clopper-Pearson lower bound
/// on ε (upper bound on the probability under D, lower under D') stays
/// at or below the policy's ε; and the audit has the power to see most
/// of it, so an implementation with too little noise would fail.
#[tokio::test]
async fn an_empirical_privacy_audit_stays_within_epsilon() {
    use crate::dp::accounting::{QueryPrivacy, Sensitivity};
    use crate::model::policy::DpMechanism;
    use rand::SeedableRng;
    // D: the demo's trials, one row per participant. D': the same plus
    // participant 999999 with 50 rows (ages 100) in 3 diagnoses.
    let dir = tempfile::tempdir().unwrap();
    crate::demo::prepare(dir.path()).unwrap();
    let base = crate::demo::trials_batch(2_000, 7);
    let mut extra = crate::demo::trials_batch(50, 8);
    {
        use datafusion::arrow::array::{ArrayRef, Int32Array, Int64Array, StringArray};
        let mut cols: Vec<ArrayRef> = extra.columns().to_vec();
        cols[0] = Arc::new(Int64Array::from(vec![999_999i64; 50]));
        // In CA: alice's row policy shows them to her.
        cols[5] = Arc::new(StringArray::from(vec!["CA"; 50]));
        cols[7] = Arc::new(Int32Array::from(vec![100i32; 50]));
        let diag: Vec<&str> = (0..50)
            .map(|i| ["asthma", "migraine", "none"][i % 3])
            .collect();
        cols[8] = Arc::new(StringArray::from(diag));
        extra = RecordBatch::try_new(extra.schema(), cols).unwrap();
    }
    let write = |name: &str, batches: &[&RecordBatch]| {
        let path = dir.path().join(format!("data/clinical/{name}.parquet"));
        let file = std::fs::File::create(&path).unwrap();
        let mut w = crate::demo::parquet_writer(file, base.schema()).unwrap();
        for b in batches {
            w.write(b).unwrap();
        }
        w.close().unwrap();
    };
    write("trials", &[&base]);
    // ε = 100: noise far below 1, so these answers are the exact
    // bounded aggregates. (The first engine appends the policy to the
    // demo's config; the second reads it as it is.)
    let exact = |extra: String| {
        let dir = dir.path().to_path_buf();
        async move {
            let (engine, snap) = demo_engine_with(&dir, &extra).await;
            let b = sql_batch(
                &Arc::new(engine),
                &principal(&snap, "alice"),
                "SELECT diagnosis, COUNT(*) AS n, SUM(age) AS s FROM clinical.trials GROUP BY diagnosis ORDER BY diagnosis",
            )
            .await;
            (ints(&b, 1), ints(&b, 2))
        }
    };
    let (count_d, sum_d) = exact(policy(100.0, "max_groups_per_unit = 2")).await;
    write("trials", &[&base, &extra]);
    let (count_d1, sum_d1) = exact(String::new()).await;
    // Bounding: the unit moves at most 2 groups' counts, each by 1 (its
    // 50 rows count once). Sums carry noise of scale 4 even at ε = 100
    // (sensitivity 200, two quantities): the unit moves a sum by at most
    // 100, plus that noise.
    let moved: Vec<usize> = (0..6).filter(|&i| count_d[i] != count_d1[i]).collect();
    assert!(
        !moved.is_empty() && moved.len() <= 2,
        "{moved:?}: {count_d:?} {count_d1:?}"
    );
    for i in 0..6 {
        assert!((count_d1[i] - count_d[i]).abs() <= 1);
        let bound = if moved.contains(&i) { 160 } else { 60 };
        assert!(
            (sum_d1[i] - sum_d[i]).abs() <= bound,
            "{sum_d:?} {sum_d1:?}"
        );
    }
    // The audit, per mechanism, on the first group the unit moved, with
    // the noise Veil gives a COUNT in this query shape (2 quantities, 2
    // groups per unit, 1 row).
    let g = moved[0];
    let n = 20_000usize;
    for (mechanism, epsilon, delta) in [
        (DpMechanism::Laplace, 1.0, None),
        (DpMechanism::Gaussian, 1.0, Some(1e-5)),
    ] {
        let privacy = QueryPrivacy::new(mechanism, epsilon, delta).unwrap();
        let noise = privacy.noise(2, Sensitivity::bounded(2, 1));
        let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
        let mut draw = |exact: i64| -> Vec<i64> {
            (0..n)
                .map(|_| exact + crate::dp::noise::to_i128(&noise.sample(&mut rng)).unwrap() as i64)
                .collect()
        };
        let (a, b) = (draw(count_d[g]), draw(count_d1[g]));
        // The event {answer >= t} for thresholds around the two answers;
        // the largest ε the data proves.
        let lo = count_d[g].min(count_d1[g]);
        let mut best = f64::NEG_INFINITY;
        for t in (lo - 8)..=(lo + 9) {
            for (d, d1) in [(&a, &b), (&b, &a)] {
                let k1 = d1.iter().filter(|&&x| x >= t).count();
                let k0 = d.iter().filter(|&&x| x >= t).count();
                let (p1_lower, _) = clopper_pearson(k1, n, 0.025);
                let (_, p0_upper) = clopper_pearson(k0, n, 0.025);
                let slack = delta.unwrap_or(0.0);
                if p1_lower - slack > 0.0 && p0_upper > 0.0 {
                    best = best.max(((p1_lower - slack) / p0_upper).ln());
                }
            }
        }
        assert!(
            best <= epsilon,
            "{mechanism:?}: the audit proves ε >= {best} > {epsilon}"
        );
        // The audit has power: for the Laplace it proves most of what one
        // group's count may lose (ε over 2 quantities and 2 groups: the
        // loss on all of them together is ε); the Gaussian's loss on
        // threshold events is far below its (ε, δ) bound, but shows.
        let power = match mechanism {
            DpMechanism::Laplace => 0.8 * epsilon / 4.0,
            DpMechanism::Gaussian => 0.02,
        };
        assert!(best > power, "{mechanism:?}: audit too weak ({best})");
    }
}

#[tokio::test]
async fn buckets_group_a_number_into_declared_edges_every_one_answered() {
    let dp = Dp::new(50.0, "buckets = { age = [18, 40, 65, 95] }").await;
    let (b, _) = dp
        .run(
            "alice",
            "SELECT age, COUNT(*) AS n FROM clinical.trials GROUP BY age ORDER BY age",
        )
        .await
        .unwrap();
    // Ages 18..89: every bucket shows, [95, +inf) as a noisy zero.
    let ages: Vec<i64> = (0..b.num_rows())
        .map(|i| {
            datafusion::common::ScalarValue::try_from_array(b.column(0), i)
                .unwrap()
                .cast_to(&datafusion::arrow::datatypes::DataType::Int64)
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect();
    assert_eq!(ages, [18, 40, 65, 95]);
    let n = ints(&b, 1);
    assert!(n[3].abs() <= 3, "no one is 95 or older: {n:?}");
    assert!(n[0] > 1_000 && n[1] > 1_000 && n[2] > 1_000, "{n:?}");
}

#[tokio::test]
async fn a_global_policy_by_tag_and_a_chain_apply_as_written() {
    // Global, on every dataset tagged `clinical`, for everyone who is an
    // analyst (chain), others exempt.
    let dir = tempfile::tempdir().unwrap();
    let extra = r#"
[[policies]]
name = "clinical-dp"
tags = ["clinical"]
[[policies.chain]]
who = { groups = ["privileged"] }
exempt = true
[[policies.chain]]
who = { groups = ["analysts"] }
differential_privacy = { privacy_unit = "participant_id", epsilon = 1.0, latency_tolerance = "1h", mechanism = "gaussian", delta = 1e-6 }
[[policies.chain]]
otherwise = true
exempt = true
"#;
    let (engine, snap) = demo_engine_with(dir.path(), extra).await;
    let engine = Arc::new(engine);
    let run = |user: &str| {
        let engine = Arc::clone(&engine);
        let p = principal(&snap, user);
        async move {
            let scope = engine.scope(&p).await.unwrap();
            let cmd = Command::Sql(SqlCommand {
                query: "SELECT COUNT(*) FROM clinical.trials".into(),
                ..Default::default()
            });
            let planned = engine.plan(&scope, &cmd, None, None).await.unwrap();
            let dp = planned.dp.clone();
            let _: Vec<RecordBatch> =
                futures::TryStreamExt::try_collect(planned.execute().unwrap())
                    .await
                    .unwrap();
            dp.map(|slot| slot.lock().unwrap().clone().unwrap())
        }
    };
    let receipt = run("alice").await.expect("alice is an analyst: DP");
    // The Gaussian mechanism counts its ledger in ρ.
    assert_eq!(receipt.unit, "rho");
    assert!(
        receipt.charged > 0.0 && receipt.charged < 0.05,
        "{receipt:?}"
    );
    assert_eq!(receipt.mechanism, "gaussian");
    assert!(run("bob").await.is_none(), "bob is privileged: exempt");
}

#[tokio::test]
async fn a_long_like_pattern_is_refused_and_total_predicates_are_answered() {
    let dp = Dp::new(1.0, "").await;
    let long = format!("x{}%", "_".repeat(20_000));
    let e = dp
        .refused(
            "alice",
            &format!("SELECT COUNT(*) FROM clinical.trials WHERE participant_id = 1 AND diagnosis LIKE '{long}'"),
        )
        .await;
    assert!(e.message().contains("[DP_FUNCTION]"), "{e:?}");
    // Widening casts, text functions, dates against date constants and
    // date_part of a date are total: answered.
    for sql in [
        "SELECT COUNT(*) FROM clinical.trials WHERE age > 40 AND amount < 100.5",
        "SELECT COUNT(*) FROM clinical.trials WHERE lower(diagnosis) LIKE 'a%' OR starts_with(state, 'C')",
        "SELECT COUNT(*) FROM clinical.trials WHERE date_of_birth > '1980-01-01'",
        "SELECT COUNT(*) FROM clinical.trials WHERE date_part('year', date_of_birth) = 1980",
        "SELECT COUNT(*) FROM clinical.trials WHERE age IN (30, 40, 50) AND diagnosis IS NOT NULL",
        "SELECT COUNT(*) FROM clinical.trials WHERE age BETWEEN 30 AND 40",
    ] {
        dp.run("alice", sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
}

#[tokio::test]
async fn a_string_constant_that_spells_another_predicate_is_another_answer() {
    // Found by the red team: keys built from SQL text let a crafted
    // constant share (and plant) another question's answer.
    let dp = Dp::new(50.0, "").await;
    let (planted, _) = dp
        .run(
            "alice",
            "SELECT COUNT(*) FROM clinical.trials WHERE diagnosis = 'migraine\") OR state = Utf8(\"CA'",
        )
        .await
        .unwrap();
    let (real, r) = dp
        .run(
            "alice",
            "SELECT COUNT(*) FROM clinical.trials WHERE diagnosis = 'migraine' OR state = 'CA'",
        )
        .await
        .unwrap();
    assert!(r.fresh, "another question: its own draw");
    assert!(ints(&planted, 0)[0] < 10 && ints(&real, 0)[0] > 10_000);
}

#[tokio::test]
async fn concurrent_draws_cannot_spend_past_a_users_budget() {
    // Found by the red team: the user's budget was checked before a draw
    // and charged after, so a burst drew (on the dataset's budget) more
    // than the user could pay for. The draw is now paid for first.
    let dp = Arc::new(
        Dp::new(
            1.0,
            "budget = { user_epsilon = 2, dataset_epsilon = 100, period = \"30d\" }",
        )
        .await,
    );
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let dp = Arc::clone(&dp);
            tokio::spawn(async move {
                dp.run(
                    "alice",
                    &format!("SELECT COUNT(*) FROM clinical.trials WHERE age > {i}"),
                )
                .await
                .is_ok()
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap());
    }
    assert_eq!(ok, 2, "a budget of 2 pays for two draws");
    let d = dp.snap.datasets.get("clinical.trials").unwrap().id.clone();
    let ledgers = dp
        .engine
        .state()
        .store()
        .dp_ledgers(Some(&d), 0)
        .await
        .unwrap();
    let spent = |who: &str| -> f64 {
        ledgers
            .iter()
            .filter(|r| r.ledger.starts_with(who))
            .map(|r| r.spent.value)
            .sum()
    };
    assert_eq!(spent("dataset"), 2.0, "{ledgers:?}");
    assert_eq!(spent("user:"), 2.0, "{ledgers:?}");
}

#[tokio::test]
async fn receipts_show_where_a_text_constant_ends() {
    let dp = Dp::new(1.0, "").await;
    let (_, r) = dp
        .run(
            "alice",
            "SELECT COUNT(*) FROM clinical.trials WHERE state = 'x\"); fake (p@1): charged'",
        )
        .await
        .unwrap();
    assert!(
        r.query
            .ends_with(r#"WHERE (state = 'x"); fake (p@1): charged')"#),
        "{}",
        r.query
    );
    // A quote inside a constant is doubled, a newline escaped; numbers
    // read as written.
    let (_, r) = dp
        .run(
            "alice",
            "SELECT COUNT(*) FROM clinical.trials WHERE state = 'it''s\nCA' AND age > 65",
        )
        .await
        .unwrap();
    assert_eq!(
        r.query,
        r#"SELECT COUNT(*) WHERE ((state = 'it''s\nCA') AND (age > 65))"#
    );
    // A backslash then `n` in the constant is not shown as a newline.
    let (_, r) = dp
        .run(
            "alice",
            r"SELECT COUNT(*) FROM clinical.trials WHERE state = 'a\nb'",
        )
        .await
        .unwrap();
    assert_eq!(r.query, r#"SELECT COUNT(*) WHERE (state = 'a\\nb')"#);
}

#[tokio::test]
async fn answers_aggregated_in_several_passes_add_up_to_one() {
    // A dataset with more units than a query's memory holds is
    // aggregated in passes over parts of its units; each unit is in one
    // part, so the parts add up. ε = 100: counts come out exact.
    // Participants 1..50 twice: units with two rows, so the per-unit
    // steps run (not the one-row-per-unit shortcut).
    let q = "SELECT diagnosis, COUNT(*) AS n, COUNT(DISTINCT participant_id) AS u FROM clinical.trials GROUP BY diagnosis ORDER BY diagnosis";
    let data = |dir: &std::path::Path| {
        crate::demo::prepare(dir).unwrap();
        let path = dir.join("data/clinical/trials.parquet");
        let base = crate::demo::trials_batch(20_000, 3);
        let again = crate::demo::trials_batch(50, 3);
        let mut w =
            crate::demo::parquet_writer(std::fs::File::create(&path).unwrap(), base.schema())
                .unwrap();
        w.write(&base).unwrap();
        w.write(&again).unwrap();
        w.close().unwrap();
    };
    let dir_one = tempfile::tempdir().unwrap();
    data(dir_one.path());
    let (engine, snap) = demo_engine_with(dir_one.path(), &policy(100.0, "")).await;
    let a = sql_batch(&Arc::new(engine), &principal(&snap, "alice"), q).await;
    let dir = tempfile::tempdir().unwrap();
    data(dir.path());
    let (engine, snap) = demo_engine_with(dir.path(), &policy(100.0, "")).await;
    let engine = Arc::new(engine.with_dp_min_passes(5));
    let b = sql_batch(&engine, &principal(&snap, "alice"), q).await;
    assert_eq!(ints(&a, 1), ints(&b, 1));
    assert_eq!(ints(&a, 2), ints(&b, 2));
    assert!(ints(&b, 1).iter().all(|n| *n > 100));
    // Units counted once: the 50 twice-seen participants count once.
    let rows: i64 = ints(&b, 1).iter().sum();
    let units: i64 = ints(&b, 2).iter().sum();
    assert!(
        rows <= units + 3,
        "rows capped at one per unit: {rows} vs {units}"
    );
}

/// A repeated DP question is served from its kept plan ([`crate::engine::plan_cache`]):
/// the same answer, a receipt of its own per request, and a new plan when
/// the files or the state change.
#[tokio::test]
async fn kept_plans_serve_repeats_each_with_its_own_receipt() {
    let dp = Dp::new(1.0, "").await;
    let q = "SELECT diagnosis, COUNT(*) AS n FROM clinical.trials GROUP BY diagnosis ORDER BY diagnosis";
    let (first, r1) = dp.run("alice", q).await.unwrap();
    assert!(r1.fresh && r1.charged > 0.0);
    assert_eq!(dp.engine.plans.len(), 1, "the DP query's plan is kept");
    let hits = dp.engine.plans.hits();
    let (again, r2) = dp.run("alice", q).await.unwrap();
    assert_eq!(
        dp.engine.plans.hits(),
        hits + 1,
        "served from the kept plan"
    );
    assert_eq!(ints(&first, 1), ints(&again, 1));
    assert!(!r2.fresh);
    assert_eq!(r2.charged, 0.0);
    // Two copies of one kept plan: each receipt is its own.
    let p = principal(&dp.snap, "alice");
    let scope = dp.engine.scope(&p).await.unwrap();
    let cmd = Command::Sql(SqlCommand {
        query: q.into(),
        ..Default::default()
    });
    let a = dp.engine.plan(&scope, &cmd, None, None).await.unwrap();
    let b = dp.engine.plan(&scope, &cmd, None, None).await.unwrap();
    let (slot_a, slot_b) = (a.dp.clone().unwrap(), b.dp.clone().unwrap());
    assert!(!Arc::ptr_eq(&slot_a, &slot_b));
    let _: Vec<RecordBatch> = futures::TryStreamExt::try_collect(b.execute().unwrap())
        .await
        .unwrap();
    assert!(slot_b.lock().unwrap().is_some());
    assert!(
        slot_a.lock().unwrap().is_none(),
        "an unexecuted copy has no receipt"
    );
    // Another user, even one who sees the same rows, has a plan of their own.
    let (twin, r3) = dp.run_as(dp.alices_twin(), q).await.unwrap();
    assert_eq!(ints(&first, 1), ints(&twin, 1));
    assert_eq!(r3.charged, 1.0, "charged to the twin, not to alice");
    assert_eq!(dp.engine.plans.len(), 2);
    // New files: planned again over them (and, in a new window, drawn).
    let file = dp._dir.path().join("data/clinical/trials.parquet");
    crate::demo::write_trials(&file, 1_000).unwrap();
    dp.advance(DAY_MS);
    let (changed, r4) = dp.run("alice", q).await.unwrap();
    assert!(r4.fresh, "the kept plan of the old files is not used");
    assert_ne!(ints(&first, 1), ints(&changed, 1));
    let (_, r5) = dp.run("alice", q).await.unwrap();
    assert!(!r5.fresh && r5.charged == 0.0);
}

/// A time window binds each request's clock: a DP plan under one is
/// never kept.
#[tokio::test]
async fn dp_plans_under_a_time_window_are_not_kept() {
    let dp = Dp::new(
        1.0,
        "\n[[policies]]\nname = \"recent-born\"\ndataset = \"clinical.trials\"\nrow_filter = { within = \"36500 days\", column = \"date_of_birth\" }\n",
    )
    .await;
    let q = "SELECT COUNT(*) AS n FROM clinical.trials";
    let (first, _) = dp.run("alice", q).await.unwrap();
    let (again, r) = dp.run("alice", q).await.unwrap();
    assert_eq!(ints(&first, 0), ints(&again, 0));
    assert_eq!(r.charged, 0.0);
    assert_eq!(dp.engine.plans.len(), 0, "nothing kept");
}

/// When every unit has one row the per-unit steps are skipped; rows
/// without a unit still count for nothing, column counts and sums agree
/// with the truth, and under a time window (the rows seen change with
/// the clock) the shortcut is never taken.
#[tokio::test]
async fn the_one_row_per_unit_shortcut_leaves_out_rows_without_a_unit() {
    use datafusion::arrow::array::new_null_array;
    let dir = tempfile::tempdir().unwrap();
    crate::demo::prepare(dir.path()).unwrap();
    let path = dir.path().join("data/clinical/trials.parquet");
    let base = crate::demo::trials_batch(20_000, 3);
    let unit = base.schema().index_of("participant_id").unwrap();
    let mut fields: Vec<_> = base
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[unit] = fields[unit].clone().with_nullable(true);
    let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
    let base = RecordBatch::try_new(Arc::clone(&schema), base.columns().to_vec()).unwrap();
    // 300 more rows without a participant.
    let extra = crate::demo::trials_batch(300, 9);
    let mut columns = extra.columns().to_vec();
    columns[unit] = new_null_array(columns[unit].data_type(), extra.num_rows());
    let anonymous = RecordBatch::try_new(schema, columns).unwrap();
    let mut w =
        crate::demo::parquet_writer(std::fs::File::create(&path).unwrap(), base.schema()).unwrap();
    w.write(&base).unwrap();
    w.write(&anonymous).unwrap();
    w.close().unwrap();
    let (engine, snap) = demo_engine_with(dir.path(), &policy(100.0, "")).await;
    let engine = Arc::new(engine);
    let run = |user: &str, sql: &str| {
        let (engine, p, sql) = (Arc::clone(&engine), principal(&snap, user), sql.to_string());
        async move { sql_batch(&engine, &p, &sql).await }
    };
    let q = "SELECT diagnosis, COUNT(*) AS n, COUNT(age) AS c, SUM(age) AS s, AVG(amount) AS a FROM clinical.trials WHERE state = 'CA' GROUP BY diagnosis ORDER BY diagnosis";
    let truth = run(
        "bob",
        &q.replace("WHERE", "WHERE participant_id IS NOT NULL AND"),
    )
    .await;
    let noisy = run("alice", q).await;
    engine.dp.unique.run_pending_tasks();
    let shapes: Vec<_> = engine.dp.unique.iter().map(|(_, v)| v).collect();
    assert_eq!(
        shapes,
        vec![super::bounding::UnitShape {
            unique: true,
            null_units: true
        }]
    );
    assert_eq!(strings(&truth, 0), strings(&noisy, 0));
    // ε = 100 over five quantities: noise of about 0.05 per row counted,
    // 5 years of age per sum, $250 per sum of amounts.
    for (t, n) in ints(&truth, 1).iter().zip(ints(&noisy, 1)) {
        assert!((t - n).abs() <= 2, "rows {n} vs {t}");
    }
    for (t, n) in ints(&truth, 2).iter().zip(ints(&noisy, 2)) {
        assert!((t - n).abs() <= 2, "ages counted {n} vs {t}");
    }
    for (t, n) in ints(&truth, 3).iter().zip(ints(&noisy, 3)) {
        assert!((t - n).abs() <= 100, "ages summed {n} vs {t}");
    }
    // An average's error is about the sum's noise over the count: ten
    // scales ($2,500) over the group's rows.
    for ((t, n), rows) in floats(&truth, 4)
        .iter()
        .zip(floats(&noisy, 4))
        .zip(ints(&truth, 1))
    {
        let within = 2_500.0 / rows.max(1) as f64;
        assert!(
            (t - n).abs() < within,
            "average amount {n} vs {t} over {rows} rows"
        );
    }

    // A public text key grouped by its position next to a private one:
    // the same groups, named as the truth names them.
    let q = "SELECT diagnosis, state, COUNT(*) AS n FROM clinical.trials GROUP BY diagnosis, state ORDER BY diagnosis, state";
    let truth = run(
        "bob",
        &q.replace(
            "GROUP BY",
            "WHERE participant_id IS NOT NULL AND state = 'CA' GROUP BY",
        ),
    )
    .await;
    let noisy = run("alice", q).await;
    assert_eq!(strings(&truth, 0), strings(&noisy, 0));
    assert_eq!(strings(&truth, 1), strings(&noisy, 1));
    for (t, n) in ints(&truth, 2).iter().zip(ints(&noisy, 2)) {
        assert!((t - n).abs() <= 2, "rows {n} vs {t}");
    }

    // Under a time window: never checked, never taken.
    let dp = Dp::new(
        1.0,
        "\n[[policies]]\nname = \"recent-born\"\ndataset = \"clinical.trials\"\nrow_filter = { within = \"36500 days\", column = \"date_of_birth\" }\n",
    )
    .await;
    dp.run("alice", "SELECT COUNT(*) AS n FROM clinical.trials")
        .await
        .unwrap();
    dp.engine.dp.unique.run_pending_tasks();
    assert_eq!(dp.engine.dp.unique.entry_count(), 0);
}

/// Rows whose group key is none of the policy's public keys count
/// nowhere: every public key is answered (one no row has, a noisy zero)
/// and nothing else, with one row per unit and with units that also have
/// a row under another key (which must not take the place of their
/// public key's row among the groups a unit may reach).
#[tokio::test]
async fn rows_under_no_public_key_count_toward_no_group() {
    use datafusion::arrow::array::{ArrayRef, StringArray};
    let text = policy(100.0, "").replace(
        r#"diagnosis = ["hypertension", "type 2 diabetes", "asthma", "migraine", "arthritis", "none"]"#,
        r#"diagnosis = ["hypertension", "asthma", "flu"]"#,
    );
    assert!(text.contains("\"flu\""));
    for repeated in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        crate::demo::prepare(dir.path()).unwrap();
        let path = dir.path().join("data/clinical/trials.parquet");
        let base = crate::demo::trials_batch(20_000, 3);
        let mut w =
            crate::demo::parquet_writer(std::fs::File::create(&path).unwrap(), base.schema())
                .unwrap();
        w.write(&base).unwrap();
        if repeated {
            // The first 5,000 participants again, under a key no policy lists.
            let again = crate::demo::trials_batch(5_000, 3);
            let at = again.schema().index_of("diagnosis").unwrap();
            let mut columns = again.columns().to_vec();
            columns[at] = Arc::new(StringArray::from(vec!["none"; again.num_rows()])) as ArrayRef;
            w.write(&RecordBatch::try_new(again.schema(), columns).unwrap())
                .unwrap();
        }
        w.close().unwrap();
        let (engine, snap) = demo_engine_with(dir.path(), &text).await;
        let engine = Arc::new(engine);
        let truth = sql_batch(
            &engine,
            &principal(&snap, "bob"),
            "SELECT diagnosis, COUNT(*) AS n FROM clinical.trials WHERE state = 'CA' AND diagnosis IN ('hypertension', 'asthma') GROUP BY diagnosis ORDER BY diagnosis",
        )
        .await;
        let noisy = sql_batch(
            &engine,
            &principal(&snap, "alice"),
            "SELECT diagnosis, COUNT(*) AS n FROM clinical.trials GROUP BY diagnosis ORDER BY diagnosis",
        )
        .await;
        engine.dp.unique.run_pending_tasks();
        let shapes: Vec<bool> = engine.dp.unique.iter().map(|(_, v)| v.unique).collect();
        assert_eq!(shapes, vec![!repeated], "repeated: {repeated}");
        assert_eq!(strings(&truth, 0), ["asthma", "hypertension"]);
        assert_eq!(
            strings(&noisy, 0),
            ["asthma", "flu", "hypertension"],
            "repeated: {repeated}"
        );
        let (t, n) = (ints(&truth, 1), ints(&noisy, 1));
        assert!(t.iter().all(|c| *c > 100), "{t:?}");
        assert!((n[0] - t[0]).abs() <= 2, "asthma {} vs {}", n[0], t[0]);
        assert!(n[1].abs() <= 2, "flu has no rows: {}", n[1]);
        assert!(
            (n[2] - t[1]).abs() <= 2,
            "hypertension {} vs {}",
            n[2],
            t[1]
        );
    }
}

/// The exact aggregates read a text column grouped by its public key's
/// position as views (its bytes not copied per row), unless another
/// policy reads that column (a mask, a mask's condition, a row rule);
/// the answer has the declared type and the true groups either way.
#[tokio::test]
async fn position_grouped_keys_are_read_as_views_unless_a_policy_reads_them() {
    use datafusion::arrow::datatypes::DataType;
    // (policies added, how diagnosis is read, the rows alice sees besides
    // her own state's)
    let cases = [
        ("", DataType::Utf8View, ""),
        (
            "\n[[policies]]\nname = \"over-30\"\ndataset = \"clinical.trials\"\nrow_filter = { where = \"age > 30\" }\n",
            DataType::Utf8View,
            "age > 30 AND",
        ),
        (
            "\n[[policies]]\nname = \"no-asthma\"\ndataset = \"clinical.trials\"\nrow_filter = { where = \"diagnosis <> 'asthma'\" }\n",
            DataType::Utf8,
            "diagnosis <> 'asthma' AND",
        ),
        (
            "\n[[policies]]\nname = \"ssn-of-asthma\"\ndataset = \"clinical.trials\"\ncolumns = [\"ssn\"]\nmask = \"null\"\nmask_where = \"diagnosis = 'asthma'\"\n",
            DataType::Utf8,
            "",
        ),
    ];
    for (extra, read_as, filter) in cases {
        let dp = Dp::new(100.0, extra).await;
        let alice = principal(&dp.snap, "alice");
        let scope = dp.engine.scope(&alice).await.unwrap();
        let compiler = Arc::new(
            dp.engine
                .view_compiler(&scope, Default::default(), None)
                .with_dp_raw(),
        );
        let ctx = dp.engine.session(&compiler, false).unwrap();
        let view = ctx
            .table(datafusion::common::TableReference::full(
                crate::engine::CATALOG,
                "clinical",
                "trials",
            ))
            .await
            .unwrap();
        let field = view
            .schema()
            .field_with_unqualified_name("diagnosis")
            .unwrap();
        assert_eq!(field.data_type(), &read_as, "{extra}");
        let (noisy, _) = dp
            .run(
                "alice",
                "SELECT diagnosis, COUNT(*) AS n FROM clinical.trials GROUP BY diagnosis ORDER BY diagnosis",
            )
            .await
            .unwrap();
        assert_eq!(
            noisy.schema().field(0).data_type(),
            &DataType::Utf8,
            "{extra}"
        );
        let truth = sql_batch(
            &dp.engine,
            &principal(&dp.snap, "bob"),
            &format!("SELECT diagnosis, COUNT(*) AS n FROM clinical.trials WHERE {filter} state = 'CA' GROUP BY diagnosis ORDER BY diagnosis"),
        )
        .await;
        // Every public key answered (one no row has: a noisy zero).
        assert_eq!(
            strings(&noisy, 0),
            [
                "arthritis",
                "asthma",
                "hypertension",
                "migraine",
                "none",
                "type 2 diabetes"
            ],
            "{extra}"
        );
        near_truth(&noisy, &truth, 3, extra);
        let truth = counts_by_key(&truth);
        assert!(truth.values().all(|t| *t > 100), "{extra}: {truth:?}");
        // The user's own conditions on the column read as views.
        let filter_on_key = "(diagnosis IN ('asthma', 'none') OR diagnosis LIKE 'hyper%' OR diagnosis LIKE 'type 2%')";
        let (noisy, _) = dp
            .run(
                "alice",
                &format!("SELECT diagnosis, COUNT(*) AS n FROM clinical.trials WHERE {filter_on_key} GROUP BY diagnosis ORDER BY diagnosis"),
            )
            .await
            .unwrap();
        let truth = sql_batch(
            &dp.engine,
            &principal(&dp.snap, "bob"),
            &format!("SELECT diagnosis, COUNT(*) AS n FROM clinical.trials WHERE {filter} state = 'CA' AND {filter_on_key} GROUP BY diagnosis ORDER BY diagnosis"),
        )
        .await;
        near_truth(&noisy, &truth, 3, &format!("{extra} where {filter_on_key}"));
        let truth = counts_by_key(&truth);
        assert_eq!(
            truth.len(),
            4 - usize::from(filter.contains("asthma")),
            "{truth:?}"
        );
    }
}

/// A partition column with public keys (its values from folder names,
/// read as declared) is answered like a file column, next to a file
/// column read as views, with the user's conditions on both: with one
/// row per unit and with units in both folders (the per-unit path).
#[tokio::test]
async fn a_partition_column_with_public_keys_is_answered_like_a_file_column() {
    use datafusion::arrow::array::{ArrayRef, Int64Array};
    for overlapping in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        crate::demo::prepare(dir.path()).unwrap();
        let events = dir.path().join("data/events");
        for (year, rows, first_id) in [("2024", 3_000usize, 0i64), ("2025", 2_000, 10_000)] {
            let folder = events.join(format!("year={year}"));
            std::fs::create_dir_all(&folder).unwrap();
            let batch = crate::demo::trials_batch(rows, first_id as u64);
            let at = batch.schema().index_of("participant_id").unwrap();
            let first = if overlapping { 0 } else { first_id };
            let mut columns = batch.columns().to_vec();
            columns[at] =
                Arc::new(Int64Array::from_iter_values(first..first + rows as i64)) as ArrayRef;
            let batch = RecordBatch::try_new(batch.schema(), columns).unwrap();
            let mut w = crate::demo::parquet_writer(
                std::fs::File::create(folder.join("part-0.parquet")).unwrap(),
                batch.schema(),
            )
            .unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
        }
        let extra = format!(
            r#"
[[datasets]]
name = "ops.events"
format = "parquet"
location = "{}"
hive_partitioned = true
owners = ["dave"]

[[policies]]
name = "events-for-analysts"
dataset = "ops.events"
subscription = {{ groups = ["analysts"] }}

[[policies]]
name = "events-dp"
dataset = "ops.events"
except = {{ groups = ["privileged"] }}
[policies.differential_privacy]
privacy_unit = "participant_id"
epsilon = 100.0
latency_tolerance = "24h"
max_groups_per_unit = 2
force = true
groupable = ["year", "diagnosis"]
public_groups = {{ year = ["2024", "2025"], diagnosis = ["hypertension", "type 2 diabetes", "asthma", "migraine", "arthritis", "none"] }}
"#,
            events.display()
        );
        let (engine, snap) = demo_engine_with(dir.path(), &extra).await;
        let engine = Arc::new(engine);
        for filter in ["", "WHERE year = '2025' OR diagnosis = 'type 2 diabetes'"] {
            let q = format!(
                "SELECT year, diagnosis, COUNT(*) AS n FROM ops.events {filter} GROUP BY year, diagnosis ORDER BY year, diagnosis"
            );
            let truth = sql_batch(&engine, &principal(&snap, "bob"), &q).await;
            let noisy = sql_batch(&engine, &principal(&snap, "erin"), &q).await;
            assert_eq!(noisy.num_rows(), 12, "{filter}");
            let truth: std::collections::HashMap<(String, String), i64> = strings(&truth, 0)
                .into_iter()
                .zip(strings(&truth, 1))
                .zip(ints(&truth, 2))
                .collect();
            assert!(truth.values().all(|t| *t > 50), "{truth:?}");
            for ((year, key), n) in strings(&noisy, 0)
                .into_iter()
                .zip(strings(&noisy, 1))
                .zip(ints(&noisy, 2))
            {
                let t = truth
                    .get(&(year.clone(), key.clone()))
                    .copied()
                    .unwrap_or(0);
                assert!(
                    (t - n).abs() <= 3,
                    "overlapping {overlapping}, {filter}: {year} {key} rows {n} vs {t}"
                );
            }
        }
        engine.dp.unique.run_pending_tasks();
        let shapes: Vec<bool> = engine.dp.unique.iter().map(|(_, v)| v.unique).collect();
        assert_eq!(shapes, vec![!overlapping]);
    }
}
