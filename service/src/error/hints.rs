//! Errors of a caller's own query, made readable for someone new to SQL:
//! the engine's internal names and notation taken out ([`plain_words`]:
//! `Int64(60)` is `60`, a parser's debug dump is a sentence), and a hint
//! where a common slip is recognisable (a text in double quotes or in no
//! quotes, a filter that is not a condition, a column name's case, a
//! value of the wrong type). Hints quote only what the caller wrote, and
//! go after the detail separator, so they reach the caller and never the
//! audit trail.

use regex::{Captures, Regex};
use std::sync::LazyLock;

use crate::error::{DETAIL_SEPARATOR, VeilError};

/// DataFusion's text of a caller's query error in plain words: the same
/// facts without the engine's notation, its configuration settings, its
/// layers' prefixes and a parser's debug form.
pub fn plain_words(message: &str) -> String {
    static PARSER: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"(?:SQL error: )?(?:ParserError|TokenizerError)\("((?:[^"\\]|\\.)*)"\)"#)
            .expect("valid regex")
    });
    static LINE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"at Line: (\d+), Column: (\d+)").expect("valid regex"));
    static OPTIMIZER: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"Optimizer rule '[^']*' failed\s*caused by\s*").expect("valid regex")
    });
    static PREFIX: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"(?:Arrow error|Error during planning|Schema error|Internal error|Execution error): ",
        )
        .expect("valid regex")
    });
    // A text and a number in one pass, leftmost first: a caller's text
    // that itself looks like the notation (`'Int64(5)'`) is one text,
    // never rewritten inside.
    static LITERAL: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r#"\b(?:Utf8|Utf8View|LargeUtf8)\("((?:[^"\\]|\\.)*)"\)|\b(?:U?Int(?:8|16|32|64)|Float(?:16|32|64)|Boolean)\(([-+0-9.eE]+|true|false|NULL)\)"#,
        )
        .expect("valid regex")
    });
    static CASE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"Column names are case sensitive\. You can use double quotes to refer to the (\S+) column or disable the [a-z_.]+ configuration\.")
            .expect("valid regex")
    });
    static SIGNATURE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?s)Function '([^']+)' failed to match any signature, errors: (.*)")
            .expect("valid regex")
    });
    static REQUIRES: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"requires ([A-Za-z0-9]+), but received ([^.,]+(?:\([^)]*\))?)")
            .expect("valid regex")
    });
    let unescape = |s: &str| s.replace("\\\"", "\"").replace("\\\\", "\\");
    let m = PARSER.replace_all(message, |c: &Captures| unescape(&c[1]));
    let m = LINE.replace_all(&m, "at line $1, column $2");
    let m = OPTIMIZER.replace_all(&m, "");
    let m = SIGNATURE.replace_all(&m, |c: &Captures| {
        let mut takes: Vec<&str> = Vec::new();
        let mut received = None;
        for r in REQUIRES.captures_iter(&c[2]) {
            let t = r.get(1).map_or("", |t| t.as_str());
            if !takes.contains(&t) {
                takes.push(t);
            }
            received = received.or_else(|| r.get(2).map(|g| g.as_str().to_string()));
        }
        match received {
            Some(got) => format!(
                "function '{}' does not take a {got} argument; it takes {}",
                &c[1],
                takes.join(", ")
            ),
            None => format!(
                "function '{}' does not take arguments of these types",
                &c[1]
            ),
        }
    });
    let m = PREFIX.replace_all(&m, "");
    let m = LITERAL.replace_all(&m, |c: &Captures| match (c.get(1), c.get(2)) {
        (Some(text), _) => format!("'{}'", unescape(text.as_str())),
        (None, Some(number)) => number.as_str().to_string(),
        (None, None) => c[0].to_string(),
    });
    let m = CASE.replace_all(&m, "Column names are case sensitive: write $1.");
    m.replace("While expanding wildcard, ", "")
}

/// A scan's error: columns named without the qualifier the engine gives
/// them (`veil.clinical.trials.ssn` is `ssn` to someone scanning
/// `clinical.trials`: `qualifier` is `veil.clinical.trials.`), and hints
/// on its filter.
pub fn scan(e: VeilError, qualifier: &str, filter: &str) -> VeilError {
    let message = e.message().replace(qualifier, "");
    hinted(e.with_message(message), filter)
}

/// A SQL query's error, with hints on its text.
pub fn sql(e: VeilError, query: &str) -> VeilError {
    hinted(e, query)
}

fn hinted(e: VeilError, text: &str) -> VeilError {
    if !matches!(e, VeilError::InvalidArgument(_)) {
        return e;
    }
    let message = e.message();
    let mut hints = Vec::new();
    // A name that differs from a column's only by case is a column: the
    // message already says which.
    let case_slip = message.contains("Column names are case sensitive");
    if let Some(name) = missing_field(&message)
        && !case_slip
    {
        if text.contains(&format!("\"{name}\"")) {
            hints.push(format!(
                "in SQL, double quotes name a column: \"{name}\" is read as a column; write text in single quotes, '{name}'"
            ));
        } else if let Some(written) = unquoted_word(text, &name) {
            hints.push(format!(
                "{written} is read as a column; if it is a text, write it in single quotes, '{written}'"
            ));
        }
    }
    if message.contains("Cannot cast string") {
        hints.push(
            "a text was compared with or converted to another type: compare numbers with numbers (age > 60) and dates with dates in single quotes (date_of_birth > '1990-01-01')"
                .to_string(),
        );
    }
    if message.contains("non-boolean predicate") {
        hints.push(
            "a filter is a condition, true or false for each row, such as age > 60 or state = 'CA'"
                .to_string(),
        );
    }
    if hints.is_empty() {
        return e;
    }
    let joiner = if message.contains(DETAIL_SEPARATOR) {
        if message.trim_end().ends_with('.') {
            " "
        } else {
            ". "
        }
        .to_string()
    } else {
        DETAIL_SEPARATOR.to_string()
    };
    let hint = format!("{message}{joiner}Hint: {}", hints.join("; "));
    e.with_message(hint)
}

/// `name` as the caller wrote it outside any quotes (SQL folds unquoted
/// names to lower case: `CA` is the missing field `ca`).
fn unquoted_word(text: &str, name: &str) -> Option<String> {
    unquoted_words(text)
        .into_iter()
        .rfind(|w| w.to_lowercase() == name)
}

/// The words (letters, digits, `_`) of a caller's SQL text outside its
/// quotes, in order.
pub fn unquoted_words(text: &str) -> Vec<String> {
    crate::redact::unquoted(text)
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// The name in DataFusion's "No field named X" / `No field named "X"`.
fn missing_field(message: &str) -> Option<String> {
    let rest = message.split("No field named ").nth(1)?;
    let name = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next()?,
        None => rest.split(['.', ' ', '\n']).next()?,
    };
    (!name.is_empty() && name.chars().count() <= 128).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(detail: &str) -> VeilError {
        VeilError::InvalidArgument(VeilError::detailed("the query is not valid", detail))
    }

    #[test]
    fn double_quoted_text_gets_a_hint_after_the_separator() {
        let e = scan(
            invalid(
                "Schema error: No field named \"CA\". Valid fields are veil.clinical.trials.state.",
            ),
            "veil.clinical.trials.",
            "state == \"CA\"",
        );
        let m = e.client_message();
        assert!(m.contains("write text in single quotes, 'CA'"), "{m}");
        assert!(m.contains("Valid fields are state."), "{m}");
        assert!(!e.audit_message().contains("CA"), "{}", e.audit_message());
    }

    #[test]
    fn the_engines_notation_becomes_plain_words() {
        let cases = [
            (
                "Cannot create filter with non-boolean predicate 'age >> Int64(60)' returning Int64",
                "Cannot create filter with non-boolean predicate 'age >> 60' returning Int64",
            ),
            (
                "state = Utf8(\"C\\\"A\") AND x > Float64(1.5) AND y = Boolean(true) AND z = UInt8(NULL)",
                "state = 'C\"A' AND x > 1.5 AND y = true AND z = NULL",
            ),
            (
                "SQL error: ParserError(\"Expected: end of expression, found: ; at Line: 1, Column: 9\")",
                "Expected: end of expression, found: ; at line 1, column 9",
            ),
            (
                "Optimizer rule 'simplify_expressions' failed\ncaused by\nArrow error: Cast error: Cannot cast string 'abc' to value of Int32 type",
                "Cast error: Cannot cast string 'abc' to value of Int32 type",
            ),
            (
                "No field named \"AGE\". Did you mean 'age'?\nColumn names are case sensitive. You can use double quotes to refer to the age column or disable the datafusion.sql_parser.enable_ident_normalization configuration.",
                "No field named \"AGE\". Did you mean 'age'?\nColumn names are case sensitive: write age.",
            ),
            (
                "Internal error: Function 'sum' failed to match any signature, errors: Error during planning: Function 'sum' requires Decimal, but received String (DataType: Utf8).,Error during planning: Function 'sum' requires Int64, but received String (DataType: Utf8)..",
                "function 'sum' does not take a String (DataType: Utf8) argument; it takes Decimal, Int64",
            ),
            (
                "Error during planning: Column in SELECT must be in GROUP BY or an aggregate function: While expanding wildcard, column \"t.age\" must appear",
                "Column in SELECT must be in GROUP BY or an aggregate function: column \"t.age\" must appear",
            ),
            // Names that merely look like the notation stay.
            ("No field named Int64x", "No field named Int64x"),
            // A caller's own text that looks like the notation is theirs.
            (
                "x = Utf8(\"Int64(5) and Utf8(\\\"a\\\")\") AND y = Int32(2)",
                "x = 'Int64(5) and Utf8(\"a\")' AND y = 2",
            ),
        ];
        for (engine, plain) in cases {
            assert_eq!(plain_words(engine), plain, "{engine}");
        }
    }

    #[test]
    fn a_text_without_quotes_gets_a_hint_in_the_callers_spelling() {
        let e = scan(
            invalid(
                "Schema error: No field named ca. Valid fields are veil.clinical.trials.state.",
            ),
            "veil.clinical.trials.",
            "state = CA",
        );
        assert!(
            e.client_message().contains(
                "CA is read as a column; if it is a text, write it in single quotes, 'CA'"
            ),
            "{}",
            e.client_message()
        );
        // Within quotes it is not the caller's bare word.
        let e = sql(
            invalid("No field named ca."),
            "SELECT 'ca' AS x, \"CA\" FROM t",
        );
        assert!(
            !e.client_message().contains("if it is a text"),
            "{}",
            e.client_message()
        );
    }

    #[test]
    fn a_columns_case_is_not_mistaken_for_a_quoted_text() {
        let e = sql(
            invalid(
                "No field named \"AGE\". Did you mean 'age'?\nColumn names are case sensitive: write age.",
            ),
            "SELECT \"AGE\" FROM t",
        );
        assert!(
            !e.client_message().contains("single quotes"),
            "{}",
            e.client_message()
        );
    }

    #[test]
    fn a_text_compared_with_a_number_gets_a_hint() {
        let e = scan(
            invalid("Cast error: Cannot cast string 'abc' to value of Int32 type"),
            "veil.clinical.trials.",
            "age > 'abc'",
        );
        assert!(e.client_message().contains("compare numbers with numbers"));
        assert!(!e.audit_message().contains("abc"), "{}", e.audit_message());
    }

    #[test]
    fn a_filter_that_is_no_condition_says_what_a_filter_is() {
        let e = sql(
            invalid("Cannot create filter with non-boolean predicate 'age >> 60'"),
            "age >> 60",
        );
        assert!(e.client_message().contains("true or false for each row"));
        // Nothing to add: the error is kept as it is.
        let plain = invalid("something else");
        assert_eq!(sql(plain.clone(), "x"), plain);
    }
}
