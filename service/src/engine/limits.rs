//! Bounds on how complex a request may be, checked before DataFusion plans
//! it. DataFusion's planner recurses over expressions; a long `1+1+…+1`
//! chain or deeply nested parentheses would otherwise overflow a stack and
//! abort the whole process. Planning also runs on threads with large stacks
//! ([`super::planner_pool`]) as a second line of defence.

use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Query, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use std::ops::ControlFlow;

use crate::error::{Result, VeilError};

/// Longest SQL text accepted.
pub const MAX_SQL_BYTES: usize = 256 * 1024;
/// Longest scan filter accepted.
pub const MAX_FILTER_BYTES: usize = 64 * 1024;
/// Deepest nesting of expressions and queries accepted.
pub const MAX_DEPTH: usize = 128;

struct DepthCheck {
    depth: usize,
}

impl DepthCheck {
    fn enter(&mut self) -> ControlFlow<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
    fn leave(&mut self) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

impl Visitor for DepthCheck {
    type Break = ();
    fn pre_visit_expr(&mut self, _: &SqlExpr) -> ControlFlow<()> {
        self.enter()
    }
    fn post_visit_expr(&mut self, _: &SqlExpr) -> ControlFlow<()> {
        self.leave()
    }
    fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.enter()
    }
    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.leave()
    }
}

fn too_deep() -> VeilError {
    VeilError::InvalidArgument(format!(
        "the query nests expressions or subqueries more than {MAX_DEPTH} levels deep; simplify it (for long lists use IN (...))"
    ))
}

/// Check a parsed statement's depth.
pub fn check_statement(statement: &DFStatement) -> Result<()> {
    if let DFStatement::Statement(s) = statement
        && s.visit(&mut DepthCheck { depth: 0 }).is_break()
    {
        return Err(too_deep());
    }
    Ok(())
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
            VeilError::InvalidArgument(format!("the filter is not a valid SQL expression: {e}"))
        })?;
    if expr.visit(&mut DepthCheck { depth: 0 }).is_break() {
        return Err(too_deep());
    }
    Ok(())
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
    }
}
