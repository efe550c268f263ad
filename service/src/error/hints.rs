//! Errors of a caller's own query, made readable for someone new to SQL:
//! the engine's internal names taken out, and a hint where a common slip
//! is recognisable (a text in double quotes, a filter that is not a
//! condition). Hints quote only what the caller wrote, and go after the
//! detail separator, so they reach the caller and never the audit trail.

use crate::error::{DETAIL_SEPARATOR, VeilError};

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
    if let Some(name) = missing_field(&message)
        && text.contains(&format!("\"{name}\""))
    {
        hints.push(format!(
            "in SQL, double quotes name a column: \"{name}\" is read as a column; write text in single quotes, '{name}'"
        ));
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
