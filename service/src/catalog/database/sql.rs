//! The SQL Veil sends a database: one `SELECT` of the columns a plan needs,
//! with the filters that may run in the database, and a limit.
//!
//! A filter is rendered only where the database's answer is provably a
//! superset of DataFusion's (every pushed filter is `Inexact`: DataFusion
//! checks it again above), so pushing never loses a row and never changes
//! an answer. That rules out, per column class:
//! - ordering on strings (collations differ from byte order),
//! - anything on floats but `IS NULL` (`-0.0`, `NaN` and literal typing differ),
//! - negations on "loose" strings (MySQL's case- and pad-insensitive
//!   collations, PostgreSQL's `char(n)`), where the database's `=` matches
//!   more than DataFusion's: positively that only widens, negated it loses rows,
//! - functions, arithmetic and casts that could fail on a row the policy
//!   hides (the statement's failure would reveal the row).
//!
//! What reaches the renderer is decided above it: policy row filters, and
//! user filters only on unmasked columns of datasets without
//! k-anonymization or sampling (`policy::barrier`).

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Like, Operator};
use std::collections::BTreeMap;

use crate::model::dataset::{DatabaseEngine, DatabaseRelation};
use crate::policy::pushdown::widens;

/// How a column compares in the database, against DataFusion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// Equal values compare equal in both, and order alike (integers,
    /// decimals, dates, timestamps, booleans).
    Exact,
    /// Strings whose `=` is byte equality (PostgreSQL `text`, `varchar`,
    /// and any type read as `::text`): equality both ways, no ordering.
    ExactText,
    /// Strings the database matches more loosely (MySQL collations,
    /// PostgreSQL `char(n)`): positive equality only.
    LooseText,
    /// Strings whose `=` matches more than byte equality and that can't be
    /// matched with `LIKE` (a PostgreSQL nondeterministic collation):
    /// positive equality only.
    LooseEquality,
    /// Compares exactly, but some values the database holds Veil serves as
    /// null (MySQL's zero date): never a null test.
    ExactNotNullTested,
    /// Floats, binaries, lists: only `IS [NOT] NULL`.
    Opaque,
}

/// Marks a PostgreSQL column's type when its collation is nondeterministic
/// (`postgres::discover` appends it; [`source_column`] reads it).
pub const NONDETERMINISTIC: &str = " (nondeterministic collation)";

/// One column as the statement reads and compares it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceColumn {
    pub name: String,
    pub data_type: DataType,
    /// How the select list reads it (a quoted name, or a cast of it to text).
    pub read: String,
    /// How filters reference it.
    pub reference: String,
    pub compare: Compare,
}

/// Quote an identifier for `engine`.
pub fn quote(engine: DatabaseEngine, name: &str) -> String {
    match engine {
        DatabaseEngine::Postgres => format!("\"{}\"", name.replace('"', "\"\"")),
        DatabaseEngine::Mysql => format!("`{}`", name.replace('`', "``")),
    }
}

/// A string literal for `engine` (PostgreSQL sessions run with
/// `standard_conforming_strings`, MySQL ones with `NO_BACKSLASH_ESCAPES`,
/// so doubling quotes is the whole escaping). `None` for a string no
/// database text can hold.
fn string_literal(s: &str) -> Option<String> {
    if s.contains('\0') {
        return None;
    }
    Some(format!("'{}'", s.replace('\'', "''")))
}

/// Is the database type one whose text compares byte for byte?
fn exact_text_type(engine: DatabaseEngine, database_type: &str) -> bool {
    let t = database_type.to_ascii_lowercase();
    match engine {
        // `name` is cut to 63 bytes on comparison (a longer literal could
        // equal a stored value): loose.
        DatabaseEngine::Postgres => {
            !t.ends_with(NONDETERMINISTIC)
                && (t == "text" || t.starts_with("character varying") || t == "uuid")
        }
        // Every MySQL string type compares under a collation.
        DatabaseEngine::Mysql => false,
    }
}

/// Is it read as it is (no cast to text)?
fn native_text_type(engine: DatabaseEngine, database_type: &str) -> bool {
    let t = database_type.to_ascii_lowercase();
    match engine {
        DatabaseEngine::Postgres => {
            t == "text"
                || t.starts_with("character varying")
                || t.starts_with("character(")
                || t == "character"
                || t == "name"
        }
        DatabaseEngine::Mysql => {
            t.starts_with("varchar")
                || t.starts_with("char")
                || t.ends_with("text")
                || t.starts_with("enum")
                || t.starts_with("set")
        }
    }
}

/// The statement's view of one dictionary column.
pub fn source_column(
    engine: DatabaseEngine,
    name: &str,
    data_type: &DataType,
    database_type: &str,
) -> SourceColumn {
    let q = quote(engine, name);
    let as_text = |q: &str| match engine {
        DatabaseEngine::Postgres => format!("{q}::text"),
        DatabaseEngine::Mysql => format!("CAST({q} AS CHAR)"),
    };
    let (read, reference, compare) = match data_type {
        DataType::Utf8 | DataType::LargeUtf8 if database_type.ends_with(NONDETERMINISTIC) => {
            (as_text(&q), as_text(&q), Compare::LooseEquality)
        }
        DataType::Utf8 | DataType::LargeUtf8 => {
            if native_text_type(engine, database_type) {
                let c = if exact_text_type(engine, database_type) {
                    Compare::ExactText
                } else {
                    Compare::LooseText
                };
                (q.clone(), q, c)
            } else {
                // uuid, json, enums...: read and compared as their text,
                // which compares exactly in PostgreSQL (and under a
                // collation in MySQL).
                let c = match engine {
                    DatabaseEngine::Postgres => Compare::ExactText,
                    DatabaseEngine::Mysql => Compare::LooseText,
                };
                (as_text(&q), as_text(&q), c)
            }
        }
        // PostgreSQL's numeric is read as text and parsed exactly; it
        // compares as itself.
        DataType::Decimal128(..) => match engine {
            DatabaseEngine::Postgres => (format!("{q}::text"), q, Compare::Exact),
            DatabaseEngine::Mysql => (q.clone(), q, Compare::Exact),
        },
        DataType::List(item) if matches!(item.data_type(), DataType::Utf8) => {
            (format!("{q}::text[]"), q, Compare::Opaque)
        }
        // MySQL reads a small constant compared with a YEAR as a year
        // (50 is 2050): only null tests.
        _ if engine == DatabaseEngine::Mysql
            && database_type.to_ascii_lowercase().starts_with("year") =>
        {
            (q.clone(), q, Compare::Opaque)
        }
        // MySQL's zero date is served as null, but is not null there.
        DataType::Date32 | DataType::Timestamp(TimeUnit::Microsecond, _)
            if engine == DatabaseEngine::Mysql =>
        {
            (q.clone(), q, Compare::ExactNotNullTested)
        }
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Boolean
        | DataType::Date32
        | DataType::Timestamp(TimeUnit::Microsecond, _) => (q.clone(), q, Compare::Exact),
        _ => (q.clone(), q, Compare::Opaque),
    };
    SourceColumn {
        name: name.to_string(),
        data_type: data_type.clone(),
        read,
        reference,
        compare,
    }
}

/// The `FROM` of a relation.
pub fn from_clause(engine: DatabaseEngine, relation: &DatabaseRelation) -> String {
    match relation {
        DatabaseRelation::Table { schema, name } => {
            format!("{}.{}", quote(engine, schema), quote(engine, name))
        }
        DatabaseRelation::Query { sql } => {
            format!(
                "({}) AS {}",
                sql.trim().trim_end_matches(';'),
                quote(engine, "veil_query")
            )
        }
    }
}

/// One statement: `SELECT columns FROM relation [WHERE ...] [LIMIT n]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    pub engine: DatabaseEngine,
    pub from: String,
    /// The columns read, in the scan's order (empty: only rows are counted).
    pub columns: Vec<SourceColumn>,
    /// Rendered conditions, ANDed.
    pub conditions: Vec<String>,
    pub limit: Option<usize>,
}

impl Select {
    pub fn render(&self) -> String {
        let list = if self.columns.is_empty() {
            "1".to_string()
        } else {
            self.columns
                .iter()
                .map(|c| {
                    let q = quote(self.engine, &c.name);
                    if c.read == q {
                        q
                    } else {
                        format!("{} AS {q}", c.read)
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut s = format!("SELECT {list} FROM {}", self.from);
        if !self.conditions.is_empty() {
            s.push_str(" WHERE ");
            s.push_str(&self.conditions.join(" AND "));
        }
        if let Some(n) = self.limit {
            s.push_str(&format!(" LIMIT {n}"));
        }
        s
    }
}

/// The condition selecting one endpoint's key range (`reference`: how the
/// key column is referenced).
pub fn range_condition(reference: &str, range: &veil_proto::KeyRange) -> String {
    let mut bounds = Vec::new();
    if let Some(low) = range.low {
        bounds.push(format!("{reference} >= {low}"));
    }
    if let Some(high) = range.high {
        bounds.push(format!("{reference} < {high}"));
    }
    let inner = if bounds.is_empty() {
        format!("{reference} IS NOT NULL")
    } else {
        bounds.join(" AND ")
    };
    if range.with_nulls {
        format!("({reference} IS NULL OR {inner})")
    } else {
        format!("({inner})")
    }
}

/// Split the keys `min..=max` of about `rows` rows into key ranges of about
/// `rows_per_part` rows each, at most `max_parts` of them. Every key, and
/// null, falls in exactly one range: the first is open below and takes the
/// nulls, the last is open above (rows added since are still read once).
pub fn key_ranges(
    column: &str,
    min: i64,
    max: i64,
    rows: u64,
    rows_per_part: u64,
    max_parts: usize,
) -> Vec<veil_proto::KeyRange> {
    let span = i128::from(max) - i128::from(min) + 1;
    let wanted = rows.div_ceil(rows_per_part.max(1)).max(1) as i128;
    let n = wanted.min(max_parts.max(1) as i128).min(span.max(1));
    if n <= 1 {
        return vec![veil_proto::KeyRange {
            column: column.to_string(),
            low: None,
            high: None,
            with_nulls: true,
        }];
    }
    let width = (span + n - 1) / n;
    let bound = |i: i128| (i128::from(min) + i * width) as i64;
    (0..n)
        .map(|i| veil_proto::KeyRange {
            column: column.to_string(),
            low: (i > 0).then(|| bound(i)),
            high: (i < n - 1).then(|| bound(i + 1)),
            with_nulls: i == 0,
        })
        .collect()
}

/// Renders filters over a relation's columns (by name).
#[derive(Debug)]
pub struct Renderer<'a> {
    pub engine: DatabaseEngine,
    pub columns: &'a BTreeMap<String, SourceColumn>,
}

impl Renderer<'_> {
    /// `e` as a condition the database may evaluate, or `None` if it must
    /// stay in DataFusion (see the module's rules).
    pub fn condition(&self, e: &Expr) -> Option<String> {
        self.render(e, true)
    }

    /// `positive`: the result is used as is (not under a `NOT`), so a
    /// looser match only widens the answer.
    fn render(&self, e: &Expr, positive: bool) -> Option<String> {
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
                Operator::And | Operator::Or => {
                    let l = self.render(left, positive)?;
                    let r = self.render(right, positive)?;
                    let word = if *op == Operator::And { "AND" } else { "OR" };
                    Some(format!("({l} {word} {r})"))
                }
                _ => self.comparison(left, *op, right, positive),
            },
            Expr::Not(inner) => Some(format!("(NOT {})", self.render(inner, !positive)?)),
            Expr::IsNull(inner) => Some(format!("({} IS NULL)", self.null_tested(inner)?)),
            Expr::IsNotNull(inner) => Some(format!("({} IS NOT NULL)", self.null_tested(inner)?)),
            Expr::Column(_) => {
                // A boolean column as a condition.
                let c = self.column(e)?;
                (c.data_type == DataType::Boolean).then(|| format!("({} = TRUE)", c.reference))
            }
            Expr::InList(list) => {
                let c = self.column(&list.expr)?;
                // NOT IN is a negation.
                let effective = positive != list.negated;
                if !self.compares(c, Operator::Eq, effective) || list.list.is_empty() {
                    return None;
                }
                let values = list
                    .list
                    .iter()
                    .map(|v| self.literal(c, v))
                    .collect::<Option<Vec<_>>>()?;
                Some(format!(
                    "({} {}IN ({}))",
                    c.reference,
                    if list.negated { "NOT " } else { "" },
                    values.join(", ")
                ))
            }
            Expr::Between(Between {
                expr,
                negated,
                low,
                high,
            }) => {
                let c = self.column(expr)?;
                if c.compare != Compare::Exact {
                    return None;
                }
                let (lo, hi) = (self.literal(c, low)?, self.literal(c, high)?);
                Some(format!(
                    "({} {}BETWEEN {lo} AND {hi})",
                    c.reference,
                    if *negated { "NOT " } else { "" }
                ))
            }
            Expr::Like(Like {
                negated,
                expr,
                pattern,
                escape_char: None,
                case_insensitive: false,
            }) => {
                let c = self.column(expr)?;
                let effective = positive != *negated;
                let ok = match c.compare {
                    Compare::ExactText => true,
                    Compare::LooseText => effective,
                    _ => false,
                };
                if !ok {
                    return None;
                }
                let Expr::Literal(ScalarValue::Utf8(Some(p)), _) = pattern.as_ref() else {
                    return None;
                };
                // No escape at all: MySQL sessions (NO_BACKSLASH_ESCAPES)
                // have none; PostgreSQL fails a pattern that ends in its
                // escape, but only on a row its match reaches that far, so
                // the read's failure would tell whether a row it checked
                // (one the policy hides too: the database may check the
                // reader's filter first) starts with the pattern's text;
                // and where the two escape rules differ (a backslash
                // before an ordinary character) the database could drop a
                // row DataFusion keeps. Such patterns are rare: they stay
                // in DataFusion.
                if p.contains('\\') {
                    return None;
                }
                Some(format!(
                    "({} {}LIKE {})",
                    c.reference,
                    if *negated { "NOT " } else { "" },
                    string_literal(p)?
                ))
            }
            _ => None,
        }
    }

    fn comparison(
        &self,
        left: &Expr,
        op: Operator,
        right: &Expr,
        positive: bool,
    ) -> Option<String> {
        let (col, lit, op) = match (self.column(left), self.column(right)) {
            (Some(c), None) => (c, right, op),
            (None, Some(c)) => (c, left, op.swap()?),
            _ => return None,
        };
        if !self.compares(col, op, positive) {
            return None;
        }
        let sql_op = match op {
            Operator::Eq => "=",
            Operator::NotEq => "<>",
            Operator::Lt => "<",
            Operator::LtEq => "<=",
            Operator::Gt => ">",
            Operator::GtEq => ">=",
            _ => return None,
        };
        Some(format!(
            "({} {sql_op} {})",
            col.reference,
            self.literal(col, lit)?
        ))
    }

    /// May `op` on `c` be evaluated by the database in this polarity?
    fn compares(&self, c: &SourceColumn, op: Operator, positive: bool) -> bool {
        let eq = matches!(op, Operator::Eq | Operator::NotEq);
        // `<>` in a positive place is a negation of `=`.
        let widening = positive != (op == Operator::NotEq);
        match c.compare {
            Compare::Exact | Compare::ExactNotNullTested => true,
            Compare::ExactText => eq,
            Compare::LooseText | Compare::LooseEquality => op == Operator::Eq && widening,
            Compare::Opaque => false,
        }
    }

    /// The reference of the column `e` names, if a null test on it means
    /// the same in the database.
    fn null_tested(&self, e: &Expr) -> Option<&str> {
        let c = self.column(e)?;
        (c.compare != Compare::ExactNotNullTested).then_some(c.reference.as_str())
    }

    /// The column `e` names (directly, or through a cast that keeps every
    /// value: an integer widened).
    fn column(&self, e: &Expr) -> Option<&SourceColumn> {
        match e {
            Expr::Column(c) => self.columns.get(&c.name),
            Expr::Cast(cast) => {
                let c = self.column(&cast.expr)?;
                widens(&c.data_type, cast.field.data_type()).then_some(c)
            }
            _ => None,
        }
    }

    /// `value` as a literal of column `name`'s type, in the database's
    /// syntax (`None`: a null, or a type without a literal form here).
    pub fn literal_of(&self, name: &str, value: &ScalarValue) -> Option<String> {
        let c = self.columns.get(name)?;
        self.literal(c, &Expr::Literal(value.clone(), None))
    }

    /// `e`, a literal of `c`'s type, in the database's syntax.
    fn literal(&self, c: &SourceColumn, e: &Expr) -> Option<String> {
        let Expr::Literal(v, _) = e else {
            return None;
        };
        let integer = |x: i128| Some(x.to_string());
        match (v, &c.data_type) {
            (v, _) if v.is_null() => None,
            (ScalarValue::Int8(Some(x)), t) if t.is_integer() => integer(i128::from(*x)),
            (ScalarValue::Int16(Some(x)), t) if t.is_integer() => integer(i128::from(*x)),
            (ScalarValue::Int32(Some(x)), t) if t.is_integer() => integer(i128::from(*x)),
            (ScalarValue::Int64(Some(x)), t) if t.is_integer() => integer(i128::from(*x)),
            (ScalarValue::UInt8(Some(x)), t) if t.is_integer() => integer(i128::from(*x)),
            (ScalarValue::UInt16(Some(x)), t) if t.is_integer() => integer(i128::from(*x)),
            (ScalarValue::UInt32(Some(x)), t) if t.is_integer() => integer(i128::from(*x)),
            (ScalarValue::UInt64(Some(x)), t) if t.is_integer() => integer(i128::from(*x)),
            (ScalarValue::Boolean(Some(b)), DataType::Boolean) => {
                Some(if *b { "TRUE" } else { "FALSE" }.into())
            }
            (ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)), DataType::Utf8) => {
                string_literal(s)
            }
            (ScalarValue::Decimal128(Some(x), _, s), DataType::Decimal128(_, cs)) if s == cs => {
                Some(decimal_text(*x, *s))
            }
            (ScalarValue::Date32(Some(d)), DataType::Date32) => {
                let date =
                    chrono::DateTime::from_timestamp(i64::from(*d) * 86_400, 0)?.date_naive();
                let year = chrono::Datelike::year(&date);
                if !(1..=9999).contains(&year) {
                    return None;
                }
                Some(format!("DATE '{}'", date.format("%Y-%m-%d")))
            }
            (ScalarValue::TimestampMicrosecond(Some(us), ltz), DataType::Timestamp(_, ctz))
                if ltz.is_some() == ctz.is_some() =>
            {
                self.timestamp(*us, ctz.is_some())
            }
            _ => None,
        }
    }

    fn timestamp(&self, micros: i64, zoned: bool) -> Option<String> {
        let t = chrono::DateTime::from_timestamp_micros(micros)?;
        let year = chrono::Datelike::year(&t);
        if !(1..=9999).contains(&year) {
            return None;
        }
        let text = t.format("%Y-%m-%d %H:%M:%S%.6f");
        Some(match (self.engine, zoned) {
            (DatabaseEngine::Postgres, true) => format!("TIMESTAMPTZ '{text}+00:00'"),
            (DatabaseEngine::Postgres, false) => format!("TIMESTAMP '{text}'"),
            // MySQL sessions run in UTC, so a TIMESTAMP column's values read
            // (and compare) as UTC.
            (DatabaseEngine::Mysql, _) => format!("TIMESTAMP '{text}'"),
        })
    }
}

/// A decimal's exact text: `12345` at scale 2 is `123.45`.
pub fn decimal_text(x: i128, scale: i8) -> String {
    if scale <= 0 {
        let zeros = "0".repeat(scale.unsigned_abs() as usize);
        return if x == 0 {
            "0".into()
        } else {
            format!("{x}{zeros}")
        };
    }
    let neg = x < 0;
    let digits = x.unsigned_abs().to_string();
    let s = scale as usize;
    let padded = format!("{digits:0>width$}", width = s + 1);
    let (int, frac) = padded.split_at(padded.len() - s);
    format!("{}{int}.{frac}", if neg { "-" } else { "" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};
    use std::ops::Not;

    fn columns(engine: DatabaseEngine) -> BTreeMap<String, SourceColumn> {
        let text_type = match engine {
            DatabaseEngine::Postgres => "text",
            DatabaseEngine::Mysql => "varchar(20)",
        };
        [
            ("id", DataType::Int64, "bigint"),
            ("small", DataType::Int16, "smallint"),
            ("name", DataType::Utf8, text_type),
            ("code", DataType::Utf8, "character(3)"),
            ("uid", DataType::Utf8, "uuid"),
            ("score", DataType::Float64, "double precision"),
            ("born", DataType::Date32, "date"),
            ("active", DataType::Boolean, "boolean"),
            ("yr", DataType::UInt16, "year(4)"),
            ("handle", DataType::Utf8, "name"),
            ("ci", DataType::Utf8, "text (nondeterministic collation)"),
            ("price", DataType::Decimal128(10, 2), "numeric(10,2)"),
            (
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                "timestamp with time zone",
            ),
        ]
        .into_iter()
        .map(|(n, t, d)| (n.to_string(), source_column(engine, n, &t, d)))
        .collect()
    }

    fn render(engine: DatabaseEngine, e: Expr) -> Option<String> {
        let cols = columns(engine);
        Renderer {
            engine,
            columns: &cols,
        }
        .condition(&e)
    }

    const PG: DatabaseEngine = DatabaseEngine::Postgres;
    const MY: DatabaseEngine = DatabaseEngine::Mysql;

    #[test]
    fn exact_columns_push_every_comparison() {
        assert_eq!(
            render(PG, col("id").gt(lit(5i64))).unwrap(),
            r#"("id" > 5)"#
        );
        assert_eq!(
            render(PG, lit(5i64).lt(col("id"))).unwrap(),
            r#"("id" > 5)"#
        );
        assert_eq!(
            render(PG, col("id").not_eq(lit(5i64))).unwrap(),
            r#"("id" <> 5)"#
        );
        assert_eq!(
            render(PG, col("id").between(lit(1i64), lit(9i64))).unwrap(),
            r#"("id" BETWEEN 1 AND 9)"#
        );
        assert_eq!(render(PG, col("active")).unwrap(), r#"("active" = TRUE)"#);
        assert_eq!(
            render(
                PG,
                col("price").gt_eq(Expr::Literal(
                    ScalarValue::Decimal128(Some(-5), 10, 2),
                    None
                ))
            )
            .unwrap(),
            r#"("price" >= -0.05)"#
        );
    }

    #[test]
    fn a_widening_cast_keeps_the_column() {
        let e = Expr::Cast(datafusion::logical_expr::Cast::new(
            Box::new(col("small")),
            DataType::Int64,
        ))
        .eq(lit(3i64));
        assert_eq!(render(PG, e).unwrap(), r#"("small" = 3)"#);
        // A narrowing or changing cast could fail or change values: never.
        let e = Expr::Cast(datafusion::logical_expr::Cast::new(
            Box::new(col("name")),
            DataType::Int64,
        ))
        .eq(lit(3i64));
        assert_eq!(render(PG, e), None);
    }

    #[test]
    fn strings_never_order_and_loose_ones_only_widen() {
        assert_eq!(render(PG, col("name").gt(lit("b"))), None);
        assert_eq!(
            render(PG, col("name").not_eq(lit("o'k"))).unwrap(),
            r#"("name" <> 'o''k')"#
        );
        assert_eq!(
            render(PG, col("uid").eq(lit("x"))).unwrap(),
            r#"("uid"::text = 'x')"#
        );
        // char(n) and MySQL strings: equality in a positive place only.
        assert!(render(PG, col("code").eq(lit("ab"))).is_some());
        assert_eq!(render(PG, col("code").not_eq(lit("ab"))), None);
        assert_eq!(render(PG, col("code").eq(lit("ab")).not()), None);
        assert!(render(MY, col("name").eq(lit("ab"))).is_some());
        assert_eq!(render(MY, col("name").not_eq(lit("ab"))), None);
        assert_eq!(render(MY, col("name").like(lit("a%")).not()), None);
        assert!(render(MY, col("name").like(lit("a%"))).is_some());
        assert_eq!(render(MY, col("name").not_like(lit("a%"))), None);
        // A backslash (an escape, or a pattern's trailing escape, which
        // PostgreSQL fails on rows it reaches): never, on either engine.
        assert!(render(PG, col("name").like(lit("a%"))).is_some());
        for p in ["user3@\\", "a\\%", "a\\\\b", "\\x"] {
            for engine in [PG, MY] {
                assert_eq!(render(engine, col("name").like(lit(p))), None, "{p}");
                assert_eq!(render(engine, col("name").not_like(lit(p))), None, "{p}");
            }
        }
        assert_eq!(
            render(MY, col("name").in_list(vec![lit("a"), lit("b")], true)),
            None
        );
        // A double negation is positive again.
        assert!(render(MY, col("name").eq(lit("ab")).not().not()).is_some());
        // NUL can't be in a database string.
        assert_eq!(render(PG, col("name").eq(lit("a\0"))), None);
    }

    /// What a database answers differently (found by an attack review):
    /// MySQL reads a small number compared with a YEAR as a year, and holds
    /// zero dates Veil serves as null; PostgreSQL cuts a `name` literal to
    /// 63 bytes, and a nondeterministic collation's `=` matches more than
    /// its bytes (and can't LIKE).
    #[test]
    fn what_a_database_answers_differently_stays_in_datafusion() {
        assert_eq!(render(MY, col("yr").gt(lit(50u16))), None);
        assert_eq!(render(MY, col("yr").eq(lit(2001u16))), None);
        assert!(render(MY, col("yr").is_null()).is_some());
        for e in [
            col("born").is_null(),
            col("at").is_not_null(),
            col("born").is_not_null().not(),
        ] {
            assert_eq!(render(MY, e.clone()), None, "{e}");
            assert!(render(PG, e.clone()).is_some(), "{e}");
        }
        let d = Expr::Literal(ScalarValue::Date32(Some(20_000)), None);
        assert!(render(MY, col("born").gt(d)).is_some());
        for handle in [PG] {
            assert!(render(handle, col("handle").eq(lit("x"))).is_some());
            assert_eq!(render(handle, col("handle").not_eq(lit("x"))), None);
            assert!(render(handle, col("ci").eq(lit("abc"))).is_some());
            assert_eq!(render(handle, col("ci").not_eq(lit("abc"))), None);
            assert_eq!(render(handle, col("ci").eq(lit("abc")).not()), None);
            assert_eq!(render(handle, col("ci").like(lit("a%"))), None);
            assert_eq!(
                render(handle, col("ci").in_list(vec![lit("a")], true)),
                None
            );
        }
    }

    #[test]
    fn floats_functions_and_column_pairs_stay_in_datafusion() {
        assert_eq!(render(PG, col("score").eq(lit(1.5f64))), None);
        assert!(render(PG, col("score").is_null()).is_some());
        assert_eq!(render(PG, col("id").eq(col("small"))), None);
        assert_eq!(render(PG, (col("id") + lit(1i64)).gt(lit(5i64))), None);
        assert_eq!(
            render(
                PG,
                datafusion::functions::expr_fn::abs(col("id")).gt(lit(5i64))
            ),
            None
        );
        assert_eq!(render(PG, col("unknown").eq(lit(1i64))), None);
        // A literal of another type than the column's.
        assert_eq!(render(PG, col("id").eq(lit("5"))), None);
        // Half of an OR can't be pushed: neither can the OR.
        assert_eq!(
            render(PG, col("id").eq(lit(1i64)).or(col("score").eq(lit(1.0f64)))),
            None
        );
    }

    #[test]
    fn dates_and_timestamps_are_typed_literals() {
        let d = Expr::Literal(ScalarValue::Date32(Some(20_000)), None);
        assert_eq!(
            render(PG, col("born").gt_eq(d.clone())).unwrap(),
            r#"("born" >= DATE '2024-10-04')"#
        );
        assert_eq!(
            render(MY, col("born").gt_eq(d)).unwrap(),
            "(`born` >= DATE '2024-10-04')"
        );
        let t = Expr::Literal(
            ScalarValue::TimestampMicrosecond(Some(1_700_000_000_123_456), Some("UTC".into())),
            None,
        );
        assert_eq!(
            render(PG, col("at").lt(t)).unwrap(),
            r#"("at" < TIMESTAMPTZ '2023-11-14 22:13:20.123456+00:00')"#
        );
    }

    #[test]
    fn identifiers_are_quoted_and_statements_assembled() {
        assert_eq!(quote(PG, r#"we"ird"#), r#""we""ird""#);
        assert_eq!(quote(MY, "we`ird"), "`we``ird`");
        let cols = columns(PG);
        let s = Select {
            engine: PG,
            from: from_clause(
                PG,
                &DatabaseRelation::Table {
                    schema: "public".into(),
                    name: "people".into(),
                },
            ),
            columns: vec![cols["id"].clone(), cols["uid"].clone()],
            conditions: vec![r#"("id" > 5)"#.into()],
            limit: Some(10),
        };
        assert_eq!(
            s.render(),
            r#"SELECT "id", "uid"::text AS "uid" FROM "public"."people" WHERE ("id" > 5) LIMIT 10"#
        );
        let q = from_clause(
            MY,
            &DatabaseRelation::Query {
                sql: "SELECT a FROM t;".into(),
            },
        );
        assert_eq!(q, "(SELECT a FROM t) AS `veil_query`");
    }

    #[test]
    fn key_ranges_cover_every_key_once() {
        let r = key_ranges("id", 1, 100, 100_000, 30_000, 16);
        assert_eq!(r.len(), 4);
        assert_eq!(
            (r[0].low, r[0].high, r[0].with_nulls),
            (None, Some(26), true)
        );
        assert_eq!((r[1].low, r[1].high), (Some(26), Some(51)));
        assert_eq!((r[3].low, r[3].high), (Some(76), None));
        // Every key in exactly one range, and keys past the bounds too.
        for k in -5..120 {
            let n = r
                .iter()
                .filter(|x| x.low.is_none_or(|l| k >= l) && x.high.is_none_or(|h| k < h))
                .count();
            assert_eq!(n, 1, "{k}");
        }
        // Capped by max_parts and by the keys there are.
        assert_eq!(key_ranges("id", 1, 100, 10_000_000, 1, 8).len(), 8);
        assert_eq!(key_ranges("id", 5, 7, 10_000_000, 1, 8).len(), 3);
        assert_eq!(key_ranges("id", 1, 100, 10, 100, 8).len(), 1);
        // Extreme keys don't overflow.
        let r = key_ranges("id", i64::MIN, i64::MAX, 1000, 100, 4);
        assert_eq!(r.len(), 4);
        assert_eq!(
            range_condition("\"id\"", &r[0]),
            format!("(\"id\" IS NULL OR \"id\" < {})", r[0].high.unwrap())
        );
        assert_eq!(
            range_condition("\"id\"", &r[1]),
            format!(
                "(\"id\" >= {} AND \"id\" < {})",
                r[1].low.unwrap(),
                r[1].high.unwrap()
            )
        );
    }

    #[test]
    fn decimals_render_exactly() {
        assert_eq!(decimal_text(12345, 2), "123.45");
        assert_eq!(decimal_text(-5, 2), "-0.05");
        assert_eq!(decimal_text(7, 0), "7");
        assert_eq!(decimal_text(7, -2), "700");
        assert_eq!(decimal_text(0, 3), "0.000");
    }
}
