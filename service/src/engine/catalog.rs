//! A principal's catalog: one DataFusion catalog (`veil`) whose schemas hold
//! only the datasets that principal may read, each compiled on first use into
//! a secure view. Raw sources are never registered, so no query can name one.

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider};
use datafusion::common::DataFusionError;
use datafusion::datasource::{TableProvider, ViewTable};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use veil_proto::ScanPart;

use crate::audit::dataset::{AuditTable, is_audit};
use crate::catalog::object_stores::ObjectStores;
use crate::catalog::source_table::SourceTable;
use crate::error::{Result, VeilError};
use crate::model::dataset::DatasetRecord;
use crate::model::identity::Principal;
use crate::model::snapshot::Snapshot;
use crate::policy::effective::{Access, EffectivePolicy, access, data_policy};
use crate::policy::secure_view;
use crate::secrets::MasterKey;
use crate::store::Store;

pub const CATALOG: &str = "veil";

/// What a query read from one dataset, for the audit.
#[derive(Debug, Clone)]
pub struct DatasetRead {
    pub dataset: String,
    pub policy: EffectivePolicy,
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
#[derive(Debug)]
pub struct ViewCompiler {
    snapshot: Arc<Snapshot>,
    principal: Arc<Principal>,
    master: MasterKey,
    default_issuer: String,
    stores: Arc<ObjectStores>,
    /// Restrict a dataset's scan to one endpoint's part.
    parts: HashMap<String, ScanPart>,
    reads: Mutex<Vec<DatasetRead>>,
    /// Readable datasets by lower-case schema, then lower-case table name.
    visible: BTreeMap<String, BTreeMap<String, String>>,
    /// Datasets visible but readable only after an approved request.
    requestable: Vec<String>,
    cache: PolicyCache,
    /// The request's clock: time windows are measured from it.
    now: chrono::DateTime<chrono::Utc>,
    /// Most distinct combinations a k-anonymized read may count.
    kanon_max_groups: usize,
    /// Where `veil.audit` reads its rows.
    audit_store: Option<Arc<dyn Store>>,
}

impl ViewCompiler {
    pub fn new(
        snapshot: Arc<Snapshot>,
        principal: Arc<Principal>,
        master: MasterKey,
        default_issuer: String,
        stores: Arc<ObjectStores>,
        parts: HashMap<String, ScanPart>,
        cache: PolicyCache,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Self {
        let mut visible: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut requestable = Vec::new();
        let none = Default::default();
        for d in snapshot.datasets.values() {
            let approved = snapshot.approvals.get(&d.id).unwrap_or(&none);
            match access(
                &principal,
                d,
                &snapshot.policies,
                approved,
                &default_issuer,
                None,
            ) {
                Access::Read => {
                    if let Some((schema, table)) = d.name.split_once('.') {
                        visible
                            .entry(schema.to_ascii_lowercase())
                            .or_default()
                            .insert(table.to_ascii_lowercase(), d.name.clone());
                    }
                }
                Access::Request => requestable.push(d.name.clone()),
                Access::Hidden => {}
            }
        }
        Self {
            snapshot,
            principal,
            master,
            default_issuer,
            stores,
            parts,
            reads: Mutex::new(vec![]),
            visible,
            requestable,
            cache,
            now,
            kanon_max_groups: crate::config::DEFAULT_KANON_MAX_GROUPS,
            audit_store: None,
        }
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
    pub fn unreadable(&self, name: &str) -> VeilError {
        match self.visible(name) {
            Some(d) => VeilError::access_not_approved(&d.name),
            None => VeilError::dataset_not_found(name),
        }
    }

    /// Datasets the principal may see but not yet read (on request).
    pub fn requestable_datasets(&self) -> Vec<&DatasetRecord> {
        self.requestable
            .iter()
            .filter_map(|n| self.snapshot.datasets.get(n))
            .collect()
    }

    /// Is `name` visible to the principal, readable or not?
    pub fn visible(&self, name: &str) -> Option<&DatasetRecord> {
        self.readable(name).or_else(|| {
            self.requestable
                .iter()
                .find(|n| n.eq_ignore_ascii_case(name))
                .and_then(|n| self.snapshot.datasets.get(n))
        })
    }

    /// The dataset by name (case-insensitive) if the principal may read it.
    pub fn readable(&self, name: &str) -> Option<&DatasetRecord> {
        let (schema, table) = name.split_once('.')?;
        let full = self
            .visible
            .get(&schema.to_ascii_lowercase())?
            .get(&table.to_ascii_lowercase())?;
        self.snapshot.datasets.get(full)
    }

    pub fn readable_datasets(&self) -> Vec<&DatasetRecord> {
        self.visible
            .values()
            .flat_map(|t| t.values())
            .filter_map(|n| self.snapshot.datasets.get(n))
            .collect()
    }

    /// The principal's effective policy on `d`, compiled once per state
    /// version (failures are not cached: they are recomputed, and fail
    /// again, on every request).
    pub fn effective(&self, d: &DatasetRecord) -> Result<EffectivePolicy> {
        let key = (
            self.principal.fingerprint,
            d.id.clone(),
            self.snapshot.version,
        );
        if let Some(p) = self.cache.get(&key) {
            return Ok(EffectivePolicy::clone(&p));
        }
        let p = data_policy(
            &self.principal,
            d,
            &self.snapshot.policies,
            &self.default_issuer,
        )?;
        self.cache.insert(key, Arc::new(p.clone()));
        Ok(p)
    }

    pub fn reads(&self) -> Vec<DatasetRead> {
        self.reads.lock().map(|r| r.clone()).unwrap_or_default()
    }

    async fn compile(&self, d: &DatasetRecord) -> Result<Arc<dyn TableProvider>> {
        let policy = self.effective(d)?;
        let part = self.parts.get(&d.name.to_ascii_lowercase()).cloned();
        let (served, whole): (Arc<dyn TableProvider>, Option<Arc<dyn TableProvider>>) =
            if is_audit(d) {
                // Veil's own audit: one endpoint, rows from the store.
                let store = self.audit_store.as_ref().ok_or_else(|| {
                    VeilError::FailedPrecondition(format!(
                        "{} can't be read here: this engine has no audit store",
                        d.name
                    ))
                })?;
                (Arc::new(AuditTable::new(Arc::clone(store))), None)
            } else {
                // k-anonymization counts over the whole dataset, even for a part.
                let whole = match (&part, policy.kanon.is_empty()) {
                    (Some(_), false) => {
                        Some(Arc::new(SourceTable::open(d, None, &self.stores).await?) as _)
                    }
                    _ => None,
                };
                (
                    Arc::new(SourceTable::open(d, part, &self.stores).await?),
                    whole,
                )
            };
        let plan = secure_view::compile(
            d,
            &policy,
            secure_view::ViewSources { served, whole },
            &self.master,
            self.now,
            self.kanon_max_groups,
        )?;
        if let Ok(mut r) = self.reads.lock() {
            r.push(DatasetRead {
                dataset: d.name.clone(),
                policy,
            });
        }
        Ok(Arc::new(ViewTable::new(plan, None)))
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

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        (name == CATALOG).then(|| Arc::clone(&self.catalog) as Arc<dyn CatalogProvider>)
    }
}

#[derive(Debug)]
struct PrincipalCatalog {
    compiler: Arc<ViewCompiler>,
}

impl CatalogProvider for PrincipalCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.compiler.visible.keys().cloned().collect()
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
            .visible
            .get(&self.schema)
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
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
