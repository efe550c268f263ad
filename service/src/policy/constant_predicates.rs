//! `ConstantPredicates`: a user's predicate that names no column (`WHERE
//! 1/0 = 1`) is evaluated once, while the query is planned, and its error
//! is the query's. DataFusion pushes such a conjunct through any extension
//! node, the policy barrier included (only conjuncts naming a column the
//! node prevents stay above), so without this it would run below the
//! barrier, on rows the policies hide: its failure would then tell whether
//! the dataset holds any row at all, and be answered as a source or policy
//! failure (`FAILED_PRECONDITION`) rather than the query's own error
//! (`INVALID_ARGUMENT`). Evaluated here it fails whatever the data, as in
//! PostgreSQL, which folds constants while planning. A conjunct that
//! evaluates is left as it is (the simplifier folds it to its value, which
//! is the same for every row, wherever it runs).
//!
//! Checked: the predicates of filters and of joins' `ON` conditions above
//! every barrier, in subqueries too; what lies below a barrier is the
//! policy's, not the user's.

use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, Result};
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::optimizer::analyzer::AnalyzerRule;
use datafusion::physical_expr::create_physical_expr;
use std::sync::Arc;

use super::barrier::PolicyBarrier;
use crate::error::query::{Cause, cause_of};

#[derive(Debug, Default)]
pub struct ConstantPredicates;

impl ConstantPredicates {
    pub fn check(plan: &LogicalPlan) -> Result<()> {
        plan.apply_with_subqueries(|node| {
            if PolicyBarrier::is_barrier(node) {
                return Ok(TreeNodeRecursion::Jump);
            }
            let predicate = match node {
                LogicalPlan::Filter(f) => Some(&f.predicate),
                LogicalPlan::Join(j) => j.filter.as_ref(),
                _ => None,
            };
            for conjunct in predicate.into_iter().flat_map(split_conjunction) {
                if is_constant(conjunct)? {
                    evaluate(conjunct)?;
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .map(|_| ())
    }
}

impl AnalyzerRule for ConstantPredicates {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        Self::check(&plan)?;
        Ok(plan)
    }

    fn name(&self) -> &str {
        "veil_constant_predicates"
    }
}

/// Names no column, reads no subquery or parameter, and gives the same
/// value on every evaluation.
fn is_constant(e: &Expr) -> Result<bool> {
    if !e.column_refs().is_empty() || e.is_volatile() {
        return Ok(false);
    }
    let refers = e.exists(|e| {
        Ok(matches!(
            e,
            Expr::ScalarSubquery(_)
                | Expr::Exists(_)
                | Expr::InSubquery(_)
                | Expr::Placeholder(_)
                | Expr::OuterReferenceColumn(..)
        ))
    })?;
    Ok(!refers)
}

/// Evaluate a constant conjunct on one row of nothing: an error from a
/// value (a division by zero, a failed cast, an overflow) is the query's.
/// Anything else (a function that must be simplified before it runs, say)
/// is left to the planner, as before.
fn evaluate(e: &Expr) -> Result<()> {
    let run = || -> Result<()> {
        let physical = create_physical_expr(
            e,
            &DFSchema::empty(),
            &ExecutionProps::new(),
            &PhysicalPlanningContext::default(),
        )?;
        let row = RecordBatch::try_new_with_options(
            Arc::new(Schema::empty()),
            vec![],
            &RecordBatchOptions::new().with_row_count(Some(1)),
        )?;
        physical.evaluate(&row)?;
        Ok(())
    };
    match run() {
        Err(err) if cause_of(&err) == Cause::Evaluation => Err(err),
        _ => Ok(()),
    }
}
