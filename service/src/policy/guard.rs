//! `PolicyGuard`: defence in depth. An analyzer rule that fails the query if
//! any table scan appears outside a [`PolicyBarrier`], in the plan or in any
//! subquery (it walks with `apply_with_subqueries`; plain `apply` does not
//! enter `IN (SELECT ...)` / `EXISTS` / scalar subqueries). In a principal's
//! session every readable table is a secure view whose scan sits under a
//! barrier, so a bare scan means something bypassed the catalog: refuse.

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::analyzer::AnalyzerRule;

use super::barrier::PolicyBarrier;

#[derive(Debug, Default)]
pub struct PolicyGuard;

impl PolicyGuard {
    pub fn check(plan: &LogicalPlan) -> Result<()> {
        plan.apply_with_subqueries(|node| match node {
            _ if PolicyBarrier::is_barrier(node) => Ok(TreeNodeRecursion::Jump),
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
