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
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer};

use crate::error::{Result, VeilError};

/// Largest encoded parameter row accepted.
pub const MAX_PARAMETER_BYTES: usize = 256 * 1024;
/// Most parameters one query may take.
pub const MAX_PARAMETERS: usize = 1024;

/// Rewrite JDBC-style `?` placeholders into DataFusion's `$1`, `$2`, ...
/// in order of appearance, and `?N` into `$N`. Placeholders inside strings,
/// quoted names and comments are left alone: the text is tokenized, and
/// only the placeholders' own characters are replaced, the rest kept byte
/// for byte. A query that mixes `?` with numbered placeholders (`$n`,
/// `?n`) is refused: the numbering would be ambiguous.
pub fn number_question_marks(sql: &str) -> Result<String> {
    if !sql.contains('?') {
        return Ok(sql.to_string());
    }
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| {
            VeilError::InvalidArgument(VeilError::detailed("the SQL does not parse", e))
        })?;
    let lines: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let offset = |l: Location| -> Option<usize> {
        let start = *lines.get(usize::try_from(l.line).ok()?.checked_sub(1)?)?;
        let column = usize::try_from(l.column).ok()?.checked_sub(1)?;
        let line = &sql[start..];
        line.char_indices()
            .map(|(i, _)| start + i)
            .chain(std::iter::once(sql.len()))
            .nth(column)
    };
    let mut question = 0usize;
    let mut numbered = false;
    let mut out = String::with_capacity(sql.len() + 8);
    let mut copied = 0usize;
    for t in tokens {
        let Token::Placeholder(p) = &t.token else {
            continue;
        };
        let replacement = if p == "?" {
            question += 1;
            format!("${question}")
        } else {
            numbered = true;
            match p.strip_prefix('?') {
                Some(n) => format!("${n}"),
                None => continue,
            }
        };
        let (Some(from), Some(to)) = (offset(t.span.start), offset(t.span.end)) else {
            return Err(VeilError::InvalidArgument(
                "the SQL's placeholders could not be located; use $1, $2, ... instead of ?".into(),
            ));
        };
        if from < copied || to < from || sql.get(from..to) != Some(p.as_str()) {
            return Err(VeilError::InvalidArgument(
                "the SQL's placeholders could not be located; use $1, $2, ... instead of ?".into(),
            ));
        }
        out.push_str(&sql[copied..from]);
        out.push_str(&replacement);
        copied = to;
    }
    if question > 0 && numbered {
        return Err(VeilError::InvalidArgument(
            "the query mixes '?' with numbered placeholders ($n or ?n); use one style".into(),
        ));
    }
    out.push_str(&sql[copied..]);
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

/// Decode what [`encode`] wrote (or a client sent in its place): the
/// values of `$1..$n`.
pub fn decode(bytes: &[u8]) -> Result<Vec<ScalarValue>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let bad = || VeilError::InvalidArgument("the query parameters are not one Arrow row".into());
    let batches = read_batches(bytes)?;
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

/// The record batches of an Arrow IPC stream of parameters, from a client:
/// at most [`MAX_PARAMETER_BYTES`], framing checked before decoding
/// ([`check_stream`]), and a decoder that trips over malformed bytes is
/// caught and answered as bad input.
pub fn read_batches(bytes: &[u8]) -> Result<Vec<RecordBatch>> {
    if bytes.len() > MAX_PARAMETER_BYTES {
        return Err(too_large(bytes.len()));
    }
    check_stream(bytes)?;
    let bad =
        || VeilError::InvalidArgument("the query parameters are not a valid Arrow stream".into());
    let decoded = std::panic::catch_unwind(|| -> std::result::Result<Vec<RecordBatch>, ()> {
        let reader = StreamReader::try_new(bytes, None).map_err(|_| ())?;
        reader
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| ())
    });
    match decoded {
        Ok(Ok(batches)) => Ok(batches),
        Ok(Err(())) | Err(_) => Err(bad()),
    }
}

/// Walk an IPC stream's framing without decoding it: every message header
/// must parse, no batch may be compressed, and every body must lie within
/// the bytes. A compressed buffer states its decompressed size itself, and
/// the decoder reserves that much before checking it: a few bytes could
/// claim terabytes. Clients send parameters uncompressed (they are small).
fn check_stream(bytes: &[u8]) -> Result<()> {
    let bad =
        || VeilError::InvalidArgument("the query parameters are not a valid Arrow stream".into());
    let word = |at: usize| -> Result<u32> {
        let b = bytes.get(at..at + 4).ok_or_else(bad)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut at = 0usize;
    while at < bytes.len() {
        let mut len = word(at)?;
        at += 4;
        if len == u32::MAX {
            len = word(at)?;
            at += 4;
        }
        if len == 0 {
            return Ok(());
        }
        let end = at.checked_add(len as usize).ok_or_else(bad)?;
        let header = bytes.get(at..end).ok_or_else(bad)?;
        let message = datafusion::arrow::ipc::root_as_message(header).map_err(|_| bad())?;
        let compressed = message
            .header_as_record_batch()
            .is_some_and(|b| b.compression().is_some())
            || message
                .header_as_dictionary_batch()
                .and_then(|d| d.data())
                .is_some_and(|b| b.compression().is_some());
        if compressed {
            return Err(VeilError::InvalidArgument(
                "send query parameters uncompressed (no IPC buffer compression)".into(),
            ));
        }
        let body = usize::try_from(message.bodyLength()).map_err(|_| bad())?;
        // Every buffer must lie within the body (the decoder slices them
        // out of it and panics otherwise).
        let buffers = message
            .header_as_record_batch()
            .or_else(|| message.header_as_dictionary_batch().and_then(|d| d.data()))
            .and_then(|b| b.buffers());
        for buffer in buffers.iter().flatten() {
            let fits = usize::try_from(buffer.offset())
                .ok()
                .zip(usize::try_from(buffer.length()).ok())
                .and_then(|(o, l)| o.checked_add(l))
                .is_some_and(|end| end <= body);
            if !fits {
                return Err(bad());
            }
        }
        at = end
            .checked_add(body)
            .filter(|e| *e <= bytes.len())
            .ok_or_else(bad)?;
    }
    Ok(())
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
    #[test]
    fn compressed_parameters_are_refused_before_decoding() {
        use datafusion::arrow::ipc::CompressionType;
        use datafusion::arrow::ipc::writer::IpcWriteOptions;
        let row = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("a", DataType::Utf8, true)])),
            vec![Arc::new(StringArray::from(vec!["x".repeat(1000)]))],
        )
        .unwrap();
        let options = IpcWriteOptions::default()
            .try_with_compression(Some(CompressionType::ZSTD))
            .unwrap();
        let mut bytes = Vec::new();
        let mut w = StreamWriter::try_new_with_options(&mut bytes, &row.schema(), options).unwrap();
        w.write(&row).unwrap();
        w.finish().unwrap();
        drop(w);
        let e = decode(&bytes).unwrap_err();
        assert!(e.message().contains("uncompressed"), "{e:?}");
    }

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
        assert!(number_question_marks("SELECT ?2, ?").is_err());
        assert_eq!(
            number_question_marks("SELECT ?2, ?1").unwrap(),
            "SELECT $2, $1"
        );
        // Only the placeholders change: the rest is kept as written.
        assert_eq!(number_question_marks("SELECT 1e?").unwrap(), "SELECT 1e$1");
        assert_eq!(
            number_question_marks("SELECT 'é?',\n  ? /* ü */ , ?").unwrap(),
            "SELECT 'é?',\n  $1 /* ü */ , $2"
        );
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
        // Every truncation is refused, none panics.
        let bytes = encode(&row).unwrap();
        for n in 1..bytes.len() {
            assert!(decode(&bytes[..n]).is_err() || n >= bytes.len() - 8, "{n}");
        }
        assert!(decode(&[]).unwrap().is_empty());
    }
}
