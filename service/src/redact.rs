//! Value-free descriptions of upstream errors, for the audit trail and the
//! server log. Upstream text (DataFusion, Arrow, parsers) can quote data
//! values; what this module returns is built from Veil's own fixed words,
//! so nothing of the text leaks whatever it quotes.

use datafusion::common::DataFusionError;

/// What kind of failure an upstream message describes, in Veil's words
/// and without a single character of the message itself: safe for the
/// audit trail and the log whatever the message quotes. Only the
/// message's own words decide: what it quotes (a value, in single or
/// double quotes) is left out, so a value's words can't choose the class.
pub fn class_of(message: &str) -> &'static str {
    let m = unquoted(message).to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| m.contains(n));
    if has(&["no field named", "invalid reference"]) {
        // Before the value classes: the message lists the valid names,
        // which may contain any of their words ("date_of_birth").
        "a name does not resolve"
    } else if has(&["parsererror", "tokenizererror", "sql error:"]) {
        "the SQL is not well formed"
    } else if has(&["divide by zero", "division by zero"]) {
        "division by zero"
    } else if has(&["overflow"]) {
        "arithmetic overflow"
    } else if has(&["regex", "regular expression"]) {
        "a regular expression failed"
    } else if has(&["json"]) {
        "a JSON value could not be processed"
    } else if has(&["cast", "cannot convert", "can't convert"]) {
        "a value could not be converted to another type"
    } else if has(&["parse", "parsing", "invalid digit", "timestamp", "date"]) {
        "a value could not be parsed"
    } else if has(&[
        "out of range",
        "out of bounds",
        "index",
        "too large",
        "invalid unicode",
        "precision",
    ]) {
        "a value was out of range"
    } else if has(&[
        "not found",
        "no field named",
        "invalid reference",
        "ambiguous",
    ]) {
        "a name does not resolve"
    } else if has(&["type", "coerc", "signature"]) {
        "types do not match"
    } else if has(&["memory", "resources exhausted"]) {
        "memory limit reached"
    } else if has(&["not supported", "unsupported", "not implemented"]) {
        "something the engine does not support"
    } else {
        "other"
    }
}

/// A value-free description of `e` for the server log: the variant and its
/// class. Source errors (object store, I/O) name paths, never values, and
/// keep their text so operators can act on them.
pub fn describe(e: &DataFusionError) -> String {
    match e {
        DataFusionError::ObjectStore(_) | DataFusionError::IoError(_) => e.to_string(),
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            describe(inner)
        }
        DataFusionError::Shared(inner) => describe(inner),
        // `message()` of an empty collection panics.
        DataFusionError::Collection(errs) => errs
            .first()
            .map_or_else(|| "an empty collection of errors".to_string(), describe),
        other => format!("{}: {}", variant_of(other), class_of(&other.message())),
    }
}

fn variant_of(e: &DataFusionError) -> &'static str {
    match e {
        DataFusionError::ArrowError(..) => "arrow error",
        DataFusionError::ParquetError(_) => "parquet error",
        DataFusionError::ObjectStore(_) => "object store error",
        DataFusionError::IoError(_) => "I/O error",
        DataFusionError::SQL(..) => "SQL error",
        DataFusionError::NotImplemented(_) => "not implemented",
        DataFusionError::Internal(_) => "internal error",
        DataFusionError::Plan(_) => "planning error",
        DataFusionError::Configuration(_) => "configuration error",
        DataFusionError::SchemaError(..) => "schema error",
        DataFusionError::Execution(_) => "execution error",
        DataFusionError::ExecutionJoin(_) => "task error",
        DataFusionError::ResourcesExhausted(_) => "resources exhausted",
        DataFusionError::External(_) => "external error",
        DataFusionError::Context(..) => "error",
        DataFusionError::Substrait(_) => "substrait error",
        DataFusionError::Diagnostic(..) => "error",
        DataFusionError::Collection(_) => "errors",
        DataFusionError::Shared(_) => "error",
        DataFusionError::Ffi(_) => "ffi error",
    }
}

/// `message` without what it quotes: text between single quotes or
/// between double quotes (up to the end, if a quote is never closed).
pub fn unquoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quote = None;
    for c in message.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_value_cannot_choose_the_class() {
        let cast = "Cast error: Cannot cast string 'x' to value of Int32 type";
        assert_eq!(
            class_of(cast),
            "a value could not be converted to another type"
        );
        for value in ["ParserError(json regex overflow)", "a\"b", "divide by zero"] {
            let quoted = cast.replace("'x'", &format!("'{value}'"));
            assert_eq!(class_of(&quoted), class_of(cast), "{quoted}");
        }
        // The words outside quotes still decide.
        assert_eq!(
            class_of("SQL error: ParserError(\"Expected: an expression\")"),
            "the SQL is not well formed"
        );
        assert_eq!(
            class_of("No field named \"CA\"."),
            "a name does not resolve"
        );
    }
}
