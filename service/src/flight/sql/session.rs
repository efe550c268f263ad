//! Flight's session options (`SetSessionOptions`, `GetSessionOptions`),
//! answered without a session: Veil keeps no state between calls, so the
//! only option it takes is one every call already has, the catalog
//! (`veil`), which the Flight SQL JDBC driver sets when a connection names
//! one (`catalog=veil`). Any other option, or another catalog, is refused
//! per option with the protocol's error, never silently dropped: a
//! default schema a client believed set would change what its later
//! queries name.
//!
//! The messages are `arrow.flight.protocol`'s (Flight.proto), which
//! arrow-rs does not generate.

use std::collections::HashMap;

use prost::Message;

use crate::engine::principal_catalog::CATALOG;
use crate::error::{Result, VeilError};

/// `SessionOptionValue`: one of a string, a bool, an int64, a double or a
/// list of strings; none means "unset the option".
#[derive(Clone, PartialEq, Message)]
pub struct SessionOptionValue {
    #[prost(oneof = "OptionValue", tags = "1, 2, 3, 4, 5")]
    pub option_value: Option<OptionValue>,
}

/// `SessionOptionValue.StringListValue`
#[derive(Clone, PartialEq, Message)]
pub struct StringListValue {
    #[prost(string, repeated, tag = "1")]
    pub values: Vec<String>,
}

/// The value of a [`SessionOptionValue`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum OptionValue {
    #[prost(string, tag = "1")]
    StringValue(String),
    #[prost(bool, tag = "2")]
    BoolValue(bool),
    #[prost(sfixed64, tag = "3")]
    Int64Value(i64),
    #[prost(double, tag = "4")]
    DoubleValue(f64),
    #[prost(message, tag = "5")]
    StringListValue(StringListValue),
}

/// `SetSessionOptionsRequest`
#[derive(Clone, PartialEq, Message)]
pub struct SetSessionOptionsRequest {
    #[prost(map = "string, message", tag = "1")]
    pub session_options: HashMap<String, SessionOptionValue>,
}

/// `SetSessionOptionsResult.Error`
#[derive(Clone, PartialEq, Message)]
pub struct SetError {
    #[prost(int32, tag = "1")]
    pub value: i32,
}

/// `SetSessionOptionsResult`: an entry for each option not set.
#[derive(Clone, PartialEq, Message)]
pub struct SetSessionOptionsResult {
    #[prost(map = "string, message", tag = "1")]
    pub errors: HashMap<String, SetError>,
}

/// `GetSessionOptionsRequest`: no fields.
#[derive(Clone, PartialEq, Message)]
pub struct GetSessionOptionsRequest {}

/// `GetSessionOptionsResult`
#[derive(Clone, PartialEq, Message)]
pub struct GetSessionOptionsResult {
    #[prost(map = "string, message", tag = "1")]
    pub session_options: HashMap<String, SessionOptionValue>,
}

/// `SetSessionOptionsResult.ErrorValue.INVALID_NAME`
pub const INVALID_NAME: i32 = 1;
/// `SetSessionOptionsResult.ErrorValue.INVALID_VALUE`
pub const INVALID_VALUE: i32 = 2;

/// The most options one `SetSessionOptions` may name, and the longest
/// name: the refused ones are answered by name.
const MAX_OPTIONS: usize = 64;
const MAX_NAME_BYTES: usize = 256;

/// The option naming the catalog, as the JDBC driver sends it.
const CATALOG_OPTION: &str = "catalog";

/// `SetSessionOptions`: the catalog may be set to Veil's own (or unset);
/// every other option, and any other catalog, comes back as an error of
/// the result (which the JDBC driver reports when it connects).
pub fn set(body: &[u8]) -> Result<Vec<u8>> {
    let request = SetSessionOptionsRequest::decode(body).map_err(|_| {
        VeilError::InvalidArgument("the action body is not a SetSessionOptionsRequest".into())
    })?;
    // Refused names are answered as sent, so they are bounded first.
    let options = &request.session_options;
    if options.len() > MAX_OPTIONS || options.keys().any(|n| n.len() > MAX_NAME_BYTES) {
        return Err(VeilError::InvalidArgument(format!(
            "at most {MAX_OPTIONS} session options of names up to {MAX_NAME_BYTES} bytes; Veil takes one, catalog"
        )));
    }
    let errors = request
        .session_options
        .into_iter()
        .filter_map(|(name, value)| {
            let error = match (name.as_str(), value.option_value) {
                (CATALOG_OPTION, None) => None,
                (CATALOG_OPTION, Some(OptionValue::StringValue(v)))
                    if v.eq_ignore_ascii_case(CATALOG) =>
                {
                    None
                }
                (CATALOG_OPTION, Some(_)) => Some(INVALID_VALUE),
                _ => Some(INVALID_NAME),
            };
            error.map(|value| (name, SetError { value }))
        })
        .collect();
    Ok(SetSessionOptionsResult { errors }.encode_to_vec())
}

/// `GetSessionOptions`: the catalog every call reads.
pub fn get(body: &[u8]) -> Result<Vec<u8>> {
    GetSessionOptionsRequest::decode(body).map_err(|_| {
        VeilError::InvalidArgument("the action body is not a GetSessionOptionsRequest".into())
    })?;
    let catalog = SessionOptionValue {
        option_value: Some(OptionValue::StringValue(CATALOG.to_string())),
    };
    Ok(GetSessionOptionsResult {
        session_options: HashMap::from([(CATALOG_OPTION.to_string(), catalog)]),
    }
    .encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(v: &str) -> SessionOptionValue {
        SessionOptionValue {
            option_value: Some(OptionValue::StringValue(v.into())),
        }
    }

    fn set_result(options: &[(&str, SessionOptionValue)]) -> HashMap<String, i32> {
        let body = SetSessionOptionsRequest {
            session_options: options
                .iter()
                .map(|(n, v)| (n.to_string(), v.clone()))
                .collect(),
        }
        .encode_to_vec();
        SetSessionOptionsResult::decode(set(&body).unwrap().as_slice())
            .unwrap()
            .errors
            .into_iter()
            .map(|(n, e)| (n, e.value))
            .collect()
    }

    #[test]
    fn the_catalog_is_veil_and_nothing_else_is_taken() {
        assert!(set_result(&[("catalog", string("veil"))]).is_empty());
        assert!(set_result(&[("catalog", string("VEIL"))]).is_empty());
        assert!(set_result(&[("catalog", SessionOptionValue::default())]).is_empty());
        assert!(set_result(&[]).is_empty());
        let refused = set_result(&[
            ("catalog", string("other")),
            ("schema", string("clinical")),
            ("timezone", string("UTC")),
        ]);
        assert_eq!(
            refused,
            HashMap::from([
                ("catalog".to_string(), INVALID_VALUE),
                ("schema".to_string(), INVALID_NAME),
                ("timezone".to_string(), INVALID_NAME),
            ])
        );
        let not_text = SessionOptionValue {
            option_value: Some(OptionValue::BoolValue(true)),
        };
        assert_eq!(
            set_result(&[("catalog", not_text)]),
            HashMap::from([("catalog".to_string(), INVALID_VALUE)])
        );
        assert!(set(b"\xff\xff").is_err(), "a body that does not decode");
        let many: Vec<(String, SessionOptionValue)> =
            (0..65).map(|i| (format!("o{i}"), string("x"))).collect();
        let long = [("n".repeat(257), string("x"))];
        for options in [&many[..], &long[..]] {
            let body = SetSessionOptionsRequest {
                session_options: options.iter().cloned().collect(),
            }
            .encode_to_vec();
            assert!(matches!(set(&body), Err(VeilError::InvalidArgument(_))));
        }
    }

    #[test]
    fn the_options_read_back_are_the_catalog() {
        let got = GetSessionOptionsResult::decode(get(&[]).unwrap().as_slice()).unwrap();
        assert_eq!(
            got.session_options,
            HashMap::from([("catalog".to_string(), string("veil"))])
        );
    }
}
