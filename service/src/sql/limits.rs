//! Bounds on how complex a request may be, checked before DataFusion plans
//! it. DataFusion's planner recurses over expressions; a long `1+1+…+1`
//! chain or deeply nested parentheses would otherwise overflow a stack and
//! abort the whole process. Planning also runs on threads with large stacks
//! ([`super::planner_pool`]) as a second line of defence.

use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, ObjectName, Query, Select, TableFactor, Visit, Visitor,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use std::ops::ControlFlow;

use crate::error::{Result, VeilError};

/// Longest SQL text accepted.
pub const MAX_SQL_BYTES: usize = 256 * 1024;
/// Longest scan filter accepted.
pub const MAX_FILTER_BYTES: usize = 64 * 1024;
/// Most columns a scan may name.
pub const MAX_COLUMNS: usize = 4096;
/// Deepest nesting of expressions and queries accepted.
pub const MAX_DEPTH: usize = 128;

/// Most SELECTs in one query (each UNION arm is one): planning recurses
/// once per set operation.
pub const MAX_SELECTS: usize = 64;
/// Most table references (joins) in one query: plans are left-deep, and
/// both planning and execution recurse once per join.
pub const MAX_TABLES: usize = 64;
/// Most WHEN branches in one CASE: simplification is super-linear in them.
pub const MAX_CASE_BRANCHES: usize = 128;

/// Most scans the SQL text may at worst expand to (see
/// [`ComplexityCheck::expansion_bound`]), checked before planning: the
/// planner and the optimiser copy every use of a CTE, so a chain of CTEs
/// each used twice grows twofold per link before any plan exists.
pub const MAX_EXPANSION_BOUND: usize = 16 * MAX_EXPANDED_SCANS;

/// Walks the parsed SQL once, counting what makes planning deep or slow.
#[derive(Default)]
struct ComplexityCheck {
    depth: usize,
    selects: usize,
    tables: usize,
    exceeded: Option<String>,
    /// Common table expressions defined anywhere in the statement.
    ctes: std::collections::BTreeSet<String>,
    /// References to each relation name (CTEs and tables alike).
    references: std::collections::BTreeMap<String, usize>,
    relations: usize,
}

impl ComplexityCheck {
    fn exceed(&mut self, why: String) -> ControlFlow<()> {
        self.exceeded = Some(why);
        ControlFlow::Break(())
    }

    fn enter(&mut self) -> ControlFlow<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.exceed(format!(
                "the query nests expressions or subqueries more than {MAX_DEPTH} levels deep; simplify it (for long lists use IN (...))"
            ));
        }
        ControlFlow::Continue(())
    }

    fn leave(&mut self) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    /// An upper bound on the scans the statement expands to once every
    /// use of a CTE is written out: each CTE is copied at most as many
    /// times as the product of the uses of every CTE, so the relations
    /// named in the text times that product. (Generous for CTEs used side
    /// by side, exact for a chain.)
    fn expansion_bound(&self) -> usize {
        self.ctes
            .iter()
            .map(|c| self.references.get(c).copied().unwrap_or(0).max(1))
            .fold(self.relations.max(1), usize::saturating_mul)
    }

    fn result(self) -> Result<()> {
        if let Some(why) = self.exceeded {
            return Err(VeilError::InvalidArgument(why));
        }
        if self.expansion_bound() > MAX_EXPANSION_BOUND {
            return Err(VeilError::ResourceExhausted(format!(
                "the query's common table expressions, each read again wherever it is named, could expand to more than {MAX_EXPANDED_SCANS} table reads; name each CTE fewer times (or chain fewer CTEs that name the one before twice)"
            )));
        }
        Ok(())
    }
}

impl Visitor for ComplexityCheck {
    type Break = ();
    fn pre_visit_expr(&mut self, e: &SqlExpr) -> ControlFlow<()> {
        if let SqlExpr::Case { conditions, .. } = e
            && conditions.len() > MAX_CASE_BRANCHES
        {
            return self.exceed(format!(
                "a CASE has more than {MAX_CASE_BRANCHES} WHEN branches; use a join with a mapping dataset instead"
            ));
        }
        self.enter()
    }
    fn post_visit_expr(&mut self, _: &SqlExpr) -> ControlFlow<()> {
        self.leave()
    }
    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                self.ctes.insert(cte.alias.name.value.to_lowercase());
            }
        }
        self.enter()
    }
    fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
        self.relations += 1;
        if let Some(last) = name.0.last().and_then(|p| p.as_ident()) {
            *self
                .references
                .entry(last.value.to_lowercase())
                .or_default() += 1;
        }
        ControlFlow::Continue(())
    }
    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.leave()
    }
    fn pre_visit_select(&mut self, _: &Select) -> ControlFlow<()> {
        self.selects += 1;
        if self.selects > MAX_SELECTS {
            return self.exceed(format!(
                "the query has more than {MAX_SELECTS} SELECTs (UNION arms included)"
            ));
        }
        ControlFlow::Continue(())
    }
    fn pre_visit_table_factor(&mut self, _: &TableFactor) -> ControlFlow<()> {
        self.tables += 1;
        if self.tables > MAX_TABLES {
            return self.exceed(format!(
                "the query references more than {MAX_TABLES} tables (joins included)"
            ));
        }
        ControlFlow::Continue(())
    }
}

/// Check a parsed statement's depth and size.
pub fn check_statement(statement: &DFStatement) -> Result<()> {
    let mut check = ComplexityCheck::default();
    if let DFStatement::Statement(s) = statement {
        let _ = s.visit(&mut check);
    }
    check.result()
}

pub fn check_sql_text(sql: &str) -> Result<()> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(VeilError::InvalidArgument(format!(
            "the SQL is longer than {MAX_SQL_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Check a scan filter: length, one expression, depth.
pub fn check_filter(filter: &str) -> Result<()> {
    if filter.len() > MAX_FILTER_BYTES {
        return Err(VeilError::InvalidArgument(format!(
            "the filter is longer than {MAX_FILTER_BYTES} bytes"
        )));
    }
    let expr = Parser::new(&GenericDialect {})
        .try_with_sql(filter)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| {
            VeilError::InvalidArgument(VeilError::detailed(
                "the filter is not a valid SQL expression",
                e,
            ))
        })?;
    let mut check = ComplexityCheck::default();
    let _ = expr.visit(&mut check);
    check.result()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_chains_and_deep_nesting_are_refused() {
        assert!(check_filter("a = 1 AND b > 2").is_ok());
        let chain = vec!["1"; 1000].join("+");
        assert!(check_filter(&format!("a = {chain}")).is_err());
        assert!(check_filter(&"(".repeat(40)).is_err());
        assert!(check_filter(&"x".repeat(MAX_FILTER_BYTES + 1)).is_err());
        let ok = vec!["1"; 100].join("+");
        assert!(check_filter(&format!("a = {ok}")).is_ok());
        let case = (0..200)
            .map(|i| format!("WHEN a = {i} THEN true"))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            check_filter(&format!("CASE {case} END"))
                .unwrap_err()
                .message()
                .contains("CASE")
        );
    }

    fn statement(sql: &str) -> DFStatement {
        datafusion::sql::parser::DFParser::parse_sql_with_dialect(sql, &GenericDialect {})
            .unwrap()
            .pop_front()
            .unwrap()
    }

    #[test]
    fn union_and_join_chains_are_bounded() {
        let unions = vec!["SELECT 1"; 100].join(" UNION ALL ");
        assert!(
            check_statement(&statement(&unions))
                .unwrap_err()
                .message()
                .contains("SELECT")
        );
        assert!(check_statement(&statement(&["SELECT 1"; 10].join(" UNION ALL "))).is_ok());
        let joins: String = (1..100)
            .map(|i| format!(" JOIN t t{i} ON t{i}.a = t0.a"))
            .collect();
        let e = check_statement(&statement(&format!("SELECT 1 FROM t t0{joins}"))).unwrap_err();
        assert!(e.message().contains("tables"));
    }
}

/// Most tables one query reads once its common table expressions and views
/// are written out. The SQL text's limits ([`MAX_TABLES`], [`MAX_SELECTS`])
/// count each CTE once, but a CTE named twice is planned twice: twelve
/// nested `a(n) AS (SELECT … FROM a(n-1) UNION ALL SELECT … FROM a(n-1))`
/// are 4,096 scans from 25 SELECTs.
pub const MAX_EXPANDED_SCANS: usize = 256;

/// Refuse an optimised plan that reads more than [`MAX_EXPANDED_SCANS`]
/// tables.
pub fn check_expanded_scans(plan: &datafusion::logical_expr::LogicalPlan) -> Result<()> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::logical_expr::LogicalPlan;
    let mut scans = 0usize;
    plan.apply_with_subqueries(|node| {
        if matches!(node, LogicalPlan::TableScan(_)) {
            scans += 1;
            if scans > MAX_EXPANDED_SCANS {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|e| VeilError::internal("counting a plan's scans", e))?;
    if scans > MAX_EXPANDED_SCANS {
        return Err(VeilError::ResourceExhausted(format!(
            "the query reads more than {MAX_EXPANDED_SCANS} tables once its common table expressions are written out (each use of a CTE reads it again); name each CTE fewer times, or materialise less"
        )));
    }
    Ok(())
}
