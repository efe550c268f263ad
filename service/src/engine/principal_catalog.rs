//! A principal's catalog: one DataFusion catalog (`veil`) whose schemas hold
//! only the datasets that principal may read, each compiled on first use into
//! a secure view. Raw sources are never registered, so no query can name one.

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider};
use datafusion::common::DataFusionError;
use datafusion::datasource::{TableProvider, ViewTable};
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::simplify_expressions::SimplifyExpressions;
use datafusion::optimizer::{Optimizer, OptimizerContext};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use veil_proto::ScanPart;

use super::acceleration::{Accelerator, Copy};
use super::dp::guard::DpGuardTable;
use super::kept_masks::{KeptCopy, KeptMasks};
use super::scope::RequestScope;
use crate::audit::dataset::AuditTable;
use crate::catalog::database::Databases;
use crate::catalog::database::table::DatabaseTable;
use crate::catalog::files::{Listing, SourceFile};
use crate::catalog::object_stores::ObjectStores;
use crate::catalog::source_table::SourceTable;
use crate::error::{Result, VeilError, cap_name};
use crate::model::dataset::DatasetRecord;
use crate::model::source_kind::SourceKind;
use crate::policy::deal::RowDeal;
use crate::policy::effective::{EffectivePolicy, data_policy};
use crate::policy::masks::kanon::{CountsSlot, KeptCounts};
use crate::policy::secure_view::{self, KeptColumns};
use crate::secrets::MasterKey;
use crate::store::Store;

pub const CATALOG: &str = "veil";

/// What a query read from one dataset, for the audit.
#[derive(Debug, Clone)]
pub struct DatasetRead {
    pub dataset: String,
    pub policy: Arc<EffectivePolicy>,
    /// Where an accelerated dataset's rows came from, in words.
    pub served: Option<String>,
    /// k-anonymization counts are kept across reads, so a part of the
    /// dataset reuses the whole dataset's count instead of taking its own.
    pub counts_kept: bool,
    /// Served from kept copies holding only the rows the caller's row
    /// policies keep: how many (its endpoints can then be dealt them,
    /// `crate::policy::deal`).
    pub kept_rows: Option<u64>,
}

/// Compiled effective policies, keyed by the principal's identity
/// fingerprint (identity, groups, attributes, permissions), the dataset's id
/// and the state version. Every change to policies, tags, the directory,
/// grants, approvals or ownership moves the state version, so an entry is
/// never stale; time windows stay unbound in it and are bound per request.
pub type PolicyCache = moka::sync::Cache<([u8; 32], String, u64), Arc<EffectivePolicy>>;

pub fn policy_cache() -> PolicyCache {
    moka::sync::Cache::builder()
        .max_capacity(20_000)
        .time_to_idle(std::time::Duration::from_secs(600))
        .build()
}

/// Everything the per-principal catalog needs; shared by its providers.
/// It compiles the secure view of each dataset a query names (and records
/// it as read); who may read what comes from the request's scope.
#[derive(Debug)]
pub struct ViewCompiler {
    scope: Arc<RequestScope>,
    master: MasterKey,
    default_issuer: String,
    stores: Arc<ObjectStores>,
    /// Restrict a dataset's scan to one endpoint's part.
    parts: HashMap<String, ScanPart>,
    reads: Mutex<Vec<DatasetRead>>,
    cache: PolicyCache,
    /// The request's clock: time windows are measured from it.
    now: chrono::DateTime<chrono::Utc>,
    /// Most distinct combinations a k-anonymized read may count.
    kanon_max_groups: usize,
    /// Where `veil.audit` reads its rows.
    audit_store: Option<Arc<dyn Store>>,
    /// Masked values computed once per file, if this node keeps them.
    kept: Option<Arc<KeptMasks>>,
    /// The kept copies the plan reads.
    leases: Mutex<Vec<Arc<KeptCopy>>>,
    /// k-anonymization counts kept across reads (`None`: counted per read).
    kept_counts: Option<Arc<KeptCounts>>,
    /// The databases datasets may read.
    databases: Arc<Databases>,
    /// Local copies of accelerated database datasets.
    accelerator: Option<Arc<Accelerator>>,
    /// Serve datasets under differential privacy as their secure views
    /// (only the DP planner's own session does, for its exact aggregates);
    /// otherwise as guards no plan can scan.
    dp_raw: bool,
}

impl ViewCompiler {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        scope: Arc<RequestScope>,
        master: MasterKey,
        default_issuer: String,
        stores: Arc<ObjectStores>,
        parts: HashMap<String, ScanPart>,
        cache: PolicyCache,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Self {
        Self {
            scope,
            master,
            default_issuer,
            stores,
            parts,
            reads: Mutex::new(vec![]),
            cache,
            now,
            kanon_max_groups: crate::config::DEFAULT_KANON_MAX_GROUPS,
            audit_store: None,
            kept: None,
            leases: Mutex::new(vec![]),
            kept_counts: None,
            databases: Arc::new(Databases::none()),
            accelerator: None,
            dp_raw: false,
        }
    }

    /// Compile datasets under differential privacy to their secure views
    /// (`super::dp`: the exact aggregates its answers add noise to).
    pub fn with_dp_raw(mut self) -> Self {
        self.dp_raw = true;
        self
    }

    /// Serve accelerated datasets from `accelerator`'s copies.
    pub fn with_accelerator(mut self, accelerator: Option<Arc<Accelerator>>) -> Self {
        self.accelerator = accelerator;
        self
    }

    /// Read database datasets through `databases`.
    pub fn with_databases(mut self, databases: Arc<Databases>) -> Self {
        self.databases = databases;
        self
    }

    /// Read kept copies of costly masks where `kept` has them.
    pub fn with_kept_masks(mut self, kept: Option<Arc<KeptMasks>>) -> Self {
        self.kept = kept;
        self
    }

    /// Keep k-anonymization counts in `kept` across reads.
    pub fn with_kept_counts(mut self, kept: Option<Arc<KeptCounts>>) -> Self {
        self.kept_counts = kept;
        self
    }

    /// Where k-anonymization counts over `listing`'s files may be kept: a
    /// digest of the dataset, its dictionary and every file's path, size,
    /// time and version. `None` (counted per read) when a file's store
    /// gives no modification time.
    fn counts_slot(&self, d: &DatasetRecord, listing: &Listing) -> Option<CountsSlot> {
        use sha2::{Digest, Sha256};
        let kept = self.kept_counts.as_ref()?;
        let mut h = Sha256::new();
        let mut part = |s: &str| {
            h.update((s.len() as u64).to_be_bytes());
            h.update(s.as_bytes());
        };
        part(&d.id);
        part(&d.source.location);
        for c in &d.columns {
            part(&format!(
                "{}\u{0}{:?}\u{0}{}\u{0}{}",
                c.name, c.data_type, c.nullable, c.partition
            ));
        }
        for f in &listing.files {
            let modified = f.modified_ms?;
            part(&f.path);
            part(&format!("{}\u{0}{modified}\u{0}{:?}", f.size, f.version));
        }
        Some(CountsSlot {
            kept: Arc::clone(kept),
            key: h.finalize().into(),
        })
    }

    /// The kept copies the plans compiled so far read.
    pub fn leases(&self) -> Vec<Arc<KeptCopy>> {
        self.leases.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Serve `veil.audit` from `store`.
    pub fn with_audit_store(mut self, store: Arc<dyn Store>) -> Self {
        self.audit_store = Some(store);
        self
    }

    pub fn with_kanon_max_groups(mut self, n: usize) -> Self {
        self.kanon_max_groups = n.max(1);
        self
    }

    /// The clock time windows are measured from.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.now
    }

    /// The answer for a dataset the principal can't read: "ask for access"
    /// if they can see it, otherwise exactly the answer for a missing one.
    /// (A table SQL names: `public.` stands for a name without a schema.)
    pub fn unreadable(&self, name: &str) -> VeilError {
        if let Some((d, _)) = self.scope.visible(name) {
            return VeilError::access_not_approved(&d.name);
        }
        // SQL puts a name without a schema in `public`: a bare name, or a
        // whole name in one pair of double quotes.
        match name.strip_prefix("public.") {
            Some(bare) if !bare.contains('.') => self.bare_name(bare),
            Some(whole) if whole.split('.').count() == 2 => {
                let whole = cap_name(whole);
                VeilError::NotFound(format!(
                    "dataset '{whole}' not found: a name in double quotes is one name; write the schema and the name apart, as {whole} or \"{}\"",
                    whole.replacen('.', "\".\"", 1)
                ))
            }
            _ => VeilError::dataset_not_found(name),
        }
    }

    /// [`Self::unreadable`] for a dataset a request names outside SQL (a
    /// scan, `describe`, a preview, `GetSchema`), as written.
    pub fn unreadable_scan(&self, name: &str) -> VeilError {
        if let Some((d, _)) = self.scope.visible(name) {
            return VeilError::access_not_approved(&d.name);
        }
        // A scan's name is not SQL: quotes are part of the name as sent.
        if name.contains('"') {
            let unquoted = name.replace('"', "");
            return match self.scope.readable(&unquoted) {
                Some(d) => VeilError::NotFound(format!(
                    "dataset '{}' not found: a dataset's name takes no quotes here (only in SQL): did you mean {}?",
                    cap_name(name),
                    d.name
                )),
                None => VeilError::dataset_not_found(name),
            };
        }
        let catalog = format!("{CATALOG}.");
        match name.split('.').count() {
            1 => self.bare_name(name),
            // `veil.schema.name`, as SQL and Flight SQL tools spell it.
            3 if name.starts_with(&catalog) => match self.scope.readable(&name[catalog.len()..]) {
                Some(d) => VeilError::NotFound(format!(
                    "dataset '{}' not found: name a dataset by its schema and name, without the catalog: did you mean {}?",
                    cap_name(name),
                    d.name
                )),
                None => VeilError::dataset_not_found(name),
            },
            _ => VeilError::dataset_not_found(name),
        }
    }

    /// The answer for a dataset named without its schema: datasets are
    /// `schema.name`; the example is one the principal can read (so the
    /// answer for a hidden one is the answer for a missing one).
    fn bare_name(&self, bare: &str) -> VeilError {
        let readable = self.scope.readable_datasets();
        let suggestion = readable
            .iter()
            .find(|d| {
                d.name
                    .split_once('.')
                    .is_some_and(|(_, t)| t.eq_ignore_ascii_case(bare))
            })
            .map(|d| format!(": did you mean {}?", d.name))
            .unwrap_or_else(|| {
                " (list_datasets() in Python or `veil admin datasets` lists the ones you can read)"
                    .into()
            });
        VeilError::NotFound(format!(
            "dataset '{}' not found: name a dataset by its schema and name, as schema.name{suggestion}",
            cap_name(bare)
        ))
    }

    /// The dataset by name (case-insensitive) if the principal may read it.
    pub fn readable(&self, name: &str) -> Option<&DatasetRecord> {
        self.scope.readable(name)
    }

    /// The principal's effective policy on `d`, compiled once per state
    /// version (failures are not cached: they are recomputed, and fail
    /// again, on every request).
    pub fn effective(&self, d: &DatasetRecord) -> Result<EffectivePolicy> {
        self.effective_shared(d).map(|p| EffectivePolicy::clone(&p))
    }

    /// [`Self::effective`], shared rather than copied.
    pub fn effective_shared(&self, d: &DatasetRecord) -> Result<Arc<EffectivePolicy>> {
        let key = (
            self.scope.principal().fingerprint,
            d.id.clone(),
            self.scope.version(),
        );
        if let Some(p) = self.cache.get(&key) {
            return Ok(p);
        }
        let p = Arc::new(data_policy(
            self.scope.principal(),
            d,
            &self.scope.snapshot().policies,
            &self.default_issuer,
        )?);
        self.cache.insert(key, Arc::clone(&p));
        Ok(p)
    }

    pub fn reads(&self) -> Vec<DatasetRead> {
        self.reads.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// `served` reading kept copies (decoded, with its costly masks' values
    /// if it has any, and only the rows its row policies keep when they
    /// can be applied once), if every file it reads has one (and the
    /// stored columns they hold, and, if they hold only the kept rows,
    /// how many); else `served` as it is, and the missing copies are queued.
    /// While a copy of the kept rows is being built, a copy of every row
    /// with the same masks serves if there is one.
    fn kept_copies(
        &self,
        d: &DatasetRecord,
        policy: &EffectivePolicy,
        listing: &Listing,
        part: Option<&ScanPart>,
        served: SourceTable,
    ) -> Result<(SourceTable, KeptColumns, Option<u64>)> {
        let Some(kept) = &self.kept else {
            return Ok((served, KeptColumns::new(), None));
        };
        let masks = secure_view::keepable_masks(d, policy, &served.schema(), &self.master)?;
        let rows = secure_view::keepable_rows(d, policy, &served.schema(), &self.master);
        let files: Vec<&SourceFile> = match part {
            None => listing.files.iter().collect(),
            Some(p) => {
                let mut files = Vec::with_capacity(p.files.len());
                for slice in &p.files {
                    match listing.files.iter().find(|f| f.path == slice.path) {
                        Some(f) => files.push(f),
                        // Gone since the ticket: the plain scan says so.
                        None => return Ok((served, KeptColumns::new(), None)),
                    }
                }
                files
            }
        };
        let schema = served.schema();
        let found = kept
            .copies(d, listing, &files, &schema, &masks, rows.as_ref(), true)
            .or_else(|| {
                rows.as_ref()?;
                kept.copies(d, listing, &files, &schema, &masks, None, false)
            });
        match found {
            Some(copies) => {
                if let Ok(mut l) = self.leases.lock() {
                    l.extend(copies.leases);
                }
                let rows = copies.rows.then(|| copies.files.rows());
                Ok((served.with_copies(copies.files), copies.columns, rows))
            }
            None => Ok((served, KeptColumns::new(), None)),
        }
    }

    /// The accelerated copy to read `d` from: the generation a ticket's
    /// copy files name (gone: the ticket is stale), or for a whole read
    /// the copy within its freshness bound; `None`: read the database.
    fn copy_for(&self, d: &DatasetRecord, part: Option<&ScanPart>) -> Result<Option<Copy>> {
        let named = part.and_then(|p| p.files.first());
        match (&self.accelerator, named, part) {
            (Some(acc), Some(file), _) => acc.generation_of(d, &file.path).map(Some).ok_or_else(|| {
                VeilError::NotFound(
                    "the dataset's accelerated copy changed since this ticket was issued; call GetFlightInfo again".into(),
                )
            }),
            (Some(acc), None, None) => Ok(acc.fresh(d, self.now)),
            _ => Ok(None),
        }
    }

    async fn compile(&self, d: &DatasetRecord) -> Result<Arc<dyn TableProvider>> {
        let policy = self.effective_shared(d)?;
        let part = self.parts.get(&d.name.to_ascii_lowercase()).cloned();
        // A dealt part reads every row; its deal says which are its own.
        let (part, deal) = match part {
            Some(ScanPart {
                deal: Some(deal), ..
            }) => {
                let dealt = RowDeal::from_proto(&deal).ok_or_else(|| {
                    VeilError::internal("a dealt part", "an impossible deal".to_string())
                })?;
                (None, Some((dealt, deal.files)))
            }
            other => (other, None),
        };
        // Where the rows are dealt: by the barrier, unless the served
        // copies deal their own (they hold only the caller's rows).
        let mut barrier_deal = deal.as_ref().map(|(d, _)| *d);
        let mut served_from = None;
        let mut counts = None;
        let mut kept_rows = None;
        let (served, whole, kept): (
            Arc<dyn TableProvider>,
            Option<Arc<dyn TableProvider>>,
            KeptColumns,
        ) = match SourceKind::of(d) {
            SourceKind::AuditTrail => {
                // Veil's own audit: one endpoint, rows from the store.
                let store = self.audit_store.as_ref().ok_or_else(|| {
                    VeilError::FailedPrecondition(format!(
                        "{} can't be read here: this engine has no audit store",
                        d.name
                    ))
                })?;
                (
                    Arc::new(AuditTable::new(Arc::clone(store))),
                    None,
                    KeptColumns::new(),
                )
            }
            SourceKind::Database(_) => {
                let source = d.source.database.as_ref().ok_or_else(|| {
                    VeilError::internal("a database dataset", "without its source".to_string())
                })?;
                match self.copy_for(d, part.as_ref())? {
                    Some(copy) => {
                        served_from = Some(format!(
                            "served from its accelerated copy (generation {}, refreshed {} s before the read was planned)",
                            copy.generation,
                            copy.age_secs(self.now)
                        ));
                        let files = copy.as_files(d);
                        let listing =
                            crate::catalog::files::list_files(&self.stores, &files.source).await?;
                        if !policy.kanon.is_empty() {
                            counts = self.counts_slot(&files, &listing);
                        }
                        let whole = match (&part, policy.kanon.is_empty()) {
                            (Some(_), false) => Some(Arc::new(
                                SourceTable::from_listing(&files, None, listing.clone()).await?,
                            ) as _),
                            _ => None,
                        };
                        (
                            Arc::new(
                                SourceTable::from_listing(&files, part.clone(), listing).await?,
                            ),
                            whole,
                            KeptColumns::new(),
                        )
                    }
                    None => {
                        if source.acceleration.is_some() {
                            served_from = Some(
                                "served from the database: no accelerated copy within its freshness bound".into(),
                            );
                        }
                        let db = self.databases.get(&source.connection)?;
                        (
                            Arc::new(DatabaseTable::new(d, source, db, part.as_ref())?),
                            None,
                            KeptColumns::new(),
                        )
                    }
                }
            }
            SourceKind::Files(_) => {
                let listing = self.scope.listing(&self.stores, d).await?;
                if let Some((_, files)) = &deal
                    && files.as_slice() != listing.fingerprint()
                {
                    // Endpoints already read dealt the files as they were.
                    return Err(VeilError::FailedPrecondition(
                        "the dataset's files changed since this read was planned; plan it again (GetFlightInfo, or the client's read)".into(),
                    ));
                }
                // k-anonymization counts over the whole dataset, even for a
                // part (from the kept copies when every file has one).
                let whole = match (&part, policy.kanon.is_empty()) {
                    (Some(_), false) => {
                        let whole = SourceTable::from_listing(d, None, listing.clone()).await?;
                        // (With k-anonymization no copy keeps only some rows.)
                        let (whole, _, _) = self.kept_copies(d, &policy, &listing, None, whole)?;
                        Some(Arc::new(whole) as _)
                    }
                    _ => None,
                };
                if !policy.kanon.is_empty() {
                    counts = self.counts_slot(d, &listing);
                }
                let served = SourceTable::from_listing(d, part.clone(), listing.clone()).await?;
                let (mut served, kept, rows) =
                    self.kept_copies(d, &policy, &listing, part.as_ref(), served)?;
                if let (Some(deal), Some(_)) = (barrier_deal, rows) {
                    served = served.with_deal(deal);
                    barrier_deal = None;
                }
                if let Some(rule) = policy.dp.as_ref().filter(|_| self.dp_raw) {
                    // The exact aggregates group these by position
                    // (`dp::bounding`): read as views, never sent.
                    let viewed: Vec<String> =
                        super::dp::bounding::position_grouped(&rule.policy, &served.schema())?
                            .into_iter()
                            .filter(|c| !policy.reads_column(c))
                            .collect();
                    served = served.with_text_views(&viewed);
                }
                kept_rows = rows;
                (Arc::new(served), whole, kept)
            }
        };
        let counts_kept = counts.is_some();
        let plan = secure_view::compile(
            d,
            &policy,
            secure_view::ViewSources {
                served,
                whole,
                kept,
                rows_kept: kept_rows.is_some(),
                counts,
                deal: barrier_deal,
            },
            &self.master,
            self.now,
            self.kanon_max_groups,
        )?;
        if let Ok(mut r) = self.reads.lock() {
            r.push(DatasetRead {
                dataset: d.name.clone(),
                policy: Arc::clone(&policy),
                served: served_from,
                counts_kept,
                kept_rows,
            });
        }
        policy_conditions_fold(d, &plan, self.now)?;
        let view = Arc::new(ViewTable::new(plan, None));
        if policy.dp.is_some() && !self.dp_raw {
            // Aggregates with noise only: no plan can scan this.
            return Ok(Arc::new(DpGuardTable::new(
                d.clone(),
                policy,
                view.schema(),
            )));
        }
        Ok(view)
    }
}

/// A view's expressions folded on their own, as the optimizer will fold
/// them inside the caller's query: a policy condition that fails to fold
/// for this caller (its own literal cast with a bound attribute, say)
/// denies here, in Veil's words, instead of failing the caller's query
/// with the policy's text. The log gets the failure without values.
fn policy_conditions_fold(
    d: &DatasetRecord,
    view: &LogicalPlan,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    let optimizer = Optimizer::with_rules(vec![Arc::new(SimplifyExpressions::new())]);
    let config = OptimizerContext::new().with_query_execution_start_time(now);
    match optimizer.optimize(view.clone(), &config, |_, _| {}) {
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(dataset = %d.name, error = %crate::redact::describe(&e), "a policy's condition can't be evaluated for a caller: no data is served");
            Err(VeilError::PermissionDenied(format!(
                "a policy on dataset '{}' can't be evaluated for you, so no data is served; ask the dataset's owner to check its policies' conditions",
                d.name
            )))
        }
    }
}

#[derive(Debug)]
pub struct PrincipalCatalogList {
    catalog: Arc<PrincipalCatalog>,
}

impl PrincipalCatalogList {
    pub fn new(compiler: Arc<ViewCompiler>) -> Self {
        Self {
            catalog: Arc::new(PrincipalCatalog { compiler }),
        }
    }
}

impl CatalogProviderList for PrincipalCatalogList {
    fn register_catalog(
        &self,
        _name: String,
        _catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        // Read-only: nothing can be added to a principal's catalog.
        None
    }

    fn catalog_names(&self) -> Vec<String> {
        vec![CATALOG.to_string()]
    }

    /// Veil's catalog; any other name is one where every table answers
    /// as a dataset that doesn't exist (never the engine's own "failed
    /// to resolve" text).
    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        if name == CATALOG {
            return Some(Arc::clone(&self.catalog) as Arc<dyn CatalogProvider>);
        }
        Some(Arc::new(Elsewhere {
            prefix: name.to_string(),
        }))
    }
}

/// A catalog or a schema in it that isn't Veil's: it holds no table, and
/// naming one answers as a dataset that doesn't exist, under the name as
/// written.
#[derive(Debug)]
struct Elsewhere {
    /// `catalog` or `catalog.schema`.
    prefix: String,
}

impl CatalogProvider for Elsewhere {
    fn schema_names(&self) -> Vec<String> {
        Vec::new()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        Some(Arc::new(Elsewhere {
            prefix: format!("{}.{name}", self.prefix),
        }))
    }
}

#[async_trait]
impl SchemaProvider for Elsewhere {
    fn table_names(&self) -> Vec<String> {
        Vec::new()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        Err(DataFusionError::External(Box::new(
            VeilError::dataset_not_found(&format!("{}.{name}", self.prefix)),
        )))
    }

    fn table_exist(&self, _name: &str) -> bool {
        false
    }
}

#[derive(Debug)]
struct PrincipalCatalog {
    compiler: Arc<ViewCompiler>,
}

impl CatalogProvider for PrincipalCatalog {
    /// The schemas of the datasets the principal may read (this visits
    /// every dataset; planning a query never asks, it names its tables).
    fn schema_names(&self) -> Vec<String> {
        let names: BTreeSet<String> = self
            .compiler
            .scope
            .readable_datasets()
            .iter()
            .filter_map(|d| d.name.split_once('.'))
            .map(|(schema, _)| schema.to_ascii_lowercase())
            .collect();
        names.into_iter().collect()
    }

    /// Every schema name resolves, so a table in a schema the principal
    /// can't see gets exactly the answer of a table that doesn't exist.
    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let key = name.to_ascii_lowercase();
        Some(Arc::new(PrincipalSchema {
            compiler: Arc::clone(&self.compiler),
            schema: key,
        }) as Arc<dyn SchemaProvider>)
    }
}

#[derive(Debug)]
struct PrincipalSchema {
    compiler: Arc<ViewCompiler>,
    schema: String,
}

#[async_trait]
impl SchemaProvider for PrincipalSchema {
    fn table_names(&self) -> Vec<String> {
        self.compiler
            .scope
            .readable_datasets()
            .iter()
            .filter_map(|d| d.name.split_once('.'))
            .filter(|(schema, _)| schema.eq_ignore_ascii_case(&self.schema))
            .map(|(_, table)| table.to_ascii_lowercase())
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let full = format!("{}.{}", self.schema, name);
        match self.compiler.readable(&full) {
            None => Err(DataFusionError::External(Box::new(
                self.compiler.unreadable(&full),
            ))),
            Some(d) => {
                let d = d.clone();
                self.compiler
                    .compile(&d)
                    .await
                    .map(Some)
                    .map_err(|e| DataFusionError::External(Box::new(e)))
            }
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.compiler
            .readable(&format!("{}.{}", self.schema, name))
            .is_some()
    }
}
