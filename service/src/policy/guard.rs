//! `PolicyGuard`: defence in depth. An analyzer rule that fails the query if
//! any table scan appears outside a [`PolicyBarrier`], in the plan or in any
//! subquery (it walks with `apply_with_subqueries`; plain `apply` does not
//! enter `IN (SELECT ...)` / `EXISTS` / scalar subqueries). In a principal's
//! session every readable table is a secure view whose scan sits under a
//! barrier, so a bare scan means something bypassed the catalog: refuse.
//! The one exception is a [`PolicyAppliedTable`]: rows computed under a
//! policy (a differentially private answer), which hold no raw value.

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::{TableProvider, TableType, source_as_provider};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::analyzer::AnalyzerRule;
use datafusion::physical_plan::ExecutionPlan;
use std::sync::Arc;

use super::barrier::PolicyBarrier;

#[derive(Debug, Default)]
pub struct PolicyGuard;

impl PolicyGuard {
    pub fn check(plan: &LogicalPlan) -> Result<()> {
        plan.apply_with_subqueries(|node| match node {
            _ if PolicyBarrier::is_barrier(node) => Ok(TreeNodeRecursion::Jump),
            LogicalPlan::TableScan(scan)
                if source_as_provider(&scan.source)
                    .is_ok_and(|p| p.downcast_ref::<PolicyAppliedTable>().is_some()) =>
            {
                Ok(TreeNodeRecursion::Continue)
            }
            LogicalPlan::TableScan(_) => Err(DataFusionError::Plan(
                "this query reads a table outside Veil's policies; query datasets by their catalog names only".into(),
            )),
            LogicalPlan::Extension(_) => Err(DataFusionError::Plan(
                "this query contains an operator Veil does not allow".into(),
            )),
            _ => Ok(TreeNodeRecursion::Continue),
        })
        .map(|_| ())
    }
}

impl AnalyzerRule for PolicyGuard {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        Self::check(&plan)?;
        Ok(plan)
    }

    fn name(&self) -> &str {
        "veil_policy_guard"
    }
}

/// Rows a policy computed (a differentially private answer, noise
/// added): scanned without a barrier, and its errors (Veil's own words,
/// about budgets and caches, never data) reach the caller as they are.
#[derive(Debug)]
pub struct PolicyAppliedTable(pub Arc<dyn TableProvider>);

#[async_trait]
impl TableProvider for PolicyAppliedTable {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        self.0.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.0.scan(state, projection, filters, limit).await
    }
}
