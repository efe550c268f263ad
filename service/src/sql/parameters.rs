//! Query parameters: the values a client binds to a query's placeholders
//! (`$1`, `$2`, ... or JDBC's `?`), carried as one Arrow row and bound into
//! the plan as typed literals, never spliced into SQL text.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::{Result, VeilError};

/// Largest encoded parameter row accepted.
pub const MAX_PARAMETER_BYTES: usize = 64 * 1024;
/// Most parameters one query may take.
pub const MAX_PARAMETERS: usize = 1024;

/// Rewrite JDBC-style `?` placeholders into DataFusion's `$1`, `$2`, ...
/// in order of appearance. Placeholders inside strings, quoted names and
/// comments are left alone (the text is tokenized, not searched). A query
/// that mixes `?` with `$n` is refused: the numbering would be ambiguous.
pub fn number_question_marks(sql: &str) -> Result<String> {
    if !sql.contains('?') {
        return Ok(sql.to_string());
    }
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .with_unescape(false)
        .tokenize()
        .map_err(|e| {
            VeilError::InvalidArgument(VeilError::detailed("the SQL does not parse", e))
        })?;
    let mut question = 0usize;
    let mut dollar = false;
    let mut out = String::with_capacity(sql.len() + 8);
    for token in tokens {
        match token {
            Token::Placeholder(p) if p == "?" => {
                question += 1;
                out.push_str(&format!("${question}"));
            }
            Token::Placeholder(p) => {
                dollar |= p.starts_with('$');
                match p.strip_prefix('?') {
                    Some(n) => out.push_str(&format!("${n}")),
                    None => out.push_str(&p),
                }
            }
            other => out.push_str(&other.to_string()),
        }
    }
    if question > 0 && dollar {
        return Err(VeilError::InvalidArgument(
            "the query mixes '?' and '$n' placeholders; use one style".into(),
        ));
    }
    Ok(out)
}

/// Encode one row of parameter values (column i binds `$(i+1)`).
pub fn encode(row: &RecordBatch) -> Result<Vec<u8>> {
    if row.num_rows() != 1 {
        return Err(VeilError::InvalidArgument(format!(
            "bind exactly one row of parameters per query (got {} rows)",
            row.num_rows()
        )));
    }
    if row.num_columns() > MAX_PARAMETERS {
        return Err(too_many(row.num_columns()));
    }
    let failed = |e| VeilError::internal("encoding query parameters failed", e);
    let mut out = Vec::new();
    {
        let mut writer = StreamWriter::try_new(&mut out, &row.schema()).map_err(failed)?;
        writer.write(row).map_err(failed)?;
        writer.finish().map_err(failed)?;
    }
    if out.len() > MAX_PARAMETER_BYTES {
        return Err(too_large(out.len()));
    }
    Ok(out)
}

fn too_many(n: usize) -> VeilError {
    VeilError::InvalidArgument(format!(
        "a query takes at most {MAX_PARAMETERS} parameters (got {n})"
    ))
}

fn too_large(n: usize) -> VeilError {
    VeilError::InvalidArgument(format!(
        "query parameters may take at most {} KiB (got {} KiB); filter with a subquery or a smaller list",
        MAX_PARAMETER_BYTES / 1024,
        n.div_ceil(1024)
    ))
}

/// Decode what [`encode`] wrote: the values of `$1..$n`.
pub fn decode(bytes: &[u8]) -> Result<Vec<ScalarValue>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    if bytes.len() > MAX_PARAMETER_BYTES {
        return Err(too_large(bytes.len()));
    }
    let bad = || VeilError::InvalidArgument("the query parameters are not one Arrow row".into());
    let reader = StreamReader::try_new(bytes, None).map_err(|_| bad())?;
    let mut batches = Vec::new();
    for b in reader {
        batches.push(b.map_err(|_| bad())?);
    }
    let [row] = batches.as_slice() else {
        return Err(bad());
    };
    if row.num_rows() != 1 {
        return Err(bad());
    }
    if row.num_columns() > MAX_PARAMETERS {
        return Err(too_many(row.num_columns()));
    }
    row.columns()
        .iter()
        .map(|c| ScalarValue::try_from_array(c, 0).map_err(|_| bad()))
        .collect()
}

/// The placeholders a plan takes, `$1..$n` in order, with the type each is
/// used as (`None` where nothing fixes it, as in `SELECT $1`).
pub fn placeholders(plan: &LogicalPlan) -> Result<Vec<(usize, Option<DataType>)>> {
    let types = plan
        .get_parameter_types()
        .map_err(crate::error::query::from_datafusion)?;
    let mut out = Vec::with_capacity(types.len());
    for (name, ty) in types {
        let index = name
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| (1..=MAX_PARAMETERS).contains(n))
            .ok_or_else(|| {
                VeilError::InvalidArgument(format!(
                    "placeholders are numbered $1, $2, ... (or written '?'); got '{}'",
                    name.chars().take(64).collect::<String>()
                ))
            })?;
        out.push((index, ty));
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out)
}

/// Bind `values` to the plan's placeholders, each cast to the type the
/// query uses it as. Every placeholder needs a value; extra values are an
/// error too (a client binding to the wrong statement).
pub fn bind(plan: LogicalPlan, values: Vec<ScalarValue>) -> Result<LogicalPlan> {
    let wanted = placeholders(&plan)?;
    let highest = wanted.last().map_or(0, |(i, _)| *i);
    if values.len() != highest {
        return Err(VeilError::InvalidArgument(if highest == 0 {
            format!(
                "the query has no placeholders, but {} parameter values were bound",
                values.len()
            )
        } else {
            format!(
                "the query takes {highest} parameters ($1..${highest}); bind exactly that many values (got {})",
                values.len()
            )
        }));
    }
    if highest == 0 {
        return Ok(plan);
    }
    let mut typed = values;
    for (index, ty) in wanted {
        let value = &mut typed[index - 1];
        if let Some(ty) = ty
            && value.data_type() != ty
        {
            *value = value.cast_to(&ty).map_err(|_| {
                VeilError::InvalidArgument(format!(
                    "parameter ${index} is used as {ty}; a {} value does not convert to it",
                    value.data_type()
                ))
            })?;
        }
    }
    plan.with_param_values(typed)
        .map_err(crate::error::query::from_datafusion)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    #[test]
    fn question_marks_are_numbered_outside_strings_names_and_comments() {
        let sql = "SELECT '?', \"a?\" FROM t -- what?\nWHERE a = ? AND b IN (?, ?) /* ? */ AND c = 'it''s ?'";
        assert_eq!(
            number_question_marks(sql).unwrap(),
            "SELECT '?', \"a?\" FROM t -- what?\nWHERE a = $1 AND b IN ($2, $3) /* ? */ AND c = 'it''s ?'"
        );
        assert_eq!(number_question_marks("SELECT 1").unwrap(), "SELECT 1");
        assert!(number_question_marks("SELECT ? + $1").is_err());
    }

    #[test]
    fn a_row_round_trips_and_other_shapes_are_refused() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let row = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![7])),
                Arc::new(StringArray::from(vec!["x"])),
            ],
        )
        .unwrap();
        let values = decode(&encode(&row).unwrap()).unwrap();
        assert_eq!(
            values,
            vec![
                ScalarValue::Int64(Some(7)),
                ScalarValue::Utf8(Some("x".into()))
            ]
        );
        let two = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec!["x", "y"])),
            ],
        )
        .unwrap();
        assert!(encode(&two).is_err());
        assert!(decode(b"not arrow").is_err());
        assert!(decode(&[]).unwrap().is_empty());
    }
}
