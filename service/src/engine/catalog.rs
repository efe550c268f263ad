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

use crate::auth::identity::Principal;
use crate::catalog::object_stores::ObjectStores;
use crate::catalog::source_table::SourceTable;
use crate::error::{Result, VeilError};
use crate::policy::effective::{EffectivePolicy, data_policy, may_read};
use crate::policy::secure_view;
use crate::secrets::MasterKey;
use crate::store::model::{DatasetRecord, Snapshot};

pub const CATALOG: &str = "veil";

/// What a query read from one dataset, for the audit.
#[derive(Debug, Clone)]
pub struct DatasetRead {
    pub dataset: String,
    pub policy: EffectivePolicy,
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
}

impl ViewCompiler {
    pub fn new(
        snapshot: Arc<Snapshot>,
        principal: Arc<Principal>,
        master: MasterKey,
        default_issuer: String,
        stores: Arc<ObjectStores>,
        parts: HashMap<String, ScanPart>,
    ) -> Self {
        let mut visible: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for d in snapshot.datasets.values() {
            if may_read(&principal, d, &snapshot.policies, &default_issuer)
                && let Some((schema, table)) = d.name.split_once('.')
            {
                visible
                    .entry(schema.to_ascii_lowercase())
                    .or_default()
                    .insert(table.to_ascii_lowercase(), d.name.clone());
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
        }
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

    pub fn effective(&self, d: &DatasetRecord) -> Result<EffectivePolicy> {
        data_policy(
            &self.principal,
            d,
            &self.snapshot.policies,
            &self.default_issuer,
        )
    }

    pub fn reads(&self) -> Vec<DatasetRead> {
        self.reads.lock().map(|r| r.clone()).unwrap_or_default()
    }

    async fn compile(&self, d: &DatasetRecord) -> Result<Arc<dyn TableProvider>> {
        let policy = self.effective(d)?;
        let source =
            Arc::new(SourceTable::open(d, self.parts.get(&d.name).cloned(), &self.stores).await?);
        let plan = secure_view::compile(d, &policy, source, &self.master)?;
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
                VeilError::dataset_not_found(&full),
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
