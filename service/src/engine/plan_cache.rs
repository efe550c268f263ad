//! Plans of scans, and of SQL queries answered under differential privacy,
//! kept across requests, so a repeated `GetFlightInfo` or `DoGet` does not
//! pay DataFusion's analysis, optimisation and physical planning again
//! (about a millisecond for a 100-column dataset or a DP query).
//!
//! A plan is a function of everything in its key and nothing else:
//!
//! * the principal's identity fingerprint (identity, groups, attributes,
//!   permissions: what every policy decision reads) and the state version
//!   (every change to policies, tags, the directory, grants, approvals or
//!   ownership moves it), so a policy change or a new group is effective on
//!   the next request, exactly as without the cache;
//! * the dataset and the command (columns, filter text, limit) and the part
//!   one endpoint reads;
//! * the files the plan reads (path, size, modification time): the request
//!   lists them first, so a file written, replaced or removed plans afresh;
//! * the request's clock, only when a time-window policy binds it.
//!
//! A SQL query names its dataset only once parsed, so its key is the query
//! text and parameters, and the kept plan carries the files it was planned
//! over ([`SourceCheck`]): a request lists them again and plans afresh
//! when they differ.
//!
//! Plans whose own expressions read a clock (`now()`, `current_date`, ...)
//! or draw random values are never kept: DataFusion folds such calls into
//! the plan. Neither are failures, reads of Veil's audit trail, or sources
//! whose files carry no modification time.
//!
//! A kept plan is a template: it is never executed itself. Each request
//! gets its own copy with every operator's state reset
//! ([`reset_plan_states`]), so concurrent reads of one plan share nothing
//! that runs.

use datafusion::common::tree_node::TreeNode;
use datafusion::datasource::ViewTable;
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use std::sync::Arc;

use veil_proto::{ScanCommand, ScanPart, SqlCommand};

use super::kept_masks::KeptCopy;
use super::principal_catalog::DatasetRead;
use crate::catalog::files::Listing;
use crate::error::Result;
use crate::error::query::from_datafusion;
use datafusion::arrow::datatypes::SchemaRef;

/// Everything a scan's plan is made from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PlanKey {
    fingerprint: [u8; 32],
    version: u64,
    dataset_id: String,
    columns: Vec<String>,
    filter: String,
    limit: Option<u64>,
    /// A SQL query's text and its bound parameters (Arrow IPC).
    sql: Option<(String, Vec<u8>)>,
    /// The endpoint's part, encoded (`None`: the whole dataset).
    part: Option<Vec<u8>>,
    /// (path, size, modified ms) of every file read, in listing order.
    files: Vec<(String, u64, i64)>,
    /// The request's clock in milliseconds, for time-window policies only.
    clock_ms: Option<i64>,
    /// The dataset's kept-masks generation (`super::kept_masks`).
    kept: u64,
}

impl PlanKey {
    /// The key of a scan, or `None` when its plan can't be kept (a file
    /// without a modification time).
    #[allow(clippy::too_many_arguments)]
    pub fn scan(
        fingerprint: [u8; 32],
        version: u64,
        dataset_id: &str,
        scan: &ScanCommand,
        part: Option<&ScanPart>,
        listing: &Listing,
        clock_ms: Option<i64>,
        kept: u64,
    ) -> Option<Self> {
        let files = listing
            .files
            .iter()
            .map(|f| Some((f.path.clone(), f.size, f.modified_ms?)))
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            fingerprint,
            version,
            dataset_id: dataset_id.to_string(),
            columns: scan.columns.clone(),
            filter: scan.filter.clone(),
            limit: scan.limit,
            sql: None,
            part: part.map(prost::Message::encode_to_vec),
            files,
            clock_ms,
            kept,
        })
    }

    /// The key of a SQL query. What it reads is checked at each use
    /// ([`KeptPlan::source`]), not keyed.
    pub fn sql(fingerprint: [u8; 32], version: u64, sql: &SqlCommand) -> Self {
        Self {
            fingerprint,
            version,
            dataset_id: String::new(),
            columns: Vec::new(),
            filter: String::new(),
            limit: None,
            sql: Some((sql.query.clone(), sql.parameters.clone())),
            part: None,
            files: Vec::new(),
            clock_ms: None,
            kept: 0,
        }
    }

    /// How much of the cache an entry for this key takes: plans grow with
    /// the columns they carry.
    fn weight(&self, plan: &KeptPlan) -> u32 {
        let files = self.files.len() + plan.source.as_ref().map_or(0, |s| s.files.len());
        let text = self.sql.as_ref().map_or(0, |(q, p)| q.len() + p.len());
        (1 + plan.schema.fields().len() as u32 / 8)
            .saturating_add(files as u32 / 64)
            .saturating_add(text as u32 / 4096)
    }
}

/// A kept plan: the template and what the request reports about it.
#[derive(Debug)]
pub struct KeptPlan {
    pub logical: LogicalPlan,
    template: Arc<dyn ExecutionPlan>,
    pub schema: SchemaRef,
    pub reads: Vec<DatasetRead>,
    /// The kept copies the plan reads: on disk while it is kept.
    pub leases: Vec<Arc<KeptCopy>>,
    /// What a SQL query's plan was made over, checked at each use.
    pub source: Option<SourceCheck>,
}

/// The dataset a kept SQL plan reads, as it was when planned: its files
/// and its kept-masks generation. A request whose listing differs plans
/// afresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceCheck {
    pub dataset: String,
    pub files: Vec<(String, u64, i64)>,
    pub kept: u64,
}

impl SourceCheck {
    /// The check of a dataset read over `listing`, or `None` when a file
    /// carries no modification time (never kept then).
    pub fn new(dataset: &str, listing: &Listing, kept: u64) -> Option<Self> {
        Some(Self {
            dataset: dataset.to_string(),
            files: listing
                .files
                .iter()
                .map(|f| Some((f.path.clone(), f.size, f.modified_ms?)))
                .collect::<Option<Vec<_>>>()?,
            kept,
        })
    }
}

impl KeptPlan {
    pub fn new(
        logical: LogicalPlan,
        physical: &Arc<dyn ExecutionPlan>,
        schema: SchemaRef,
        reads: Vec<DatasetRead>,
        leases: Vec<Arc<KeptCopy>>,
    ) -> Self {
        Self {
            logical,
            template: Arc::clone(physical),
            schema,
            reads,
            leases,
            source: None,
        }
    }

    /// The plan of a SQL query, made over `source`.
    pub fn with_source(mut self, source: SourceCheck) -> Self {
        self.source = Some(source);
        self
    }

    /// A copy of the physical plan for one request, sharing no operator
    /// state with any other.
    pub fn instance(&self) -> Result<Arc<dyn ExecutionPlan>> {
        reset_plan_states(Arc::clone(&self.template)).map_err(from_datafusion)
    }
}

/// Plans by key; bounded by weight (about 8 columns per unit) and idle time.
#[derive(Debug, Clone)]
pub struct PlanCache {
    plans: moka::sync::Cache<PlanKey, Arc<KeptPlan>>,
    /// Plans served from the cache, for tests.
    #[cfg(test)]
    hits: Arc<std::sync::atomic::AtomicU64>,
}

/// Weight units the cache holds: about 160,000 columns of plans (2,000
/// plans of 640 columns, or 20,000 of 64).
const MAX_WEIGHT: u64 = 20_000;

impl Default for PlanCache {
    fn default() -> Self {
        Self {
            plans: moka::sync::Cache::builder()
                .max_capacity(MAX_WEIGHT)
                .weigher(|k: &PlanKey, v: &Arc<KeptPlan>| k.weight(v))
                .time_to_idle(std::time::Duration::from_secs(600))
                .build(),
            #[cfg(test)]
            hits: Arc::default(),
        }
    }
}

impl PlanCache {
    pub fn get(&self, key: &PlanKey) -> Option<Arc<KeptPlan>> {
        let plan = self.plans.get(key);
        #[cfg(test)]
        if plan.is_some() {
            self.hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        plan
    }

    /// How many plans were served from the cache so far (tests only).
    #[cfg(test)]
    pub fn hits(&self) -> u64 {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Keep `plan` and return the caller's own copy of it (the kept one
    /// never runs).
    pub fn keep(&self, key: PlanKey, plan: KeptPlan) -> Result<Arc<dyn ExecutionPlan>> {
        let instance = plan.instance()?;
        self.plans.insert(key, Arc::new(plan));
        Ok(instance)
    }

    pub fn invalidate(&self, key: &PlanKey) {
        self.plans.invalidate(key);
    }

    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.plans.run_pending_tasks();
        self.plans.entry_count()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Does the plan (or a view it reads) call a function whose value is not
/// fixed by its arguments: a clock, a random draw? DataFusion folds clocks
/// into the plan, so such a plan is only valid for the request it was made
/// for.
pub fn reads_a_clock(plan: &LogicalPlan) -> bool {
    let volatile_expr = |e: &Expr| {
        e.exists(|x| {
            Ok(matches!(x, Expr::ScalarFunction(f)
                if f.func.signature().volatility != Volatility::Immutable))
        })
        .unwrap_or(true)
    };
    plan.exists(|node| {
        if node.expressions().iter().any(volatile_expr) {
            return Ok(true);
        }
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(provider) = source_as_provider(&scan.source)
            && let Some(view) = provider.downcast_ref::<ViewTable>()
        {
            return Ok(reads_a_clock(view.logical_plan()));
        }
        Ok(false)
    })
    .unwrap_or(true)
}
