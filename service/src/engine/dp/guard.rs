//! What a principal under a differential privacy policy finds in place of
//! the dataset: a table with the secure view's schema that can be named
//! in a query but never scanned. Planning a read of it fails closed, so
//! every path that reads rows (scans, previews, joins, lookups, a
//! `DoGet` of raw rows, Flight SQL) is refused by construction; only the
//! DP planner (`super::plan`) recognises it and answers with noise.

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::DataFusionError;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use std::sync::Arc;

use super::{Refusal, refusal};
use crate::model::dataset::DatasetRecord;
use crate::policy::effective::{DpRule, EffectivePolicy};

#[derive(Debug, Clone)]
pub struct DpGuardTable {
    dataset: DatasetRecord,
    policy: Arc<EffectivePolicy>,
    schema: SchemaRef,
}

impl DpGuardTable {
    /// `policy.dp` must be set.
    pub fn new(dataset: DatasetRecord, policy: Arc<EffectivePolicy>, schema: SchemaRef) -> Self {
        debug_assert!(policy.dp.is_some());
        Self {
            dataset,
            policy,
            schema,
        }
    }

    pub fn downcast(p: &Arc<dyn TableProvider>) -> Option<Arc<Self>> {
        p.downcast_ref::<Self>().map(|g| Arc::new(g.clone()))
    }

    pub fn dataset(&self) -> &DatasetRecord {
        &self.dataset
    }

    pub fn policy(&self) -> &Arc<EffectivePolicy> {
        &self.policy
    }

    pub fn rule(&self) -> &DpRule {
        self.policy
            .dp
            .as_ref()
            .expect("a DP guard is made for a policy with differential privacy")
    }

    /// The policy-applied schema (masked types).
    pub fn view_schema(&self) -> Schema {
        self.schema.as_ref().clone()
    }
}

#[async_trait]
impl TableProvider for DpGuardTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        Err(DataFusionError::External(Box::new(refusal(
            Refusal::RowLevel,
            self,
            "its rows are never served",
        ))))
    }
}
