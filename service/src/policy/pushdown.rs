//! Copying a user's filters below a policy barrier, where that cannot
//! change an answer or reveal a hidden row, so a database source can
//! evaluate them (and send fewer rows).
//!
//! The barrier keeps every user predicate above it (invariant 1). This
//! rule leaves them there and adds a *copy* of each conjunct that is safe
//! directly under the barrier, from where DataFusion pushes it through the
//! masking projection onto the source scan. A conjunct is copied only if:
//! - the barrier allows it: the dataset reads a database, no
//!   k-anonymization counts its rows and no sample draws them (a filter
//!   below either would change which rows survive), and every column the
//!   conjunct names is unmasked there (so the raw value below is the very
//!   value the user sees above);
//! - it cannot fail on any row: comparisons, `IN`, `BETWEEN`, `LIKE`,
//!   `IS [NOT] NULL` and boolean connectives over columns and literals,
//!   with no function, arithmetic or narrowing cast. Below the barrier it
//!   also meets rows the policy's row filters hide; one that could fail
//!   there would tell, by failing, that such a row exists.
//!
//! The copy keeps the same rows the original keeps among the visible ones,
//! and the original still runs above, so the answer is unchanged.
//!
//! [`FiltersStopAtBarriers`] is DataFusion's filter pushdown with that
//! invariant enforced: upstream pushes through an extension node every
//! conjunct that names none of the columns it prevents, so a conjunct that
//! names no column at all (`1/0 = 1`, `CAST(uuid() AS INT) = 1`, or one the
//! simplifier reduced to that) would run below the barrier, on rows the
//! policies hide, and its failure would be a source's. Here no filter
//! crosses a barrier from above; only this module's copies start below.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, Result};
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{
    Between, BinaryExpr, Expr, Extension, Filter, Like, LogicalPlan, Operator,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::push_down_filter::PushDownFilter;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use std::collections::HashMap;
use std::sync::Arc;

use super::barrier::PolicyBarrier;

/// DataFusion's `push_down_filter`, except that a filter directly above a
/// policy barrier stays there (see the module). It replaces upstream's
/// rule in Veil's sessions, in the same place among the rules.
#[derive(Debug, Default)]
pub struct FiltersStopAtBarriers(PushDownFilter);

impl OptimizerRule for FiltersStopAtBarriers {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        self.0.apply_order()
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        match &plan {
            LogicalPlan::Filter(f) if PolicyBarrier::is_barrier(&f.input) => {
                Ok(Transformed::no(plan))
            }
            _ => self.0.rewrite(plan, config),
        }
    }
}

/// Veil's optimizer rules: DataFusion's, with [`FiltersStopAtBarriers`]
/// in place of its filter pushdown, then [`CopySafeFilters`]. An error if
/// upstream's filter pushdown is not found by name (a renamed rule would
/// otherwise keep pushing filters through barriers): the engine doesn't
/// start.
pub fn optimizer_rules() -> Result<Vec<Arc<dyn OptimizerRule + Send + Sync>>> {
    let mut rules = datafusion::optimizer::Optimizer::new().rules;
    let upstream = PushDownFilter::new();
    let slot = rules
        .iter_mut()
        .find(|rule| rule.name() == upstream.name())
        .ok_or_else(|| {
            datafusion::common::DataFusionError::Internal(format!(
                "DataFusion's optimizer has no '{}' rule to keep filters above policy barriers",
                upstream.name()
            ))
        })?;
    *slot = Arc::new(FiltersStopAtBarriers::default());
    rules.push(Arc::new(CopySafeFilters));
    Ok(rules)
}

/// The optimizer rule (see the module).
#[derive(Debug, Default)]
pub struct CopySafeFilters;

impl OptimizerRule for CopySafeFilters {
    fn name(&self) -> &str {
        "veil_copy_safe_filters"
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        plan.transform_up_with_subqueries(copy_below)
    }
}

fn copy_below(node: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    let LogicalPlan::Filter(filter) = &node else {
        return Ok(Transformed::no(node));
    };
    let LogicalPlan::Extension(ext) = filter.input.as_ref() else {
        return Ok(Transformed::no(node));
    };
    let Some(barrier) = ext.node.as_any().downcast_ref::<PolicyBarrier>() else {
        return Ok(Transformed::no(node));
    };
    if barrier.pushable.is_empty() {
        return Ok(Transformed::no(node));
    }
    // Each pushable column with its type, from the barrier's input.
    let pushable: HashMap<&str, &DataType> = barrier
        .pushable
        .iter()
        .filter_map(|name| {
            barrier
                .input
                .schema()
                .fields()
                .iter()
                .find(|f| f.name() == name)
                .map(|f| (name.as_str(), f.data_type()))
        })
        .collect();
    let mut new = Vec::new();
    for c in split_conjunction(&filter.predicate) {
        if !copyable(c, &pushable) {
            continue;
        }
        let c = unqualified(c.clone())?;
        if !barrier.copied.contains(&c) && !new.contains(&c) {
            new.push(c);
        }
    }
    let Some(predicate) = conjunction(new.clone()) else {
        return Ok(Transformed::no(node));
    };
    let below = LogicalPlan::Filter(Filter::try_new(predicate, Arc::new(barrier.input.clone()))?);
    let mut copied = barrier.copied.clone();
    copied.extend(new);
    let fenced = LogicalPlan::Extension(Extension {
        node: Arc::new(PolicyBarrier {
            dataset: barrier.dataset.clone(),
            input: below,
            pushable: barrier.pushable.clone(),
            copied,
            deal: barrier.deal,
        }),
    });
    Ok(Transformed::yes(LogicalPlan::Filter(Filter::try_new(
        filter.predicate.clone(),
        Arc::new(fenced),
    )?)))
}

/// `e` naming columns by name alone, as the barrier's input does.
fn unqualified(e: Expr) -> Result<Expr> {
    e.transform(|e| match e {
        Expr::Column(c) if c.relation.is_some() => {
            Ok(Transformed::yes(Expr::Column(Column::from_name(c.name))))
        }
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

/// Can `e` be evaluated on any row without failing, naming only
/// `pushable` columns (with their types)?
pub fn copyable(e: &Expr, pushable: &HashMap<&str, &DataType>) -> bool {
    let ok = |x: &Expr| copyable(x, pushable);
    match e {
        Expr::Column(c) => pushable.contains_key(c.name.as_str()),
        Expr::Literal(..) => true,
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            matches!(
                op,
                Operator::Eq
                    | Operator::NotEq
                    | Operator::Lt
                    | Operator::LtEq
                    | Operator::Gt
                    | Operator::GtEq
                    | Operator::And
                    | Operator::Or
                    | Operator::IsDistinctFrom
                    | Operator::IsNotDistinctFrom
            ) && ok(left)
                && ok(right)
        }
        Expr::Not(x) | Expr::IsNull(x) | Expr::IsNotNull(x) => ok(x),
        Expr::IsTrue(x)
        | Expr::IsFalse(x)
        | Expr::IsNotTrue(x)
        | Expr::IsNotFalse(x)
        | Expr::IsUnknown(x)
        | Expr::IsNotUnknown(x) => ok(x),
        Expr::InList(l) => ok(&l.expr) && l.list.iter().all(ok),
        Expr::Between(Between {
            expr, low, high, ..
        }) => ok(expr) && ok(low) && ok(high),
        Expr::Like(Like {
            expr,
            pattern,
            escape_char: None,
            ..
        }) => ok(expr) && matches!(pattern.as_ref(), Expr::Literal(..)),
        // A cast of a literal was folded by the planner (or fails at
        // planning, for everyone alike); of a column, only a widening one.
        Expr::Cast(c) => match c.expr.as_ref() {
            Expr::Literal(..) => true,
            Expr::Column(col) => pushable
                .get(col.name.as_str())
                .is_some_and(|from| widens(from, c.field.data_type())),
            _ => false,
        },
        _ => false,
    }
}

/// Does a cast from `from` to `to` keep every value (an integer widened)?
pub fn widens(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    matches!(
        (from, to),
        (Int8, Int16 | Int32 | Int64)
            | (Int16, Int32 | Int64)
            | (Int32, Int64)
            | (UInt8, UInt16 | UInt32 | UInt64 | Int16 | Int32 | Int64)
            | (UInt16, UInt32 | UInt64 | Int32 | Int64)
            | (UInt32, UInt64 | Int64)
    )
}
