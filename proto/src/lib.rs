//! Veil's own Flight messages: the Rust types of `veil/v1/veil.proto`,
//! generated at build time (`build.rs`: protox parses the file, prost-build
//! writes the types; no `protoc`). The `.proto` file is the one source of the
//! wire contract; this file adds only what is not a message: the [`Named`]
//! type URLs, helpers, and the action names. The tests at the bottom pin the
//! wire bytes.

use prost::Message;

// Generated code, re-exported at the crate root under the names the rest of
// Veil uses.
#[allow(clippy::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/veil.v1.rs"));
}

pub use generated::*;

/// The command a ticket was issued for (`TicketBody.command`).
pub use generated::ticket_body::Command as TicketCommand;

/// Type URL prefix for messages wrapped in [`Any`].
pub const TYPE_URL_PREFIX: &str = "type.googleapis.com/veil.v1.";

/// A direct read's ticket: these bytes, then a command exactly as a
/// descriptor carries it (a `ScanCommand` or `SqlCommand` in [`Any`]).
/// `DoGet` plans it for the caller and streams it in one call.
pub const DIRECT_TICKET_PREFIX: &[u8] = b"veil.direct.v1:";

/// How a direct read that has several parts is declined (the status
/// message's first word; the code is `FAILED_PRECONDITION`): the reader
/// asks `GetFlightInfo` for the parts instead.
pub const READ_IN_PARTS: &str = "[READ_IN_PARTS]";

/// A message that has a fully qualified protobuf name: every message of
/// `veil.v1` (the name comes from the `.proto`, through prost's [`prost::Name`]).
pub trait Named: Message + Default {
    /// The message name inside package `veil.v1`.
    const NAME: &'static str;

    /// `type.googleapis.com/veil.v1.<NAME>`
    fn type_url() -> String {
        format!("{TYPE_URL_PREFIX}{}", Self::NAME)
    }

    /// Wrap in [`Any`] and encode.
    fn to_any_bytes(&self) -> Vec<u8> {
        Any {
            type_url: Self::type_url(),
            value: self.encode_to_vec(),
        }
        .encode_to_vec()
    }
}

impl<T: prost::Name + Default> Named for T {
    const NAME: &'static str = <T as prost::Name>::NAME;
}

impl Any {
    /// Decode the payload when the type URL names `T`, `None` otherwise.
    pub fn unpack<T: Named>(&self) -> Option<Result<T, prost::DecodeError>> {
        (self.type_url == T::type_url()).then(|| T::decode(self.value.as_slice()))
    }
}

impl FileSlice {
    /// True when the slice is the whole file rather than a row-group range.
    pub fn is_whole_file(&self) -> bool {
        self.row_group_start == 0 && self.row_group_end == 0
    }
}

/// Names of Veil's Flight actions (`Action.type`).
pub mod actions {
    pub const WHOAMI: &str = "veil.whoami";
    pub const DESCRIBE: &str = "veil.describe";
    pub const SEARCH: &str = "veil.search";
    pub const REGISTER_DATASET: &str = "veil.register_dataset";
    pub const DROP_DATASET: &str = "veil.drop_dataset";
    pub const SET_COLUMN_TAGS: &str = "veil.set_column_tags";
    pub const SET_DESCRIPTION: &str = "veil.set_description";
    pub const SET_USER_DISABLED: &str = "veil.set_user_disabled";
    pub const GRANT_PERMISSION: &str = "veil.grant_permission";
    pub const REVOKE_PERMISSION: &str = "veil.revoke_permission";
    pub const AUDIT_TAIL: &str = "veil.audit_tail";
    pub const PUT_USER: &str = "veil.put_user";
    pub const DELETE_USER: &str = "veil.delete_user";
    pub const LIST_USERS: &str = "veil.list_users";
    pub const RELOAD: &str = "veil.reload";
    pub const CREATE_POLICY: &str = "veil.create_policy";
    pub const UPDATE_POLICY: &str = "veil.update_policy";
    pub const DELETE_POLICY: &str = "veil.delete_policy";
    pub const LIST_POLICIES: &str = "veil.list_policies";
    pub const EXPLAIN: &str = "veil.explain";
    pub const PROFILE_K_ANONYMITY: &str = "veil.profile_k_anonymity";
    pub const REQUEST_UNMASK: &str = "veil.request_unmask";
    pub const APPROVE_UNMASK: &str = "veil.approve_unmask";
    pub const DENY_UNMASK: &str = "veil.deny_unmask";
    pub const LIST_UNMASK_REQUESTS: &str = "veil.list_unmask_requests";
    pub const UNMASK_RESULT: &str = "veil.unmask_result";
    pub const REQUEST_ACCESS: &str = "veil.request_access";
    pub const APPROVE_ACCESS: &str = "veil.approve_access";
    pub const DENY_ACCESS: &str = "veil.deny_access";
    pub const LIST_ACCESS_REQUESTS: &str = "veil.list_access_requests";
    pub const REVOKE_ACCESS: &str = "veil.revoke_access";
    pub const SET_EXPERTS: &str = "veil.set_experts";
    pub const ACCELERATE: &str = "veil.accelerate";
    pub const REFRESH: &str = "veil.refresh";
    pub const DISCOVER: &str = "veil.discover";
    pub const DECIDE_TAG_PROPOSAL: &str = "veil.decide_tag_proposal";
    pub const DP_BUDGET: &str = "veil.dp_budget";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// client-py/tests/test_proto.py pins the same bytes from the Python
    /// messages generated from the same file.
    #[test]
    fn scan_command_wire_bytes_are_stable() {
        let cmd = ScanCommand {
            dataset: "a.b".into(),
            columns: vec!["x".into()],
            filter: "x > 1".into(),
            limit: Some(5),
        };
        assert_eq!(
            cmd.encode_to_vec(),
            b"\x0a\x03a.b\x12\x01x\x1a\x05x > 1\x20\x05".to_vec()
        );
    }

    /// Bytes produced by Python's protobuf from the messages generated from
    /// the same `.proto`: every field of a ticket (the oneof, the optional
    /// part, a negative int64), a map, nested messages.
    #[test]
    fn encodings_match_an_independent_protobuf_implementation() {
        let ticket = TicketBody {
            format: 1,
            issuer: "i".into(),
            subject: "s".into(),
            expires_at_ms: -2,
            policy_version: 300,
            identity_fingerprint: vec![1, 2],
            command: Some(TicketCommand::Sql(SqlCommand {
                query: "SELECT 1".into(),
                parameters: vec![7],
                privacy_receipt: false,
            })),
            part: Some(ScanPart {
                files: vec![FileSlice {
                    path: "p".into(),
                    row_group_start: 1,
                    row_group_end: 2,
                    row_group_count: 3,
                }],
                dataset: "d".into(),
                key_range: Some(KeyRange {
                    column: "id".into(),
                    low: Some(-3),
                    high: None,
                    with_nulls: true,
                }),
                siblings: 4,
                deal: None,
            }),
            part_index: 1,
            part_count: 2,
            query_id: "q".into(),
            padding: vec![0, 0],
            planned_at_ms: 1_700_000_000_000,
            r#use: TicketUse::PreparedStatement as i32,
        };
        let expected: &[u8] = b"\x08\x01\x12\x01i\x1a\x01s \xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01(\xac\x022\x02\x01\x02B\x0d\x0a\x08SELECT 1\x12\x01\x07J#\x0a\x09\x0a\x01p\x10\x01\x18\x02 \x03\x12\x01d\x1a\x11\x0a\x02id\x10\xfd\xff\xff\xff\xff\xff\xff\xff\xff\x01 \x01 \x04P\x01X\x02b\x01qj\x02\x00\x00p\x80\xd0\x95\xff\xbc1x\x01";
        assert_eq!(ticket.encode_to_vec(), expected);
        assert_eq!(TicketBody::decode(expected).unwrap(), ticket);
        let metadata = TicketBody {
            command: Some(TicketCommand::FlightSqlMetadata(vec![1, 2])),
            ..Default::default()
        };
        assert_eq!(metadata.encode_to_vec(), b"\x82\x01\x02\x01\x02");

        let whoami = WhoAmI {
            issuer: "i".into(),
            subject: "s".into(),
            groups: vec!["g".into()],
            attributes: [("k".to_string(), "a,b".to_string())].into(),
            permissions: vec!["AUDIT".into()],
        };
        assert_eq!(
            whoami.encode_to_vec(),
            b"\x0a\x01i\x12\x01s\x1a\x01g\x22\x08\x0a\x01k\x12\x03a,b*\x05AUDIT"
        );

        let explain = ExplainRequest {
            user: Some(UserRef {
                issuer: String::new(),
                subject: "bob".into(),
            }),
            dataset: "a.b".into(),
            groups: vec!["g".into()],
            attributes: vec![AttributeValues {
                key: "k".into(),
                values: vec!["v".into()],
            }],
        };
        assert_eq!(
            explain.encode_to_vec(),
            b"\x0a\x05\x12\x03bob\x12\x03a.b\x1a\x01g\x22\x06\x0a\x01k\x12\x01v"
        );
    }

    #[test]
    fn type_urls_name_the_proto_messages() {
        assert_eq!(
            ScanCommand::type_url(),
            "type.googleapis.com/veil.v1.ScanCommand"
        );
        assert_eq!(WhoAmI::NAME, "WhoAmI");
        assert_eq!(ProfileKAnonymityRequest::NAME, "ProfileKAnonymityRequest");
    }

    #[test]
    fn any_round_trip_checks_the_type() {
        let bytes = SqlCommand {
            query: "SELECT 1".into(),
            ..Default::default()
        }
        .to_any_bytes();
        let any = Any::decode(bytes.as_slice()).unwrap();
        assert!(any.unpack::<ScanCommand>().is_none());
        assert_eq!(
            any.unpack::<SqlCommand>().unwrap().unwrap().query,
            "SELECT 1"
        );
    }
}
