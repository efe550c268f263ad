//! Compiling (dataset, effective policy) into a secure view:
//!
//! ```text
//! PolicyBarrier: dataset=…
//!   Projection: id, veil_mask_hash(ssn) AS ssn, …       ← masks
//!     Filter: state IN ('CA')                            ← row rules
//!       TableScan: __veil_source                         ← SourceTable
//! ```
//!
//! The view is served as a `ViewTable`, so the SQL planner type-checks the
//! user's query against the masked schema, and everything the user writes
//! lands above the barrier.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Column, ScalarValue, TableReference};
use datafusion::datasource::{TableProvider, provider_as_source};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, ScalarUDF, lit};
use std::sync::Arc;

use super::barrier::PolicyBarrier;
use super::effective::EffectivePolicy;
use super::masks::{MaskHash, mask_expr};
use crate::catalog::source_table::SourceTable;
use crate::error::{Result, VeilError};
use crate::secrets::{KeyPurpose, MasterKey};
use crate::store::model::DatasetRecord;

/// Name of the raw scan inside a view. It is never registered anywhere, so
/// no query can name it.
const SOURCE_ALIAS: &str = "__veil_source";

fn df(e: datafusion::common::DataFusionError) -> VeilError {
    VeilError::internal("building a secure view", e)
}

/// Build the policy subtree over `source`, fenced by a barrier.
pub fn compile(
    dataset: &DatasetRecord,
    policy: &EffectivePolicy,
    source: Arc<SourceTable>,
    master: &MasterKey,
) -> Result<LogicalPlan> {
    let schema = source.schema();
    let column =
        |name: &str| Expr::Column(Column::new(Some(TableReference::bare(SOURCE_ALIAS)), name));
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
    let mut builder = LogicalPlanBuilder::scan(
        SOURCE_ALIAS,
        provider_as_source(Arc::clone(&source) as _),
        None,
    )
    .map_err(df)?;

    // Row rules: the principal's attribute values enter as typed literals.
    let mut predicate: Option<Expr> = None;
    for rule in &policy.row_rules {
        let dt = data_type(&rule.column)?;
        let values: Vec<Expr> = rule
            .values
            .iter()
            .filter_map(|v| ScalarValue::Utf8(Some(v.clone())).cast_to(&dt).ok())
            .map(|v| Expr::Literal(v, None))
            .collect();
        let p = if values.is_empty() {
            lit(false)
        } else {
            column(&rule.column).in_list(values, false)
        };
        predicate = Some(match predicate {
            None => p,
            Some(acc) => acc.and(p),
        });
    }
    if let Some(p) = predicate {
        builder = builder.filter(p).map_err(df)?;
    }

    let hash = Arc::new(ScalarUDF::new_from_impl(MaskHash::new(master.derive(
        KeyPurpose::HashMask {
            dataset_id: &dataset.id,
        },
    ))));
    let mut exprs = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let name = field.name();
        let e = match policy.masks.get(name) {
            Some(m) => mask_expr(&m.mask, column(name), field.data_type(), &hash)?,
            None => column(name),
        };
        exprs.push(e.alias(name));
    }
    let plan = builder.project(exprs).map_err(df)?.build().map_err(df)?;
    Ok(PolicyBarrier::wrap(&dataset.name, plan))
}

/// The schema a principal sees, from the dictionary alone (no file access):
/// used for listings. Reads use the planned schema, which this matches.
pub fn output_schema(
    dataset: &DatasetRecord,
    policy: &EffectivePolicy,
) -> Result<datafusion::arrow::datatypes::Schema> {
    use crate::catalog::source_table::dictionary_field;
    use crate::policy::model::MaskSpec;
    let mut file_fields = Vec::new();
    let mut partition_fields = Vec::new();
    for c in &dataset.columns {
        let f = dictionary_field(&c.name, &c.data_type, c.nullable)?;
        let f = match policy.masks.get(&c.name).map(|m| &m.mask) {
            None => f,
            Some(MaskSpec::Hash) => {
                if !MaskHash::supports(f.data_type()) {
                    return Err(VeilError::FailedPrecondition(format!(
                        "a hash mask cannot apply to column '{}' of type {}",
                        c.name,
                        f.data_type()
                    )));
                }
                f.with_data_type(DataType::Utf8)
            }
            Some(MaskSpec::Null) => f.with_nullable(true),
            Some(MaskSpec::Constant(v)) => {
                let value = super::masks::constant_value(v, f.data_type())?;
                let nullable = value.is_null();
                f.with_nullable(nullable)
            }
        };
        if c.partition {
            partition_fields.push(f)
        } else {
            file_fields.push(f)
        }
    }
    file_fields.extend(partition_fields);
    Ok(datafusion::arrow::datatypes::Schema::new(file_fields))
}
