//! Bounds on what one expression may allocate, at plan time (constant
//! folding) and at execution.
//!
//! DataFusion allocates a function's output outside the query's memory
//! pool, so without bounds one query doubles a string until an allocation
//! fails and the process aborts (every user's stream lost). Three rules:
//!
//! * **Functions** ([`BoundedFunction`], around every scalar function of the
//!   session): a function whose output size an argument chooses (`repeat`,
//!   `lpad`, `concat`, `replace`, `regexp_replace`, ...) has its output
//!   estimated from its arguments *before* it runs; every function's output
//!   is measured after it runs. Either past [`MAX_FUNCTION_OUTPUT_BYTES`]
//!   per batch is `ResourcesExhausted`, unless the output is no larger than
//!   the function's largest argument (a function may keep a large batch
//!   large, never grow one past the bound).
//! * **`||`** is planned as [`StrictConcat`], a bounded function with the
//!   operator's semantics (null if either side is null), rather than
//!   DataFusion's unbounded binary kernel.
//! * **Constants** ([`BoundedProjection`]): a projected constant is
//!   repeated once per row; `SELECT '<256 KiB>' FROM t` would build
//!   gigabytes per batch. A projection's expression may not turn a constant
//!   into more than the bound either.
//!
//! Each bounded function also checks whether the work it runs for was
//! stopped ([`super::stop`]): a plan past its deadline, a query whose
//! reader is gone or out of time. Constant folding and a query's operators
//! end at the next call instead of running on.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::kernels::concat_elements::concat_elements_dyn;
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ExprSchemable, LogicalPlan, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::expressions::Column;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::sql::sqlparser::ast::BinaryOperator;

use crate::error::VeilError;

/// Largest output one function call (one batch) may grow to.
pub const MAX_FUNCTION_OUTPUT_BYTES: usize = 64 * 1024 * 1024;

/// Most steps one call of a function whose work grows faster than its
/// input (`levenshtein`: one per pair of characters) may take over a
/// batch: about a second of one core. A stopped query ends at the next
/// call, so this also bounds how long it runs on after its reader left.
pub const MAX_FUNCTION_STEPS: usize = 1 << 28;

/// Veil's own words travel as a `VeilError` inside DataFusion's error, so
/// the error module answers with them (`error::query::from_datafusion`).
pub(crate) fn too_large(what: &str, bytes: usize) -> DataFusionError {
    // The size comes from the data: the caller reads it, the audit and the
    // log only Veil's words (it is the detail).
    DataFusionError::External(Box::new(VeilError::ResourceExhausted(VeilError::detailed(
        format!(
            "{what} would produce more than Veil's limit of {} MiB in one batch; ask for shorter values or fewer rows",
            MAX_FUNCTION_OUTPUT_BYTES / (1024 * 1024)
        ),
        format!("about {} MiB", bytes / (1024 * 1024)),
    ))))
}

/// Bytes a scalar holds outside its own struct.
fn scalar_bytes(s: &ScalarValue) -> usize {
    s.size().saturating_sub(std::mem::size_of::<ScalarValue>())
}

fn value_bytes(v: &ColumnarValue, rows: usize) -> usize {
    match v {
        ColumnarValue::Array(a) => a.get_array_memory_size(),
        ColumnarValue::Scalar(s) => scalar_bytes(s).saturating_mul(rows.max(1)),
    }
}

/// Each row's text length of an argument (a scalar repeats), or `None`
/// when it has no text form. Read from the offsets where it can be.
fn text_lengths(v: &ColumnarValue, rows: usize) -> Option<Vec<usize>> {
    fn lengths<'a>(values: impl Iterator<Item = Option<&'a str>>) -> Vec<usize> {
        values.map(|v| v.map_or(0, str::len)).collect()
    }
    match v {
        ColumnarValue::Scalar(s) => {
            let n = if s.is_null() { 0 } else { s.to_string().len() };
            Some(vec![n; rows.max(1)])
        }
        ColumnarValue::Array(a) => Some(match a.data_type() {
            DataType::Utf8 => lengths(a.as_string::<i32>().iter()),
            DataType::LargeUtf8 => lengths(a.as_string::<i64>().iter()),
            DataType::Utf8View => lengths(a.as_string_view().iter()),
            _ => {
                let a = cast(a, &DataType::LargeUtf8).ok()?;
                lengths(a.as_string::<i64>().iter())
            }
        }),
    }
}

/// Each row's integer value of an argument (nulls and non-numbers as 0).
fn counts(v: &ColumnarValue, rows: usize) -> Option<Vec<usize>> {
    match v {
        ColumnarValue::Scalar(s) => {
            let n = match s.cast_to(&DataType::Int64) {
                Ok(ScalarValue::Int64(Some(n))) => n.max(0) as usize,
                _ => 0,
            };
            Some(vec![n; rows.max(1)])
        }
        ColumnarValue::Array(a) => {
            let a = cast(a, &DataType::Int64).ok()?;
            Some(
                a.as_primitive::<Int64Type>()
                    .iter()
                    .map(|v| v.unwrap_or(0).max(0) as usize)
                    .collect(),
            )
        }
    }
}

fn sum(v: impl IntoIterator<Item = usize>) -> usize {
    v.into_iter().fold(0usize, usize::saturating_add)
}

fn max_len(v: &ColumnarValue, rows: usize) -> usize {
    text_lengths(v, rows)
        .and_then(|l| l.into_iter().max())
        .unwrap_or(usize::MAX)
}

/// The most bytes `name` can produce from `args`, for the functions whose
/// output an argument can make much larger than their input; `None` for the
/// others (measured after they run).
fn estimate(name: &str, args: &[ColumnarValue], rows: usize) -> Option<usize> {
    let text = |i: usize| args.get(i).and_then(|a| text_lengths(a, rows));
    // An argument's bytes: its buffers (values and offsets), a scalar once
    // per row; never less than its text.
    let total = |i: usize| args.get(i).map_or(0, |a| value_bytes(a, rows));
    let unknown = usize::MAX;
    Some(match name {
        // Output is the text times the count.
        "repeat" => {
            let (Some(t), Some(c)) = (text(0), args.get(1).and_then(|a| counts(a, rows))) else {
                return Some(unknown);
            };
            sum(t.iter().zip(c.iter()).map(|(t, c)| t.saturating_mul(*c)))
        }
        // Output is the count in characters, up to four bytes each.
        "lpad" | "rpad" => {
            let Some(c) = args.get(1).and_then(|a| counts(a, rows)) else {
                return Some(unknown);
            };
            sum(c.iter().map(|c| c.saturating_mul(4)))
        }
        "concat" | "concat_ws" => {
            let sep = if name == "concat_ws" {
                total(0).saturating_mul(args.len())
            } else {
                0
            };
            sum((0..args.len()).map(total)).saturating_add(sep)
        }
        // Every match (one per character when `from` is empty) can become
        // `to`: at most (text + rows) matches of the longest replacement.
        "replace" => {
            let s = total(0);
            let to = args.get(2).map_or(unknown, |a| max_len(a, rows));
            s.saturating_add(s.saturating_add(rows).saturating_mul(to))
        }
        // As replace, and each `$n` in the replacement can copy up to the
        // whole text once more.
        "regexp_replace" => {
            let s = total(0);
            let to = args.get(2).map_or(unknown, |a| max_len(a, rows));
            let refs = to / 2;
            s.saturating_add(s.saturating_add(rows).saturating_mul(to))
                .saturating_add(refs.saturating_mul(s))
        }
        "overlay" => total(0).saturating_add(total(1)),
        "translate" => total(0).saturating_mul(4),
        // Lists built from their arguments.
        "make_array" | "array_concat" | "array_append" | "array_prepend" | "array_union"
        | "arrays_zip" | "map" => sum((0..args.len()).map(total)),
        // An element repeated, or a list grown, `count` times per row.
        "array_repeat" | "array_resize" => {
            let Some(c) = args.get(1).and_then(|a| counts(a, rows)) else {
                return Some(unknown);
            };
            let element = if name == "array_repeat" {
                total(0) / rows.max(1)
            } else {
                args.get(2)
                    .map_or(0, |a| value_bytes(a, rows) / rows.max(1))
            };
            sum(c
                .iter()
                .map(|c| c.saturating_mul(element.saturating_add(16))))
        }
        // One element per step between two integers; other kinds of range
        // (dates, timestamps) are not bounded, so not served.
        "range" | "generate_series" => series_len(args, rows)?.saturating_mul(16),
        // Each character can become a list element (an offset and its text).
        "string_to_array" => total(0).saturating_mul(5),
        "array_to_string" => {
            total(0).saturating_mul(1 + args.get(1).map_or(0, |a| max_len(a, rows)))
        }
        _ => return None,
    })
}

/// Elements of `range`/`generate_series` over integers (one, two or three
/// arguments), summed over rows; `usize::MAX` when they aren't integers.
fn series_len(args: &[ColumnarValue], rows: usize) -> Option<usize> {
    let ints: Vec<Vec<i64>> = args
        .iter()
        .map(|a| match a {
            ColumnarValue::Scalar(s) => match s.cast_to(&DataType::Int64) {
                Ok(ScalarValue::Int64(Some(n))) if s.data_type().is_integer() => {
                    Some(vec![n; rows.max(1)])
                }
                _ => None,
            },
            ColumnarValue::Array(a) if a.data_type().is_integer() => {
                cast(a, &DataType::Int64).ok().map(|a| {
                    a.as_primitive::<Int64Type>()
                        .iter()
                        .map(|v| v.unwrap_or(0))
                        .collect()
                })
            }
            ColumnarValue::Array(_) => None,
        })
        .collect::<Option<_>>()
        .unwrap_or_default();
    if ints.len() != args.len() || ints.is_empty() {
        return Some(usize::MAX);
    }
    let n = ints[0].len();
    Some(sum((0..n).map(|i| {
        let (start, stop, step) = match ints.len() {
            1 => (0, ints[0][i], 1),
            2 => (ints[0][i], ints[1][i], 1),
            _ => (ints[0][i], ints[1][i], ints[2][i]),
        };
        if step == 0 {
            return 0;
        }
        let span = (i128::from(stop) - i128::from(start)) / i128::from(step);
        usize::try_from(span.max(0))
            .unwrap_or(usize::MAX)
            .saturating_add(1)
    })))
}

/// The steps `name` takes over `args`, for the functions whose work grows
/// faster than their input; `None` for the others (linear).
fn steps(name: &str, args: &[ColumnarValue], rows: usize) -> Option<usize> {
    match name {
        "levenshtein" => {
            let (Some(a), Some(b)) = (
                args.first().and_then(|a| text_lengths(a, rows)),
                args.get(1).and_then(|b| text_lengths(b, rows)),
            ) else {
                return Some(usize::MAX);
            };
            Some(sum(a
                .iter()
                .zip(b.iter())
                .map(|(a, b)| a.saturating_mul(*b))))
        }
        _ => None,
    }
}

/// Functions left as they are: already bounded, or never growing and
/// recognised by type in DataFusion's planning (struct field access, which
/// parquet reads push down; the file name and row index columns).
fn needs_bound(f: &ScalarUDF) -> bool {
    !f.inner().is::<BoundedFunction>()
        && !f.inner().is::<StrictConcat>()
        && !matches!(f.name(), "get_field" | "input_file_name" | "file_row_index")
        && f.as_async().is_none()
}

/// A session function with bounded output (see the module docs).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct BoundedFunction {
    inner: Arc<ScalarUDF>,
}

impl BoundedFunction {
    /// Replace every scalar function of `state` with its bounded version,
    /// and plan `||` as [`StrictConcat`].
    pub fn install(state: &mut datafusion::execution::SessionState) -> crate::error::Result<()> {
        let functions: Vec<Arc<ScalarUDF>> = state.scalar_functions().values().cloned().collect();
        let mut seen = std::collections::HashSet::new();
        for inner in functions {
            if !seen.insert(inner.name().to_string()) || !needs_bound(&inner) {
                continue;
            }
            state
                .register_udf(Arc::new(Self::wrap(inner)))
                .map_err(|e| VeilError::internal("registering a bounded function", e))?;
        }
        state
            .register_expr_planner(Arc::new(StrictConcatPlanner))
            .map_err(|e| VeilError::internal("registering the || planner", e))?;
        Ok(())
    }

    fn wrap(inner: Arc<ScalarUDF>) -> ScalarUDF {
        ScalarUDF::new_from_impl(Self { inner })
    }

    fn check(&self, args: &[ColumnarValue], rows: usize) -> Result<usize> {
        super::stop::check()?;
        // The largest argument, not their sum: `concat(s, s)` doubles `s`.
        let input = args.iter().map(|a| value_bytes(a, rows)).max().unwrap_or(0);
        if let Some(bytes) = estimate(self.inner.name(), args, rows)
            && bytes > MAX_FUNCTION_OUTPUT_BYTES
            && bytes > input
        {
            return Err(too_large(&format!("{}()", self.inner.name()), bytes));
        }
        if let Some(n) = steps(self.inner.name(), args, rows)
            && n > MAX_FUNCTION_STEPS
        {
            return Err(DataFusionError::External(Box::new(
                VeilError::ResourceExhausted(VeilError::detailed(
                    format!(
                        "{}() would take more than Veil's limit of {} million steps (one per pair of characters) in one batch; compare shorter values",
                        self.inner.name(),
                        MAX_FUNCTION_STEPS / 1_000_000
                    ),
                    format!("about {} million", n / 1_000_000),
                )),
            )));
        }
        Ok(input)
    }
}

/// `||` on text: null if either side is null, else the two texts joined.
fn strict_concat(args: &[ColumnarValue], rows: usize, target: &DataType) -> Result<ColumnarValue> {
    let [l, r] = args else {
        return Err(DataFusionError::Internal("|| takes two arguments".into()));
    };
    if let (ColumnarValue::Scalar(a), ColumnarValue::Scalar(b)) = (l, r) {
        let a = a.cast_to(target)?;
        let b = b.cast_to(target)?;
        if a.is_null() || b.is_null() {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from(target)?));
        }
        let joined = format!("{a}{b}");
        return Ok(ColumnarValue::Scalar(match target {
            DataType::LargeUtf8 => ScalarValue::LargeUtf8(Some(joined)),
            _ => ScalarValue::Utf8(Some(joined)),
        }));
    }
    let l: ArrayRef = cast(&l.clone().into_array(rows)?, target)?;
    let r: ArrayRef = cast(&r.clone().into_array(rows)?, target)?;
    Ok(ColumnarValue::Array(concat_elements_dyn(&l, &r)?))
}

impl ScalarUDFImpl for BoundedFunction {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }
    fn display_name(&self, args: &[Expr]) -> Result<String> {
        #[allow(deprecated)]
        self.inner.inner().display_name(args)
    }
    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.inner().schema_name(args)
    }
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.inner().return_type(arg_types)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }
    fn is_nullable(&self, args: &[Expr], schema: &dyn datafusion::common::ExprSchema) -> bool {
        #[allow(deprecated)]
        self.inner.inner().is_nullable(args, schema)
    }
    fn is_strict(&self) -> bool {
        self.inner.inner().is_strict()
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let input = self.check(&args.args, rows)?;
        let out = self.inner.invoke_with_args(args)?;
        // Measured too: a function not estimated above may still grow.
        if let ColumnarValue::Array(a) = &out {
            let bytes = a.get_array_memory_size();
            if bytes > MAX_FUNCTION_OUTPUT_BYTES && bytes > input {
                return Err(too_large(&format!("{}()", self.inner.name()), bytes));
            }
        } else if let ColumnarValue::Scalar(s) = &out {
            let bytes = scalar_bytes(s);
            if bytes > MAX_FUNCTION_OUTPUT_BYTES && bytes > input {
                return Err(too_large(&format!("{}()", self.inner.name()), bytes));
            }
        }
        Ok(out)
    }
    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        self.inner
            .inner()
            .with_updated_config(config)
            .map(|f| Self::wrap(Arc::new(f)))
    }
    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        super::stop::check()?;
        match self.inner.inner().simplify(args, info)? {
            // A simplification can fold literals itself (concat of
            // constants), and rebuilds calls with DataFusion's own,
            // unbounded functions: bound those again.
            ExprSimplifyResult::Simplified(e) => {
                check_literals(&e)?;
                Ok(ExprSimplifyResult::Simplified(rebind(e)?))
            }
            original => Ok(original),
        }
    }
    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }
    fn conditional_arguments<'a>(
        &self,
        args: &'a [Expr],
    ) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.inner.inner().conditional_arguments(args)
    }
    fn evaluate_bounds(
        &self,
        input: &[&datafusion::logical_expr::interval_arithmetic::Interval],
    ) -> Result<datafusion::logical_expr::interval_arithmetic::Interval> {
        self.inner.evaluate_bounds(input)
    }
    fn propagate_constraints(
        &self,
        interval: &datafusion::logical_expr::interval_arithmetic::Interval,
        inputs: &[&datafusion::logical_expr::interval_arithmetic::Interval],
    ) -> Result<Option<Vec<datafusion::logical_expr::interval_arithmetic::Interval>>> {
        self.inner.propagate_constraints(interval, inputs)
    }
    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }
    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }
    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// `e` with every function call bound.
fn rebind(e: Expr) -> Result<Expr> {
    e.transform_up(|e| match e {
        Expr::ScalarFunction(mut f) if needs_bound(&f.func) => {
            f.func = Arc::new(BoundedFunction::wrap(Arc::clone(&f.func)));
            Ok(Transformed::yes(Expr::ScalarFunction(f)))
        }
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

/// Refuse a literal past the bound (folded from constants).
fn check_literals(e: &Expr) -> Result<()> {
    e.apply(|e| {
        if let Expr::Literal(v, _) = e {
            let bytes = scalar_bytes(v);
            if bytes > MAX_FUNCTION_OUTPUT_BYTES {
                return Err(too_large("a constant", bytes));
            }
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    })
    .map(|_| ())
}

/// Most bytes of constants one batch may repeat on every row, over a
/// whole query.
pub const MAX_REPEATED_CONSTANT_BYTES: usize = 256 * 1024 * 1024;

/// Refuse a plan whose constants, repeated on every row of a batch, would
/// pass [`MAX_REPEATED_CONSTANT_BYTES`]: a select list's constants, a
/// `CASE`'s results (its largest: one per row), the arguments of
/// `coalesce`-like functions, of aggregates and of window functions, and
/// the largest row of a `VALUES` list, which DataFusion writes out once
/// per row (outside any memory pool) wherever they stand. Fixed-width
/// constants count at their width. Constants compared against (`=`,
/// `LIKE`, `IN`), `nullif`'s, or passed to a bounded function are not
/// repeated and not counted.
pub fn check_repeated_constants(plan: &LogicalPlan, batch_size: usize) -> Result<(), VeilError> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut bytes = 0usize;
    plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::Projection(p) => {
                for e in &p.expr {
                    bytes = bytes.saturating_add(literal_bytes(e));
                }
            }
            LogicalPlan::Values(v) => {
                let widest = v
                    .values
                    .iter()
                    .map(|row| row.iter().map(literal_bytes).fold(0, usize::saturating_add))
                    .max()
                    .unwrap_or(0);
                bytes = bytes.saturating_add(widest);
            }
            _ => {}
        }
        node.apply_expressions(|e| {
            e.apply(|e| {
                bytes = bytes.saturating_add(repeated_in(e));
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })
    .map_err(|e| VeilError::internal("checking a plan's constants", e))?;
    let per_batch = bytes.saturating_mul(batch_size.max(1));
    if per_batch > MAX_REPEATED_CONSTANT_BYTES {
        return Err(VeilError::ResourceExhausted(format!(
            "the query's constants repeated on every row (its select list, CASE results, coalesce-like, aggregate and window arguments, VALUES rows: {bytes} bytes) come to about {} MiB per batch of {batch_size} rows, above Veil's limit of {} MiB; use shorter or fewer constants",
            per_batch / (1024 * 1024),
            MAX_REPEATED_CONSTANT_BYTES / (1024 * 1024)
        )));
    }
    Ok(())
}

/// Bytes one row of a constant takes once written out: a variable-size
/// value's bytes, a fixed-width one's width; 0 for anything but a constant.
fn literal_bytes(e: &Expr) -> usize {
    match e.clone().unalias() {
        Expr::Literal(v, _) => {
            let width = v.data_type().primitive_width().unwrap_or(0);
            scalar_bytes(&v).max(width)
        }
        _ => 0,
    }
}

/// Bytes of the constants `e` itself writes out once per row.
fn repeated_in(e: &Expr) -> usize {
    let sum = |args: &[Expr]| {
        args.iter()
            .map(literal_bytes)
            .fold(0, usize::saturating_add)
    };
    match e {
        Expr::Case(c) => c
            .when_then_expr
            .iter()
            .map(|(_, then)| literal_bytes(then))
            .chain(c.else_expr.as_deref().map(literal_bytes))
            .max()
            .unwrap_or(0),
        Expr::ScalarFunction(f)
            if matches!(
                f.func.name(),
                "coalesce" | "nvl" | "ifnull" | "nvl2" | "greatest" | "least"
            ) =>
        {
            sum(&f.args)
        }
        Expr::AggregateFunction(a) => sum(&a.params.args),
        Expr::WindowFunction(w) => sum(&w.params.args),
        _ => 0,
    }
}

/// `||` between texts (or a text and a number, as DataFusion coerces it).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct StrictConcat {
    signature: Signature,
}

impl StrictConcat {
    fn new() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }

    fn target(types: &[DataType]) -> DataType {
        if types.iter().any(|t| t == &DataType::LargeUtf8) {
            DataType::LargeUtf8
        } else {
            DataType::Utf8
        }
    }
}

impl ScalarUDFImpl for StrictConcat {
    fn name(&self) -> &str {
        "veil_string_concat"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    /// Named as the operator, so column names don't change.
    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        let [l, r] = args else {
            return Err(DataFusionError::Internal("|| takes two arguments".into()));
        };
        Ok(format!("{} || {}", l.schema_name(), r.schema_name()))
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(Self::target(arg_types))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        super::stop::check()?;
        let rows = args.number_rows;
        let bytes = sum(args.args.iter().map(|a| value_bytes(a, rows)));
        if bytes > MAX_FUNCTION_OUTPUT_BYTES {
            return Err(too_large("||", bytes));
        }
        strict_concat(&args.args, rows, args.return_field.data_type())
    }
}

/// Plans `a || b` on texts as [`StrictConcat`].
#[derive(Debug)]
struct StrictConcatPlanner;

/// Text, or a dictionary of text (hive partition columns are).
fn is_text(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_text(v),
        _ => false,
    }
}

/// What `||` turns into text beside a text.
fn is_text_like(t: &DataType) -> bool {
    is_text(t)
        || t.is_null()
        || t.is_numeric()
        || matches!(t, DataType::Boolean | DataType::Date32 | DataType::Date64)
}

impl ExprPlanner for StrictConcatPlanner {
    /// Every `||` Veil serves is bounded: between texts (or a text and a
    /// number, as DataFusion coerces it) it is [`StrictConcat`]; any other
    /// `||` (binary values, whose unbounded kernel would be the only
    /// alternative) is refused.
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        if expr.op != BinaryOperator::StringConcat {
            return Ok(PlannerResult::Original(expr));
        }
        let (l, r) = (expr.left.get_type(schema)?, expr.right.get_type(schema)?);
        if !((is_text(&l) || is_text(&r)) && is_text_like(&l) && is_text_like(&r)) {
            return Err(DataFusionError::Plan(format!(
                "|| joins texts (or a text and a number); cast {l} and {r} to text first"
            )));
        }
        let f = Arc::new(ScalarUDF::new_from_impl(StrictConcat::new()));
        Ok(PlannerResult::Planned(Expr::ScalarFunction(
            datafusion::logical_expr::expr::ScalarFunction::new_udf(f, vec![expr.left, expr.right]),
        )))
    }
}

/// A projected expression whose result may not expand past the bound when
/// a constant is repeated for every row of a batch.
#[derive(Debug, Eq)]
struct BoundedExpr {
    inner: Arc<dyn PhysicalExpr>,
}

impl PartialEq for BoundedExpr {
    fn eq(&self, other: &Self) -> bool {
        self.inner.eq(&other.inner)
    }
}

impl std::hash::Hash for BoundedExpr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
    }
}

impl std::fmt::Display for BoundedExpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl PhysicalExpr for BoundedExpr {
    fn return_field(
        &self,
        input_schema: &datafusion::arrow::datatypes::Schema,
    ) -> Result<FieldRef> {
        self.inner.return_field(input_schema)
    }
    fn evaluate(
        &self,
        batch: &datafusion::arrow::record_batch::RecordBatch,
    ) -> Result<ColumnarValue> {
        let out = self.inner.evaluate(batch)?;
        if let ColumnarValue::Scalar(s) = &out {
            let bytes = scalar_bytes(s).saturating_mul(batch.num_rows());
            if bytes > MAX_FUNCTION_OUTPUT_BYTES {
                return Err(too_large("a constant repeated for every row", bytes));
            }
        }
        Ok(out)
    }
    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.inner]
    }
    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        match children.len() {
            1 => Ok(Arc::new(Self {
                inner: children.remove(0),
            })),
            _ => Err(DataFusionError::Internal(
                "BoundedExpr takes one child".into(),
            )),
        }
    }
    fn fmt_sql(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt_sql(f)
    }
}

fn variable_size(t: &DataType) -> bool {
    !t.is_primitive() && !matches!(t, DataType::Boolean | DataType::Null)
}

/// Wraps every projection's computed, variable-size expressions in
/// [`BoundedExpr`]. Runs last, on the final physical plan.
#[derive(Debug, Default)]
pub struct BoundedProjection;

impl PhysicalOptimizerRule for BoundedProjection {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(p) = node.downcast_ref::<ProjectionExec>() else {
                return Ok(Transformed::no(node));
            };
            let schema = p.input().schema();
            let mut changed = false;
            let mut exprs = Vec::with_capacity(p.expr().len());
            for e in p.expr() {
                let wrap = e.expr.downcast_ref::<Column>().is_none()
                    && e.expr.downcast_ref::<BoundedExpr>().is_none()
                    && e.expr
                        .data_type(&schema)
                        .map(|t| variable_size(&t))
                        .unwrap_or(true);
                changed |= wrap;
                exprs.push(ProjectionExpr {
                    expr: if wrap {
                        Arc::new(BoundedExpr {
                            inner: Arc::clone(&e.expr),
                        })
                    } else {
                        Arc::clone(&e.expr)
                    },
                    alias: e.alias.clone(),
                });
            }
            if !changed {
                return Ok(Transformed::no(node));
            }
            let rebuilt = ProjectionExec::try_new_with_schema_metadata(
                exprs,
                Arc::clone(p.input()),
                &p.schema(),
            )?;
            Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>))
        })
        .map(|t| t.data)
    }
    fn name(&self) -> &str {
        "veil_bounded_projection"
    }
    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf8(s: &str) -> ColumnarValue {
        ColumnarValue::Scalar(ScalarValue::Utf8(Some(s.into())))
    }

    fn int(n: i64) -> ColumnarValue {
        ColumnarValue::Scalar(ScalarValue::Int64(Some(n)))
    }

    #[test]
    fn growth_is_estimated_before_it_happens() {
        let big = 30_000_000;
        assert!(estimate("repeat", &[utf8("ab"), int(big)], 1).unwrap() >= 60_000_000);
        assert!(estimate("lpad", &[utf8("a"), int(big)], 1).unwrap() > MAX_FUNCTION_OUTPUT_BYTES);
        let s = "x".repeat(1000);
        // replace('xxx…', 'x', '<1000 chars>') grows a thousandfold.
        assert!(estimate("replace", &[utf8(&s), utf8("x"), utf8(&s)], 1).unwrap() >= 1_000_000);
        assert!(
            estimate("regexp_replace", &[utf8(&s), utf8(""), utf8("$0$0$0$0")], 1).unwrap() >= 4000
        );
        assert!(estimate("upper", &[utf8("a")], 1).is_none());
        assert!(
            estimate("range", &[int(0), int(1_000_000_000)], 1).unwrap()
                > MAX_FUNCTION_OUTPUT_BYTES
        );
        assert!(estimate("range", &[int(0), int(10)], 1).unwrap() < 1000);
        assert_eq!(
            estimate("range", &[utf8("2020-01-01"), utf8("2030-01-01")], 1),
            Some(usize::MAX)
        );
        assert!(
            estimate("array_repeat", &[utf8("x"), int(100_000_000)], 1).unwrap()
                > MAX_FUNCTION_OUTPUT_BYTES
        );
        assert!(estimate("array_repeat", &[utf8("x"), int(3)], 1).unwrap() < 1000);
    }

    #[test]
    fn strict_concat_keeps_the_operators_nulls() {
        let out = strict_concat(
            &[utf8("a"), ColumnarValue::Scalar(ScalarValue::Utf8(None))],
            1,
            &DataType::Utf8,
        )
        .unwrap();
        assert!(matches!(out, ColumnarValue::Scalar(s) if s.is_null()));
        let out = strict_concat(&[utf8("a"), utf8("b")], 1, &DataType::Utf8).unwrap();
        assert!(matches!(out, ColumnarValue::Scalar(ScalarValue::Utf8(Some(s))) if s == "ab"));
    }
}
