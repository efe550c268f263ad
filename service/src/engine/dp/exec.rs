//! Where a DP answer enters a plan: [`DpAnswerTable`] stands in for the
//! user's aggregate, and its [`DpAnswerExec`] answers when executed (at
//! `DoGet`, never while planning): the answer kept for this window if
//! there is one, else the exact bounded aggregates with fresh noise, kept
//! for every node and charged to the dataset's budget; then the user's
//! first view of that draw is charged to theirs. Everything the user wrote
//! above the aggregate (`HAVING`, `ORDER BY`, `LIMIT`) runs over its output.

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::DataFusionError;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use rand::SeedableRng;
use std::fmt;
use std::sync::Arc;

use super::bounding::UnitShape;
use super::query::DpQuery;
use super::release::{NoisePlan, release};
use super::{DpAnswers, DpReceipt, ReceiptSlot};
use crate::dp::accounting::QueryPrivacy;
use crate::error::query::from_datafusion;
use crate::error::{Result, VeilError};
use crate::model::privacy::{DpAnswerRow, DpCharge, DpPut, DpSpent, DpView, shown, shown_left};

/// Most passes an answer's aggregates are split into.
pub const MAX_PASSES: u64 = 256;

/// Everything one DP answer needs at execution.
pub struct DpJob {
    pub answers: Arc<DpAnswers>,
    pub query: DpQuery,
    pub noise: NoisePlan,
    pub privacy: QueryPrivacy,
    /// The ε the query spends, as written (the policy's, or less).
    pub epsilon: f64,
    /// Cache key ([`DpAnswers::answer_key`]).
    pub key: String,
    /// What the dataset's data was when planned (empty: unknown).
    pub source_version: String,
    /// `user:["<issuer>","<subject>"]` (JSON).
    pub user_ledger: String,
    /// The rows the exact aggregates count
    /// ([`super::bounding::rows_frame`]); the aggregates are planned only
    /// when an answer is drawn: a kept answer costs no plan of the data.
    pub rows: datafusion::dataframe::DataFrame,
    /// The keyed order of a unit's groups.
    pub rank: Arc<datafusion::logical_expr::ScalarUDF>,
    /// The secure view whole (no WHERE), to check once per version of its
    /// files whether every unit has one row, and the key that check is
    /// kept under (`None`: no version to key it by; never checked).
    pub unique_check: Option<(datafusion::dataframe::DataFrame, String)>,
    /// At most how many rows the files hold (parquet footers; `None`:
    /// unknown), which decides whether a sum fits an `Int64`.
    pub rows_bound: Option<u64>,
    /// Passes to aggregate in at first (each over a part of the units),
    /// from the dataset's size; multiplied by 4 when a pass runs out of
    /// memory, up to [`MAX_PASSES`].
    pub passes: u64,
    /// The answer's schema (`c0..`, the aggregate's types).
    pub schema: SchemaRef,
}

impl fmt::Debug for DpJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the exact plan's literals or the key.
        write!(
            f,
            "DpJob({}, {})",
            self.query.guard.dataset().name,
            self.query.describe()
        )
    }
}

impl DpJob {
    fn dataset_id(&self) -> &str {
        &self.query.guard.dataset().id
    }

    fn charge(
        &self,
        ledger: &str,
        cap: Option<f64>,
        delta_cap: Option<f64>,
        period: i64,
    ) -> DpCharge {
        DpCharge {
            ledger: ledger.to_string(),
            dataset_id: self.dataset_id().to_string(),
            period,
            cost: self.privacy.cost(),
            cap,
            delta: self.delta_spent(),
            delta_cap,
        }
    }

    /// Until when an answer drawn or renewed in `window` is kept: to the
    /// window's end when it can't be carried into the next (its data has
    /// no version), else through one more budget period (or window) after
    /// it, so an answer asked for again while its data stays the same is
    /// the same answer; one nobody asks for that long is forgotten (asked
    /// again, it is drawn anew and paid for).
    fn expires_ms(&self, window: i64, tolerance_ms: i64, period_ms: Option<i64>) -> i64 {
        let end = (window + 1).saturating_mul(tolerance_ms);
        match self.source_version.is_empty() {
            true => end,
            false => end.saturating_add(period_ms.unwrap_or(0).max(tolerance_ms)),
        }
    }

    /// The δ an answer spends: releasing keys the policy doesn't list
    /// (τ-thresholding) has each unit's key shown with probability at most
    /// this; an answer without private keys spends none. (The Gaussian's
    /// other half of δ converts the period's ρ to ε once: its ledger's cap
    /// is that conversion.)
    pub fn delta_spent(&self) -> f64 {
        match self.noise.threshold {
            Some(_) => self.privacy.selection_delta().unwrap_or(0.0),
            None => 0.0,
        }
    }

    /// The answer for this request, charged; its receipt goes in `slot`.
    /// A draw runs in `task`: the executing request's memory limit, not
    /// the one of the request the plan was made for (a kept plan serves
    /// many).
    pub async fn answer(&self, slot: &ReceiptSlot, task: &Arc<TaskContext>) -> Result<RecordBatch> {
        let policy = &self.query.guard.rule().policy;
        let now_ms = self.answers.now_ms();
        let tolerance_ms = policy.tolerance_secs.max(1) * 1000;
        let window = now_ms.div_euclid(tolerance_ms);
        let (period, period_ms) = match &policy.budgets {
            Some(b) => {
                let ms = b.period_secs.max(1) * 1000;
                (now_ms.div_euclid(ms), Some(ms))
            }
            None => (0, None),
        };
        let caps = policy.budgets.as_ref();
        let user = self.charge(
            &self.user_ledger,
            caps.and_then(|b| b.user),
            caps.and_then(|b| b.user_delta),
            period,
        );
        let dataset = self.charge(
            "dataset",
            caps.and_then(|b| b.dataset),
            caps.and_then(|b| b.dataset_delta),
            period,
        );
        let resets = period_ms.map(|ms| (period + 1) * ms);
        let over = |whose: &str, spent: DpSpent, c: &DpCharge| -> VeilError {
            // The ε (or ρ) budget, unless only the δ one is short.
            let value_fits = c
                .cap
                .is_none_or(|cap| spent.value + c.cost <= cap * (1.0 + 1e-9));
            let (what, used, cap, cost) = match value_fits {
                false => (
                    self.privacy.unit().to_string(),
                    shown(spent.value).to_string(),
                    c.cap.unwrap_or(0.0),
                    c.cost,
                ),
                true => (
                    "delta (releasing group keys the policy doesn't list)".to_string(),
                    super::delta_text(spent.delta),
                    c.delta_cap.unwrap_or(0.0),
                    c.delta,
                ),
            };
            let (left, cap_text, cost_text) = if value_fits {
                (
                    super::delta_text((cap - spent.delta).max(0.0)),
                    super::delta_text(cap),
                    super::delta_text(cost),
                )
            } else {
                (
                    shown_left(cap, spent.value).to_string(),
                    shown(cap).to_string(),
                    shown(cost).to_string(),
                )
            };
            // Some ε left (beyond rounding): a cheaper question fits.
            let cheaper = match !value_fits && cap - spent.value > cap * 1e-9 {
                true => {
                    "; a query can spend less with SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (epsilon => ...) ..."
                }
                false => "",
            };
            VeilError::ResourceExhausted(format!(
                "[DP_BUDGET] the differential privacy budget of {whose} on {} can't pay for this query: {what} {used} of {cap_text} used, {left} left, a query costs {cost_text}{cheaper}; it resets at {} (answers already seen stay free until their window ends)",
                self.query.guard.dataset().name,
                resets
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "never".into()),
            ))
        };
        let store = self.answers.store();
        // Set when this request drew (and so already charged its reader).
        let mut pre_charged: Option<DpSpent> = None;
        let mut carried = false;
        let kept = match self.answers.kept(&self.key, window).await? {
            Some(row) if row.window >= window => Some(row),
            Some(mut row)
                if !row.source_version.is_empty() && row.source_version == self.source_version =>
            {
                // The data didn't change: the same answer, another window,
                // unless it was replaced or forgotten meanwhile (then this
                // request draws, as if it had never been kept).
                let expires_ms = self.expires_ms(window, tolerance_ms, period_ms);
                let renewed = store
                    .renew_dp_answer(&self.key, &row.answer_id, window, expires_ms)
                    .await?;
                carried = renewed;
                renewed.then(|| {
                    row.window = window;
                    if row.expires_ms != 0 {
                        row.expires_ms = row.expires_ms.max(expires_ms);
                    }
                    row
                })
            }
            _ => None,
        };
        if let Some(row) = kept.as_ref().filter(|_| carried) {
            self.answers.remember(row.clone()).await;
        }
        let (row, fresh) = match kept {
            Some(row) => (row, false),
            None => {
                // Refuse before reading data when the dataset can't pay.
                let spent = self.answers.spent(&dataset).await?;
                if !crate::store::within_cap(spent, &dataset) {
                    return Err(over("this dataset", spent, &dataset));
                }
                // Planned before anything is charged: a query that can't be
                // planned costs nothing.
                let plans = self.plan_draw(self.passes).await?;
                // The reader pays for the draw before it reads data (their
                // first view of it, reserved now), so concurrent requests
                // can't draw beyond their budget on the dataset's.
                let answer_id = uuid::Uuid::new_v4().to_string();
                let reserved = match store.view_dp_answer(&answer_id, &user, now_ms).await? {
                    DpView::Charged { spent } => spent,
                    DpView::Seen { spent } | DpView::OverBudget { spent } => {
                        return Err(over("your user", spent, &user));
                    }
                };
                let answer = self.draw(plans, &dataset, now_ms, task).await?;
                let row = DpAnswerRow {
                    key: self.key.clone(),
                    dataset_id: self.dataset_id().to_string(),
                    answer_id: answer_id.clone(),
                    window,
                    source_version: self.source_version.clone(),
                    created_ms: now_ms,
                    expires_ms: self.expires_ms(window, tolerance_ms, period_ms),
                    answer: super::encode_batch(&answer)?,
                };
                let kept = match store.put_dp_answer(&row, &dataset).await? {
                    DpPut::Kept { answer, .. } => answer,
                    DpPut::OverBudget { spent } => {
                        return Err(over("this dataset", spent, &dataset));
                    }
                };
                self.answers.remember(kept.clone()).await;
                if kept.answer_id != answer_id {
                    // Another node drew first: its answer is the one served.
                    // The reader paid for a draw no one will see (more
                    // charged, never less); theirs is marked seen, free.
                    let free = DpCharge {
                        cost: 0.0,
                        cap: None,
                        delta: 0.0,
                        delta_cap: None,
                        ..user.clone()
                    };
                    store.view_dp_answer(&kept.answer_id, &free, now_ms).await?;
                }
                pre_charged = Some(reserved);
                (kept, true)
            }
        };
        let (charged, spent) = match pre_charged {
            Some(spent) => (true, spent),
            None => match store.view_dp_answer(&row.answer_id, &user, now_ms).await? {
                DpView::Charged { spent } => (true, spent),
                DpView::Seen { spent } => (false, spent),
                DpView::OverBudget { spent } => return Err(over("your user", spent, &user)),
            },
        };
        let receipt = DpReceipt {
            dataset: self.query.guard.dataset().name.clone(),
            policy: self.query.guard.rule().label.clone(),
            query: self.query.describe(),
            epsilon: self.epsilon,
            delta: self.privacy.selection_delta().or(policy.delta),
            mechanism: policy.mechanism.as_str().to_string(),
            unit: self.privacy.unit().to_string(),
            charged: if charged { self.privacy.cost() } else { 0.0 },
            spent: shown(spent.value),
            budget: user.cap,
            budget_epsilon: policy.budgets.as_ref().and_then(|b| b.user_epsilon),
            remaining: user.cap.map(|c| shown_left(c, spent.value)),
            delta_charged: if charged { user.delta } else { 0.0 },
            delta_spent: shown(spent.delta),
            delta_budget: user.delta_cap,
            delta_remaining: user.delta_cap.map(|c| shown_left(c, spent.delta)),
            resets_at_ms: resets,
            window_ends_at_ms: (row.window + 1) * tolerance_ms,
            fresh,
        };
        if let Ok(mut slot) = slot.lock() {
            *slot = Some(receipt);
        }
        super::decode_batch(&row.answer, &self.schema)
    }

    /// The exact aggregates' physical plans, one per pass (a failure here
    /// reads no data and costs nothing).
    async fn plan_draw(&self, passes: u64) -> Result<Vec<Arc<dyn ExecutionPlan>>> {
        let failed = |e: VeilError| {
            tracing::warn!(dataset = %self.query.guard.dataset().name, error = %e.audit_message(), "a differentially private answer could not be planned");
            match e {
                VeilError::ResourceExhausted(_) | VeilError::Unavailable(_) => e,
                _ => VeilError::FailedPrecondition(
                    "the differentially private answer could not be planned; an administrator can read why in the server log".into(),
                ),
            }
        };
        let shape = self.unit_shape().await;
        if shape.unique {
            let frame = super::bounding::bounded_unique(
                self.rows.clone(),
                &self.query,
                &self.noise.raws,
                shape,
                self.rows_bound,
            )
            .map_err(failed)?;
            return Ok(vec![
                frame
                    .create_physical_plan()
                    .await
                    .map_err(|e| failed(from_datafusion(e)))?,
            ]);
        }
        let mut plans = Vec::new();
        for k in 0..passes {
            let part = (passes > 1).then_some((passes, k));
            let frame = super::bounding::bounded(
                self.rows.clone(),
                &self.query,
                &self.noise.raws,
                Arc::clone(&self.rank),
                part,
            )
            .map_err(failed)?;
            plans.push(
                frame
                    .create_physical_plan()
                    .await
                    .map_err(|e| failed(from_datafusion(e)))?,
            );
        }
        Ok(plans)
    }

    /// Has every unit of the secure view one row, and has every row a
    /// unit, in this version of its files? Checked once per version (and
    /// row-visibility scope) on this node; any doubt (no version, a
    /// failed check) means no and some.
    async fn unit_shape(&self) -> UnitShape {
        let doubt = UnitShape {
            unique: false,
            null_units: true,
        };
        let Some((view, key)) = &self.unique_check else {
            return doubt;
        };
        if let Some(known) = self.answers.unique.get(key) {
            return known;
        }
        let unit = &self.query.guard.rule().policy.unit;
        let shape = super::bounding::unit_shape(view.clone(), unit)
            .await
            .ok()
            .flatten()
            .unwrap_or(doubt);
        self.answers.unique.insert(key.clone(), shape);
        shape
    }

    /// Run the passes one after the other and add their aggregates up
    /// (each unit is in one pass).
    async fn run_passes(
        &self,
        plans: Vec<Arc<dyn ExecutionPlan>>,
        task: &Arc<TaskContext>,
    ) -> Result<RecordBatch> {
        let schema = plans
            .first()
            .map(|p| p.schema())
            .ok_or_else(|| VeilError::Internal("no pass to run".into()))?;
        let mut partials = Vec::new();
        for plan in plans {
            partials.extend(
                datafusion::physical_plan::collect(plan, Arc::clone(task))
                    .await
                    .map_err(from_datafusion)?,
            );
        }
        if partials.len() <= 1 || self.noise.raws.is_empty() {
            return datafusion::arrow::compute::concat_batches(&schema, &partials)
                .map_err(|e| VeilError::internal("gathering exact aggregates", e));
        }
        // Sum the passes' aggregates per group (a few rows each).
        let groups: Vec<datafusion::prelude::Expr> = (0..self.query.groups.len())
            .map(|i| datafusion::prelude::col(super::bounding::group_column(i)))
            .collect();
        let sums: Vec<datafusion::prelude::Expr> = (0..self.noise.raws.len())
            .map(|j| {
                let c = super::bounding::raw_column(j);
                datafusion::functions_aggregate::expr_fn::sum(datafusion::prelude::col(&c)).alias(c)
            })
            .collect();
        let ctx = datafusion::prelude::SessionContext::new();
        let merged = ctx
            .read_batches(partials)
            .and_then(|f| f.aggregate(groups, sums))
            .map_err(from_datafusion)?
            .collect()
            .await
            .map_err(from_datafusion)?;
        let merged_schema = merged
            .first()
            .map(|b| b.schema())
            .unwrap_or_else(|| Arc::clone(&schema));
        datafusion::arrow::compute::concat_batches(&merged_schema, &merged)
            .map_err(|e| VeilError::internal("gathering exact aggregates", e))
    }

    /// A fresh draw: the exact aggregates, then noise. Any failure reading
    /// the data is reported in words that don't depend on it, and charged
    /// to the dataset like an answer (the reader paid already): a free
    /// failure would be a free probe.
    async fn draw(
        &self,
        plans: Vec<Arc<dyn ExecutionPlan>>,
        dataset: &DpCharge,
        now_ms: i64,
        task: &Arc<TaskContext>,
    ) -> Result<RecordBatch> {
        let mut plans = plans;
        let mut passes = plans.len() as u64;
        let exact = loop {
            match self.run_passes(plans, task).await {
                Ok(batch) => break batch,
                // Too many units for one query's memory: more passes.
                Err(VeilError::ResourceExhausted(_)) if passes < MAX_PASSES => {
                    passes = (passes * 4).min(MAX_PASSES);
                    tracing::info!(dataset = %self.query.guard.dataset().name, passes, "a differentially private answer is aggregated in more passes");
                    plans = self.plan_draw(passes).await?;
                }
                Err(e) => {
                    tracing::warn!(dataset = %self.query.guard.dataset().name, error = %e.audit_message(), "a differentially private answer could not be computed");
                    // Charged past the cap if need be: the data was read.
                    let charge = DpCharge {
                        cap: None,
                        ..dataset.clone()
                    };
                    let failure = format!("failed:{}", uuid::Uuid::new_v4());
                    let _ = self
                        .answers
                        .store()
                        .view_dp_answer(&failure, &charge, now_ms)
                        .await;
                    return Err(match e {
                        VeilError::ResourceExhausted(_)
                        | VeilError::Unavailable(_)
                        | VeilError::DeadlineExceeded(_) => e,
                        _ => VeilError::FailedPrecondition(
                            "the differentially private answer could not be computed from the dataset; an administrator can read why in the server log".into(),
                        ),
                    });
                }
            }
        };
        let mut rng = rand::rngs::StdRng::from_os_rng();
        release(&exact, &self.query, &self.noise, &self.schema, &mut rng)
    }
}

/// The aggregate's stand-in in the user's plan.
#[derive(Debug)]
pub struct DpAnswerTable {
    job: Arc<DpJob>,
}

impl DpAnswerTable {
    pub fn new(job: Arc<DpJob>) -> Self {
        Self { job }
    }
}

#[async_trait]
impl TableProvider for DpAnswerTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.job.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(DpAnswerExec::new(
            Arc::clone(&self.job),
            projection.cloned(),
        )?))
    }
}

/// Executes a [`DpJob`]: one partition, one batch.
#[derive(Debug)]
pub struct DpAnswerExec {
    job: Arc<DpJob>,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    /// The receipt of this plan's answer: each copy of a kept plan
    /// ([`ExecutionPlan::reset_state`]) has its own.
    receipt: ReceiptSlot,
}

/// The receipt slot of the DP answer a physical plan serves, if it serves
/// one.
pub fn receipt_of(plan: &Arc<dyn ExecutionPlan>) -> Option<ReceiptSlot> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut found = None;
    let _ = plan.apply(|p| {
        Ok(match p.downcast_ref::<DpAnswerExec>() {
            Some(exec) => {
                found = Some(Arc::clone(&exec.receipt));
                TreeNodeRecursion::Stop
            }
            None => TreeNodeRecursion::Continue,
        })
    });
    found
}

impl DpAnswerExec {
    fn new(job: Arc<DpJob>, projection: Option<Vec<usize>>) -> datafusion::common::Result<Self> {
        let schema = match &projection {
            Some(p) => Arc::new(job.schema.project(p)?),
            None => Arc::clone(&job.schema),
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Ok(Self {
            job,
            projection,
            schema,
            properties,
            receipt: Arc::default(),
        })
    }
}

impl DisplayAs for DpAnswerExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DpAnswerExec: dataset={}",
            self.job.query.guard.dataset().name
        )
    }
}

impl ExecutionPlan for DpAnswerExec {
    fn name(&self) -> &str {
        "DpAnswerExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "DpAnswerExec has no children".into(),
            ))
        }
    }

    fn reset_state(self: Arc<Self>) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self {
            job: Arc::clone(&self.job),
            projection: self.projection.clone(),
            schema: Arc::clone(&self.schema),
            properties: Arc::clone(&self.properties),
            receipt: Arc::default(),
        }))
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_expr::PhysicalExpr>,
        ) -> datafusion::common::Result<
            datafusion::common::tree_node::TreeNodeRecursion,
        >,
    ) -> datafusion::common::Result<datafusion::common::tree_node::TreeNodeRecursion> {
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> datafusion::common::Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "DpAnswerExec has one partition, not {partition}"
            )));
        }
        let (job, projection) = (Arc::clone(&self.job), self.projection.clone());
        let slot = Arc::clone(&self.receipt);
        let answer = futures::stream::once(async move {
            let batch = job
                .answer(&slot, &context)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            match projection {
                Some(p) => Ok(batch.project(&p)?),
                None => Ok(batch),
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            answer,
        )))
    }
}
