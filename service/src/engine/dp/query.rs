//! Which SQL a differential privacy policy answers: an allowlist walk of
//! the *unoptimized* logical plan (what the user wrote, before any rewrite
//! could hide a shape) into a [`DpQuery`], refusing everything else with a
//! stable code ([`super::refusal`]).
//!
//! Accepted: one aggregate over the one DP dataset (`COUNT(*)`,
//! `COUNT(col)`, `SUM(col)`, `AVG(col)`, `COUNT(DISTINCT unit)`), a `WHERE`
//! of total predicates (no expression that can fail on some row, since
//! whether it failed would tell of that row), `GROUP BY` on groupable
//! columns; above the aggregate anything that only reads its output
//! (`HAVING`, `ORDER BY`, `LIMIT`, expressions over the noisy values:
//! post-processing can't weaken differential privacy).

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{Aggregate, BinaryExpr, Expr, LogicalPlan, Operator};
use std::sync::Arc;

use super::guard::DpGuardTable;
use super::{Refusal, refusal};
use crate::error::{Result, VeilError};

/// One aggregate the user asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Measure {
    /// `COUNT(*)` (or `COUNT` of a literal).
    CountRows,
    /// `COUNT(col)`: rows where `col` is not null.
    Count(String),
    Sum(String),
    Avg(String),
    /// `COUNT(DISTINCT unit)`: how many privacy units.
    CountUnits,
}

impl Measure {
    pub fn describe(&self) -> String {
        match self {
            Measure::CountRows => "COUNT(*)".into(),
            Measure::Count(c) => format!("COUNT({c})"),
            Measure::Sum(c) => format!("SUM({c})"),
            Measure::Avg(c) => format!("AVG({c})"),
            Measure::CountUnits => "COUNT(DISTINCT unit)".into(),
        }
    }
}

/// An accepted query: what to measure, over which rows, by which groups.
#[derive(Debug, Clone)]
pub struct DpQuery {
    /// The DP dataset's guard (its name, policy and view).
    pub guard: Arc<DpGuardTable>,
    /// Group columns, in `GROUP BY` order.
    pub groups: Vec<String>,
    /// Aggregates, in the order of the plan's aggregate node.
    pub measures: Vec<Measure>,
    /// The `WHERE` predicate over the view's columns (unqualified).
    pub filter: Option<Expr>,
}

impl DpQuery {
    /// The query in a canonical form, for cache keys: the same question
    /// asked with other aliases, spacing or case gets the same draw, and
    /// no two questions share one (a structural, escaped form: a string
    /// constant can't spell another predicate, as it could in SQL text).
    pub fn canonical(&self) -> String {
        let filter = self.filter.clone().map(canonical_literals);
        format!(
            "groups={:?};measures={:?};where={:?}",
            self.groups, self.measures, filter
        )
    }

    /// The query in words, for receipts and the audit (not a key: two
    /// queries may read alike).
    pub fn describe(&self) -> String {
        let measures: Vec<String> = self.measures.iter().map(Measure::describe).collect();
        let mut out = format!("SELECT {}", measures.join(", "));
        if let Some(f) = &self.filter {
            // As SQL (`age > 65`, `state = 'CA'`: a quote inside a text
            // constant doubled, so it shows where the constant ends), else
            // as DataFusion shows expressions.
            let f = escaped_literals(f.clone());
            let shown = datafusion::sql::unparser::expr_to_sql(&f)
                .map(|e| e.to_string())
                .unwrap_or_else(|_| f.to_string());
            out.push_str(&format!(" WHERE {shown}"));
        }
        if !self.groups.is_empty() {
            out.push_str(&format!(" GROUP BY {}", self.groups.join(", ")));
        }
        out
    }
}

/// `e` with every constant replaced by `f` of it.
fn map_literals(e: Expr, f: impl Fn(ScalarValue) -> ScalarValue) -> Expr {
    use datafusion::common::tree_node::Transformed;
    let rewritten = e.transform(|x| {
        Ok(match x {
            Expr::Literal(v, _) => Transformed::yes(Expr::Literal(f(v), None)),
            other => Transformed::no(other),
        })
    });
    // The rewrite itself never fails.
    rewritten
        .map(|t| t.data)
        .unwrap_or_else(|_| Expr::Literal(ScalarValue::Null, None))
}

/// Text constants with control characters escaped (`\n`, `\u{1b}`), so a
/// receipt or audit line stays one line, and a backslash doubled (so a
/// constant holding a backslash then `n` doesn't read like a newline);
/// quotes are left to the SQL quoting of [`DpQuery::describe`].
fn escaped_literals(e: Expr) -> Expr {
    map_literals(e, |v| match v {
        ScalarValue::Utf8(Some(t))
        | ScalarValue::LargeUtf8(Some(t))
        | ScalarValue::Utf8View(Some(t)) => ScalarValue::Utf8(Some(
            t.chars()
                .map(|c| match c.is_control() || c == '\\' {
                    true => c.escape_default().to_string(),
                    false => c.to_string(),
                })
                .collect(),
        )),
        other => other,
    })
}

/// Constants by value, not by how they were written or bound: `30` in
/// SQL text (Int64) and a prepared statement's parameter bound as Int32
/// ask the same question.
fn canonical_literals(e: Expr) -> Expr {
    use ScalarValue as S;
    fn value(v: S) -> S {
        match v {
            S::Int8(x) => S::Int64(x.map(i64::from)),
            S::Int16(x) => S::Int64(x.map(i64::from)),
            S::Int32(x) => S::Int64(x.map(i64::from)),
            S::UInt8(x) => S::Int64(x.map(i64::from)),
            S::UInt16(x) => S::Int64(x.map(i64::from)),
            S::UInt32(x) => S::Int64(x.map(i64::from)),
            S::UInt64(Some(x)) if i64::try_from(x).is_ok() => S::Int64(Some(x as i64)),
            S::Float32(x) => S::Float64(x.map(f64::from)),
            S::LargeUtf8(x) | S::Utf8View(x) => S::Utf8(x),
            S::Dictionary(_, v) => value(*v),
            other => other,
        }
    }
    map_literals(e, value)
}

/// The DP guard a plan reads, if any (and refuses a plan reading two).
pub fn guard_of(plan: &LogicalPlan) -> Result<Option<Arc<DpGuardTable>>> {
    let mut found: Vec<Arc<DpGuardTable>> = Vec::new();
    let mut tables = 0usize;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            tables += 1;
            if let Some(g) = source_as_provider(&scan.source)
                .ok()
                .and_then(|p| DpGuardTable::downcast(&p))
            {
                found.push(g);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|e| VeilError::internal("walking a plan", e))?;
    match found.len() {
        0 => Ok(None),
        1 if tables == 1 => Ok(Some(found.remove(0))),
        _ => Err(refusal(
            Refusal::Join,
            &found[0],
            "it reads one dataset alone: no joins, subqueries, UNION or second table",
        )),
    }
}

/// Walk an unoptimized plan that reads `guard` into a [`DpQuery`].
pub fn accept(plan: &LogicalPlan, guard: &Arc<DpGuardTable>) -> Result<DpQuery> {
    let aggregate = top(plan, guard)?;
    let schema = guard.view_schema();
    let filter = below(&aggregate.input, guard, &schema)?;
    if let Some(f) = &filter {
        infallible(f, guard, &schema)?;
    }
    let policy = &guard.rule().policy;
    let mut groups = Vec::new();
    for g in &aggregate.group_expr {
        let name = match g {
            Expr::Column(c) => c.name.clone(),
            Expr::GroupingSet(_) => {
                return Err(refusal(
                    Refusal::GroupBy,
                    guard,
                    "GROUPING SETS, CUBE and ROLLUP are not answered",
                ));
            }
            other => {
                return Err(refusal(
                    Refusal::GroupBy,
                    guard,
                    &format!("GROUP BY names columns, not expressions (got {other})"),
                ));
            }
        };
        if name == policy.unit {
            return Err(refusal(
                Refusal::GroupBy,
                guard,
                &format!(
                    "GROUP BY {name} would answer about single privacy units; it is the privacy unit"
                ),
            ));
        }
        if !policy.groupable.contains(&name) {
            return Err(refusal(
                Refusal::GroupBy,
                guard,
                &format!("'{name}' is not a column the policy lets queries group by"),
            ));
        }
        groups.push(name);
    }
    // Every function the query may not use is named at once, not only the
    // first: a query asking for MIN and MAX hears about both.
    let mut unanswered: Vec<String> = Vec::new();
    for e in &aggregate.aggr_expr {
        if let Expr::AggregateFunction(AggregateFunction { func, .. }) = e.clone().unalias() {
            let name = func.name().to_ascii_uppercase();
            if !ANSWERED.contains(&name.as_str()) && !unanswered.contains(&name) {
                unanswered.push(name);
            }
        }
    }
    if !unanswered.is_empty() {
        let (list, verb) = match unanswered.len() {
            1 => (unanswered[0].clone(), "is"),
            _ => (unanswered.join(", "), "are"),
        };
        return Err(refusal(
            Refusal::Function,
            guard,
            &format!(
                "{list} {verb} not answered: only COUNT, SUM and AVG (MIN, MAX and percentiles would reveal single values)"
            ),
        ));
    }
    let mut measures = Vec::new();
    for e in &aggregate.aggr_expr {
        measures.push(measure(e.clone().unalias(), guard)?);
    }
    if measures.is_empty() {
        return Err(refusal(
            Refusal::RowLevel,
            guard,
            "a query returns aggregates, not rows (SELECT DISTINCT or GROUP BY alone lists values)",
        ));
    }
    Ok(DpQuery {
        guard: Arc::clone(guard),
        groups,
        measures,
        filter,
    })
}

/// The one aggregate node, under nodes that only read its output.
fn top<'a>(plan: &'a LogicalPlan, guard: &Arc<DpGuardTable>) -> Result<&'a Aggregate> {
    let mut node = plan;
    loop {
        for e in node.expressions() {
            reads_only_output(&e, guard)?;
        }
        node = match node {
            LogicalPlan::Aggregate(a) => return Ok(a),
            LogicalPlan::Projection(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::Sort(_)
            | LogicalPlan::Limit(_)
            | LogicalPlan::Distinct(_)
            | LogicalPlan::SubqueryAlias(_) => node.inputs()[0],
            LogicalPlan::Window(_) => {
                return Err(refusal(
                    Refusal::Function,
                    guard,
                    "window functions are not answered",
                ));
            }
            LogicalPlan::TableScan(_) => {
                return Err(refusal(
                    Refusal::RowLevel,
                    guard,
                    "only aggregates are answered, never rows",
                ));
            }
            _ => {
                return Err(refusal(
                    Refusal::Join,
                    guard,
                    "it reads one dataset alone: no joins, subqueries, UNION or VALUES",
                ));
            }
        };
    }
}

/// An expression above the aggregate: anything but a subquery or window.
fn reads_only_output(e: &Expr, guard: &Arc<DpGuardTable>) -> Result<()> {
    let mut bad = None;
    e.apply(|x| {
        match x {
            Expr::ScalarSubquery(_)
            | Expr::Exists(_)
            | Expr::InSubquery(_)
            | Expr::SetComparison(_)
            | Expr::OuterReferenceColumn(..) => {
                bad = Some((Refusal::Join, "subqueries are not answered"));
            }
            Expr::WindowFunction(_) => {
                bad = Some((Refusal::Function, "window functions are not answered"));
            }
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|e| VeilError::internal("walking an expression", e))?;
    match bad {
        Some((code, what)) => Err(refusal(code, guard, what)),
        None => Ok(()),
    }
}

/// Below the aggregate: `WHERE` filters, an optional table alias, the scan.
fn below(plan: &LogicalPlan, guard: &Arc<DpGuardTable>, schema: &Schema) -> Result<Option<Expr>> {
    let mut node = plan;
    let mut filters = Vec::new();
    loop {
        match node {
            LogicalPlan::Filter(f) => {
                let predicate = unqualified(f.predicate.clone())?;
                total(&predicate, guard, schema)?;
                filters.push(predicate);
                node = &f.input;
            }
            LogicalPlan::SubqueryAlias(a) if matches!(*a.input, LogicalPlan::TableScan(_)) => {
                node = &a.input;
            }
            LogicalPlan::TableScan(scan) if scan.filters.is_empty() && scan.fetch.is_none() => {
                return Ok(filters.into_iter().reduce(Expr::and));
            }
            _ => {
                return Err(refusal(
                    Refusal::Join,
                    guard,
                    "it reads one dataset alone: no joins, subqueries, UNION or derived tables",
                ));
            }
        }
    }
}

/// Columns without their table qualifier (one table: names are unique).
fn unqualified(e: Expr) -> Result<Expr> {
    e.transform(|x| {
        Ok(match x {
            // Rebuilt, so no qualifier or source position stays in it.
            Expr::Column(c) => datafusion::common::tree_node::Transformed::yes(Expr::Column(
                datafusion::common::Column::new_unqualified(c.name),
            )),
            other => datafusion::common::tree_node::Transformed::no(other),
        })
    })
    .map(|t| t.data)
    .map_err(|e| VeilError::internal("rewriting a predicate", e))
}

/// The aggregate functions a differentially private query may use.
const ANSWERED: [&str; 3] = ["COUNT", "SUM", "AVG"];

fn measure(e: Expr, guard: &Arc<DpGuardTable>) -> Result<Measure> {
    let policy = &guard.rule().policy;
    let Expr::AggregateFunction(AggregateFunction { func, params }) = &e else {
        return Err(refusal(
            Refusal::Function,
            guard,
            &format!("only COUNT, SUM and AVG are answered (got {e})"),
        ));
    };
    let name = func.name().to_ascii_lowercase();
    if params.filter.is_some() || !params.order_by.is_empty() {
        return Err(refusal(
            Refusal::Function,
            guard,
            "aggregates take no FILTER or ORDER BY clause: put conditions in WHERE",
        ));
    }
    let column = match params.args.as_slice() {
        [Expr::Column(c)] => Some(c.name.clone()),
        [Expr::Literal(v, _)] if !v.is_null() => None,
        _ => {
            return Err(refusal(
                Refusal::Function,
                guard,
                &format!("aggregates take one column, not an expression (got {e})"),
            ));
        }
    };
    match (name.as_str(), column, params.distinct) {
        ("count", None, false) => Ok(Measure::CountRows),
        ("count", Some(c), false) => Ok(Measure::Count(c)),
        ("count", Some(c), true) if c == policy.unit => Ok(Measure::CountUnits),
        ("count", _, true) => Err(refusal(
            Refusal::Column,
            guard,
            &format!(
                "COUNT(DISTINCT ...) counts the privacy unit only (COUNT(DISTINCT {}))",
                policy.unit
            ),
        )),
        ("sum" | "avg", Some(c), false) => {
            if !policy.columns.contains_key(&c) {
                return Err(refusal(
                    Refusal::Column,
                    guard,
                    &format!(
                        "{}({c}): the policy gives '{c}' no clamping bounds, so it can't be summed or averaged",
                        name.to_ascii_uppercase()
                    ),
                ));
            }
            Ok(if name == "sum" {
                Measure::Sum(c)
            } else {
                Measure::Avg(c)
            })
        }
        ("sum" | "avg", _, _) => Err(refusal(
            Refusal::Function,
            guard,
            &format!(
                "{}(DISTINCT ...) and {0} of a constant are not answered",
                name.to_ascii_uppercase()
            ),
        )),
        _ => Err(refusal(
            Refusal::Function,
            guard,
            &format!(
                "{} is not answered: only COUNT, SUM and AVG (MIN, MAX and percentiles would reveal single values)",
                name.to_ascii_uppercase()
            ),
        )),
    }
}

/// Classes of values comparisons may mix without a cast of a column that
/// could fail on some row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Number,
    Text,
    Time,
    Bool,
    /// A NULL literal: compares with anything.
    Null,
}

fn class_of(dt: &DataType) -> Option<Class> {
    Some(match dt {
        DataType::Null => Class::Null,
        DataType::Boolean => Class::Bool,
        t if t.is_numeric() => Class::Number,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Class::Text,
        DataType::Date32
        | DataType::Date64
        | DataType::Timestamp(..)
        | DataType::Time32(_)
        | DataType::Time64(_) => Class::Time,
        DataType::Dictionary(_, v) => return class_of(v),
        _ => return None,
    })
}

/// Functions a `WHERE` may call: none of them fails on any row.
const TOTAL_FUNCTIONS: [&str; 9] = [
    "lower",
    "upper",
    "btrim",
    "ltrim",
    "rtrim",
    "coalesce",
    "starts_with",
    "ends_with",
    "date_part",
];

/// Is `e` a predicate that can't fail on any row (and so can't signal one
/// by failing)? Returns its class.
fn total(e: &Expr, guard: &Arc<DpGuardTable>, schema: &Schema) -> Result<Class> {
    let refuse = |what: String| {
        Err(refusal(
            Refusal::Function,
            guard,
            &format!(
                "WHERE takes comparisons, AND/OR/NOT, IS [NOT] NULL, BETWEEN, IN lists, LIKE and the functions {} over columns and constants; {what} could fail on some rows, and whether it failed would reveal them",
                TOTAL_FUNCTIONS.join(", ")
            ),
        ))
    };
    let same = |a: Class, b: Class, what: &str| -> Result<()> {
        match (a, b) {
            (Class::Null, _) | (_, Class::Null) => Ok(()),
            (x, y) if x == y => Ok(()),
            _ => refuse(format!(
                "{what} compares {a:?} with {b:?}, which casts a column"
            ))
            .map(|_: Class| ()),
        }
    };
    match e {
        Expr::Column(c) => match schema.field_with_name(&c.name) {
            Ok(f) => match class_of(f.data_type()) {
                Some(k) => Ok(k),
                None => refuse(format!("column '{}' of type {}", c.name, f.data_type())),
            },
            Err(_) => Err(VeilError::InvalidArgument(format!(
                "unknown column '{}'",
                c.name
            ))),
        },
        Expr::Literal(v, _) => match class_of(&v.data_type()) {
            Some(k) => Ok(k),
            None => refuse(format!("a constant of type {}", v.data_type())),
        },
        // Bound when the query runs (a prepared statement's parameters);
        // checked again then, as constants.
        Expr::Placeholder(_) => Ok(Class::Null),
        // A constant's sign or type: decided by the query alone.
        Expr::Negative(x) if matches!(**x, Expr::Literal(..)) => total(x, guard, schema),
        Expr::Cast(c) if matches!(*c.expr, Expr::Literal(..)) => {
            class_of(c.field.data_type()).map_or_else(|| refuse("a cast".into()), Ok)
        }
        Expr::TryCast(c) => {
            total(&c.expr, guard, schema)?;
            class_of(c.field.data_type()).map_or_else(|| refuse("a cast".into()), Ok)
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (l, r) = (total(left, guard, schema)?, total(right, guard, schema)?);
            match op {
                Operator::And | Operator::Or => {
                    same(l, Class::Bool, "AND/OR")?;
                    same(r, Class::Bool, "AND/OR")?;
                    Ok(Class::Bool)
                }
                Operator::Eq
                | Operator::NotEq
                | Operator::Lt
                | Operator::LtEq
                | Operator::Gt
                | Operator::GtEq
                | Operator::IsDistinctFrom
                | Operator::IsNotDistinctFrom => {
                    time_or_same(l, r, left, right, &same)?;
                    Ok(Class::Bool)
                }
                other => refuse(format!("the operator {other}")),
            }
        }
        Expr::Not(x) => {
            same(total(x, guard, schema)?, Class::Bool, "NOT")?;
            Ok(Class::Bool)
        }
        Expr::IsNull(x) | Expr::IsNotNull(x) => {
            total(x, guard, schema)?;
            Ok(Class::Bool)
        }
        Expr::IsTrue(x)
        | Expr::IsFalse(x)
        | Expr::IsUnknown(x)
        | Expr::IsNotTrue(x)
        | Expr::IsNotFalse(x)
        | Expr::IsNotUnknown(x) => {
            same(total(x, guard, schema)?, Class::Bool, "IS TRUE/FALSE")?;
            Ok(Class::Bool)
        }
        Expr::Between(b) => {
            let x = total(&b.expr, guard, schema)?;
            for bound in [&b.low, &b.high] {
                let k = total(bound, guard, schema)?;
                time_or_same(x, k, &b.expr, bound, &same)?;
            }
            Ok(Class::Bool)
        }
        Expr::InList(l) => {
            let x = total(&l.expr, guard, schema)?;
            for item in &l.list {
                if !matches!(item, Expr::Literal(..)) {
                    return refuse("an IN list of expressions".into());
                }
                let k = total(item, guard, schema)?;
                time_or_same(x, k, &l.expr, item, &same)?;
            }
            Ok(Class::Bool)
        }
        Expr::Like(l) => {
            same(total(&l.expr, guard, schema)?, Class::Text, "LIKE")?;
            if !matches!(*l.pattern, Expr::Literal(..)) {
                return refuse("LIKE with a pattern that isn't a constant".into());
            }
            Ok(Class::Bool)
        }
        Expr::ScalarFunction(f) => {
            let name = f.func.name().to_ascii_lowercase();
            if !TOTAL_FUNCTIONS.contains(&name.as_str()) {
                return refuse(format!("the function {name}"));
            }
            let mut classes = Vec::new();
            for a in &f.args {
                classes.push(total(a, guard, schema)?);
            }
            Ok(match name.as_str() {
                "starts_with" | "ends_with" => Class::Bool,
                "date_part" => {
                    if !matches!(f.args.first(), Some(Expr::Literal(..))) {
                        return refuse("date_part with a part that isn't a constant".into());
                    }
                    Class::Number
                }
                "coalesce" => {
                    let first = classes.first().copied().unwrap_or(Class::Null);
                    for k in &classes {
                        same(first, *k, "coalesce")?;
                    }
                    first
                }
                _ => Class::Text,
            })
        }
        other => refuse(other.variant_name().to_string()),
    }
}

/// Parts `date_part` may take (any other fails when it runs).
const DATE_PARTS: [&str; 10] = [
    "year", "quarter", "month", "week", "day", "dow", "doy", "hour", "minute", "second",
];

/// Longest `LIKE` pattern: a longer one can exceed the matcher's size
/// limit, and fail only when some row reaches it.
const MAX_LIKE_PATTERN: usize = 256;

/// Can a cast from `from` to `to` fail on some value? Only these can't:
/// the same type, integers to wider integers or to floats, floats to
/// wider floats, anything to text, text to other text, a dictionary to
/// its values.
fn cast_cannot_fail(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    let width = |t: &DataType| match t {
        Int8 | UInt8 => 1,
        Int16 | UInt16 => 2,
        Int32 | UInt32 => 4,
        Int64 | UInt64 => 8,
        _ => 0,
    };
    let text = |t: &DataType| matches!(t, Utf8 | LargeUtf8 | Utf8View);
    match (from, to) {
        (a, b) if a == b => true,
        (Null, _) => true,
        (Dictionary(_, v), t) => cast_cannot_fail(v, t),
        (a, b) if a.is_signed_integer() && b.is_signed_integer() => width(a) <= width(b),
        (a, b) if a.is_unsigned_integer() && b.is_unsigned_integer() => width(a) <= width(b),
        (a, b) if a.is_unsigned_integer() && b.is_signed_integer() => width(a) < width(b),
        (a, Float32 | Float64) if a.is_integer() => true,
        (Float16, Float32 | Float64) | (Float32, Float64) => true,
        (a, b) if text(b) => a.is_primitive() || text(a) || matches!(a, Boolean),
        _ => false,
    }
}

/// The `WHERE` as DataFusion will run it: type coercion adds casts the
/// written query doesn't show (text compared with a time, a float with a
/// decimal constant). Every cast of a column must be one that can't fail,
/// every cast of a constant must succeed now, `LIKE` patterns stay small
/// and `date_part` takes a known part of a time: otherwise whether the
/// query failed would tell whether some row reached the failing piece (an
/// `AND` evaluates its right side only for rows its left side keeps).
fn infallible(filter: &Expr, guard: &Arc<DpGuardTable>, schema: &Schema) -> Result<()> {
    use datafusion::common::DFSchema;
    use datafusion::logical_expr::ExprSchemable;
    use datafusion::optimizer::analyzer::type_coercion::TypeCoercionRewriter;
    let refuse = |what: String| {
        refusal(
            Refusal::Function,
            guard,
            &format!(
                "in WHERE, {what} could fail on some rows, and whether it failed would reveal them"
            ),
        )
    };
    // A prepared statement's parameters have no value yet: it is checked
    // again, with them as constants, when it runs.
    if filter
        .exists(|e| Ok(matches!(e, Expr::Placeholder(_))))
        .unwrap_or(true)
    {
        return Ok(());
    }
    let df_schema = DFSchema::try_from(schema.clone())
        .map_err(|e| VeilError::internal("a view's schema", e))?;
    let mut rewriter = TypeCoercionRewriter::new(&df_schema);
    let coerced = filter
        .clone()
        .rewrite(&mut rewriter)
        .map_err(|e| {
            VeilError::InvalidArgument(format!("the WHERE clause does not type-check: {e}"))
        })?
        .data;
    let mut bad: Option<VeilError> = None;
    coerced
        .apply(|e| {
            let problem = match e {
                Expr::Cast(c) => match c.expr.as_ref() {
                    Expr::Literal(v, _) => v
                        .cast_to(c.field.data_type())
                        .err()
                        .map(|_| format!("the constant {v} as {}", c.field.data_type())),
                    inner => match inner.get_type(&df_schema) {
                        Ok(from) if cast_cannot_fail(&from, c.field.data_type()) => None,
                        Ok(from) => Some(format!(
                            "converting {from} to {} (implied by comparing or combining values of those types)",
                            c.field.data_type()
                        )),
                        Err(_) => Some("an expression of unknown type".into()),
                    },
                },
                // A TRY_CAST between types Arrow can't convert at all fails
                // when planned.
                Expr::TryCast(c) => match c.expr.get_type(&df_schema) {
                    Ok(from)
                        if datafusion::arrow::compute::can_cast_types(
                            &from,
                            c.field.data_type(),
                        ) =>
                    {
                        None
                    }
                    _ => Some(format!("TRY_CAST to {}", c.field.data_type())),
                },
                Expr::Negative(x) => match x.as_ref() {
                    Expr::Literal(v, _) if v.arithmetic_negate().is_ok() => None,
                    _ => Some("a negation".into()),
                },
                Expr::Like(l) => match l.pattern.as_ref() {
                    Expr::Literal(v, _) => match v.try_as_str().flatten() {
                        Some(p) if p.chars().count() <= MAX_LIKE_PATTERN && !p.contains('\\') && l.escape_char.is_none() => None,
                        _ => Some(format!(
                            "a LIKE pattern longer than {MAX_LIKE_PATTERN} characters, with a backslash or an ESCAPE clause"
                        )),
                    },
                    _ => Some("LIKE with a pattern that isn't a constant".into()),
                },
                Expr::ScalarFunction(f) if f.func.name().eq_ignore_ascii_case("date_part") => {
                    let part = match f.args.first() {
                        Some(Expr::Literal(v, _)) => v.try_as_str().flatten().map(str::to_ascii_lowercase),
                        _ => None,
                    };
                    let time = f.args.get(1).and_then(|a| a.get_type(&df_schema).ok()).is_some_and(|t| {
                        matches!(t, DataType::Date32 | DataType::Date64 | DataType::Timestamp(..))
                    });
                    match part {
                        Some(p) if DATE_PARTS.contains(&p.as_str()) && time => None,
                        _ => Some(format!(
                            "date_part takes one of {} of a date or timestamp column",
                            DATE_PARTS.join(", ")
                        )),
                    }
                }
                _ => None,
            };
            if let Some(what) = problem {
                bad.get_or_insert_with(|| refuse(what));
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .map_err(|e| VeilError::internal("walking a predicate", e))?;
    match bad {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Comparable without casting a column: the same class, or a time column
/// against a text constant (the constant is cast, decided by the query
/// alone).
fn time_or_same(
    l: Class,
    r: Class,
    left: &Expr,
    right: &Expr,
    same: &dyn Fn(Class, Class, &str) -> Result<()>,
) -> Result<()> {
    let constant = |e: &Expr| matches!(e, Expr::Literal(..));
    match (l, r) {
        (Class::Time, Class::Text) if constant(right) => Ok(()),
        (Class::Text, Class::Time) if constant(left) => Ok(()),
        _ => same(l, r, "a comparison"),
    }
}

/// The aggregate node of an accepted plan.
pub fn aggregate_of(plan: &LogicalPlan) -> Option<&Aggregate> {
    let mut node = plan;
    loop {
        match node {
            LogicalPlan::Aggregate(a) => return Some(a),
            other => node = other.inputs().first()?,
        }
    }
}

/// `plan` with its aggregate (and everything below it) replaced by the
/// job's answer (a [`crate::policy::guard::PolicyAppliedTable`]), with the aggregate's qualified
/// names and types: what the user wrote above it runs on the noisy values.
pub fn answer_in_place(
    plan: &LogicalPlan,
    aggregate: &Aggregate,
    job: Arc<super::exec::DpJob>,
) -> Result<LogicalPlan> {
    use datafusion::common::tree_node::Transformed;
    use datafusion::logical_expr::{LogicalPlanBuilder, col};
    const ANSWER: &str = "veil_dp_answer";
    let table = Arc::new(super::exec::DpAnswerTable::new(job));
    let fail = |e| VeilError::internal("placing a DP answer", e);
    let names: Vec<Expr> = aggregate
        .schema
        .iter()
        .enumerate()
        .map(|(i, (qualifier, field))| {
            col(datafusion::common::Column::new(
                Some(ANSWER),
                format!("c{i}"),
            ))
            .alias_qualified(qualifier.cloned(), field.name())
        })
        .collect();
    let table = Arc::new(crate::policy::guard::PolicyAppliedTable(table));
    let answer = LogicalPlanBuilder::scan(
        ANSWER,
        datafusion::datasource::provider_as_source(table),
        None,
    )
    .and_then(|b| b.project(names))
    .and_then(|b| b.build())
    .map_err(fail)?;
    plan.clone()
        .transform_up(|node| match node {
            LogicalPlan::Aggregate(_) => Ok(Transformed::yes(answer.clone())),
            other => other.recompute_schema().map(Transformed::yes),
        })
        .map(|t| t.data)
        .map_err(fail)
}
