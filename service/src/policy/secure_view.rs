//! Compiling (dataset, effective policy) into a secure view:
//!
//! ```text
//! PolicyBarrier: dataset=…
//!   Projection: id, veil_mask_hash(ssn) AS ssn, …       ← masks
//!     Filter: state IN ('CA') AND ts >= …                ← row rules
//!       TableScan: __veil_source                         ← SourceTable
//! ```
//!
//! The view is served as a `ViewTable`, so the SQL planner type-checks the
//! user's query against the masked schema, and everything the user writes
//! lands above the barrier.

use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::common::{Column, DFSchema, ScalarValue, TableReference};
use datafusion::datasource::{TableProvider, provider_as_source};
use datafusion::logical_expr::{
    Expr, ExprSchemable, LogicalPlan, LogicalPlanBuilder, cast, lit, when,
};
use std::collections::HashMap;
use std::sync::Arc;

use super::barrier::PolicyBarrier;
use super::effective::{ColumnMask, EffectivePolicy, RowRuleKind, dictionary_schema};
use super::masks::kanon::{CountsSlot, KAnonymize, KGroup};
use super::masks::sampling::SampleUdf;
use super::masks::{MaskFunctions, MaskKeys, mask_expr};
use crate::error::{Result, VeilError};
use crate::model::dataset::DatasetRecord;
use crate::secrets::{KeyPurpose, MasterKey, SecretKey};

/// Name of the raw scan inside a view. It is never registered anywhere, so
/// no query can name it.
const SOURCE_ALIAS: &str = "__veil_source";

/// A dataset's policies could not be turned into a plan (a conditional
/// mask whose branches don't share a type, say): the policy can't be
/// enforced, so nothing is served. The log gets the value-free class.
fn unenforceable(e: datafusion::common::DataFusionError) -> VeilError {
    let class = crate::redact::describe(&e);
    tracing::warn!(error = %class, "a dataset's policies could not be planned");
    VeilError::FailedPrecondition(
        "the dataset's policies cannot be applied, so no data is served; ask its owner or a governor to check them (`veil explain` shows what applies)"
            .into(),
    )
}

/// The expression one masked column becomes: its single mask, or, with
/// conditional masks, `CASE WHEN cond IS NOT FALSE THEN mask … ELSE …`
/// (a condition that is unknown for a row masks it).
fn column_mask_expr(
    m: &ColumnMask,
    column: Expr,
    name: &str,
    dt: &DataType,
    functions: MaskFunctions<'_>,
) -> Result<Expr> {
    let out = m.output_type(dt)?;
    let fit = |e: Expr, from: DataType| if from == out { e } else { cast(e, out.clone()) };
    let mut branches = Vec::new();
    let mut fallback = fit(column.clone(), dt.clone());
    for c in &m.candidates {
        let e = mask_expr(&c.mask, column.clone(), name, dt, functions)?;
        let e = fit(e, super::masks::mask_output_type(&c.mask, dt)?);
        match &c.when {
            Some(w) => branches.push((w.clone().is_not_false(), e)),
            None => fallback = e,
        }
    }
    if branches.is_empty() {
        return Ok(fallback);
    }
    let mut iter = branches.into_iter();
    let (w, t) = iter.next().expect("non-empty");
    let mut case = when(w, t);
    for (w, t) in iter {
        case = case.when(w, t);
    }
    case.otherwise(fallback).map_err(unenforceable)
}

/// Name of the verdict column the k-anonymization operator appends for
/// `policy.kanon[i]`.
fn kanon_flag(i: usize) -> String {
    format!("__veil_k{i}")
}

/// The projection applying every mask, one expression per dictionary
/// column, each aliased to its column's name. A k-anonymized column is
/// nulled on top of its mask wherever one of its groups is too small.
fn masked_projection(
    schema: &Schema,
    policy: &EffectivePolicy,
    column: &dyn Fn(&str) -> Expr,
    functions: MaskFunctions<'_>,
    kept: &KeptColumns,
) -> Result<Vec<Expr>> {
    schema
        .fields()
        .iter()
        .map(|field| {
            let name = field.name();
            let mut e = match (policy.masks.get(name), kept.get(name)) {
                // Masked once already: the kept copy holds this very expression's values.
                (Some(_), Some(stored)) => column(stored),
                (Some(m), None) => {
                    column_mask_expr(m, column(name), name, field.data_type(), functions)?
                }
                (None, _) => column(name),
            };
            let verdict = policy
                .kanon
                .iter()
                .enumerate()
                .filter(|(_, g)| g.columns.iter().any(|c| c == name))
                .map(|(i, _)| Expr::Column(Column::from_name(kanon_flag(i))))
                .reduce(Expr::and);
            if let Some(v) = verdict {
                // Only a true verdict shows the value.
                e = when(v, e).end().map_err(unenforceable)?;
            }
            Ok(e.alias(name))
        })
        .collect()
}

/// The row predicate of every row rule (AND), bound to `now`.
fn row_predicate(
    schema: &Schema,
    policy: &EffectivePolicy,
    column: &dyn Fn(&str) -> Expr,
    now: DateTime<Utc>,
    sample_key: &SecretKey,
) -> Result<Option<Expr>> {
    let data_type = |name: &str| -> Result<DataType> {
        schema
            .field_with_name(name)
            .map(|f| f.data_type().clone())
            .map_err(|_| {
                VeilError::FailedPrecondition(format!(
                    "column '{name}' is not in the data dictionary"
                ))
            })
    };
    let mut predicate: Option<Expr> = None;
    for rule in &policy.row_rules {
        let p = match &rule.kind {
            // The principal's attribute values enter as typed literals.
            RowRuleKind::Matching { column: c, values } => {
                let dt = data_type(c)?;
                let values: Vec<Expr> = values
                    .iter()
                    .filter_map(|v| ScalarValue::Utf8(Some(v.clone())).cast_to(&dt).ok())
                    .map(|v| Expr::Literal(v, None))
                    .collect();
                if values.is_empty() {
                    lit(false)
                } else {
                    column(c).in_list(values, false)
                }
            }
            RowRuleKind::Where(e) => e.clone(),
            RowRuleKind::Window { column: c, seconds } => {
                let dt = data_type(c)?;
                column(c).gt_eq(Expr::Literal(window_start(&dt, now, *seconds)?, None))
            }
            RowRuleKind::Sample { columns, percent } => {
                for c in columns {
                    data_type(c)?;
                }
                SampleUdf::new(sample_key.clone(), *percent)
                    .predicate(columns.iter().map(|c| column(c)).collect())
            }
        };
        predicate = Some(match predicate {
            None => p,
            Some(acc) => acc.and(p),
        });
    }
    Ok(predicate)
}

/// The earliest value a time window keeps, in the column's type. A date
/// column keeps only whole days inside the window (the day the window
/// starts in is partly outside it, so it is left out).
pub fn window_start(dt: &DataType, now: DateTime<Utc>, seconds: i64) -> Result<ScalarValue> {
    let start = now - chrono::Duration::seconds(seconds);
    let secs = start.timestamp();
    let day = secs.div_euclid(86_400)
        + i64::from(secs.rem_euclid(86_400) != 0 || start.timestamp_subsec_nanos() != 0);
    let v = match dt {
        DataType::Timestamp(unit, tz) => {
            let micros = start.timestamp_micros();
            match unit {
                TimeUnit::Second => ScalarValue::TimestampSecond(
                    Some(secs + i64::from(start.timestamp_subsec_nanos() != 0)),
                    tz.clone(),
                ),
                TimeUnit::Millisecond => {
                    ScalarValue::TimestampMillisecond(Some(start.timestamp_millis()), tz.clone())
                }
                TimeUnit::Microsecond => {
                    ScalarValue::TimestampMicrosecond(Some(micros), tz.clone())
                }
                TimeUnit::Nanosecond => ScalarValue::TimestampNanosecond(
                    start.timestamp_nanos_opt().or(Some(i64::MIN)),
                    tz.clone(),
                ),
            }
        }
        DataType::Date32 => ScalarValue::Date32(Some(day as i32)),
        DataType::Date64 => ScalarValue::Date64(Some(day * 86_400_000)),
        other => {
            return Err(VeilError::FailedPrecondition(format!(
                "a time window needs a date or timestamp column, not {other}"
            )));
        }
    };
    Ok(v)
}

/// Name of the scan k-anonymization counts over.
const COUNTED_ALIAS: &str = "__veil_counted";

/// Masked columns whose values `served` already holds, computed once:
/// column name → the stored column (see [`keepable_masks`]).
pub type KeptColumns = HashMap<String, String>;

/// Where a view reads from.
#[derive(Debug)]
pub struct ViewSources {
    /// The rows served (possibly one endpoint's part).
    pub served: Arc<dyn TableProvider>,
    /// The whole dataset, when `served` is a part: k-anonymization counts
    /// over every row. `None`: `served` is the whole dataset.
    pub whole: Option<Arc<dyn TableProvider>>,
    /// Masks `served` holds already computed (a kept copy); empty: every
    /// mask is computed by the view.
    pub kept: KeptColumns,
    /// `served` holds only the rows the row policies keep (a kept copy
    /// made with [`keepable_rows`]): the view does not filter it again.
    pub rows_kept: bool,
    /// Where k-anonymization counts may be kept across reads, with a
    /// digest of the source (its files by version and the dictionary);
    /// the view adds its row policies and groups to the key. `None`:
    /// counted on every read.
    pub counts: Option<CountsSlot>,
    /// The endpoint's share of the view's rows, dealt by the barrier
    /// ([`super::deal`]); `None`: every row (or `served` deals them).
    pub deal: Option<super::deal::RowDeal>,
}

/// Prefix of a stored masked column in a kept copy (the rest is keyed, so
/// no dictionary can guess one).
const KEPT_PREFIX: &str = "__veil_kept_";

/// A masked column whose values can be computed once per file and kept
/// (a deterministic expression over the row, with costly functions in it).
#[derive(Debug, Clone)]
pub struct KeepableMask {
    /// The dictionary column it masks.
    pub column: String,
    /// The name of its stored column in a kept copy: derived from
    /// `fingerprint`, so equal names mean equal expressions.
    pub stored: String,
    /// Keyed digest of everything the values depend on: the master key,
    /// the dataset, the column, its type and the column's whole mask
    /// (every candidate and condition, with bound attributes).
    pub fingerprint: [u8; 32],
    /// The expression, over the view's source scan.
    pub expr: Expr,
}

/// Is `e` worth computing once and keeping, and safe to? It must call a
/// function (a null or constant mask costs nothing per read), and be
/// [`deterministic`].
fn keepable(e: &Expr) -> bool {
    let (calls, fixed) = walk(e);
    calls && fixed
}

/// Does `e` depend on the row alone, never on a clock or chance? Every
/// function in it must be immutable, and it may hold nothing computed per
/// read (subqueries, aggregates, placeholders).
fn deterministic(e: &Expr) -> bool {
    walk(e).1
}

/// (calls a function, is deterministic) of `e`.
fn walk(e: &Expr) -> (bool, bool) {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let (mut calls, mut fixed) = (false, true);
    let _ = e.apply(|n| {
        match n {
            Expr::ScalarFunction(f) => {
                calls = true;
                fixed &= f.func.signature().volatility
                    == datafusion::logical_expr::Volatility::Immutable;
            }
            Expr::Column(_)
            | Expr::Literal(..)
            | Expr::Alias(_)
            | Expr::Cast(_)
            | Expr::TryCast(_)
            | Expr::Case(_)
            | Expr::BinaryExpr(_)
            | Expr::Not(_)
            | Expr::IsNotNull(_)
            | Expr::IsNull(_)
            | Expr::IsTrue(_)
            | Expr::IsFalse(_)
            | Expr::IsNotTrue(_)
            | Expr::IsNotFalse(_)
            | Expr::IsUnknown(_)
            | Expr::IsNotUnknown(_)
            | Expr::Negative(_)
            | Expr::Between(_)
            | Expr::Like(_)
            | Expr::SimilarTo(_)
            | Expr::InList(_) => {}
            // Anything else (subqueries, aggregates, placeholders…) is
            // computed per read.
            _ => fixed = false,
        }
        Ok(TreeNodeRecursion::Continue)
    });
    (calls, fixed)
}

/// A principal's row policies, bound to their attribute values, which a
/// kept copy can apply once: the copy then holds only the rows they keep,
/// and a read of it skips them.
#[derive(Debug, Clone)]
pub struct KeepableRows {
    /// Keyed digest of everything the kept rows depend on: the master key,
    /// the dataset, the row rules and the bound predicate (every attribute
    /// value in it).
    pub fingerprint: [u8; 32],
    /// The predicate, over the view's source scan.
    pub expr: Expr,
}

/// The row policies of `policy` on `dataset` as one predicate a kept copy
/// can apply, if they can be applied once: they are deterministic (no time
/// window, which moves with the clock), and nothing else depends on the
/// rows before them (k-anonymization counts, differential privacy).
/// `None` also when there is no row policy, or when it cannot be bound
/// (the read says why).
pub fn keepable_rows(
    dataset: &DatasetRecord,
    policy: &EffectivePolicy,
    schema: &Schema,
    master: &MasterKey,
) -> Option<KeepableRows> {
    use hmac::{Hmac, Mac};
    if policy.row_rules.is_empty()
        || !policy.kanon.is_empty()
        || policy.dp.is_some()
        || policy
            .row_rules
            .iter()
            .any(|r| matches!(r.kind, RowRuleKind::Window { .. }))
    {
        return None;
    }
    let column =
        |name: &str| Expr::Column(Column::new(Some(TableReference::bare(SOURCE_ALIAS)), name));
    let sample_key = master.derive(KeyPurpose::Sample {
        dataset_id: &dataset.id,
    });
    // No window: the clock is not read.
    let expr = row_predicate(schema, policy, &column, Utc::now(), &sample_key).ok()??;
    if !deterministic(&expr) {
        return None;
    }
    let naming = master.derive(KeyPurpose::KeptMasks);
    let mut mac =
        <Hmac<sha2::Sha256>>::new_from_slice(naming.bytes()).expect("HMAC takes any key length");
    let rules: Vec<&RowRuleKind> = policy.row_rules.iter().map(|r| &r.kind).collect();
    // The sample key by its digest, not through the predicate's display
    // (a function's display need not show what its results depend on).
    let sample_digest: [u8; 32] = {
        use sha2::Digest;
        sha2::Sha256::digest(sample_key.bytes()).into()
    };
    for part in [
        b"rows".to_vec(),
        dataset.id.as_bytes().to_vec(),
        format!("{rules:?}").into_bytes(),
        format!("{expr:?}").into_bytes(),
        sample_digest.to_vec(),
    ] {
        // Length-prefixed, so no two lists of parts hash alike.
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(&part);
    }
    Some(KeepableRows {
        fingerprint: mac.finalize().into_bytes().into(),
        expr,
    })
}

/// The masked columns of `policy` on `dataset` that a kept copy can hold,
/// with their expressions over the source (`schema`: the source's). Keyed
/// with the dataset's keys, like a read.
pub fn keepable_masks(
    dataset: &DatasetRecord,
    policy: &EffectivePolicy,
    schema: &Schema,
    master: &MasterKey,
) -> Result<Vec<KeepableMask>> {
    use hmac::{Hmac, Mac};
    let column =
        |name: &str| Expr::Column(Column::new(Some(TableReference::bare(SOURCE_ALIAS)), name));
    let keys = MaskKeys::new(master, &dataset.id);
    let naming = master.derive(KeyPurpose::KeptMasks);
    let mut out = Vec::new();
    for field in schema.fields() {
        let name = field.name();
        let Some(m) = policy.masks.get(name) else {
            continue;
        };
        let expr = column_mask_expr(
            m,
            column(name),
            name,
            field.data_type(),
            MaskFunctions::Keyed(&keys),
        )?;
        if !keepable(&expr) {
            continue;
        }
        let mut mac = <Hmac<sha2::Sha256>>::new_from_slice(naming.bytes())
            .expect("HMAC takes any key length");
        let candidates: Vec<String> = m
            .candidates
            .iter()
            .map(|c| format!("{:?}\u{0}{:?}", c.mask, c.when))
            .collect();
        for part in [
            "column".to_string(),
            dataset.id.clone(),
            name.clone(),
            field.data_type().to_string(),
        ]
        .iter()
        .chain(&candidates)
        {
            // Length-prefixed, so no two lists of parts hash alike.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        let fingerprint: [u8; 32] = mac.finalize().into_bytes().into();
        let stored = format!(
            "{KEPT_PREFIX}{}",
            fingerprint[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        out.push(KeepableMask {
            column: name.clone(),
            stored,
            fingerprint,
            expr,
        });
    }
    Ok(out)
}

/// The flag column a kept copy's plan adds when the copy keeps only the
/// rows a row predicate keeps: true for those rows (the writer drops the
/// others, and the flag).
pub const KEPT_ROWS_FLAG: &str = "__veil_kept_rows";

/// The plan that makes a kept copy of one source: every column of
/// `stored_columns` (the file's own, in order) as read, then each mask's
/// values as its stored column, then, with `rows`, [`KEPT_ROWS_FLAG`]:
/// whether the row predicate keeps the row (never null).
pub fn copy_plan(
    source: Arc<dyn TableProvider>,
    stored_columns: &Schema,
    masks: &[KeepableMask],
    rows: Option<&KeepableRows>,
) -> Result<LogicalPlan> {
    let column =
        |name: &str| Expr::Column(Column::new(Some(TableReference::bare(SOURCE_ALIAS)), name));
    let fields: Vec<String> = source
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut b = LogicalPlanBuilder::scan(SOURCE_ALIAS, provider_as_source(source), None)
        .map_err(unenforceable)?;
    let flag = Expr::Column(Column::from_name(KEPT_ROWS_FLAG));
    if let Some(r) = rows {
        // The flag first, so masks are computed only for the rows kept (a
        // mask never runs on, nor fails on, a row the reader can't see).
        b = b
            .project(
                fields.iter().map(|n| column(n)).chain([r
                    .expr
                    .clone()
                    .is_true()
                    .alias(KEPT_ROWS_FLAG)]),
            )
            .map_err(unenforceable)?;
    }
    let mut exprs: Vec<Expr> = stored_columns
        .fields()
        .iter()
        .map(|f| column(f.name()).alias(f.name()))
        .collect();
    for m in masks {
        let e = match rows {
            None => m.expr.clone(),
            Some(_) => when(flag.clone(), m.expr.clone())
                .end()
                .map_err(unenforceable)?,
        };
        exprs.push(e.alias(&m.stored));
    }
    exprs.extend(rows.map(|_| flag.clone()));
    b.project(exprs)
        .and_then(|b| b.build())
        .map_err(unenforceable)
}

/// Build the policy subtree over `sources`, fenced by a barrier. `now` is
/// the request's clock, which time windows are measured from.
pub fn compile(
    dataset: &DatasetRecord,
    policy: &EffectivePolicy,
    sources: ViewSources,
    master: &MasterKey,
    now: DateTime<Utc>,
    max_groups: usize,
) -> Result<LogicalPlan> {
    let source = sources.served;
    // The dictionary's columns: a kept copy's stored columns are read, never served.
    let schema = Arc::new(Schema::new(
        source
            .schema()
            .fields()
            .iter()
            .filter(|f| !sources.kept.values().any(|s| s == f.name()))
            .cloned()
            .collect::<Vec<_>>(),
    ));
    let qualified = |alias: &'static str| {
        move |name: &str| Expr::Column(Column::new(Some(TableReference::bare(alias)), name))
    };
    let column = qualified(SOURCE_ALIAS);
    let sample_key = master.derive(KeyPurpose::Sample {
        dataset_id: &dataset.id,
    });
    let scan = |alias: &'static str,
                table: &Arc<dyn TableProvider>|
     -> Result<LogicalPlanBuilder> {
        let mut b = LogicalPlanBuilder::scan(alias, provider_as_source(Arc::clone(table)), None)
            .map_err(unenforceable)?;
        // A kept copy of the rows the policies keep (never with
        // k-anonymization, so never the counted scan) is not filtered again.
        let kept_rows = sources.rows_kept && alias == SOURCE_ALIAS;
        if kept_rows {
            return Ok(b);
        }
        if let Some(p) = row_predicate(&schema, policy, &qualified(alias), now, &sample_key)? {
            b = b.filter(p).map_err(unenforceable)?;
        }
        Ok(b)
    };
    let mut builder = scan(SOURCE_ALIAS, &source)?;
    if !policy.kanon.is_empty() {
        let mut quasi: Vec<&String> = policy.kanon.iter().flat_map(|g| &g.columns).collect();
        quasi.sort();
        quasi.dedup();
        let counted = qualified(COUNTED_ALIAS);
        let counting = scan(COUNTED_ALIAS, sources.whole.as_ref().unwrap_or(&source))?
            .project(quasi.iter().map(|c| counted(c)))
            .map_err(unenforceable)?
            .build()
            .map_err(unenforceable)?;
        let groups = policy
            .kanon
            .iter()
            .enumerate()
            .map(|(i, g)| KGroup {
                columns: g.columns.clone(),
                k: g.k,
                flag: kanon_flag(i),
            })
            .collect::<Vec<_>>();
        let rules: Vec<&RowRuleKind> = policy.row_rules.iter().map(|r| &r.kind).collect();
        let rules = format!("{rules:?}");
        let kept = sources
            .counts
            .map(|slot| counts_slot(slot, &sample_key, &counting, &rules, &groups, max_groups));
        let node = KAnonymize::plan(
            builder.build().map_err(unenforceable)?,
            counting,
            groups,
            max_groups,
            kept,
        )
        .map_err(unenforceable)?;
        builder = LogicalPlanBuilder::from(node);
    }
    let keys = MaskKeys::new(master, &dataset.id);
    let exprs = masked_projection(
        &schema,
        policy,
        &column,
        MaskFunctions::Keyed(&keys),
        &sources.kept,
    )?;
    let plan = builder
        .project(exprs)
        .map_err(unenforceable)?
        .build()
        .map_err(unenforceable)?;
    Ok(match sources.deal {
        Some(deal) => PolicyBarrier::wrap_dealt(&dataset.name, plan, deal),
        None => PolicyBarrier::wrap_pushable(
            &dataset.name,
            plan,
            pushable_columns(dataset, policy, &schema),
        ),
    })
}

/// The slot a k-anonymization's counts are kept in: keyed by the source's
/// digest, the counting plan as displayed (its row policies with every
/// bound value and clock), the row rules themselves (a display does not
/// show everything: a sample's share is inside its function), the sample
/// key (a stable sample's rows depend on it), the groups and the bound.
fn counts_slot(
    source: CountsSlot,
    sample_key: &SecretKey,
    counting: &LogicalPlan,
    rules: &str,
    groups: &[KGroup],
    max_groups: usize,
) -> CountsSlot {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256>>::new_from_slice(sample_key.bytes())
        .expect("HMAC takes any key length");
    let groups: Vec<String> = groups
        .iter()
        .map(|g| format!("{:?}\u{0}{}", g.columns, g.k))
        .collect();
    let parts = [
        format!("{}", counting.display_indent()),
        rules.to_string(),
        max_groups.to_string(),
    ];
    mac.update(&source.key);
    for part in parts.iter().chain(&groups) {
        // Length-prefixed, so no two lists of parts hash alike.
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part.as_bytes());
    }
    CountsSlot {
        kept: source.kept,
        key: mac.finalize().into_bytes().into(),
    }
}

/// The columns a user's safe filters may be copied below the barrier on
/// (`super::pushdown`): a database dataset's unmasked columns, unless a
/// row policy filters its rows for the reader (a sample included),
/// k-anonymization counts them or differential privacy answers. Files keep
/// every user filter above the barrier (their scans prune by policy
/// filters only).
fn pushable_columns(
    dataset: &DatasetRecord,
    policy: &EffectivePolicy,
    schema: &Schema,
) -> Vec<String> {
    let database = matches!(
        crate::model::source_kind::SourceKind::of(dataset),
        crate::model::source_kind::SourceKind::Database(_)
    );
    // Under a row policy or differential privacy, the reader's filter would
    // choose which rows the database returns beyond what the policy lets
    // them see (a policy applied in Veil, a loose match in the database,
    // no row policy under DP), and a returned row can fail the read (a
    // value its dictionary type can't hold) or take time: that would
    // answer questions about rows the reader may not see. So the database
    // returns the rows the policy selects, whatever the reader asks.
    if !database || !policy.row_rules.is_empty() || policy.dp.is_some() || !policy.kanon.is_empty()
    {
        return vec![];
    }
    schema
        .fields()
        .iter()
        .map(|f| f.name())
        .filter(|n| !policy.masks.contains_key(*n))
        .cloned()
        .collect()
}

/// The schema a principal sees, from the dictionary alone (no file access,
/// no key): used for listings and explain. Typed by the same expressions a
/// read plans, with keyed masks described rather than keyed, so it is the
/// planned schema.
pub fn output_schema(dataset: &DatasetRecord, policy: &EffectivePolicy) -> Result<Schema> {
    let dictionary = dictionary_schema(dataset)?;
    // Partition columns come last in a scan, as in `SourceTable`.
    let mut ordered: Vec<Field> = Vec::new();
    let mut partitions = Vec::new();
    for (c, f) in dataset.columns.iter().zip(dictionary.fields()) {
        if c.partition {
            partitions.push(f.as_ref().clone());
        } else {
            ordered.push(f.as_ref().clone());
        }
    }
    ordered.extend(partitions);
    let schema = Schema::new(ordered);
    let mut typing = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect::<Vec<_>>();
    typing.extend(
        (0..policy.kanon.len()).map(|i| Field::new(kanon_flag(i), DataType::Boolean, false)),
    );
    let df_schema = DFSchema::try_from(Schema::new(typing)).map_err(unenforceable)?;
    // Typing only: the keyed masks are described, so no key is needed.
    let column = |name: &str| Expr::Column(Column::from_name(name));
    let exprs = masked_projection(
        &schema,
        policy,
        &column,
        MaskFunctions::Described,
        &KeptColumns::new(),
    )?;
    let fields = schema
        .fields()
        .iter()
        .zip(exprs)
        .map(|(f, e)| {
            let dt = e.get_type(&df_schema).map_err(unenforceable)?;
            let nullable = e.nullable(&df_schema).map_err(unenforceable)?;
            Ok(Field::new(f.name(), dt, nullable))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Schema::new(fields))
}
