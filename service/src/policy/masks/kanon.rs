//! k-anonymization: values of quasi-identifier groups seen fewer than k
//! times become null; rows are kept.
//!
//! Semantics (README "Masks", after Immuta's k-anonymization):
//! * one policy's columns form one group, counted jointly: a row's values in
//!   those columns are nulled together when their combination occurs fewer
//!   than k times. Separate policies count separately.
//! * counts are taken after the dataset's row policies and before anything
//!   the user asks: the counting subtree sits below the policy barrier, so
//!   no user filter can shrink a group and unmask it.
//! * a read restricted to one endpoint's part still counts over the whole
//!   dataset (the counting input scans every part).
//!
//! Plan shape:
//!
//! ```text
//! Projection: CASE WHEN __veil_k0 THEN gender END AS gender, …
//!   KAnonymize: groups=[gender, state ≥ 2 → __veil_k0]
//!     Filter: <row policies>            ← the rows served
//!       TableScan: __veil_source
//!     Projection: gender, state         ← the rows counted
//!       Filter: <row policies>
//!         TableScan: __veil_source (whole dataset)
//! ```
//!
//! Kept counts: a count depends only on the rows counted, so a read whose
//! counting input is exactly one a recent read counted (same files by
//! version, dictionary, row policies and groups: [`CountsSlot::key`])
//! reuses those counts instead of scanning the whole dataset again; the
//! endpoints of one scan, read at once, wait for a single count
//! ([`KeptCounts`]). The counts never leave the operator.
//!
//! Memory: the operator first drains the counting input, which projection
//! pushdown prunes to the quasi-identifier columns, into one hash map per
//! group (one entry per distinct combination), then streams the served rows
//! batch by batch, appending one boolean per group. Nothing but the counts
//! is held, and the counts are bounded: a read whose groups outnumber
//! `max_groups` fails (closed) instead of growing without bound. Columns
//! above the cardinality cutoff are refused when a policy is written, so a
//! group's combinations stay well under that bound in practice.

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, DFSchemaRef, DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{
    Expr, Extension, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};
use datafusion::physical_planner::{ExtensionPlanner, PhysicalPlanner};
use futures::{StreamExt, TryStreamExt};
use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// Most bytes of counts [`KeptCounts`] holds (least recently used go first).
pub const KEPT_COUNTS_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Group counts kept across reads, by [`CountsSlot::key`]. Counting runs
/// once per key at a time: concurrent reads of the same key (a scan's
/// endpoints) wait for one count. Failures are not kept.
pub struct KeptCounts {
    counts: moka::future::Cache<[u8; 32], Arc<Vec<GroupCounts>>>,
    /// Counts run under a key (not served from one kept).
    runs: std::sync::atomic::AtomicU64,
}

impl KeptCounts {
    pub fn new(max_bytes: u64) -> Self {
        Self {
            counts: moka::future::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_k: &[u8; 32], v: &Arc<Vec<GroupCounts>>| {
                    let bytes: usize = v.iter().map(GroupCounts::bytes).sum();
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                })
                // A key names files by version: an idle one is likely stale.
                .time_to_idle(std::time::Duration::from_secs(600))
                .build(),
            runs: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many counts ran (each kept under its key) since the start.
    pub fn runs(&self) -> u64 {
        self.runs.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl fmt::Debug for KeptCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeptCounts")
            .field("entries", &self.counts.entry_count())
            .finish()
    }
}

/// Where one k-anonymization's counts may be kept: the shared cache and
/// the key of its counting input. The key must change whenever the rows
/// counted could: the source files (path, size, time and version), the
/// dictionary, the row policies (with bound attributes, clocks and keys)
/// and the groups.
#[derive(Clone)]
pub struct CountsSlot {
    pub kept: Arc<KeptCounts>,
    pub key: [u8; 32],
}

impl fmt::Debug for CountsSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountsSlot({:02x}{:02x}…)", self.key[0], self.key[1])
    }
}

impl PartialEq for CountsSlot {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for CountsSlot {}

impl std::hash::Hash for CountsSlot {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state)
    }
}

/// Can a column of this type be a quasi-identifier?
pub fn supports(dt: &DataType) -> bool {
    !matches!(dt, DataType::Null) && RowConverter::supports_fields(&[SortField::new(dt.clone())])
}

/// One k-anonymity group: these columns, counted jointly, at least `k`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub struct KGroup {
    pub columns: Vec<String>,
    pub k: u64,
    /// The boolean column this group's verdict is appended as.
    pub flag: String,
}

/// The logical k-anonymization operator (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KAnonymize {
    pub input: LogicalPlan,
    pub counting: LogicalPlan,
    pub groups: Vec<KGroup>,
    pub max_groups: usize,
    /// Where the counts may be kept across reads (`None`: counted per read).
    pub kept: Option<CountsSlot>,
    schema: DFSchemaRef,
}

impl PartialOrd for KAnonymize {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.groups.partial_cmp(&other.groups) {
            Some(Ordering::Equal) => match self.input.partial_cmp(&other.input) {
                Some(Ordering::Equal) => self.counting.partial_cmp(&other.counting),
                o => o,
            },
            o => o,
        }
    }
}

impl KAnonymize {
    /// The plan node over `input`, counting over `counting`.
    pub fn plan(
        input: LogicalPlan,
        counting: LogicalPlan,
        groups: Vec<KGroup>,
        max_groups: usize,
        kept: Option<CountsSlot>,
    ) -> Result<LogicalPlan> {
        let node = Self::new(input, counting, groups, max_groups, kept)?;
        Ok(LogicalPlan::Extension(Extension {
            node: Arc::new(node),
        }))
    }

    fn new(
        input: LogicalPlan,
        counting: LogicalPlan,
        groups: Vec<KGroup>,
        max_groups: usize,
        kept: Option<CountsSlot>,
    ) -> Result<Self> {
        for g in &groups {
            for c in &g.columns {
                for (side, plan) in [("served", &input), ("counted", &counting)] {
                    if plan.schema().field_with_unqualified_name(c).is_err() {
                        return Err(DataFusionError::Internal(format!(
                            "k-anonymization column '{c}' is missing from the {side} rows"
                        )));
                    }
                }
            }
        }
        let flags = Schema::new(
            groups
                .iter()
                .map(|g| Field::new(&g.flag, DataType::Boolean, false))
                .collect::<Vec<_>>(),
        );
        let schema = input.schema().join(&DFSchema::try_from(flags)?)?;
        Ok(Self {
            input,
            counting,
            groups,
            max_groups,
            kept,
            schema: Arc::new(schema),
        })
    }
}

impl UserDefinedLogicalNodeCore for KAnonymize {
    fn name(&self) -> &str {
        "KAnonymize"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input, &self.counting]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups: Vec<String> = self
            .groups
            .iter()
            .map(|g| format!("[{}] k={} -> {}", g.columns.join(", "), g.k, g.flag))
            .collect();
        write!(f, "KAnonymize: groups={}", groups.join("; "))
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> Result<Self> {
        let Ok([input, counting]) = <[LogicalPlan; 2]>::try_from(inputs) else {
            return Err(DataFusionError::Internal(
                "KAnonymize takes two inputs".into(),
            ));
        };
        if !exprs.is_empty() {
            return Err(DataFusionError::Internal(
                "KAnonymize takes no expressions".into(),
            ));
        }
        Self::new(
            input,
            counting,
            self.groups.clone(),
            self.max_groups,
            self.kept.clone(),
        )
    }

    /// The served input keeps the columns asked for plus the
    /// quasi-identifiers (needed to look rows up); the counting input keeps
    /// everything (it is already just the quasi-identifiers).
    fn necessary_children_exprs(&self, output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        let n = self.input.schema().fields().len();
        let mut served: Vec<usize> = output_columns.iter().copied().filter(|i| *i < n).collect();
        for g in &self.groups {
            for c in &g.columns {
                served.push(self.input.schema().index_of_column_by_name(None, c)?);
            }
        }
        served.sort_unstable();
        served.dedup();
        let counted = (0..self.counting.schema().fields().len()).collect();
        Some(vec![served, counted])
    }
}

/// A group resolved to column positions.
#[derive(Debug, Clone)]
struct PhysGroup {
    served: Vec<usize>,
    counted: Vec<usize>,
    k: u64,
    fields: Vec<SortField>,
}

/// Occurrences of each combination of one group's columns.
#[derive(Debug, Default)]
pub struct GroupCounts {
    /// hashbrown's map with its fast, per-process seeded hasher: every
    /// served row is looked up here.
    pub counts: datafusion::common::HashMap<Box<[u8]>, u64>,
    pub rows: u64,
}

impl GroupCounts {
    /// Count the rows of `columns` (all of one batch).
    fn add(
        &mut self,
        converter: &RowConverter,
        columns: &[ArrayRef],
        max_groups: usize,
    ) -> Result<()> {
        let rows = converter.convert_columns(columns)?;
        for row in rows.iter() {
            let key = row.as_ref();
            if let Some(c) = self.counts.get_mut(key) {
                *c += 1;
            } else {
                if self.counts.len() >= max_groups {
                    return Err(DataFusionError::ResourcesExhausted(format!(
                        "k-anonymization found more than {max_groups} distinct combinations of its columns; choose columns with fewer distinct values"
                    )));
                }
                self.counts.insert(key.into(), 1);
            }
        }
        self.rows += rows.num_rows() as u64;
        Ok(())
    }

    /// About the memory these counts hold.
    fn bytes(&self) -> usize {
        self.counts.keys().map(|k| k.len() + 48).sum()
    }
}

type Counts = std::result::Result<Arc<Vec<GroupCounts>>, String>;

/// Physical operator: counts first, then streams rows with their verdicts.
#[derive(Debug)]
pub struct KAnonymizeExec {
    input: Arc<dyn ExecutionPlan>,
    counting: Arc<dyn ExecutionPlan>,
    groups: Vec<PhysGroup>,
    max_groups: usize,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    counts: Arc<OnceCell<Counts>>,
    kept: Option<CountsSlot>,
}

impl KAnonymizeExec {
    fn new(
        input: Arc<dyn ExecutionPlan>,
        counting: Arc<dyn ExecutionPlan>,
        groups: Vec<PhysGroup>,
        max_groups: usize,
        schema: SchemaRef,
        kept: Option<CountsSlot>,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            input.output_partitioning().clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            input,
            counting,
            groups,
            max_groups,
            schema,
            properties,
            counts: Arc::new(OnceCell::new()),
            kept,
        }
    }

    /// Drain every partition of the counting input into per-group counts.
    async fn count(
        counting: Arc<dyn ExecutionPlan>,
        groups: Vec<PhysGroup>,
        max_groups: usize,
        context: Arc<TaskContext>,
    ) -> Result<Vec<GroupCounts>> {
        let converters = groups
            .iter()
            .map(|g| RowConverter::new(g.fields.clone()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut counts: Vec<GroupCounts> = groups.iter().map(|_| GroupCounts::default()).collect();
        let partitions = counting.output_partitioning().partition_count();
        let streams = (0..partitions)
            .map(|i| counting.execute(i, Arc::clone(&context)))
            .collect::<Result<Vec<_>>>()?;
        let mut all = futures::stream::select_all(streams);
        while let Some(batch) = all.try_next().await? {
            for ((g, c), conv) in groups.iter().zip(&mut counts).zip(&converters) {
                let cols: Vec<ArrayRef> = g
                    .counted
                    .iter()
                    .map(|i| Arc::clone(batch.column(*i)))
                    .collect();
                c.add(conv, &cols, max_groups)?;
            }
        }
        Ok(counts)
    }
}

impl DisplayAs for KAnonymizeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups: Vec<String> = self
            .groups
            .iter()
            .map(|g| format!("{:?} k={}", g.served, g.k))
            .collect();
        write!(f, "KAnonymizeExec: groups={}", groups.join("; "))
    }
}

impl ExecutionPlan for KAnonymizeExec {
    fn name(&self) -> &str {
        "KAnonymizeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input, &self.counting]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    /// Suppressed quasi-identifiers don't keep an order on them (and the
    /// barrier above keeps sorts out anyway).
    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false, false]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false, false]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Ok([input, counting]) = <[Arc<dyn ExecutionPlan>; 2]>::try_from(children) else {
            return Err(DataFusionError::Internal(
                "KAnonymizeExec takes two children".into(),
            ));
        };
        Ok(Arc::new(KAnonymizeExec::new(
            input,
            counting,
            self.groups.clone(),
            self.max_groups,
            Arc::clone(&self.schema),
            self.kept.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let cell = Arc::clone(&self.counts);
        let counting = Arc::clone(&self.counting);
        let groups = self.groups.clone();
        let max_groups = self.max_groups;
        let kept = self.kept.clone();
        let schema = Arc::clone(&self.schema);
        let converters = groups
            .iter()
            .map(|g| RowConverter::new(g.fields.clone()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let counts = {
            let groups = groups.clone();
            async move {
                // Every partition waits for the one count, which reads
                // the kept counts when a read counted the same rows.
                let counts = cell
                    .get_or_init(|| async move {
                        let count = Self::count(counting, groups, max_groups, context);
                        match kept {
                            Some(slot) => slot
                                .kept
                                .counts
                                .try_get_with(slot.key, async {
                                    slot.kept
                                        .runs
                                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    match count.await {
                                        // This query was stopped (its reader
                                        // left): its count must not fail the
                                        // others waiting for it. It waits to
                                        // be dropped with the query, and a
                                        // waiting query counts instead.
                                        Err(_) if crate::sql::stop::stopped() => {
                                            std::future::pending().await
                                        }
                                        counted => counted.map(Arc::new),
                                    }
                                })
                                .await
                                .map_err(|e| e.to_string()),
                            None => count.await.map(Arc::new).map_err(|e| e.to_string()),
                        }
                    })
                    .await;
                counts.clone().map_err(DataFusionError::Execution)
            }
        };
        let out_schema = Arc::clone(&schema);
        let stream = futures::stream::once(async move {
            let counts = counts.await?;
            Ok::<_, DataFusionError>(input.map(move |batch| {
                let batch = batch?;
                let mut columns = batch.columns().to_vec();
                for ((g, c), conv) in groups.iter().zip(counts.iter()).zip(&converters) {
                    let cols: Vec<ArrayRef> = g
                        .served
                        .iter()
                        .map(|i| Arc::clone(batch.column(*i)))
                        .collect();
                    let rows = conv.convert_columns(&cols)?;
                    // A combination the count never saw (the data changed
                    // between the two scans) is suppressed.
                    let ok: BooleanArray = rows
                        .iter()
                        .map(|r| Some(c.counts.get(r.as_ref()).is_some_and(|n| *n >= g.k)))
                        .collect();
                    columns.push(Arc::new(ok));
                }
                Ok(RecordBatch::try_new(Arc::clone(&schema), columns)?)
            }))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(out_schema, stream)))
    }
}

/// Lowers [`KAnonymize`] to [`KAnonymizeExec`].
#[derive(Debug)]
pub struct KAnonymizePlanner;

#[async_trait]
impl ExtensionPlanner for KAnonymizePlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn Session,
        _planning_ctx: &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(k) = node.as_any().downcast_ref::<KAnonymize>() else {
            return Ok(None);
        };
        let ([input, counting], [l_input, l_counting]) = (physical_inputs, logical_inputs) else {
            return Err(DataFusionError::Internal(
                "KAnonymize has two inputs".into(),
            ));
        };
        let position = |plan: &LogicalPlan, c: &str| -> Result<usize> {
            plan.schema()
                .index_of_column_by_name(None, c)
                .ok_or_else(|| {
                    DataFusionError::Internal(format!("k-anonymization column '{c}' is missing"))
                })
        };
        let mut groups = Vec::new();
        for g in &k.groups {
            let served = g
                .columns
                .iter()
                .map(|c| position(l_input, c))
                .collect::<Result<Vec<_>>>()?;
            let counted = g
                .columns
                .iter()
                .map(|c| position(l_counting, c))
                .collect::<Result<Vec<_>>>()?;
            let fields = served
                .iter()
                .map(|i| SortField::new(input.schema().field(*i).data_type().clone()))
                .collect();
            groups.push(PhysGroup {
                served,
                counted,
                k: g.k,
                fields,
            });
        }
        let mut fields: Vec<Field> = input
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.extend(
            k.groups
                .iter()
                .map(|g| Field::new(&g.flag, DataType::Boolean, false)),
        );
        let schema = Arc::new(Schema::new(fields));
        Ok(Some(Arc::new(KAnonymizeExec::new(
            Arc::clone(input),
            Arc::clone(counting),
            groups,
            k.max_groups,
            schema,
            k.kept.clone(),
        ))))
    }
}

/// What the data says about k-anonymizing some columns (`veil.profile_k_anonymity`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Profile {
    pub rows: u64,
    /// Distinct values per column, in the order asked.
    pub distinct: Vec<u64>,
    /// Distinct combinations of all the columns.
    pub groups: u64,
    /// The data's k-anonymity over these columns: its smallest group.
    pub current_k: u64,
    /// See [`suggest_k`].
    pub suggested_k: u64,
    /// Share of rows whose values `suggested_k` would null.
    pub suppressed_at_suggested: f64,
}

/// Largest share of rows a suggested k may suppress.
pub const SUGGESTION_MAX_SUPPRESSED: f64 = 0.05;

/// The suggested k: the largest k from 2 to 10 that nulls the values of
/// at most 5% of rows; 2 when even k = 2 suppresses more.
pub fn suggest_k(counts: &GroupCounts) -> (u64, f64) {
    let suppressed = |k: u64| -> f64 {
        if counts.rows == 0 {
            return 0.0;
        }
        let n: u64 = counts.counts.values().filter(|c| **c < k).sum();
        n as f64 / counts.rows as f64
    };
    let best = (2..=10)
        .rev()
        .find(|k| suppressed(*k) <= SUGGESTION_MAX_SUPPRESSED)
        .unwrap_or(2);
    (best, suppressed(best))
}

/// Count a stream of batches over `fields` (the columns, in order) and
/// profile them.
pub async fn profile(mut stream: SendableRecordBatchStream, max_groups: usize) -> Result<Profile> {
    let schema = stream.schema();
    let fields: Vec<SortField> = schema
        .fields()
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields.clone())?;
    let mut counts = GroupCounts::default();
    while let Some(batch) = stream.try_next().await? {
        counts.add(&converter, batch.columns(), max_groups)?;
    }
    // Distinct values per column, from the distinct combinations.
    let parser = converter.parser();
    let columns = converter.convert_rows(counts.counts.keys().map(|k| parser.parse(k)))?;
    let mut distinct = Vec::new();
    for (column, field) in columns.iter().zip(fields) {
        let one = RowConverter::new(vec![field])?;
        let rows = one.convert_columns(std::slice::from_ref(column))?;
        let set: HashSet<&[u8]> = rows.iter().map(|r| r.data()).collect();
        distinct.push(set.len() as u64);
    }
    let (suggested_k, suppressed_at_suggested) = suggest_k(&counts);
    Ok(Profile {
        rows: counts.rows,
        distinct,
        groups: counts.counts.len() as u64,
        current_k: counts.counts.values().copied().min().unwrap_or(0),
        suggested_k,
        suppressed_at_suggested,
    })
}
