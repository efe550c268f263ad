//! The engine: plans a principal's request through DataFusion with the
//! policy operators in place, and executes it as a stream. It knows nothing
//! of gRPC; the Flight layer converts requests and errors.

pub mod acceleration;
#[cfg(test)]
mod database_plans;
pub mod dp;
mod even_batches;
pub mod execution;
pub mod filter_batches;
#[cfg(test)]
mod kanon_parts;
pub mod kept_masks;
pub mod plan_cache;
#[cfg(test)]
mod plan_snapshots;
pub mod principal_catalog;
pub mod query_memory;
pub mod scope;
pub mod short_text_in;
mod stoppable;
#[cfg(test)]
mod type_matrix;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{ScalarValue, TableReference};
use datafusion::dataframe::DataFrame;
use datafusion::execution::context::{SQLOptions, SessionState};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, LogicalPlan, cast};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext, col};
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use std::collections::HashMap;
use std::sync::Arc;

use veil_proto::{ScanCommand, ScanPart, SqlCommand};

use crate::catalog::database::Databases;
use crate::catalog::files::{split_into_parts, split_units};
use crate::catalog::object_stores::ObjectStores;
use crate::catalog::state::StateCache;
use crate::config::EngineConfig;
use crate::error::hints;
use crate::error::query::from_datafusion;
use crate::error::{Result, VeilError};
use crate::model::dataset::DatasetRecord;
use crate::model::dataset::FileFormatKind;
use crate::model::identity::Principal;
use crate::model::snapshot::Snapshot;
use crate::model::source_kind::SourceKind;
use crate::policy::barrier::VeilQueryPlanner;
use crate::policy::effective::{EffectivePolicy, RowRuleKind};
use crate::policy::guard::PolicyGuard;
use crate::policy::masks::kanon::{KEPT_COUNTS_MAX_BYTES, KeptCounts};
use crate::secrets::MasterKey;
use crate::sql::{bounded, limits, parameters, planner_pool};
use kept_masks::{KeptCopy, KeptMasks};
use plan_cache::{KeptPlan, PlanCache, PlanKey};
pub use principal_catalog::DatasetRead;
use principal_catalog::{CATALOG, PrincipalCatalogList, ViewCompiler};
pub use scope::RequestScope;

/// A request to read data.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Scan(ScanCommand),
    Sql(SqlCommand),
}

/// The values of one column a principal reads, among some candidates
/// (through their secure view: masks and row policies applied). The
/// candidates enter the plan as typed literals, never as SQL text.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnLookup {
    pub dataset: String,
    pub column: String,
    pub values: Vec<String>,
}

/// What a plan reads: a client's command, or a lookup Veil makes for a use
/// case (unmask requests check the values against the requester's view).
#[derive(Debug, Clone)]
enum Read {
    Command(Command),
    Lookup(ColumnLookup),
}

/// DataFusion functions queries may not call: they name source files.
const HIDDEN_FUNCTIONS: [&str; 2] = ["input_file_name", "file_row_index"];

/// A SQL query's shape for one principal ([`Engine::describe_sql`]).
#[derive(Debug)]
pub struct DescribedQuery {
    /// Policy-applied output schema, as a read would serve it.
    pub schema: SchemaRef,
    /// Placeholders `$1..$n` and the type each is used as, if fixed.
    pub parameters: Vec<(usize, Option<DataType>)>,
    pub reads: Vec<DatasetRead>,
}

/// A planned query, ready to execute.
#[derive(Debug)]
pub struct PlannedQuery {
    /// The optimised logical plan `physical` was made from.
    pub logical: LogicalPlan,
    pub physical: Arc<dyn ExecutionPlan>,
    /// Policy-applied output schema (never view types).
    pub schema: SchemaRef,
    pub reads: Vec<DatasetRead>,
    /// State version the plan was made at.
    pub version: u64,
    /// The clock time-window policies were measured from.
    pub planned_at: chrono::DateTime<chrono::Utc>,
    /// What the plan executes in: the node's runtime with the query's own
    /// memory limit.
    task: Arc<TaskContext>,
    /// The kept copies the plan reads, held until its stream ends.
    leases: Vec<Arc<KeptCopy>>,
    /// Whose turns it computes in, and for how long ([`execution`]).
    bounds: execution::Bounds,
    /// A differentially private answer: what it cost, once executed.
    pub dp: Option<dp::ReceiptSlot>,
}

impl PlannedQuery {
    pub fn rows_filtered(&self) -> bool {
        self.reads.iter().any(|r| r.policy.rows_filtered())
    }

    /// Does every row of the dataset's view reach the answer, in order
    /// (nothing but projections above its policy barrier)? Then each
    /// endpoint of a dealt read holds its runs whole.
    pub fn keeps_view_rows(&self) -> bool {
        fn keeps(plan: &LogicalPlan) -> bool {
            match plan {
                LogicalPlan::Projection(p) => keeps(&p.input),
                LogicalPlan::SubqueryAlias(a) => keeps(&a.input),
                p => crate::policy::barrier::PolicyBarrier::is_barrier(p),
            }
        }
        keeps(&self.logical)
    }

    /// Does a read k-anonymize with counts that can't be kept across
    /// reads (a database read)? Its counts cover the whole dataset, so it
    /// is served by one endpoint rather than counted once per part. With
    /// kept counts, every part reuses one count.
    pub fn counted_per_part(&self) -> bool {
        self.reads
            .iter()
            .any(|r| !r.policy.kanon.is_empty() && !r.counts_kept)
    }

    /// Execute every partition into one stream, batch by batch, on the
    /// query threads ([`execution`]); dropping the stream stops it. Once
    /// per planned query: its operators' state (a join's build side) is
    /// not reset for another run (a kept plan gives each request its own
    /// copy, [`plan_cache`]).
    /// A read a row policy filters comes in batches of one size
    /// ([`even_batches`]).
    pub fn execute(&self) -> Result<SendableRecordBatchStream> {
        let stream = execution::execute(
            Arc::clone(&self.physical),
            Arc::clone(&self.task),
            self.bounds.clone(),
            // The copies stay on disk until the query ends.
            self.leases.clone(),
        )?;
        Ok(match self.rows_filtered() {
            true => even_batches::even(
                stream,
                even_batches::piece_rows(self.task.session_config().batch_size()),
            ),
            false => stream,
        })
    }
}

/// How a scan is served: the parts endpoints read, and what is known of size.
#[derive(Debug)]
pub struct ScanLayout {
    pub parts: Vec<Option<ScanPart>>,
    pub total_records: i64,
}

#[derive(Debug)]
pub struct Engine {
    state: Arc<StateCache>,
    base: SessionState,
    master: MasterKey,
    default_issuer: String,
    cfg: EngineConfig,
    stores: Arc<ObjectStores>,
    planner: planner_pool::PlannerPool,
    policies: principal_catalog::PolicyCache,
    plans: PlanCache,
    /// Masked values computed once per file (`None`: every read computes them).
    kept: Option<Arc<KeptMasks>>,
    /// k-anonymization counts kept across reads.
    kept_counts: Arc<KeptCounts>,
    /// The databases datasets may read.
    databases: Arc<Databases>,
    /// Local copies of accelerated database datasets (`None`: none kept).
    accelerator: Option<Arc<acceleration::Accelerator>>,
    /// Differentially private answers and budgets, shared through the store.
    dp: Arc<dp::DpAnswers>,
    /// Each user's turns on the query threads.
    turns: Arc<execution::Turns>,
}

impl Engine {
    pub fn new(
        state: Arc<StateCache>,
        master: MasterKey,
        default_issuer: String,
        cfg: EngineConfig,
        stores: Arc<ObjectStores>,
    ) -> Result<Self> {
        let mut config = SessionConfig::new()
            .with_batch_size(cfg.batch_size)
            .with_target_partitions(cfg.target_partitions.max(1))
            .with_default_catalog_and_schema(CATALOG, "public")
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(false);
        let opts = config.options_mut();
        opts.execution.parquet.schema_force_view_types = false;
        opts.sql_parser.map_string_types_to_utf8view = false;
        let mut rt = RuntimeEnvBuilder::new();
        if cfg.memory_limit_mb > 0 {
            rt = rt.with_memory_pool(Arc::new(FairSpillPool::new(
                cfg.memory_limit_mb * 1024 * 1024,
            )));
        }
        let runtime = rt
            .build_arc()
            .map_err(|e| VeilError::internal("runtime", e))?;
        stores.register_with(&runtime)?;
        // Built once; cloned per request. No mask UDF is registered, URL
        // tables stay disabled, and the guard runs on every plan.
        let base = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_query_planner(Arc::new(VeilQueryPlanner))
            .with_analyzer_rule(Arc::new(PolicyGuard))
            .with_optimizer_rules(
                crate::policy::pushdown::optimizer_rules()
                    .map_err(|e| VeilError::internal("the optimizer's rules", e))?,
            )
            .with_physical_optimizer_rule(Arc::new(bounded::BoundedProjection))
            .with_physical_optimizer_rule(Arc::new(filter_batches::FilterBatches))
            .with_physical_optimizer_rule(Arc::new(short_text_in::ShortTextIn))
            .build();
        let mut base = base;
        bounded::BoundedFunction::install(&mut base)?;
        // Functions that name the files behind a dataset (its storage
        // layout is not the reader's to see) are not offered.
        for name in HIDDEN_FUNCTIONS {
            datafusion::execution::FunctionRegistry::deregister_udf(&mut base, name)
                .map_err(|e| VeilError::internal("removing a function", e))?;
        }
        execution::configure(cfg.query_threads);
        let cfg_queries_per_user = cfg.queries_per_user;
        let planner = planner_pool::PlannerPool::new(
            std::time::Duration::from_secs(cfg.plan_timeout_secs.max(1)),
            cfg.plans_per_user,
            cfg.max_planning,
        )?;
        Ok(Self {
            base,
            default_issuer,
            cfg,
            stores,
            planner,
            policies: principal_catalog::policy_cache(),
            plans: PlanCache::default(),
            kept: None,
            kept_counts: Arc::new(KeptCounts::new(KEPT_COUNTS_MAX_BYTES)),
            databases: Arc::new(Databases::none()),
            accelerator: None,
            dp: Arc::new(dp::DpAnswers::new(Arc::clone(state.store()), &master)),
            turns: Arc::new(execution::Turns::new(cfg_queries_per_user)),
            state,
            master,
        })
    }

    /// How a query of `scope`'s principal executes ([`execution`]).
    fn bounds(&self, scope: &RequestScope) -> execution::Bounds {
        execution::Bounds::new(
            &self.turns,
            &scope.principal().identity.to_string(),
            self.cfg.query_timeout_secs,
        )
    }

    /// Count DP answer windows and budget periods on `clock` (ms).
    pub fn with_dp_clock(mut self, clock: dp::Clock) -> Self {
        let answers = dp::DpAnswers::new(Arc::clone(self.state.store()), &self.master);
        self.dp = Arc::new(
            answers
                .with_clock(clock)
                .with_min_passes(self.dp.min_passes()),
        );
        self
    }

    /// Aggregate DP draws in at least `n` passes (tests).
    pub fn with_dp_min_passes(mut self, n: u64) -> Self {
        let answers = dp::DpAnswers::new(Arc::clone(self.state.store()), &self.master);
        self.dp = Arc::new(answers.with_min_passes(n));
        self
    }

    /// Differentially private answers and budgets.
    pub fn dp_answers(&self) -> &Arc<dp::DpAnswers> {
        &self.dp
    }

    /// Keep local copies of accelerated database datasets under `dir`
    /// (emptied now) and serve reads from them while fresh; refreshes run
    /// on a background task of the current tokio runtime.
    pub fn with_acceleration(mut self, dir: &std::path::Path) -> Result<Self> {
        let acc =
            acceleration::Accelerator::open(dir, Arc::clone(&self.databases), self.cfg.batch_size)?;
        acc.spawn_scheduler(Arc::clone(&self.state), std::time::Duration::from_secs(5));
        self.accelerator = Some(acc);
        Ok(self)
    }

    /// The node's accelerated copies, if it keeps them.
    pub fn accelerator(&self) -> Option<&Arc<acceleration::Accelerator>> {
        self.accelerator.as_ref()
    }

    /// Read database datasets through `databases`.
    pub fn with_databases(mut self, databases: Arc<Databases>) -> Self {
        self.databases = databases;
        self
    }

    /// The databases datasets may read.
    pub fn databases(&self) -> &Arc<Databases> {
        &self.databases
    }

    /// Keep costly masked values once computed, in `dir` (emptied now), at
    /// most `max_bytes` of them ([`kept_masks`]). Starts their builder on
    /// the current tokio runtime.
    pub fn with_kept_masks(mut self, dir: &std::path::Path, max_bytes: u64) -> Result<Self> {
        if max_bytes > 0 {
            self.kept = Some(KeptMasks::open(
                dir,
                max_bytes,
                &self.master,
                Arc::clone(self.base.runtime_env()),
                self.cfg.batch_size,
            )?);
        }
        Ok(self)
    }

    pub fn state(&self) -> &Arc<StateCache> {
        &self.state
    }

    pub fn default_issuer(&self) -> &str {
        &self.default_issuer
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The root of every derived key (masks are reversed with it).
    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    /// Where datasets' bytes live.
    pub fn stores(&self) -> &Arc<ObjectStores> {
        &self.stores
    }

    /// A request's scope at the current state version (for callers that
    /// did not read the state already, as the authenticator does).
    pub async fn scope(&self, principal: &Arc<Principal>) -> Result<Arc<RequestScope>> {
        let snapshot = self.state.current().await?;
        Ok(self.scope_at(principal, snapshot))
    }

    /// A request's scope at a state the request already read.
    pub fn scope_at(
        &self,
        principal: &Arc<Principal>,
        snapshot: Arc<Snapshot>,
    ) -> Arc<RequestScope> {
        Arc::new(RequestScope::new(
            Arc::clone(principal),
            snapshot,
            &self.default_issuer,
        ))
    }

    /// The principal's catalog for one plan, at the scope's state.
    fn compiler(
        &self,
        scope: &Arc<RequestScope>,
        parts: HashMap<String, ScanPart>,
        at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Arc<ViewCompiler> {
        Arc::new(self.view_compiler(scope, parts, at))
    }

    fn view_compiler(
        &self,
        scope: &Arc<RequestScope>,
        parts: HashMap<String, ScanPart>,
        at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> ViewCompiler {
        {
            ViewCompiler::new(
                Arc::clone(scope),
                self.master.clone(),
                self.default_issuer.clone(),
                Arc::clone(&self.stores),
                parts,
                self.policies.clone(),
                at.unwrap_or_else(chrono::Utc::now),
            )
            .with_kanon_max_groups(self.cfg.kanon_max_groups)
            .with_audit_store(Arc::clone(self.state.store()))
            .with_kept_masks(self.kept.clone())
            .with_kept_counts(Some(Arc::clone(&self.kept_counts)))
            .with_databases(Arc::clone(&self.databases))
            .with_accelerator(self.accelerator.clone())
        }
    }

    /// A session that reads sources raw, outside any principal's catalog
    /// (profiling columns for k-anonymization policies,
    /// `catalog::profiling`): the node's runtime, so its memory pool and object
    /// stores apply.
    pub fn raw_session(&self) -> SessionContext {
        SessionContext::new_with_config_rt(
            SessionConfig::new(),
            Arc::clone(self.base.runtime_env()),
        )
    }

    /// The request's session: its catalog, and its own memory limit inside
    /// the node's ([`query_memory`]); on one partition when `one_partition`.
    fn session(&self, compiler: &Arc<ViewCompiler>, one_partition: bool) -> Result<SessionContext> {
        let mut state = SessionStateBuilder::new_from_existing(self.base.clone())
            .with_catalog_list(Arc::new(PrincipalCatalogList::new(Arc::clone(compiler))))
            .with_runtime_env(self.query_runtime()?);
        if one_partition {
            state = state.with_config(self.base.config().clone().with_target_partitions(1));
        }
        Ok(SessionContext::new_with_state(state.build()))
    }

    /// The node's runtime with a query's own memory limit inside the
    /// node's ([`query_memory`]).
    fn query_runtime(&self) -> Result<Arc<RuntimeEnv>> {
        let node = self.base.runtime_env();
        if self.cfg.memory_limit_mb == 0 {
            return Ok(Arc::clone(node));
        }
        let limit = match self.cfg.query_memory_limit_mb {
            0 => self.cfg.memory_limit_mb,
            n => n.min(self.cfg.memory_limit_mb),
        };
        RuntimeEnvBuilder::from_runtime_env(node)
            .with_memory_pool(Arc::new(query_memory::QueryPool::new(
                limit * 1024 * 1024,
                Arc::clone(&node.memory_pool),
            )))
            .build_arc()
            .map_err(|e| VeilError::internal("a query's runtime", e))
    }

    /// What a kept plan executes in: no session to build, since a physical
    /// plan carries its functions; only the configuration and the query's
    /// runtime.
    fn task_context(&self) -> Result<Arc<TaskContext>> {
        Ok(Arc::new(TaskContext::new(
            None,
            String::new(),
            self.base.config().clone(),
            HashMap::new(),
            HashMap::new(),
            HashMap::new(),
            HashMap::new(),
            self.query_runtime()?,
        )))
    }

    /// Every scalar function queries may call, with the section of the
    /// documentation it is filed under ("Math Functions", ...), if any.
    pub fn scalar_functions(&self) -> Vec<(String, Option<String>)> {
        self.base
            .scalar_functions()
            .values()
            .map(|f| {
                (
                    f.name().to_string(),
                    f.documentation().map(|d| d.doc_section.label.to_string()),
                )
            })
            .collect()
    }

    /// Datasets the principal may read (or, with `requestable`, those open
    /// on request that they may not read yet), with the policies that apply.
    pub fn list(
        &self,
        scope: &Arc<RequestScope>,
        requestable: bool,
    ) -> Vec<(DatasetRecord, Result<EffectivePolicy>)> {
        let compiler = self.compiler(scope, HashMap::new(), None);
        let datasets = if requestable {
            scope.requestable_datasets()
        } else {
            scope.readable_datasets()
        };
        datasets
            .into_iter()
            .map(|d| (d.clone(), compiler.effective(d)))
            .collect()
    }

    /// Every dataset the principal may see, with whether they may read it
    /// (or only ask to).
    pub fn visible_datasets(&self, scope: &RequestScope) -> Vec<(DatasetRecord, bool)> {
        scope
            .readable_datasets()
            .into_iter()
            .map(|d| (d.clone(), true))
            .chain(
                scope
                    .requestable_datasets()
                    .into_iter()
                    .map(|d| (d.clone(), false)),
            )
            .collect()
    }

    /// One visible dataset (readable, or open on request: then `false`),
    /// with the policies that apply (or would, once approved).
    pub fn lookup_visible(
        &self,
        scope: &Arc<RequestScope>,
        name: &str,
    ) -> Result<(DatasetRecord, EffectivePolicy, bool)> {
        let compiler = self.compiler(scope, HashMap::new(), None);
        let (d, readable) = scope
            .visible(name)
            .ok_or_else(|| compiler.unreadable_scan(name))?;
        let d = d.clone();
        let p = compiler.effective(&d)?;
        Ok((d, p, readable))
    }

    /// Plan a command, optionally restricted to one endpoint's part. Runs
    /// on the planner pool; a panic while planning is an error.
    /// `at` is the clock time windows are measured from (a ticket's
    /// planning time; now when `None`).
    pub async fn plan(
        self: &Arc<Self>,
        scope: &Arc<RequestScope>,
        command: &Command,
        part: Option<ScanPart>,
        at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<PlannedQuery> {
        self.plan_read(scope, Read::Command(command.clone()), part, at)
            .await
    }

    /// Plan a [`ColumnLookup`] for `principal`, like a scan of that one
    /// column filtered to the candidate values.
    pub async fn plan_lookup(
        self: &Arc<Self>,
        scope: &Arc<RequestScope>,
        lookup: &ColumnLookup,
    ) -> Result<PlannedQuery> {
        self.plan_read(scope, Read::Lookup(lookup.clone()), None, None)
            .await
    }

    async fn plan_read(
        self: &Arc<Self>,
        scope: &Arc<RequestScope>,
        read: Read,
        part: Option<ScanPart>,
        at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<PlannedQuery> {
        // A kept plan is served without the planner pool (no thread, no
        // deep stack to set up), still within the planning time limit.
        let kept = match (&read, &part) {
            (Read::Command(Command::Scan(scan)), _) => Some(
                tokio::time::timeout(
                    self.planner.timeout(),
                    self.kept_scan(scope, scan, part.as_ref(), at),
                )
                .await,
            ),
            (Read::Command(Command::Sql(sql)), None) => Some(
                tokio::time::timeout(self.planner.timeout(), self.kept_sql(scope, sql, at)).await,
            ),
            _ => None,
        };
        match kept {
            Some(Ok(Some(planned))) => return Ok(planned),
            Some(Err(_)) => return Err(self.planner.timed_out()),
            Some(Ok(None)) | None => {}
        }
        let identity = &scope.principal().identity;
        let user = format!("{}\u{0}{}", identity.issuer, identity.subject);
        let (engine, scope) = (Arc::clone(self), Arc::clone(scope));
        let planning = read.clone();
        self.planner
            .run(&user, async move {
                engine.plan_inner(&scope, &planning, part, at).await
            })
            .await
            .map_err(|e| with_hints(&read, e))
    }

    async fn plan_inner(
        &self,
        scope: &Arc<RequestScope>,
        read: &Read,
        part: Option<ScanPart>,
        at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<PlannedQuery> {
        let now = at.unwrap_or_else(chrono::Utc::now);
        let key = match read {
            Read::Command(Command::Scan(scan)) => {
                let compiler = self.compiler(scope, HashMap::new(), Some(now));
                self.scan_key(scope, &compiler, scan, part.as_ref(), at)
                    .await
            }
            _ => None,
        };
        // `SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (...)`, read first.
        let (sql_text, dp_options) = match read {
            Read::Command(Command::Sql(sql)) => {
                let (text, options) = dp::options::strip(&sql.query)?;
                (Some(text), options)
            }
            _ => (None, None),
        };
        let one_of_several = part.as_ref().is_some_and(|p| p.siblings > 1);
        let mut parts = HashMap::new();
        // A SQL query's part must still split the query when planned now.
        let mut sql_part = None;
        match (read, part) {
            (Read::Command(Command::Scan(scan)), Some(part)) => {
                parts.insert(scan.dataset.to_ascii_lowercase(), part);
            }
            (Read::Command(Command::Sql(_)), Some(part)) => {
                sql_part = Some(part.dataset.to_ascii_lowercase());
                parts.insert(part.dataset.to_ascii_lowercase(), part);
            }
            _ => {}
        }
        let compiler = self.compiler(scope, parts, Some(now));
        // A scan cut short by a limit reads its files in order on one
        // partition, so the same request returns the same rows every time
        // (a preview is stable) instead of whichever partition came first.
        // One part of several is also read on one partition: its siblings
        // are read at the same time, so they already use the cores, and
        // each partition more would hold its own row group and batches
        // (benches/README.md, server peak RSS).
        let in_order = matches!(read, Read::Command(Command::Scan(s)) if s.limit.is_some());
        let ctx = self.session(&compiler, in_order || one_of_several)?;
        let frame = match read {
            Read::Command(Command::Scan(scan)) => self.scan_frame(&ctx, &compiler, scan).await?,
            Read::Command(Command::Sql(sql)) => {
                let values = parameters::decode(&sql.parameters)?;
                let text = sql_text.as_deref().unwrap_or(&sql.query);
                let frame = self.sql_frame(&ctx, text, Some(values)).await?;
                match dp::query::guard_of(frame.logical_plan())? {
                    Some(guard) => {
                        // Only a whole query's plan is kept (a DP answer is
                        // never split), never one bound to this request's
                        // clock.
                        let key = sql_part.is_none().then(|| {
                            PlanKey::sql(scope.principal().fingerprint, scope.version(), sql)
                        });
                        return self
                            .plan_dp(scope, &ctx, frame, guard, dp_options.as_ref(), now, key)
                            .await;
                    }
                    None if dp_options.is_some() => {
                        return Err(VeilError::InvalidArgument(
                            "[DP_OPTIONS] WITH DIFFERENTIAL_PRIVACY applies to queries on a dataset under a differential privacy policy; this query reads none (drop the clause)".into(),
                        ));
                    }
                    None => frame,
                }
            }
            Read::Lookup(lookup) => self.lookup_frame(&ctx, &compiler, lookup).await?,
        };
        // Rows of a dataset under differential privacy are never read
        // but through `plan_dp` (the guard would refuse it later; this
        // says why, first).
        if let Some(guard) = dp::query::guard_of(frame.logical_plan())? {
            return Err(dp::refusal(
                dp::Refusal::RowLevel,
                &guard,
                "its rows are never served",
            ));
        }
        let task = ctx.task_ctx();
        // Behind a row policy, rows come on one partition, in the files'
        // order: partitions interleave where the source's row groups and
        // batches end, hidden rows included, so the order of the caller's
        // rows showed where hidden rows are (found by an outside review).
        let filtered = compiler.reads().iter().any(|r| r.policy.rows_filtered());
        let (plan, logical, physical, schema) = physical_plan(frame, filtered).await?;
        if let Some(dataset) = sql_part
            && splittable(&logical, &compiler.reads()) != Some(dataset)
        {
            return Err(VeilError::FailedPrecondition(
                "the policies on this query's data changed since it was planned; run the query again"
                    .into(),
            ));
        }
        let leases = compiler.leases();
        let physical = match key {
            Some(key) if !plan_cache::reads_a_clock(&plan) => self.plans.keep(
                key,
                KeptPlan::new(
                    logical.clone(),
                    &physical,
                    Arc::clone(&schema),
                    compiler.reads(),
                    leases.clone(),
                ),
            )?,
            _ => physical,
        };
        Ok(PlannedQuery {
            logical,
            physical,
            schema,
            reads: compiler.reads(),
            version: scope.version(),
            planned_at: compiler.now(),
            task,
            leases,
            dp: None,
            bounds: self.bounds(scope),
        })
    }

    /// Plan a SQL query on a dataset under differential privacy: accept
    /// its shape, build its exact bounded aggregates in a session that
    /// reads the secure view, and put the answer (kept, or drawn when
    /// executed) in place of its aggregate ([`dp`]). The plan is kept
    /// under `kept_key` when nothing in it is bound to this request
    /// ([`plan_cache`]).
    #[allow(clippy::too_many_arguments)]
    async fn plan_dp(
        &self,
        scope: &Arc<RequestScope>,
        ctx: &SessionContext,
        frame: DataFrame,
        guard: Arc<dp::guard::DpGuardTable>,
        options: Option<&dp::options::DpOptions>,
        now: chrono::DateTime<chrono::Utc>,
        kept_key: Option<PlanKey>,
    ) -> Result<PlannedQuery> {
        use dp::{bounding, query, release};
        let plan = frame.logical_plan().clone();
        let q = query::accept(&plan, &guard)?;
        let rule = guard.rule();
        let policy = &rule.policy;
        let (privacy, epsilon) = dp::options::privacy_for(policy, options)?;
        let private: Vec<&String> = q
            .groups
            .iter()
            .filter(|g| !policy.public_keys.contains_key(*g))
            .collect();
        if !private.is_empty() && privacy.selection_delta().is_none() {
            return Err(dp::refusal(
                dp::Refusal::GroupBy,
                &guard,
                &format!(
                    "the policy lists no public keys for {} and has no `delta`, which releasing keys only many units share needs",
                    private
                        .iter()
                        .map(|g| g.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let d = guard.dataset().clone();
        let view = guard.view_schema();
        let public = if q.groups.is_empty() || !private.is_empty() {
            None
        } else {
            let mut combos: Vec<Vec<ScalarValue>> = vec![vec![]];
            for g in &q.groups {
                let dt = view
                    .field_with_name(g)
                    .map_err(|e| VeilError::internal("a group column", e))?
                    .data_type()
                    .clone();
                let keys = bounding::public_key_literals(g, &policy.public_keys[g], &dt)?;
                combos = combos
                    .into_iter()
                    .flat_map(|c| {
                        keys.iter().map(move |k| {
                            let mut c = c.clone();
                            c.push(k.clone());
                            c
                        })
                    })
                    .collect();
            }
            Some(combos)
        };
        let raws = bounding::raw_quantities(&q, !private.is_empty());
        let noise = release::NoisePlan::new(&q, policy, &privacy, raws.clone(), public)?;
        // The exact aggregates, over the secure view.
        let exact_compiler = Arc::new(
            self.view_compiler(scope, HashMap::new(), Some(now))
                .with_dp_raw(),
        );
        let exact_ctx = self.session(&exact_compiler, false)?;
        let (schema_name, table) = d.name.split_once('.').expect("validated name");
        let rows = bounding::rows_frame(
            &exact_ctx,
            TableReference::full(
                CATALOG,
                schema_name.to_ascii_lowercase(),
                table.to_ascii_lowercase(),
            ),
            &q,
            &raws,
        )
        .await?;
        // What the answer answers: never per user, but per what they see.
        let effective = guard.policy();
        let visibility = format!(
            "{:?}|{:?}|{:?}",
            effective
                .row_rules
                .iter()
                .map(|r| &r.kind)
                .collect::<Vec<_>>(),
            effective.masks,
            effective.kanon
        );
        let privacy_text = format!(
            "{}|{epsilon}|{:?}|{}",
            policy.mechanism.as_str(),
            privacy.selection_delta(),
            privacy.cost()
        );
        let key = self.dp.answer_key(&[
            &d.id,
            &rule.label,
            &visibility,
            &q.canonical(),
            &privacy_text,
        ]);
        // What the data was (files: paths, sizes, times), and how many
        // passes its units are aggregated in at first: one per 64 MiB of
        // files (more if a pass runs out of memory).
        let mut source_check = None;
        let mut rows_bound = None;
        let (source_version, passes) = match SourceKind::of(&d) {
            SourceKind::Files(format) => {
                let listing = scope.listing(&self.stores, &d).await?;
                if format == FileFormatKind::Parquet {
                    rows_bound = crate::catalog::files::parquet_rows(&listing).await;
                }
                let kept = self.kept.as_ref().map_or(0, |k| k.generation(&d.id));
                source_check = plan_cache::SourceCheck::new(&d.name, &listing, kept);
                let files: Vec<(&str, u64, Option<i64>)> = listing
                    .files
                    .iter()
                    .map(|f| (f.path.as_str(), f.size, f.modified_ms))
                    .collect();
                let bytes: u64 = listing.files.iter().map(|f| f.size).sum();
                (
                    self.dp.answer_key(&[&format!("{files:?}")]),
                    bytes.div_ceil(64 << 20).clamp(1, dp::exec::MAX_PASSES),
                )
            }
            // No cheap version to read: a new window draws anew.
            _ => (String::new(), 1),
        };
        let aggregate = query::aggregate_of(&plan).ok_or_else(|| {
            VeilError::Internal("an accepted DP query without its aggregate".into())
        })?;
        let answer_schema: SchemaRef = Arc::new(datafusion::arrow::datatypes::Schema::new(
            aggregate
                .schema
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    datafusion::arrow::datatypes::Field::new(
                        format!("c{i}"),
                        f.data_type().clone(),
                        true,
                    )
                })
                .collect::<Vec<_>>(),
        ));
        // Whether the rows seen depend on this request's clock (a
        // time-window policy, a clock read below the view).
        let exact_reads_a_clock = plan_cache::reads_a_clock(rows.logical_plan());
        let windowed = exact_reads_a_clock
            || effective
                .row_rules
                .iter()
                .any(|r| matches!(r.kind, RowRuleKind::Window { .. }));
        let identity = &scope.principal().identity;
        let job = Arc::new(dp::exec::DpJob {
            answers: Arc::clone(&self.dp),
            query: q,
            noise,
            privacy,
            epsilon,
            key,
            source_version: source_version.clone(),
            user_ledger: format!(
                "user:{}",
                serde_json::to_string(&(&identity.issuer, &identity.subject)).unwrap_or_default()
            ),
            rows,
            // Under a time window the rows seen change with the clock,
            // so what the units looked like once says nothing later.
            unique_check: match source_version.is_empty() || windowed {
                true => None,
                false => Some((
                    exact_ctx
                        .table(TableReference::full(
                            CATALOG,
                            schema_name.to_ascii_lowercase(),
                            table.to_ascii_lowercase(),
                        ))
                        .await
                        .map_err(from_datafusion)?,
                    self.dp.answer_key(&[&d.id, &visibility, &source_version]),
                )),
            },
            rows_bound,
            rank: bounding::DpRank::udf(self.dp.bounding_key(&d.id)),
            passes: passes.max(self.dp.min_passes()),
            schema: Arc::clone(&answer_schema),
        });
        let upper = query::answer_in_place(&plan, aggregate, job)?;
        let frame = ctx
            .execute_logical_plan(upper)
            .await
            .map_err(from_datafusion)?;
        let task = ctx.task_ctx();
        let (user_plan, logical, physical, schema) = physical_plan(frame, false).await?;
        let leases = exact_compiler.leases();
        let physical = match (kept_key, source_check) {
            (Some(kept_key), Some(source))
                if !windowed && !plan_cache::reads_a_clock(&user_plan) =>
            {
                self.plans.keep(
                    kept_key,
                    KeptPlan::new(
                        logical.clone(),
                        &physical,
                        Arc::clone(&schema),
                        exact_compiler.reads(),
                        leases.clone(),
                    )
                    .with_source(source),
                )?
            }
            _ => physical,
        };
        // The optimizer replaces a query that asks for no rows (`LIMIT 0`)
        // by an empty plan, answer and all: refused, never served as data.
        let receipt = dp::exec::receipt_of(&physical).ok_or_else(|| {
            VeilError::InvalidArgument(
                "[DP_EMPTY] the query asks for no rows (LIMIT 0), so there is no answer to compute under differential privacy; remove the LIMIT 0"
                    .into(),
            )
        })?;
        Ok(PlannedQuery {
            logical,
            physical,
            schema,
            reads: exact_compiler.reads(),
            version: scope.version(),
            planned_at: now,
            task,
            leases,
            dp: Some(receipt),
            bounds: self.bounds(scope),
        })
    }

    /// A DP query's kept plan, if there is one for this request and the
    /// files it reads are those it was planned over ([`plan_cache`]).
    async fn kept_sql(
        &self,
        scope: &Arc<RequestScope>,
        sql: &SqlCommand,
        at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Option<PlannedQuery> {
        let key = PlanKey::sql(scope.principal().fingerprint, scope.version(), sql);
        let kept = self.plans.get(&key)?;
        let source = kept.source.as_ref()?;
        let d = scope.readable(&source.dataset)?;
        let listing = scope.listing(&self.stores, d).await.ok()?;
        let generation = self.kept.as_ref().map_or(0, |k| k.generation(&d.id));
        if plan_cache::SourceCheck::new(&d.name, &listing, generation).as_ref() != Some(source) {
            // Its files changed: plan anew.
            self.plans.invalidate(&key);
            return None;
        }
        // Only DP answers' plans are kept by query text.
        self.serve_kept(scope, &key, &kept, at.unwrap_or_else(chrono::Utc::now))
            .filter(|planned| planned.dp.is_some())
    }

    /// What a SQL query would return for this principal, and the
    /// parameters it takes, without binding or running it (a prepared
    /// statement's shape). Plans as a read would: the same views, so the
    /// same errors for datasets the principal can't see.
    pub async fn describe_sql(
        self: &Arc<Self>,
        scope: &Arc<RequestScope>,
        query: &str,
    ) -> Result<DescribedQuery> {
        let identity = &scope.principal().identity;
        let user = format!("{}\u{0}{}", identity.issuer, identity.subject);
        let (engine, scope) = (Arc::clone(self), Arc::clone(scope));
        let written = query;
        let query = query.to_string();
        self.planner
            .run(&user, async move {
                let compiler = engine.compiler(&scope, HashMap::new(), Some(chrono::Utc::now()));
                let ctx = engine.session(&compiler, false)?;
                let (query, _) = dp::options::strip(&query)?;
                let frame = engine.sql_frame(&ctx, &query, None).await?;
                // A DP query's shape is checked now; its answer's types
                // are the aggregate's, as planned.
                match dp::query::guard_of(frame.logical_plan())? {
                    Some(guard) => {
                        dp::query::accept(frame.logical_plan(), &guard)?;
                    }
                    // Optimized as a read would be, so a constant that
                    // can't be folded fails the prepare, not its first
                    // execution (a DP query is optimized once rewritten).
                    None => {
                        frame
                            .clone()
                            .into_optimized_plan()
                            .map_err(from_datafusion)?;
                    }
                }
                let parameters = parameters::placeholders(frame.logical_plan())?;
                let frame = plain_types(frame)?;
                Ok(DescribedQuery {
                    schema: Arc::new(frame.schema().as_arrow().clone()),
                    parameters,
                    reads: compiler.reads(),
                })
            })
            .await
            .map_err(|e| hints::sql(e, written))
    }

    /// A scan's kept plan, if there is one for this request ([`plan_cache`]).
    async fn kept_scan(
        &self,
        scope: &Arc<RequestScope>,
        scan: &ScanCommand,
        part: Option<&ScanPart>,
        at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Option<PlannedQuery> {
        let now = at.unwrap_or_else(chrono::Utc::now);
        let compiler = self.compiler(scope, HashMap::new(), Some(now));
        let key = self.scan_key(scope, &compiler, scan, part, at).await?;
        let kept = self.plans.get(&key)?;
        self.serve_kept(scope, &key, &kept, now)
    }

    /// A request's own copy of a kept plan, planned as of `planned_at`;
    /// `None` (and the plan forgotten) when a kept copy of masks it reads
    /// was deleted behind Veil's back: the request plans anew.
    fn serve_kept(
        &self,
        scope: &RequestScope,
        key: &PlanKey,
        kept: &KeptPlan,
        planned_at: chrono::DateTime<chrono::Utc>,
    ) -> Option<PlannedQuery> {
        if !kept.leases.iter().all(|l| l.exists()) {
            self.plans.invalidate(key);
            return None;
        }
        let physical = kept.instance().ok()?;
        Some(PlannedQuery {
            logical: kept.logical.clone(),
            dp: dp::exec::receipt_of(&physical),
            physical,
            schema: Arc::clone(&kept.schema),
            reads: kept.reads.clone(),
            version: scope.version(),
            planned_at,
            task: self.task_context().ok()?,
            leases: kept.leases.clone(),
            bounds: self.bounds(scope),
        })
    }

    /// The key a scan's plan is kept under ([`plan_cache`]), or `None` when
    /// it can't be kept or the scan fails (it then plans, and fails, as
    /// usual). Lists the dataset's files: the plan and the layout reuse the
    /// listing through the scope.
    async fn scan_key(
        &self,
        scope: &RequestScope,
        compiler: &ViewCompiler,
        scan: &ScanCommand,
        part: Option<&ScanPart>,
        at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Option<PlanKey> {
        let d = scope.readable(&scan.dataset)?;
        if !matches!(SourceKind::of(d), SourceKind::Files(_)) {
            return None;
        }
        let policy = compiler.effective_shared(d).ok()?;
        let windowed = policy
            .row_rules
            .iter()
            .any(|r| matches!(r.kind, RowRuleKind::Window { .. }));
        // A window bound to a clock of this request alone is never reused.
        let clock_ms = match windowed {
            true => Some(at?.timestamp_millis()),
            false => None,
        };
        let listing = scope.listing(&self.stores, d).await.ok()?;
        // A plan made before a copy was kept (or after one was dropped) is
        // not reused: the next one reads what is kept now.
        let kept = self.kept.as_ref().map_or(0, |k| k.generation(&d.id));
        PlanKey::scan(
            scope.principal().fingerprint,
            scope.version(),
            &d.id,
            scan,
            part,
            &listing,
            clock_ms,
            kept,
        )
    }

    async fn scan_frame(
        &self,
        ctx: &SessionContext,
        compiler: &ViewCompiler,
        scan: &ScanCommand,
    ) -> Result<DataFrame> {
        let d = compiler
            .readable(&scan.dataset)
            .ok_or_else(|| compiler.unreadable_scan(&scan.dataset))?;
        let (schema, table) = d.name.split_once('.').expect("validated name");
        let mut frame = ctx
            .table(TableReference::full(
                CATALOG,
                schema.to_ascii_lowercase(),
                table.to_ascii_lowercase(),
            ))
            .await
            .map_err(from_datafusion)?;
        if !scan.filter.trim().is_empty() {
            limits::check_filter(&scan.filter)?;
            let subquery = || {
                VeilError::InvalidArgument(
                    "a scan filter is one expression over the dataset's own columns; subqueries are not allowed (use sql() for queries across datasets)".into(),
                )
            };
            let expr = frame.parse_sql_expr(&scan.filter).map_err(|e| {
                // A subquery is planned while the filter is parsed: its
                // names fail to resolve here before it can be seen.
                if names_select(&scan.filter) {
                    return subquery();
                }
                VeilError::InvalidArgument(format!(
                    "the filter is not a valid SQL expression over the dataset's columns: {}",
                    from_datafusion(e).message()
                ))
            })?;
            if has_subquery(&expr) {
                return Err(subquery());
            }
            frame = frame.filter(expr).map_err(from_datafusion)?;
        }
        if scan.columns.len() > limits::MAX_COLUMNS {
            return Err(VeilError::InvalidArgument(format!(
                "a scan selects at most {} columns",
                limits::MAX_COLUMNS
            )));
        }
        if !scan.columns.is_empty() {
            let cols: Vec<&str> = scan.columns.iter().map(String::as_str).collect();
            let mut seen = std::collections::HashSet::new();
            if let Some(twice) = cols.iter().find(|c| !seen.insert(**c)) {
                return Err(VeilError::InvalidArgument(format!(
                    "column '{}' is named twice in `columns`: name each column once",
                    twice.chars().take(128).collect::<String>()
                )));
            }
            frame = frame
                .select(
                    cols.iter()
                        .map(|c| col(format!("\"{}\"", c.replace('"', "\"\""))))
                        .collect::<Vec<_>>(),
                )
                .map_err(|e| {
                    VeilError::InvalidArgument(format!(
                        "unknown column in `columns`: {}",
                        from_datafusion(e).message()
                    ))
                })?;
        }
        if let Some(limit) = scan.limit {
            frame = frame
                .limit(0, Some(limit as usize))
                .map_err(from_datafusion)?;
        }
        Ok(frame)
    }

    async fn lookup_frame(
        &self,
        ctx: &SessionContext,
        compiler: &ViewCompiler,
        lookup: &ColumnLookup,
    ) -> Result<DataFrame> {
        let scan = ScanCommand {
            dataset: lookup.dataset.clone(),
            columns: vec![lookup.column.clone()],
            filter: String::new(),
            limit: None,
        };
        let frame = self.scan_frame(ctx, compiler, &scan).await?;
        let candidates = lookup
            .values
            .iter()
            .map(|v| datafusion::prelude::lit(v.clone()))
            .collect();
        let column = col(format!("\"{}\"", lookup.column.replace('"', "\"\"")));
        frame
            .filter(column.in_list(candidates, false))
            .map_err(from_datafusion)
    }

    /// The frame of a SQL query. With `values`, they are bound to its
    /// placeholders (none given and none needed is the usual case);
    /// without, placeholders stay unbound, which only describing allows.
    async fn sql_frame(
        &self,
        ctx: &SessionContext,
        query: &str,
        values: Option<Vec<ScalarValue>>,
    ) -> Result<DataFrame> {
        limits::check_sql_text(query)?;
        // JDBC-style `?` placeholders, as DataFusion's `$1`, `$2`, ...
        let query = &parameters::number_question_marks(query)?;
        let statements =
            DFParser::parse_sql_with_dialect(query, &GenericDialect {}).map_err(|e| {
                VeilError::InvalidArgument(VeilError::detailed("the SQL does not parse", e))
            })?;
        if statements.len() != 1 {
            return Err(VeilError::InvalidArgument(format!(
                "send exactly one SELECT statement (got {})",
                statements.len()
            )));
        }
        match &statements[0] {
            DFStatement::Statement(s) if matches!(s.as_ref(), SqlStatement::Query(_)) => {}
            _ => {
                return Err(VeilError::InvalidArgument(
                    "only read-only SELECT queries are allowed (no DDL, DML, EXPLAIN, SET or SHOW)"
                        .into(),
                ));
            }
        }
        limits::check_statement(&statements[0])?;
        let statement = statements.into_iter().next().expect("one statement");
        let plan = ctx
            .state()
            .statement_to_plan(statement)
            .await
            .map_err(from_datafusion)?;
        // Before anything copies the plan's shared CTE subtrees (the
        // analyser and optimiser do): counted on the shared plan, with an
        // early stop, this is cheap however far the CTEs would expand.
        limits::check_expanded_scans(&plan)?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(from_datafusion)?;
        let plan = match values {
            Some(values) => parameters::bind(plan, values)?,
            None => plan,
        };
        ctx.execute_logical_plan(plan)
            .await
            .map_err(from_datafusion)
    }

    /// How to split a SQL query into endpoints: by the files of the one
    /// dataset it reads when that gives exactly the query's rows
    /// ([`splittable`]), else one endpoint.
    pub async fn sql_layout(
        &self,
        scope: &RequestScope,
        planned: &PlannedQuery,
    ) -> Result<ScanLayout> {
        // A DP answer is one small batch, of no known size.
        let split = match planned.dp {
            Some(_) => None,
            None => splittable(&planned.logical, &planned.reads),
        };
        let Some(dataset) = split else {
            return Ok(ScanLayout {
                parts: vec![None],
                total_records: -1,
            });
        };
        let as_scan = ScanCommand {
            dataset: dataset.clone(),
            // Rows are chosen by the query: the count is not known.
            filter: "sql".into(),
            ..Default::default()
        };
        let mut layout = self.layout(scope, &as_scan, planned).await?;
        for part in layout.parts.iter_mut().flatten() {
            part.dataset = dataset.clone();
        }
        layout.total_records = -1;
        Ok(layout)
    }

    /// How to split a scan into endpoints, at the plan's state and over
    /// the files the plan read (the scope listed them once). Each part
    /// says how many there are ([`ScanPart::siblings`]).
    pub async fn layout(
        &self,
        scope: &RequestScope,
        scan: &ScanCommand,
        planned: &PlannedQuery,
    ) -> Result<ScanLayout> {
        let mut layout = self.split_layout(scope, scan, planned).await?;
        let siblings = u32::try_from(layout.parts.len()).unwrap_or(u32::MAX);
        for part in layout.parts.iter_mut().flatten() {
            part.siblings = siblings;
        }
        Ok(layout)
    }

    async fn split_layout(
        &self,
        scope: &RequestScope,
        scan: &ScanCommand,
        planned: &PlannedQuery,
    ) -> Result<ScanLayout> {
        if planned.version != scope.version() {
            return Err(VeilError::Internal(
                "a layout was asked at another state version than its plan".into(),
            ));
        }
        let d = scope
            .readable(&scan.dataset)
            .ok_or_else(|| VeilError::dataset_not_found(&scan.dataset))?;
        if planned.rows_filtered() {
            return self.dealt_layout(scope, scan, planned, d).await;
        }
        if let (SourceKind::Database(_), Some(source)) = (SourceKind::of(d), &d.source.database) {
            // Key ranges, unless a limit or k-anonymization needs the
            // whole result in one stream.
            if scan.limit.is_some() || planned.counted_per_part() {
                return Ok(ScanLayout {
                    parts: vec![None],
                    total_records: -1,
                });
            }
            if let Some(copy) = self
                .accelerator
                .as_ref()
                .and_then(|a| a.fresh(d, planned.planned_at))
            {
                // Served from the copy: split like files.
                let files = copy.as_files(d);
                let listing =
                    crate::catalog::files::list_files(&self.stores, &files.source).await?;
                return self
                    .file_layout(scan, planned, FileFormatKind::Parquet, &listing)
                    .await;
            }
            let db = self.databases.get(&source.connection)?;
            let ranges = db
                .key_ranges(
                    source,
                    &d.columns,
                    self.cfg.rows_per_endpoint,
                    self.cfg.max_endpoints,
                )
                .await?;
            let parts: Vec<Option<ScanPart>> = if ranges.len() <= 1 {
                vec![None]
            } else {
                ranges
                    .into_iter()
                    .map(|r| {
                        Some(ScanPart {
                            key_range: Some(r),
                            ..Default::default()
                        })
                    })
                    .collect()
            };
            return Ok(ScanLayout {
                parts,
                total_records: -1,
            });
        }
        if !SourceKind::of(d).splits() {
            // Rows come in one stream: one endpoint.
            return Ok(ScanLayout {
                parts: vec![None],
                total_records: -1,
            });
        }
        let listing = scope.listing(&self.stores, d).await?;
        self.file_layout(scan, planned, d.source.format, &listing)
            .await
    }

    /// Endpoints of a read a row policy filters. Cut by files, row groups
    /// or key ranges, how the caller's rows fell into them (and how many
    /// there were) would show where hidden rows are and how many. So it is
    /// one endpoint, unless the plan reads kept copies holding only the
    /// caller's rows: then the endpoints are dealt those rows by position
    /// (`crate::policy::deal`), runs of `batch_size` rows round-robin, as
    /// many endpoints as `rows_per_endpoint` asks of the caller's rows (at
    /// most `row_policy_endpoints` and `max_endpoints`).
    async fn dealt_layout(
        &self,
        scope: &RequestScope,
        scan: &ScanCommand,
        planned: &PlannedQuery,
        d: &DatasetRecord,
    ) -> Result<ScanLayout> {
        let one = ScanLayout {
            parts: vec![None],
            total_records: -1,
        };
        let kept_rows = planned
            .reads
            .iter()
            .find(|r| r.dataset.eq_ignore_ascii_case(&d.name))
            .and_then(|r| r.kept_rows);
        let (Some(rows), None, false) = (kept_rows, scan.limit, planned.counted_per_part()) else {
            return Ok(one);
        };
        let run = self.cfg.batch_size.max(1) as u64;
        let count = rows
            .div_ceil(self.cfg.rows_per_endpoint.max(1))
            .min(rows.div_ceil(run))
            .min(self.cfg.row_policy_endpoints.min(self.cfg.max_endpoints) as u64)
            .min(u64::from(u32::MAX));
        if count <= 1 || !matches!(SourceKind::of(d), SourceKind::Files(_)) {
            return Ok(one);
        }
        let files = scope.listing(&self.stores, d).await?.fingerprint().to_vec();
        let parts = (0..count as u32)
            .map(|index| {
                Some(ScanPart {
                    deal: Some(veil_proto::Deal {
                        index,
                        count: count as u32,
                        rows: run,
                        files: files.clone(),
                    }),
                    ..Default::default()
                })
            })
            .collect();
        Ok(ScanLayout {
            parts,
            total_records: -1,
        })
    }

    /// Endpoints over files (a dataset's, or an accelerated copy's).
    async fn file_layout(
        &self,
        scan: &ScanCommand,
        planned: &PlannedQuery,
        format: FileFormatKind,
        listing: &crate::catalog::files::Listing,
    ) -> Result<ScanLayout> {
        let units = split_units(format, listing).await?;
        let split = split_into_parts(
            format,
            units,
            self.cfg.rows_per_endpoint,
            self.cfg.max_endpoints,
        );
        // A limit must apply to the whole result, so it gets one endpoint;
        // so does a k-anonymized read (see `PlannedQuery::counted_per_part`).
        let parts = if scan.limit.is_some() || planned.counted_per_part() {
            vec![None]
        } else {
            split.parts.into_iter().map(Some).collect()
        };
        let exact = scan.filter.trim().is_empty();
        let total_records = match (exact, split.total_rows) {
            (true, Some(n)) => scan.limit.map_or(n, |l| l.min(n)) as i64,
            _ => -1,
        };
        Ok(ScanLayout {
            parts,
            total_records,
        })
    }
}

/// A frame's plans: as written (unoptimised), optimised, physical, and
/// its schema with plain types. `DataFrame::create_physical_plan` in two
/// steps, keeping the optimised logical plan.
async fn physical_plan(
    frame: DataFrame,
    one_partition: bool,
) -> Result<(LogicalPlan, LogicalPlan, Arc<dyn ExecutionPlan>, SchemaRef)> {
    let frame = plain_types(frame)?;
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let (mut state, plan) = frame.into_parts();
    if one_partition && state.config().target_partitions() > 1 {
        let config = state.config().clone().with_target_partitions(1);
        state = SessionStateBuilder::new_from_existing(state)
            .with_config(config)
            .build();
    }
    let logical = state.optimize(&plan).map_err(from_datafusion)?;
    // Bounds only the written-out plan shows: CTEs planned once per use,
    // and constants repeated per row wherever they stand.
    crate::sql::limits::check_expanded_scans(&logical)?;
    crate::sql::bounded::check_repeated_constants(&logical, state.config().batch_size())?;
    let physical = state
        .query_planner()
        .create_physical_plan(&logical, &state)
        .await
        .map_err(from_datafusion)?;
    Ok((plan, logical, physical, schema))
}

/// A read's planning error with hints on what its caller wrote (the
/// scan's filter, the query), column names as the caller knows them.
fn with_hints(read: &Read, e: VeilError) -> VeilError {
    match read {
        Read::Command(Command::Scan(scan)) => {
            let qualifier = format!("{CATALOG}.{}.", scan.dataset.to_ascii_lowercase());
            hints::scan(e, &qualifier, &scan.filter)
        }
        Read::Command(Command::Sql(sql)) => hints::sql(e, &sql.query),
        _ => e,
    }
}

/// The one dataset a SQL query may be split by, if it can be: every row it
/// returns comes from one row of that dataset alone (projections and
/// filters over its secure view, no subquery), and the view holds nothing
/// counted over the whole dataset (k-anonymity) unless those counts are
/// kept across reads. A part of the files then yields exactly that part
/// of the result.
fn splittable(plan: &LogicalPlan, reads: &[DatasetRead]) -> Option<String> {
    fn row_wise(plan: &LogicalPlan) -> bool {
        match plan {
            LogicalPlan::Projection(p) => !p.expr.iter().any(has_subquery) && row_wise(&p.input),
            LogicalPlan::Filter(f) => !has_subquery(&f.predicate) && row_wise(&f.input),
            LogicalPlan::SubqueryAlias(a) => row_wise(&a.input),
            other => crate::policy::barrier::PolicyBarrier::is_barrier(other),
        }
    }
    match reads {
        [read] if (read.policy.kanon.is_empty() || read.counts_kept) && row_wise(plan) => {
            Some(read.dataset.to_ascii_lowercase())
        }
        _ => None,
    }
}

/// Does `text` hold the word SELECT outside quotes (a subquery)?
fn names_select(text: &str) -> bool {
    hints::unquoted_words(text)
        .iter()
        .any(|w| w.eq_ignore_ascii_case("select"))
}

fn has_subquery(e: &Expr) -> bool {
    e.exists(|x| {
        Ok(matches!(
            x,
            Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_)
        ))
    })
    .unwrap_or(true)
}

/// Cast view types to their plain forms before anything leaves the process:
/// arrow-rs writes view arrays with all their buffers (notes/performance.md).
fn plain_types(frame: DataFrame) -> Result<DataFrame> {
    let fields = frame.schema().fields().clone();
    if !fields
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Utf8View | DataType::BinaryView))
    {
        return Ok(frame);
    }
    let exprs: Vec<Expr> = frame
        .schema()
        .iter()
        .map(|(q, f)| {
            let c = Expr::Column(datafusion::common::Column::new(q.cloned(), f.name()));
            match f.data_type() {
                DataType::Utf8View => cast(c, DataType::Utf8).alias(f.name()),
                DataType::BinaryView => cast(c, DataType::Binary).alias(f.name()),
                _ => c,
            }
        })
        .collect();
    frame.select(exprs).map_err(from_datafusion)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::roots::LocationRoots;
    use crate::config::Config;
    use crate::model::identity::{ClientInfo, Identity, Principal};
    use crate::secrets::KeyPurpose;
    use crate::store::Store;
    use crate::store::sqlite::SqliteStore;
    use datafusion::physical_plan::displayable;

    pub(super) async fn demo_engine(dir: &std::path::Path) -> (Engine, Arc<Snapshot>) {
        demo_engine_with(dir, "").await
    }

    /// The demo's engine with `extra` appended to its config file.
    pub(super) async fn demo_engine_with(
        dir: &std::path::Path,
        extra: &str,
    ) -> (Engine, Arc<Snapshot>) {
        demo_engine_seeded(dir, extra, vec![]).await
    }

    /// [`demo_engine_with`], its store holding `seed` (runtime datasets)
    /// before the config is applied.
    pub(super) async fn demo_engine_seeded(
        dir: &std::path::Path,
        extra: &str,
        seed: Vec<crate::model::dataset::DatasetRecord>,
    ) -> (Engine, Arc<Snapshot>) {
        demo_engine_tuned(dir, extra, seed, |_| {}).await
    }

    /// [`demo_engine_seeded`], its engine settings changed by `tune`.
    pub(super) async fn demo_engine_tuned(
        dir: &std::path::Path,
        extra: &str,
        seed: Vec<crate::model::dataset::DatasetRecord>,
        tune: impl FnOnce(&mut EngineConfig),
    ) -> (Engine, Arc<Snapshot>) {
        let path = crate::demo::prepare(dir).unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(extra);
        std::fs::write(&path, text).unwrap();
        let cfg = Config::load(&path).unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        for d in &seed {
            store
                .put_dataset(d, crate::store::PutMode::Create)
                .await
                .unwrap();
        }
        let roots = LocationRoots::from_config(&cfg).unwrap();
        let stores = Arc::new(ObjectStores::local_only());
        let databases = Arc::new(Databases::from_config(&cfg).unwrap());
        crate::provisioning::sync_config(&store, &cfg, &roots, &stores, &databases)
            .await
            .unwrap();
        let state = Arc::new(StateCache::new(store));
        let snap = state.current().await.unwrap();
        let mut engine_cfg = cfg.engine.clone();
        engine_cfg.target_partitions = 2;
        tune(&mut engine_cfg);
        let engine = Engine::new(
            state,
            MasterKey::from_bytes([5; 32]),
            cfg.auth.default_issuer(),
            engine_cfg,
            stores,
        )
        .unwrap()
        .with_databases(databases);
        (engine, snap)
    }

    pub(super) fn principal(snap: &Snapshot, name: &str) -> Arc<Principal> {
        let id = Identity::new("veil-demo", name);
        let u = snap.users.get(&id).cloned().unwrap_or_default();
        Arc::new(crate::auth::identity::principal(
            id,
            u.groups,
            u.attributes,
            Default::default(),
            &MasterKey::from_bytes([5; 32]).derive(KeyPurpose::Fingerprint),
            ClientInfo::default(),
        ))
    }

    /// Where the masks, the row policy and the user's filter sit in the plan:
    /// the user's predicate stays above the barrier (DESIGN invariant 1).
    /// A request decides access for the datasets it names, not the whole
    /// catalog; its plan and its layout are made at one state version and
    /// over one listing of the files.
    #[tokio::test]
    async fn a_request_scope_works_only_for_what_the_request_names() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, snap) = demo_engine(dir.path()).await;
        assert!(snap.datasets.len() > 2, "the demo has several datasets");
        let engine = Arc::new(engine);
        let scope = engine.scope(&principal(&snap, "alice")).await.unwrap();
        assert_eq!(scope.work_done().await, (0, 0));
        let scan = ScanCommand {
            dataset: "clinical.trials".into(),
            ..Default::default()
        };
        let q = engine
            .plan(&scope, &Command::Scan(scan.clone()), None, None)
            .await
            .unwrap();
        assert_eq!(q.version, scope.version());
        let layout = engine.layout(&scope, &scan, &q).await.unwrap();
        assert!(!layout.parts.is_empty());
        assert_eq!(
            scope.work_done().await,
            (1, 1),
            "one dataset decided and listed once, for the plan and the layout"
        );
        // Listing the catalog is the one request that visits every dataset.
        let listed = engine.list(&scope, false);
        assert!(!listed.is_empty());
        assert_eq!(scope.work_done().await.0, snap.datasets.len());
    }

    #[tokio::test]
    async fn user_filters_stay_above_the_barrier_and_masks_below() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, snap) = demo_engine(dir.path()).await;
        let engine = Arc::new(engine);
        let alice = principal(&snap, "alice");
        let cmd = Command::Sql(SqlCommand {
            query:
                "SELECT participant_id FROM clinical.trials WHERE ssn = '123-45-6789' AND age > 40"
                    .into(),
            ..Default::default()
        });
        let scope = engine.scope(&alice).await.unwrap();
        let q = engine.plan(&scope, &cmd, None, None).await.unwrap();
        let text = displayable(q.physical.as_ref()).indent(true).to_string();
        let line = |needle: &str| {
            text.lines()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no {needle} in\n{text}"))
        };
        let user_filter = line("123-45-6789");
        let barrier = line("PolicyBarrierExec");
        let mask = line("veil_mask_hash");
        let row_policy = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains("state@") && l.contains("CA"))
            .map(|(i, _)| i)
            .max()
            .unwrap_or_else(|| panic!("no row policy in\n{text}"));
        assert!(
            user_filter < barrier,
            "user filter above the barrier:\n{text}"
        );
        assert!(
            barrier < mask && mask < row_policy,
            "masks then row policy below it:\n{text}"
        );
        assert!(!text[..text.find("PolicyBarrierExec").unwrap()].contains("veil_mask_hash"));
        assert_eq!(q.schema.fields().len(), 1);
    }

    #[tokio::test]
    async fn the_guard_rejects_scans_outside_a_barrier_even_in_subqueries() {
        use crate::policy::guard::PolicyGuard;
        use datafusion::datasource::MemTable;
        use datafusion::prelude::SessionContext;
        let ctx = SessionContext::new();
        let batch = crate::demo::trials_batch(3, 1);
        ctx.register_table(
            "raw",
            Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap()),
        )
        .unwrap();
        let plan = ctx
            .sql("SELECT 1 WHERE 'x' IN (SELECT ssn FROM raw)")
            .await
            .unwrap()
            .into_unoptimized_plan();
        let mut top_level_scans = 0;
        datafusion::common::tree_node::TreeNode::apply(&plan, |n| {
            if matches!(n, datafusion::logical_expr::LogicalPlan::TableScan(_)) {
                top_level_scans += 1;
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })
        .unwrap();
        assert_eq!(
            top_level_scans, 0,
            "the scan hides in a subquery expression"
        );
        assert!(
            PolicyGuard::check(&plan).is_err(),
            "the guard walks subqueries"
        );
    }

    #[tokio::test]
    async fn listing_schema_matches_the_planned_schema() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, snap) = demo_engine(dir.path()).await;
        let engine = Arc::new(engine);
        for user in ["alice", "bob"] {
            let p = principal(&snap, user);
            let scope = engine.scope(&p).await.unwrap();
            let (d, pol, readable) = engine.lookup_visible(&scope, "clinical.trials").unwrap();
            assert!(readable);
            let listed = crate::policy::secure_view::output_schema(&d, &pol).unwrap();
            let q = engine
                .plan(
                    &scope,
                    &Command::Scan(ScanCommand {
                        dataset: "clinical.trials".into(),
                        ..Default::default()
                    }),
                    None,
                    None,
                )
                .await
                .unwrap();
            let planned: Vec<_> = q
                .schema
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone()))
                .collect();
            let listed: Vec<_> = listed
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone()))
                .collect();
            assert_eq!(planned, listed, "{user}");
        }
    }

    async fn scan_rows(
        engine: &Arc<Engine>,
        who: &Arc<Principal>,
        scan: &ScanCommand,
        at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Vec<datafusion::arrow::record_batch::RecordBatch> {
        let scope = engine.scope(who).await.unwrap();
        let q = engine
            .plan(&scope, &Command::Scan(scan.clone()), None, at)
            .await
            .unwrap();
        datafusion::physical_plan::common::collect(q.execute().unwrap())
            .await
            .unwrap()
    }

    /// The rows as table lines, sorted: partitions may interleave.
    fn pretty(batches: &[datafusion::arrow::record_batch::RecordBatch]) -> String {
        let text = datafusion::arrow::util::pretty::pretty_format_batches(batches)
            .unwrap()
            .to_string();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        lines.join("\n")
    }

    /// A kept plan serves a repeated scan (and concurrent copies of it run
    /// apart), and never outlives what it was made from: another principal,
    /// a policy change, a rewritten file, a clock in the filter, a time
    /// window's clock.
    #[tokio::test]
    async fn kept_plans_serve_repeats_and_never_outlive_what_made_them() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, snap) = demo_engine(dir.path()).await;
        let engine = Arc::new(engine);
        let (alice, bob) = (principal(&snap, "alice"), principal(&snap, "bob"));
        let scan = ScanCommand {
            dataset: "clinical.trials".into(),
            columns: vec!["participant_id".into(), "ssn".into(), "state".into()],
            filter: "age > 30".into(),
            limit: None,
        };
        let first = pretty(&scan_rows(&engine, &alice, &scan, None).await);
        assert_eq!(engine.plans.len(), 1, "the scan's plan is kept");
        // Two copies of the kept plan run at once and agree with the first.
        let (a, b) = tokio::join!(
            scan_rows(&engine, &alice, &scan, None),
            scan_rows(&engine, &alice, &scan, None)
        );
        assert_eq!(pretty(&a), first);
        assert_eq!(pretty(&b), first);
        assert_eq!(engine.plans.len(), 1, "served from the kept plan");
        assert!(!first.contains("| NY"), "alice reads CA rows only");

        // Another principal: its own plan, its own policies.
        let unmasked = pretty(&scan_rows(&engine, &bob, &scan, None).await);
        assert_ne!(unmasked, first);
        assert!(unmasked.contains("| NY"), "bob reads every state");
        assert_eq!(engine.plans.len(), 2);

        // A policy change is effective on the next request.
        create_policy(
            &engine,
            "name = \"null-state\"\ndataset = \"clinical.trials\"\ncolumns = [\"state\"]\nmask = \"null\"",
        )
        .await;
        let after = pretty(&scan_rows(&engine, &alice, &scan, None).await);
        assert!(!after.contains("| CA"), "state is nulled now:\n{after}");

        // A rewritten file is read as it is now.
        let path = dir.path().join("data/clinical/trials.parquet");
        crate::demo::write_trials(&path, 7).unwrap();
        let all = ScanCommand {
            dataset: "clinical.trials".into(),
            ..Default::default()
        };
        let rows: usize = scan_rows(&engine, &bob, &all, None)
            .await
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 7);
        crate::demo::write_trials(&path, 11).unwrap();
        let rows: usize = scan_rows(&engine, &bob, &all, None)
            .await
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 11, "the new file, not the kept plan's");

        // A filter reading a clock is planned afresh every time.
        let kept = engine.plans.len();
        let clocked = ScanCommand {
            filter: "date_of_birth < current_date()".into(),
            ..all.clone()
        };
        scan_rows(&engine, &bob, &clocked, None).await;
        assert_eq!(engine.plans.len(), kept, "a clock-reading plan is not kept");
    }

    /// A time window binds the request's clock: a plan made at one clock is
    /// kept for that clock only, and a request with no clock of its own (a
    /// `GetFlightInfo`) never reuses one.
    #[tokio::test]
    async fn a_time_window_plan_is_kept_per_clock_only() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, snap) = demo_engine_with(
            dir.path(),
            "\n[[policies]]\nname = \"recent-born\"\ndataset = \"clinical.trials\"\nrow_filter = { within = \"36500 days\", column = \"date_of_birth\" }\n",
        )
        .await;
        let engine = Arc::new(engine);
        let bob = principal(&snap, "bob");
        let scan = ScanCommand {
            dataset: "clinical.trials".into(),
            ..Default::default()
        };
        scan_rows(&engine, &bob, &scan, None).await;
        scan_rows(&engine, &bob, &scan, None).await;
        assert_eq!(engine.plans.len(), 0, "no request clock, nothing kept");
        let at = chrono::Utc::now();
        scan_rows(&engine, &bob, &scan, Some(at)).await;
        scan_rows(&engine, &bob, &scan, Some(at)).await;
        assert_eq!(engine.plans.len(), 1, "kept for its clock");
        scan_rows(
            &engine,
            &bob,
            &scan,
            Some(at + chrono::Duration::seconds(1)),
        )
        .await;
        assert_eq!(engine.plans.len(), 2, "another clock, another plan");
    }
    /// Every part's rows, planned and read as `who` at one scope, in
    /// endpoint order: the layout's parts, or where it gives one (a read a
    /// row policy filters, without kept copies of the caller's rows or
    /// with few rows), the rows dealt to three parts in runs of 1,000 (by
    /// the barrier, or by such copies if they serve).
    async fn parts_rows(engine: &Arc<Engine>, who: &Arc<Principal>, scan: &ScanCommand) -> String {
        let scope = engine.scope(who).await.unwrap();
        let command = Command::Scan(scan.clone());
        let whole = engine.plan(&scope, &command, None, None).await.unwrap();
        let mut parts = engine.layout(&scope, scan, &whole).await.unwrap().parts;
        if parts.len() == 1 {
            let d = scope.readable(&scan.dataset).unwrap().clone();
            let files = scope
                .listing(&engine.stores, &d)
                .await
                .unwrap()
                .fingerprint();
            parts = (0..3)
                .map(|index| {
                    Some(ScanPart {
                        deal: Some(veil_proto::Deal {
                            index,
                            count: 3,
                            rows: 1000,
                            files: files.to_vec(),
                        }),
                        siblings: 3,
                        ..Default::default()
                    })
                })
                .collect();
        }
        let mut all = Vec::new();
        for part in parts {
            let q = engine.plan(&scope, &command, part, None).await.unwrap();
            all.extend(
                datafusion::physical_plan::common::collect(q.execute().unwrap())
                    .await
                    .unwrap(),
            );
        }
        pretty(&all)
    }

    /// The rows a SQL command answers, as table lines.
    async fn sql_rows(engine: &Arc<Engine>, who: &Arc<Principal>, cmd: &Command) -> String {
        let scope = engine.scope(who).await.unwrap();
        let q = engine.plan(&scope, cmd, None, None).await.unwrap();
        pretty(
            &datafusion::physical_plan::common::collect(q.execute().unwrap())
                .await
                .unwrap(),
        )
    }

    /// The physical plan a scan runs, as text.
    async fn physical_text(
        engine: &Arc<Engine>,
        who: &Arc<Principal>,
        scan: &ScanCommand,
    ) -> String {
        let scope = engine.scope(who).await.unwrap();
        let q = engine
            .plan(&scope, &Command::Scan(scan.clone()), None, None)
            .await
            .unwrap();
        datafusion::physical_plan::displayable(q.physical.as_ref())
            .indent(true)
            .to_string()
    }

    /// Kept copies (and unfinished ones) under a kept-masks root.
    fn kept_files(root: &std::path::Path) -> usize {
        kept_paths(root).len()
    }

    /// The paths of [`kept_files`].
    fn kept_paths(root: &std::path::Path) -> Vec<std::path::PathBuf> {
        std::fs::read_dir(root)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
            .map(|e| e.path())
            .collect()
    }

    /// Wait (at most 60 s) until `dataset`'s kept copies move past `after`.
    async fn kept_after(engine: &Engine, dataset: &str, after: u64) -> u64 {
        let kept = engine.kept.as_ref().expect("kept masks on");
        let id = engine
            .state()
            .current()
            .await
            .unwrap()
            .datasets
            .values()
            .find(|d| d.name == dataset)
            .unwrap()
            .id
            .clone();
        for _ in 0..600 {
            let g = kept.generation(&id);
            if g > after {
                return g;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("no kept copy of {dataset} after 60 s");
    }

    /// Costly masks are computed once per file and read back, with exactly
    /// the values a read computes, whole or in parts; a read whose masks
    /// differ (another principal, a changed policy) or a changed file never
    /// gets them; a copy over budget is not kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kept_masks_serve_the_same_values_and_only_to_the_same_masks() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, snap) = demo_engine_with(
            dir.path(),
            "\n[[policies]]\nname = \"round-amount\"\ndataset = \"clinical.trials\"\ncolumns = [\"amount\"]\nmask = { round = { digits = -1 } }\nexcept = { groups = [\"privileged\"] }\n\n[[policies]]\nname = \"fpe-diagnosis\"\ndataset = \"clinical.trials\"\ncolumns = [\"diagnosis\"]\nmask = \"format_preserving\"\nexcept = { groups = [\"privileged\"] }\n",
        )
        .await;
        let kept_dir = dir.path().join("kept-masks");
        let engine = Arc::new(engine.with_kept_masks(&kept_dir, 1 << 30).unwrap());
        let (alice, bob) = (principal(&snap, "alice"), principal(&snap, "bob"));
        let all = ScanCommand {
            dataset: "clinical.trials".into(),
            ..Default::default()
        };
        // The first plan computes the masks (and queues the copy: a later
        // plan may already read it).
        assert!(
            physical_text(&engine, &alice, &all)
                .await
                .contains("veil_mask_hash")
        );
        let computed = pretty(&scan_rows(&engine, &alice, &all, None).await);
        let computed_parts = parts_rows(&engine, &alice, &all).await;
        assert_eq!(computed, computed_parts);

        // The copy is built in the background; then reads use it.
        let g = kept_after(&engine, "clinical.trials", 0).await;
        let plan = physical_text(&engine, &alice, &all).await;
        assert!(
            !plan.contains("veil_mask_hash"),
            "masks read back, not computed:\n{plan}"
        );
        assert!(!plan.contains("veil_mask_fpe"), "{plan}");
        assert!(plan.contains("__veil_kept_"), "{plan}");
        assert_eq!(
            pretty(&scan_rows(&engine, &alice, &all, None).await),
            computed
        );
        assert_eq!(parts_rows(&engine, &alice, &all).await, computed);
        // A user query over the kept values filters and projects the same.
        let narrow = ScanCommand {
            dataset: "clinical.trials".into(),
            columns: vec!["ssn".into(), "amount".into()],
            filter: "amount > 100".into(),
            limit: None,
        };
        let narrow_kept = pretty(&scan_rows(&engine, &alice, &narrow, None).await);
        assert_eq!(kept_files(&kept_dir), 1, "one file, one copy");

        // A copy deleted behind Veil's back is forgotten: the read computes.
        for d in std::fs::read_dir(&kept_dir).unwrap().flatten() {
            if d.path().is_dir() {
                for f in std::fs::read_dir(d.path()).unwrap().flatten() {
                    std::fs::remove_file(f.path()).unwrap();
                }
            }
        }
        assert!(
            physical_text(&engine, &alice, &all)
                .await
                .contains("veil_mask_hash")
        );
        assert_eq!(
            pretty(&scan_rows(&engine, &alice, &all, None).await),
            computed
        );
        let g = kept_after(&engine, "clinical.trials", g).await;

        // No masks: the first read decodes the file, later ones read a
        // plain decoded copy (no stored columns), with the same rows, whole
        // and in parts.
        let raw = physical_text(&engine, &bob, &all).await;
        assert!(!raw.contains("KeptCopyScanExec"), "{raw}");
        let raw_rows = pretty(&scan_rows(&engine, &bob, &all, None).await);
        let raw_parts = parts_rows(&engine, &bob, &all).await;
        assert_eq!(raw_rows, raw_parts);
        let g = kept_after(&engine, "clinical.trials", g).await;
        let raw = physical_text(&engine, &bob, &all).await;
        assert!(
            raw.contains("KeptCopyScanExec") && !raw.contains("__veil_kept_"),
            "{raw}"
        );
        assert_eq!(
            pretty(&scan_rows(&engine, &bob, &all, None).await),
            raw_rows
        );
        assert_eq!(parts_rows(&engine, &bob, &all).await, raw_rows);
        assert_ne!(raw_rows, computed, "bob's copy is not alice's");

        // A policy change: the next read computes the new masks (the old
        // copy holds other values), then gets a copy of its own.
        create_policy(
            &engine,
            "name = \"regex-state\"\ndataset = \"clinical.trials\"\ncolumns = [\"state\"]\nmask = { regex = { pattern = '^C', replacement = 'X' } }\nexcept = { groups = [\"privileged\"] }",
        )
        .await;
        assert!(
            physical_text(&engine, &alice, &all)
                .await
                .contains("veil_mask_hash")
        );
        let changed = pretty(&scan_rows(&engine, &alice, &all, None).await);
        assert_ne!(changed, computed, "the new rounding applies at once");
        let g2 = kept_after(&engine, "clinical.trials", g).await;
        assert_eq!(
            pretty(&scan_rows(&engine, &alice, &all, None).await),
            changed
        );
        // Columns the new mask leaves alone read the same.
        assert_eq!(
            pretty(&scan_rows(&engine, &alice, &narrow, None).await),
            narrow_kept
        );

        // A rewritten file: its old copy is not read.
        let path = dir.path().join("data/clinical/trials.parquet");
        crate::demo::write_trials(&path, 50_000).unwrap();
        let plan = physical_text(&engine, &alice, &all).await;
        assert!(
            plan.contains("veil_mask_hash"),
            "computed over the new file:\n{plan}"
        );
        let fresh = pretty(&scan_rows(&engine, &alice, &all, None).await);
        kept_after(&engine, "clinical.trials", g2).await;
        assert_eq!(pretty(&scan_rows(&engine, &alice, &all, None).await), fresh);
        assert_eq!(parts_rows(&engine, &alice, &all).await, fresh);
    }

    /// Add the policy `toml` describes to the engine's store.
    async fn create_policy(engine: &Engine, toml: &str) {
        let spec: crate::model::policy::PolicySpec = toml::from_str(toml).unwrap();
        engine
            .state()
            .store()
            .put_policy(&spec, crate::store::PolicyPut::Create)
            .await
            .unwrap();
    }

    /// Wait (at most 60 s) until `who`'s scan reads a kept copy of the rows
    /// their policies keep: a copy scan with no row filter over it.
    async fn until_kept_rows_serve(engine: &Arc<Engine>, who: &Arc<Principal>, scan: &ScanCommand) {
        for _ in 0..600 {
            let plan = physical_text(engine, who, scan).await;
            if plan.contains("KeptCopyScanExec") && !plan.contains("FilterExec") {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("no copy of the kept rows after 60 s");
    }

    /// A principal's row policy, bound to their attribute values, is
    /// applied once, when a kept copy is built: the copy holds only the rows
    /// it keeps and its reads filter nothing. Each binding gets its own copy
    /// (another user's values never serve), whole reads, endpoint parts,
    /// counts and a user's own filter answer exactly as computed; a time
    /// window (which moves with the clock) is never applied once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_copy_of_the_rows_a_policy_keeps_serves_only_that_binding() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, snap) = demo_engine_with(
            dir.path(),
            "\n[[users]]\nname = \"nina\"\ngroups = [\"analysts\"]\nattributes = { state = [\"NY\"] }\n\n[[users]]\nname = \"cara\"\ngroups = [\"analysts\"]\nattributes = { state = [\"CA\"] }\n",
        )
        .await;
        let kept_dir = dir.path().join("kept-masks");
        let engine = Arc::new(engine.with_kept_masks(&kept_dir, 1 << 30).unwrap());
        let (alice, nina, cara) = (
            principal(&snap, "alice"),
            principal(&snap, "nina"),
            principal(&snap, "cara"),
        );
        let all = ScanCommand {
            dataset: "clinical.trials".into(),
            ..Default::default()
        };
        let narrow = ScanCommand {
            dataset: "clinical.trials".into(),
            columns: vec!["state".into(), "amount".into()],
            filter: "amount > 100".into(),
            limit: None,
        };
        let count = Command::Sql(SqlCommand {
            query: "SELECT count(*) AS n, count(DISTINCT state) AS s FROM clinical.trials".into(),
            ..Default::default()
        });
        // Computed, before any copy: the row filter runs.
        let plan = physical_text(&engine, &alice, &all).await;
        assert!(plan.contains("FilterExec"), "{plan}");
        let mut computed = Vec::new();
        for who in [&alice, &nina] {
            computed.push((
                pretty(&scan_rows(&engine, who, &all, None).await),
                parts_rows(&engine, who, &all).await,
                pretty(&scan_rows(&engine, who, &narrow, None).await),
                sql_rows(&engine, who, &count).await,
            ));
        }
        assert_ne!(computed[0].0, computed[1].0, "CA rows are not NY rows");
        // Each binding's copy is built; then its reads filter nothing.
        for who in [&alice, &nina] {
            until_kept_rows_serve(&engine, who, &all).await;
        }
        for (who, c) in [&alice, &nina].into_iter().zip(&computed) {
            assert_eq!(pretty(&scan_rows(&engine, who, &all, None).await), c.0);
            assert_eq!(parts_rows(&engine, who, &all).await, c.1);
            assert_eq!(pretty(&scan_rows(&engine, who, &narrow, None).await), c.2);
            assert_eq!(sql_rows(&engine, who, &count).await, c.3);
        }
        // Another user bound to the same values reads the same copy.
        let files = kept_files(&kept_dir);
        assert_eq!(
            pretty(&scan_rows(&engine, &cara, &all, None).await),
            computed[0].0
        );
        let plan = physical_text(&engine, &cara, &all).await;
        assert!(!plan.contains("FilterExec"), "{plan}");
        assert_eq!(
            kept_files(&kept_dir),
            files,
            "no copy more for the same binding"
        );

        // A stable sample joins the row policies: applied once as well,
        // with the rows a computed read gives.
        create_policy(
            &engine,
            "name = \"half\"\ndataset = \"clinical.trials\"\nrow_filter = { sample = 50, column = \"participant_id\" }\nexcept = { groups = [\"privileged\"] }",
        )
        .await;
        let plan = physical_text(&engine, &alice, &all).await;
        assert!(
            plan.contains("FilterExec"),
            "a new binding is computed first:\n{plan}"
        );
        let sampled = pretty(&scan_rows(&engine, &alice, &all, None).await);
        let sampled_parts = parts_rows(&engine, &alice, &all).await;
        assert_ne!(sampled, computed[0].0, "the sample leaves rows out");
        until_kept_rows_serve(&engine, &alice, &all).await;
        assert_eq!(
            pretty(&scan_rows(&engine, &alice, &all, None).await),
            sampled
        );
        assert_eq!(parts_rows(&engine, &alice, &all).await, sampled_parts);

        // A time window moves with the clock: its filter stays in every
        // read, copy or not.
        create_policy(
            &engine,
            "name = \"recent\"\ndataset = \"clinical.trials\"\nrow_filter = { within = \"36500 days\", column = \"date_of_birth\" }\nexcept = { groups = [\"privileged\"] }",
        )
        .await;
        for _ in 0..20 {
            let plan = physical_text(&engine, &alice, &all).await;
            assert!(plan.contains("FilterExec"), "{plan}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// A copy of the rows a policy keeps is written in blocks of exactly the
    /// rows a row-filtered read sends per batch, across the file's row
    /// groups, so its reads send the copy's blocks as they are: the same
    /// rows, in the same order and batches, as computed, whole and dealt.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_copy_of_the_kept_rows_is_written_in_the_reads_batches() {
        use datafusion::arrow::record_batch::RecordBatch;
        let dir = tempfile::tempdir().unwrap();
        // Pieces of 1,000 rows; the demo's row groups hold 20,000.
        let (engine, snap) =
            demo_engine_tuned(dir.path(), "", vec![], |c| c.batch_size = 4000).await;
        let kept_dir = dir.path().join("kept-masks");
        let engine = Arc::new(engine.with_kept_masks(&kept_dir, 1 << 30).unwrap());
        let alice = principal(&snap, "alice");
        let all = ScanCommand {
            dataset: "clinical.trials".into(),
            ..Default::default()
        };
        let in_order = |batches: &[RecordBatch]| {
            datafusion::arrow::util::pretty::pretty_format_batches(batches)
                .unwrap()
                .to_string()
        };
        let sizes = |batches: &[RecordBatch]| -> Vec<usize> {
            batches.iter().map(RecordBatch::num_rows).collect()
        };
        let computed = scan_rows(&engine, &alice, &all, None).await;
        let computed_parts = parts_rows(&engine, &alice, &all).await;
        let rows: usize = sizes(&computed).iter().sum();
        assert!(rows > 3_000, "several blocks: {rows} rows");
        let mut pieces = vec![1000; rows / 1000];
        if rows % 1000 > 0 {
            pieces.push(rows % 1000);
        }
        assert_eq!(sizes(&computed), pieces);
        until_kept_rows_serve(&engine, &alice, &all).await;
        let copies: Vec<std::path::PathBuf> = kept_paths(&kept_dir)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "arrow"))
            .collect();
        assert_eq!(copies.len(), 1, "{copies:?}");
        let blocks: Vec<usize> = datafusion::arrow::ipc::reader::FileReader::try_new(
            std::fs::File::open(&copies[0]).unwrap(),
            None,
        )
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .collect();
        assert_eq!(blocks, pieces, "the copy's blocks are the read's batches");
        let kept = scan_rows(&engine, &alice, &all, None).await;
        assert_eq!(sizes(&kept), pieces);
        assert_eq!(in_order(&kept), in_order(&computed));
        assert_eq!(parts_rows(&engine, &alice, &all).await, computed_parts);
    }

    /// A decoded copy of a hive-partitioned dataset reads the same rows as
    /// its files: partition columns in any position of the projection,
    /// alone, filtered on, counted, whole and in endpoints of row groups.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn decoded_copies_read_what_the_files_hold() {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("data/events");
        for (year, rows) in [("2024", 45_000usize), ("2025", 7)] {
            let folder = events.join(format!("year={year}"));
            std::fs::create_dir_all(&folder).unwrap();
            crate::demo::write_trials(&folder.join("part-0.parquet"), rows).unwrap();
        }
        let extra = format!(
            "\n[[datasets]]\nname = \"ops.events\"\nformat = \"parquet\"\nlocation = \"{}\"\nhive_partitioned = true\nowners = [\"dave\"]\n",
            events.display()
        );
        let scan = |columns: &[&str], filter: &str, limit: Option<u64>| ScanCommand {
            dataset: "ops.events".into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            filter: filter.into(),
            limit,
        };
        let reads = [
            scan(&[], "", None),
            scan(&["year", "participant_id", "amount"], "", None),
            scan(&["participant_id", "year", "ssn"], "year = '2025'", None),
            scan(&["year"], "", None),
            scan(&["ssn"], "amount > 100", Some(5)),
        ];
        let sql = |q: &str| {
            Command::Sql(SqlCommand {
                query: q.into(),
                ..Default::default()
            })
        };
        let queries = [
            sql("SELECT count(*) AS n FROM ops.events"),
            sql(
                "SELECT year, count(*) AS n, sum(age) AS s, min(amount) AS m FROM ops.events GROUP BY year",
            ),
        ];
        // What the files hold, read by an engine without kept copies.
        let (plain, snap) = demo_engine_with(dir.path(), &extra).await;
        let plain = Arc::new(plain);
        let dave = principal(&snap, "dave");
        let mut from_files = Vec::new();
        for r in &reads {
            from_files.push(pretty(&scan_rows(&plain, &dave, r, None).await));
        }
        let parts_from_files = parts_rows(&plain, &dave, &reads[1]).await;
        let mut sql_from_files = Vec::new();
        for q in &queries {
            sql_from_files.push(sql_rows(&plain, &dave, q).await);
        }
        drop(plain);

        // An engine keeping copies: one per file, then every read comes
        // from them.
        let (engine, snap) = demo_engine_with(dir.path(), "").await;
        let kept_dir = dir.path().join("kept-masks");
        let engine = Arc::new(engine.with_kept_masks(&kept_dir, 1 << 30).unwrap());
        let dave = principal(&snap, "dave");
        let kept = engine.kept.as_ref().expect("kept copies on");
        for waited in 0.. {
            let plan = physical_text(&engine, &dave, &reads[1]).await;
            if kept.idle() && plan.contains("KeptCopyScanExec") {
                break;
            }
            assert!(waited < 600, "no kept copies after 60 s:\n{plan}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        for (r, expected) in reads.iter().zip(&from_files) {
            assert_eq!(
                &pretty(&scan_rows(&engine, &dave, r, None).await),
                expected,
                "{r:?}"
            );
        }
        assert_eq!(
            parts_rows(&engine, &dave, &reads[1]).await,
            parts_from_files
        );
        for (q, expected) in queries.iter().zip(&sql_from_files) {
            assert_eq!(&sql_rows(&engine, &dave, q).await, expected);
        }
        assert_eq!(kept_files(&kept_dir), 2, "one copy per file, none more");
    }

    /// A copy larger than the budget is not kept: reads go on computing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_kept_copy_over_budget_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, snap) = demo_engine(dir.path()).await;
        let engine = Arc::new(engine.with_kept_masks(&dir.path().join("k"), 1024).unwrap());
        let alice = principal(&snap, "alice");
        let all = ScanCommand {
            dataset: "clinical.trials".into(),
            ..Default::default()
        };
        let first = pretty(&scan_rows(&engine, &alice, &all, None).await);
        // Let the builder finish (it runs one job; nothing to wait on but time).
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            if engine.kept.as_ref().unwrap().idle() {
                break;
            }
        }
        assert!(
            physical_text(&engine, &alice, &all)
                .await
                .contains("veil_mask_hash")
        );
        assert_eq!(pretty(&scan_rows(&engine, &alice, &all, None).await), first);
        assert_eq!(
            kept_files(&dir.path().join("k")),
            0,
            "nothing over budget stays on disk"
        );
    }

    /// A read declares the same columns whether a kept copy serves it or
    /// not, for every mask over columns that hold no nulls: a copy keeps
    /// the nullability its plan declares, not the one a mask's function
    /// reports while it runs (`date_trunc` reports a nullable field for a
    /// month-rounded date), so GetFlightInfo, GetSchema, GetTables and each
    /// endpoint's stream agree before and after the copy is built.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_kept_copy_declares_the_columns_its_plan_declares() {
        use datafusion::arrow::array::{
            ArrayRef, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
            TimestampMicrosecondArray,
        };
        use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("data/staff");
        std::fs::create_dir_all(&folder).unwrap();
        let rows = 3000usize;
        let text = |f: &dyn Fn(usize) -> String| -> ArrayRef {
            Arc::new(StringArray::from((0..rows).map(f).collect::<Vec<_>>()))
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("code", DataType::Utf8, false),
            Field::new("ssn", DataType::Utf8, false),
            Field::new("badge", DataType::Utf8, false),
            Field::new("city", DataType::Utf8, false),
            Field::new("hired", DataType::Date32, false),
            Field::new(
                "seen",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
            Field::new("salary", DataType::Float64, false),
            Field::new("score", DataType::Int32, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from_iter_values(0..rows as i64)),
                text(&|i| format!("person {i}")),
                text(&|i| format!("code-{i}")),
                text(&|i| format!("{:03}-{:02}-{:04}", 100 + i % 800, 10 + i % 89, 1000 + i)),
                text(&|i| format!("B{i:06}")),
                text(&|i| ["Oslo", "Lima", "Pune"][i % 3].to_string()),
                Arc::new(Date32Array::from_iter_values(
                    (0..rows as i32).map(|i| 10_000 + i),
                )),
                Arc::new(TimestampMicrosecondArray::from_iter_values(
                    (0..rows as i64).map(|i| 1_700_000_000_000_000 + i * 3_600_000_000),
                )),
                Arc::new(Float64Array::from_iter_values(
                    (0..rows).map(|i| 30_000.0 + i as f64 * 7.5),
                )),
                Arc::new(Int32Array::from_iter_values(
                    (0..rows as i32).map(|i| i % 100),
                )),
            ],
        )
        .unwrap();
        let file = std::fs::File::create(folder.join("part-0.parquet")).unwrap();
        let mut writer =
            datafusion::parquet::arrow::ArrowWriter::try_new(file, Arc::clone(&schema), None)
                .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let mask = |column: &str, mask: &str| {
            format!(
                "\n[[policies]]\nname = \"mask-{column}\"\ndataset = \"hr.staff\"\ncolumns = [\"{column}\"]\nmask = {mask}\n"
            )
        };
        let mut extra = format!(
            "\n[[datasets]]\nname = \"hr.staff\"\nformat = \"parquet\"\nlocation = \"{}\"\nowners = [\"dave\"]\n",
            folder.display()
        );
        for (column, m) in [
            ("name", "\"hash\""),
            (
                "code",
                "{ regex = { pattern = '\\d+$', replacement = \"X\" } }",
            ),
            ("ssn", "\"format_preserving\""),
            ("badge", "\"reversible\""),
            ("city", "{ constant = \"somewhere\" }"),
            ("hired", "{ round = { unit = \"month\" } }"),
            ("seen", "{ round = { unit = \"day\" } }"),
            ("salary", "{ round = { digits = -3 } }"),
            ("score", "{ round = { bucket = 10 } }"),
        ] {
            extra.push_str(&mask(column, m));
        }
        // And a row policy: the copy holds only the rows it keeps.
        extra.push_str("\n[[policies]]\nname = \"rows\"\ndataset = \"hr.staff\"\nrow_filter = { where = \"score < 90\" }\n");
        let (engine, snap) = demo_engine_with(dir.path(), &extra).await;
        let kept_dir = dir.path().join("kept-masks");
        let engine = Arc::new(engine.with_kept_masks(&kept_dir, 1 << 30).unwrap());
        let dave = principal(&snap, "dave");
        let scan = ScanCommand {
            dataset: "hr.staff".into(),
            ..Default::default()
        };
        let reads = [
            Command::Scan(scan.clone()),
            Command::Sql(SqlCommand {
                query: "SELECT * FROM hr.staff".into(),
                ..Default::default()
            }),
        ];
        // What a read declares (GetFlightInfo), and what its stream holds.
        let declared = |engine: Arc<Engine>, command: Command| {
            let dave = Arc::clone(&dave);
            async move {
                let scope = engine.scope(&dave).await.unwrap();
                let q = engine.plan(&scope, &command, None, None).await.unwrap();
                let batches = datafusion::physical_plan::common::collect(q.execute().unwrap())
                    .await
                    .unwrap();
                assert_eq!(
                    batches.iter().map(|b| b.num_rows()).sum::<usize>(),
                    rows * 9 / 10
                );
                for b in &batches {
                    assert_eq!(
                        b.schema(),
                        q.schema,
                        "{command:?}: a batch's schema is the plan's"
                    );
                }
                q.schema
            }
        };
        let mut computed = Vec::new();
        for r in &reads {
            computed.push(declared(Arc::clone(&engine), r.clone()).await);
        }
        for column in ["id", "hired", "seen"] {
            assert!(
                !computed[0].field_with_name(column).unwrap().is_nullable(),
                "{column}: unmasked or truncated, it holds no nulls"
            );
        }
        assert_eq!(computed[0], computed[1], "a scan and its SQL agree");
        until_kept_rows_serve(&engine, &dave, &scan).await;
        for (r, before) in reads.iter().zip(&computed) {
            assert_eq!(
                &declared(Arc::clone(&engine), r.clone()).await,
                before,
                "{r:?}"
            );
        }
    }
}
