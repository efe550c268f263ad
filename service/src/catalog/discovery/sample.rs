//! The sample discovery examines: up to a number of rows of a dataset's
//! source, read without policies, each examinable column's values
//! rendered as text (whole numbers as their digits, dates as ISO dates,
//! placeholders like `N/A` counted as nulls) and every other column listed
//! as skipped, with why. A sample's text is bounded, whatever the rows.

use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use futures::StreamExt;

use crate::error::{Result, VeilError};
use crate::model::dataset::DatasetRecord;

/// One column's sampled values, rendered as text (dates as ISO dates).
#[derive(Debug, Clone)]
pub struct ColumnSample {
    pub name: String,
    /// The non-null values (nulls and placeholders are left out).
    pub values: Vec<String>,
    /// The column holds numbers (integers, or whole decimals and floats
    /// rendered as integers), which lose leading zeros: an SSN `012-34-5678`
    /// arrives as `12345678` and a ZIP `02139` as `2139`.
    pub integer: bool,
    /// The column is a date or timestamp column.
    pub temporal: bool,
}

/// What a discovery run saw.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub rows: usize,
    pub columns: Vec<ColumnSample>,
    /// Every column not examined, and why (its type holds none of the
    /// kinds or isn't read, the sample holds no value of it, or its floats
    /// are too large to hold every digit). Examined columns are in
    /// `columns`: no column goes unmentioned.
    pub skipped: Vec<(String, String)>,
    /// Why the sample is smaller than asked, if it is.
    pub note: Option<String>,
}

/// Longest value examined; longer ones match nothing.
pub(super) const MAX_VALUE_LEN: usize = 256;

/// Text a sample may hold in all: sampling stops there (wide or long-text
/// datasets), so a discovery run's memory is bounded whatever the rows.
const MAX_SAMPLE_BYTES: usize = 32 << 20;

/// Read up to `rows` rows of the dataset's source (no policies: discovery
/// is for its owners and governors, and returns no values) and render each
/// examinable column's values as text.
pub async fn sample_dataset(
    d: &DatasetRecord,
    rows: usize,
    stores: &crate::catalog::object_stores::ObjectStores,
    databases: &crate::catalog::database::Databases,
) -> Result<Sample> {
    use datafusion::prelude::SessionContext;
    match crate::model::source_kind::SourceKind::of(d) {
        crate::model::source_kind::SourceKind::Files(_)
        | crate::model::source_kind::SourceKind::Database(_) => {}
        crate::model::source_kind::SourceKind::AuditTrail => {
            return Err(VeilError::FailedPrecondition(format!(
                "{} is Veil's audit trail: its dictionary is built in, there is nothing to discover",
                d.name
            )));
        }
    }
    // DataFusion's messages quote the values they fail on: neither the
    // answer nor the log carries them, only their class.
    let fail = |e: datafusion::error::DataFusionError| {
        tracing::warn!(dataset = %d.name, error = %crate::redact::describe(&e), "discovery could not sample the dataset");
        VeilError::FailedPrecondition(format!(
            "discovery could not read {}'s files as its dictionary describes them (a value that doesn't parse as its column's type, or an unreadable file); the details are in the Veil server log",
            d.name
        ))
    };
    let source = crate::catalog::raw_source(d, stores, databases).await?;
    let ctx = SessionContext::new();
    let mut stream = ctx
        .read_table(source)
        .and_then(|t| t.limit(0, Some(rows)))
        .map_err(fail)?
        .execute_stream()
        .await
        .map_err(fail)?;
    let mut sample = Sample::default();
    let mut bytes = 0usize;
    // Per examined column: where it is in the batch, how it is read, its
    // type, and how many float values were too large to hold every digit.
    let mut examined: Option<Vec<(usize, Reading, DataType, usize)>> = None;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(fail)?;
        let schema = batch.schema();
        let plan = examined.get_or_insert_with(|| {
            let mut plan = Vec::new();
            for (i, f) in schema.fields().iter().enumerate() {
                let dt = f.data_type();
                match reading(dt) {
                    Ok(how) => {
                        plan.push((i, how, dt.clone(), 0));
                        sample.columns.push(ColumnSample {
                            name: f.name().clone(),
                            values: Vec::new(),
                            integer: matches!(
                                how,
                                Reading::Integer | Reading::Decimal | Reading::Float { .. }
                            ),
                            temporal: how == Reading::Temporal,
                        });
                    }
                    Err(why) => sample.skipped.push((f.name().clone(), why)),
                }
            }
            plan
        });
        sample.rows += batch.num_rows();
        let unrenderable = |e: datafusion::arrow::error::ArrowError| {
            tracing::warn!(dataset = %d.name, error = %crate::redact::class_of(&e.to_string()), "discovery could not render a column as text");
            VeilError::FailedPrecondition(format!(
                "discovery could not render a column of {} as text; the details are in the Veil server log",
                d.name
            ))
        };
        for (slot, (i, how, _, inexact)) in plan.iter_mut().enumerate() {
            let values = &mut sample.columns[slot].values;
            if let Reading::Float { exact } = *how {
                let floats = cast(batch.column(*i), &DataType::Float64).map_err(unrenderable)?;
                for v in floats.as_primitive::<Float64Type>().iter() {
                    match v.map(|x| whole_float(x, exact)) {
                        None => {}
                        Some(Whole::Exact(n)) => keep(values, &mut bytes, &n.to_string()),
                        Some(Whole::TooLarge) => {
                            *inexact += 1;
                            values.push(NO_MATCH);
                        }
                        Some(Whole::Fraction) => values.push(NO_MATCH),
                    }
                }
                continue;
            }
            let text = cast(batch.column(*i), &DataType::Utf8).map_err(unrenderable)?;
            for v in text.as_string::<i32>().iter().flatten() {
                match *how {
                    Reading::Decimal => match whole_decimal(v) {
                        Some(whole) => keep(values, &mut bytes, whole),
                        None => values.push(NO_MATCH),
                    },
                    _ => keep(values, &mut bytes, v),
                }
            }
        }
        if bytes > MAX_SAMPLE_BYTES {
            sample.note = Some(format!(
                "sampling stopped after {} rows: the sample reached {} MB of text",
                sample.rows,
                MAX_SAMPLE_BYTES >> 20
            ));
            break;
        }
    }
    if examined.is_none() {
        sample.skipped = d
            .columns
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    "the dataset has no rows to sample".to_string(),
                )
            })
            .collect();
    }
    // A column with nothing but nulls says nothing; a float column of
    // numbers too large to hold every digit can't be checked.
    let plan = examined.unwrap_or_default();
    let columns = std::mem::take(&mut sample.columns);
    for (c, (_, _, dt, inexact)) in columns.into_iter().zip(plan) {
        if c.values.is_empty() {
            sample.skipped.push((
                c.name,
                "no values in the sample (all null or placeholders like N/A)".into(),
            ));
        } else if inexact * 2 > c.values.len() {
            sample.skipped.push((
                c.name,
                format!(
                    "{dt} column: most values are whole numbers of 2^53 or more, where a float no longer holds every digit (a card number kept as a float has lost its check digit); store such numbers as integers or text to have them examined"
                ),
            ));
        } else {
            sample.columns.push(c);
        }
    }
    Ok(sample)
}

/// A value that is there but matches no kind (too long, a fraction): kept,
/// unlike a null, so it counts against every kind.
const NO_MATCH: String = String::new();

/// Add one rendered value to a column's sample.
fn keep(values: &mut Vec<String>, bytes: &mut usize, v: &str) {
    if is_placeholder(v) {
        return;
    }
    if v.len() > MAX_VALUE_LEN {
        values.push(NO_MATCH);
        return;
    }
    *bytes += v.len();
    values.push(v.to_string());
}

/// How a column's values are read for examination.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reading {
    Text,
    /// Integers of any width, signed or not: their digits, leading zeros lost.
    Integer,
    /// Decimals: whole values as integers; a fraction matches no kind.
    Decimal,
    /// Floats: whole values under `exact` (below which the type holds every
    /// integer) as integers; a fraction matches no kind.
    Float {
        exact: f64,
    },
    /// Dates and timestamps, as ISO dates.
    Temporal,
}

/// How a column of this type is read, or why it is not examined (the
/// reason is reported in `skipped`, so no column goes unmentioned).
fn reading(dt: &DataType) -> std::result::Result<Reading, String> {
    Ok(match dt {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Reading::Text,
        t if t.is_integer() => Reading::Integer,
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => Reading::Decimal,
        DataType::Float16 => Reading::Float {
            exact: 2f64.powi(11),
        },
        DataType::Float32 => Reading::Float {
            exact: 2f64.powi(24),
        },
        DataType::Float64 => Reading::Float {
            exact: 2f64.powi(53),
        },
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _) => Reading::Temporal,
        // Dictionary-encoded values are read as their value type.
        DataType::Dictionary(_, v) => {
            return reading(v).map_err(|why| format!("dictionary-encoded {why}"));
        }
        DataType::Boolean => {
            return Err("Boolean column: true and false hold none of the kinds".into());
        }
        DataType::Null => return Err("Null column: it holds no values (all null)".into()),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => {
            return Err(format!(
                "{dt} column: binary values are not read; tag it by hand if it holds personal data"
            ));
        }
        DataType::Time32(_)
        | DataType::Time64(_)
        | DataType::Duration(_)
        | DataType::Interval(_) => {
            return Err(format!(
                "{dt} column: times of day and durations hold none of the kinds"
            ));
        }
        t if t.is_nested() => {
            return Err(format!(
                "{dt} column: nested values are not read; tag it by hand if its fields hold personal data"
            ));
        }
        _ => {
            return Err(format!(
                "{dt} column: discovery reads text, number and date columns"
            ));
        }
    })
}

/// A float value as discovery sees it.
#[derive(Debug, PartialEq)]
enum Whole {
    Exact(i64),
    /// Whole, but at or past the point where the type skips integers: its
    /// last digits may be lost, so no digit check is sound.
    TooLarge,
    /// A fraction, an infinity or NaN.
    Fraction,
}

fn whole_float(x: f64, exact: f64) -> Whole {
    if !x.is_finite() || x.fract() != 0.0 {
        Whole::Fraction
    } else if x.abs() >= exact {
        Whole::TooLarge
    } else {
        // In range: below 2^53 the cast is exact.
        Whole::Exact(x as i64)
    }
}

/// A decimal's text (`123456789.00`) as a whole number (`123456789`), or
/// `None` if it has a fraction.
fn whole_decimal(v: &str) -> Option<&str> {
    match v.split_once('.') {
        None => Some(v),
        Some((whole, fraction)) if fraction.bytes().all(|b| b == b'0') => Some(whole),
        Some(_) => None,
    }
}

/// Text meaning "no value": counted as a null, not as a value that fails
/// to look like anything.
fn is_placeholder(v: &str) -> bool {
    const PLACEHOLDERS: &[&str] = &[
        "",
        "-",
        "--",
        "?",
        "n/a",
        "na",
        "none",
        "null",
        "nil",
        "unknown",
        "tbd",
        "redacted",
        "not available",
        "not provided",
        "missing",
        "#n/a",
    ];
    let t = v.trim();
    t.len() <= 13 && PLACEHOLDERS.iter().any(|p| t.eq_ignore_ascii_case(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn every_type_is_read_or_skipped_with_its_reason() {
        use datafusion::arrow::datatypes::{Field, IntervalUnit, TimeUnit};
        for t in [
            DataType::Int8,
            DataType::Int16,
            DataType::Int32,
            DataType::Int64,
            DataType::UInt8,
            DataType::UInt16,
            DataType::UInt32,
            DataType::UInt64,
        ] {
            assert_eq!(reading(&t), Ok(Reading::Integer), "{t}");
        }
        assert_eq!(reading(&DataType::Decimal128(38, 2)), Ok(Reading::Decimal));
        assert_eq!(reading(&DataType::Decimal256(50, 0)), Ok(Reading::Decimal));
        assert!(matches!(
            reading(&DataType::Float64),
            Ok(Reading::Float { .. })
        ));
        assert_eq!(
            reading(&DataType::Dictionary(
                Box::new(DataType::Int32),
                Box::new(DataType::Utf8)
            )),
            Ok(Reading::Text)
        );
        assert_eq!(
            reading(&DataType::Timestamp(TimeUnit::Microsecond, None)),
            Ok(Reading::Temporal)
        );
        for (t, why) in [
            (DataType::Boolean, "Boolean column"),
            (DataType::Null, "Null column"),
            (DataType::Binary, "Binary column: binary"),
            (DataType::FixedSizeBinary(16), "FixedSizeBinary(16) column"),
            (DataType::Time64(TimeUnit::Nanosecond), "times of day"),
            (DataType::Interval(IntervalUnit::DayTime), "durations"),
            (
                DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
                "nested values are not read",
            ),
            (
                DataType::Struct(vec![Field::new("a", DataType::Utf8, true)].into()),
                "nested values are not read",
            ),
            (
                DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Binary)),
                "dictionary-encoded Binary column",
            ),
        ] {
            let got = reading(&t).expect_err("skipped");
            assert!(got.contains(why), "{t}: {got}");
        }
    }

    #[test]
    fn numbers_are_read_as_whole_numbers_only_where_every_digit_is_kept() {
        let f64_exact = 2f64.powi(53);
        assert_eq!(
            whole_float(123_456_789.0, f64_exact),
            Whole::Exact(123_456_789)
        );
        // A 16-digit Visa number fits a double exactly; 19 digits don't.
        assert_eq!(
            whole_float(4_111_111_111_111_111.0, f64_exact),
            Whole::Exact(4_111_111_111_111_111)
        );
        assert_eq!(
            whole_float(6_011_000_000_000_000_004.0, f64_exact),
            Whole::TooLarge
        );
        assert_eq!(whole_float(94105.5, f64_exact), Whole::Fraction);
        assert_eq!(whole_float(f64::NAN, f64_exact), Whole::Fraction);
        assert_eq!(whole_float(123_456_789.0, 2f64.powi(24)), Whole::TooLarge);
        assert_eq!(whole_decimal("4155550134.00"), Some("4155550134"));
        assert_eq!(whole_decimal("94105"), Some("94105"));
        assert_eq!(whole_decimal("12.50"), None);
    }

    #[test]
    fn placeholders_count_as_nulls() {
        assert!(is_placeholder(" N/A "));
        assert!(is_placeholder("unknown"));
        assert!(!is_placeholder("0"));
        assert!(!is_placeholder("a@b.org"));
    }
}
