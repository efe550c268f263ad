//! Differentially private answers (DESIGN invariant 5).
//!
//! A principal under a `differential_privacy` policy finds a guard in place
//! of the dataset ([`guard`]): no path reads its rows. A SQL query naming it
//! is walked, unoptimized, into an accepted shape ([`query`]); the exact
//! contribution-bounded aggregates are rebuilt from that shape over the
//! secure view ([`bounding`]), noised exactly ([`release`]), and kept per
//! (dataset, policy version, row-visibility scope, canonical query,
//! privacy) for the policy's latency tolerance, in a cache every node
//! shares ([`DpAnswers`], the store), with budgets charged per dataset for
//! each fresh draw and per user for each first view ([`exec`]).
//! `WITH DIFFERENTIAL_PRIVACY OPTIONS (...)` is read by [`options`].

pub mod bounding;
pub mod exec;
pub mod guard;
pub mod options;
pub mod query;
pub mod release;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::error::{Result, VeilError};
use crate::model::privacy::{DpAnswerRow, DpCharge, DpSpent};
use crate::secrets::{KeyPurpose, MasterKey, SecretKey, encode_hex};
use crate::store::Store;
use guard::DpGuardTable;

/// Why a query on a DP dataset is refused; the code leads the message
/// (`[DP_JOIN] ...`) and never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Rows, not aggregates: scans, previews, `SELECT *`, a raw `DoGet`.
    RowLevel,
    /// More than the one dataset: joins, subqueries, `UNION`, `VALUES`.
    Join,
    /// An aggregate or function not answered (`MIN`, `MAX`, windows, a
    /// fallible function in `WHERE`).
    Function,
    /// `GROUP BY` on a column not groupable, the unit, an expression.
    GroupBy,
    /// `SUM`/`AVG` of a column without bounds, `COUNT(DISTINCT)` of a
    /// column other than the unit.
    Column,
    /// Bad `WITH DIFFERENTIAL_PRIVACY OPTIONS`.
    Options,
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::RowLevel => "DP_ROW_LEVEL",
            Refusal::Join => "DP_JOIN",
            Refusal::Function => "DP_FUNCTION",
            Refusal::GroupBy => "DP_GROUP_BY",
            Refusal::Column => "DP_COLUMN",
            Refusal::Options => "DP_OPTIONS",
        }
    }
}

/// A refusal for a query on `guard`'s dataset: the code, what was wrong,
/// and what is answered.
pub fn refusal(code: Refusal, guard: &DpGuardTable, what: &str) -> VeilError {
    let policy = &guard.rule().policy;
    let groups = if policy.groupable.is_empty() {
        "(no column is groupable)".to_string()
    } else {
        policy
            .groupable
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    };
    let bounded = if policy.columns.is_empty() {
        "(no column has bounds)".to_string()
    } else {
        policy
            .columns
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    };
    let message = format!(
        "[{}] {} is under differential privacy: {what}. Ask aggregate questions with sql(): SELECT COUNT(*), COUNT(col), SUM(col) or AVG(col) of {bounded}, COUNT(DISTINCT {}) FROM {} [WHERE ...] [GROUP BY {groups}] [HAVING ...] [ORDER BY ...] [LIMIT ...]; `veil admin explain` shows the policy",
        code.code(),
        guard.dataset().name,
        policy.unit,
        guard.dataset().name,
    );
    match code {
        Refusal::RowLevel => VeilError::PermissionDenied(message),
        _ => VeilError::InvalidArgument(message),
    }
}

/// What one DP answer cost its reader, returned on request (the Python
/// client's `sql(..., privacy=True)`) and kept in the audit.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DpReceipt {
    pub dataset: String,
    /// `policy-id@version`.
    pub policy: String,
    /// The canonical query the answer answers.
    pub query: String,
    /// The ε the query spent (the policy's, or less by `OPTIONS`).
    pub epsilon: f64,
    pub delta: Option<f64>,
    pub mechanism: String,
    /// The unit ledgers count in: `epsilon`, or `rho` (zCDP).
    pub unit: String,
    /// Charged to this user now (0: an answer they had seen).
    pub charged: f64,
    /// This user's spending on the dataset in the budget period.
    pub spent: f64,
    pub budget: Option<f64>,
    /// The user's budget in ε as the policy writes it (`budget` is in
    /// the ledger's unit: ρ under the Gaussian mechanism).
    pub budget_epsilon: Option<f64>,
    pub remaining: Option<f64>,
    /// δ charged to this user now (releasing private group keys; 0 if
    /// none, or an answer they had seen), their δ spent this period, and
    /// their δ budget.
    pub delta_charged: f64,
    pub delta_spent: f64,
    pub delta_budget: Option<f64>,
    /// What `delta_budget` leaves this period.
    pub delta_remaining: Option<f64>,
    pub resets_at_ms: Option<i64>,
    /// When the answer stops being served (a new draw may follow).
    pub window_ends_at_ms: i64,
    /// Drawn for this request (not served from the cache).
    #[serde(skip)]
    pub fresh: bool,
}

impl DpReceipt {
    /// For the audit: the query, what was spent, whether the answer was
    /// drawn now; never a value.
    pub fn audit_note(&self) -> String {
        format!(
            "differential privacy ({}): {}; {} {} and delta {} charged to the reader ({} {:.4} and delta {} spent this period); answer {}",
            self.policy,
            self.query,
            self.unit,
            self.charged,
            delta_text(self.delta_charged),
            self.unit,
            self.spent,
            delta_text(self.delta_spent),
            if self.fresh {
                "drawn (cache miss)"
            } else {
                "served from the cache"
            }
        )
    }
}

/// A δ in words: `0`, or in scientific notation (`1e-6`).
pub(crate) fn delta_text(delta: f64) -> String {
    match delta {
        0.0 => "0".into(),
        d => format!("{d:e}"),
    }
}

pub type ReceiptSlot = Arc<Mutex<Option<DpReceipt>>>;

/// The clock answers' windows and budgets' periods are counted on, in ms.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The node's view of the shared answer cache and ledgers.
pub struct DpAnswers {
    store: Arc<dyn Store>,
    /// Answers this node read or drew, by key (the store is the truth;
    /// this saves it a round trip inside a window).
    cache: moka::future::Cache<String, DpAnswerRow>,
    clock: Clock,
    key: SecretKey,
    master: MasterKey,
    /// Least passes a draw aggregates in (tests split small datasets).
    min_passes: u64,
    /// Whether every unit has one row and every row a unit, by (scope,
    /// version of the files).
    pub(crate) unique: moka::sync::Cache<String, bounding::UnitShape>,
}

impl fmt::Debug for DpAnswers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DpAnswers")
    }
}

impl DpAnswers {
    pub fn new(store: Arc<dyn Store>, master: &MasterKey) -> Self {
        Self {
            store,
            cache: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(std::time::Duration::from_secs(3_600))
                .build(),
            clock: Arc::new(|| chrono::Utc::now().timestamp_millis()),
            key: master.derive(KeyPurpose::DpAnswers),
            master: master.clone(),
            min_passes: 1,
            unique: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(std::time::Duration::from_secs(3_600))
                .build(),
        }
    }

    /// Aggregate every draw in at least `n` passes.
    pub fn with_min_passes(mut self, n: u64) -> Self {
        self.min_passes = n.max(1);
        self
    }

    pub fn min_passes(&self) -> u64 {
        self.min_passes
    }

    /// Count windows and periods on `clock` (tests move time by hand).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The key of a dataset's keyed group order.
    pub fn bounding_key(&self, dataset_id: &str) -> SecretKey {
        self.master.derive(KeyPurpose::DpBounding { dataset_id })
    }

    /// The cache key of an answer: a keyed hash of what it answers, each
    /// part length-prefixed so no two lists of parts collide.
    pub fn answer_key(&self, parts: &[&str]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.bytes())
            .expect("HMAC takes a key of any length");
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p.as_bytes());
        }
        encode_hex(&mac.finalize().into_bytes())
    }

    /// The answer kept under `key`: this node's copy when it is for
    /// `window` (or later), else the store's (another node may have drawn
    /// or renewed one since).
    async fn kept(&self, key: &str, window: i64) -> Result<Option<DpAnswerRow>> {
        // Past its keeping time (not yet purged): as if forgotten. (0: an
        // answer kept before keeping times existed, until replaced.)
        let now = self.now_ms();
        let live = |r: &DpAnswerRow| r.expires_ms == 0 || r.expires_ms >= now;
        if let Some(row) = self.cache.get(key).await
            && row.window >= window
            && live(&row)
        {
            return Ok(Some(row));
        }
        let row = self.store.dp_answer(key).await?.filter(live);
        if let Some(row) = &row {
            self.cache.insert(key.to_string(), row.clone()).await;
        }
        Ok(row)
    }

    /// Forget answers an hour past their keeping time (the hour: slack
    /// for nodes' clocks; none is served once past it), with their views,
    /// and the views of draws never kept after a day. Returns how many
    /// answers went.
    pub async fn purge(&self) -> Result<u64> {
        let now = self.now_ms();
        self.store
            .purge_dp_answers(
                now.saturating_sub(3_600_000),
                now.saturating_sub(86_400_000),
            )
            .await
    }

    async fn remember(&self, row: DpAnswerRow) {
        self.cache.insert(row.key.clone(), row).await;
    }

    /// A ledger's spending in the charge's period.
    async fn spent(&self, c: &DpCharge) -> Result<DpSpent> {
        Ok(self
            .store
            .dp_ledgers(Some(&c.dataset_id), c.period)
            .await?
            .iter()
            .filter(|r| r.ledger == c.ledger && r.period == c.period)
            .sum())
    }
}

/// An answer as Arrow IPC bytes, as kept.
pub fn encode_batch(batch: &RecordBatch) -> Result<Vec<u8>> {
    let failed = |e| VeilError::internal("encoding an answer", e);
    let mut out = Vec::new();
    {
        let mut w = StreamWriter::try_new(&mut out, &batch.schema()).map_err(failed)?;
        w.write(batch).map_err(failed)?;
        w.finish().map_err(failed)?;
    }
    Ok(out)
}

/// A kept answer, checked against the schema the plan expects.
pub fn decode_batch(bytes: &[u8], schema: &SchemaRef) -> Result<RecordBatch> {
    let failed = |e| VeilError::internal("a kept answer does not decode", e);
    let reader = StreamReader::try_new(bytes, None).map_err(failed)?;
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(failed)?;
    let batch = datafusion::arrow::compute::concat_batches(schema, &batches).map_err(|_| {
        VeilError::FailedPrecondition(
            "a kept answer no longer fits this query's types (the dataset changed); ask again after the answer's window ends".into(),
        )
    })?;
    Ok(batch)
}

#[cfg(test)]
mod tests;
