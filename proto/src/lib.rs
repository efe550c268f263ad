//! Veil's own Flight messages, the prost encoding of `veil/v1/veil.proto`.
//!
//! The types are written by hand with prost's derive (no `protoc` needed to
//! build Veil); the `.proto` file is the contract other clients implement, and
//! the tests at the bottom pin the wire bytes of each message.

use prost::Message;

/// Type URL prefix for messages wrapped in [`Any`].
pub const TYPE_URL_PREFIX: &str = "type.googleapis.com/veil.v1.";

/// A message that has a fully qualified protobuf name.
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

/// `google.protobuf.Any`-compatible envelope.
#[derive(Clone, PartialEq, Message)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

impl Any {
    /// Decode the payload when the type URL names `T`, `None` otherwise.
    pub fn unpack<T: Named>(&self) -> Option<Result<T, prost::DecodeError>> {
        (self.type_url == T::type_url()).then(|| T::decode(self.value.as_slice()))
    }
}

macro_rules! named {
    ($($t:ident),* $(,)?) => {
        $(impl Named for $t { const NAME: &'static str = stringify!($t); })*
    };
}

#[derive(Clone, PartialEq, Message)]
pub struct ScanCommand {
    #[prost(string, tag = "1")]
    pub dataset: String,
    #[prost(string, repeated, tag = "2")]
    pub columns: Vec<String>,
    #[prost(string, tag = "3")]
    pub filter: String,
    #[prost(uint64, optional, tag = "4")]
    pub limit: Option<u64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SqlCommand {
    #[prost(string, tag = "1")]
    pub query: String,
}

#[derive(Clone, PartialEq, Eq, Hash, Message)]
pub struct FileSlice {
    #[prost(string, tag = "1")]
    pub path: String,
    #[prost(uint32, tag = "2")]
    pub row_group_start: u32,
    #[prost(uint32, tag = "3")]
    pub row_group_end: u32,
    #[prost(uint32, tag = "4")]
    pub row_group_count: u32,
}

impl FileSlice {
    /// True when the slice is the whole file rather than a row-group range.
    pub fn is_whole_file(&self) -> bool {
        self.row_group_start == 0 && self.row_group_end == 0
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct ScanPart {
    #[prost(message, repeated, tag = "1")]
    pub files: Vec<FileSlice>,
}

/// The command a ticket was issued for.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum TicketCommand {
    #[prost(message, tag = "7")]
    Scan(ScanCommand),
    #[prost(message, tag = "8")]
    Sql(SqlCommand),
}

#[derive(Clone, PartialEq, Message)]
pub struct TicketBody {
    #[prost(uint32, tag = "1")]
    pub format: u32,
    #[prost(string, tag = "2")]
    pub issuer: String,
    #[prost(string, tag = "3")]
    pub subject: String,
    #[prost(int64, tag = "4")]
    pub expires_at_ms: i64,
    #[prost(uint64, tag = "5")]
    pub policy_version: u64,
    #[prost(bytes = "vec", tag = "6")]
    pub identity_fingerprint: Vec<u8>,
    #[prost(oneof = "TicketCommand", tags = "7, 8")]
    pub command: Option<TicketCommand>,
    #[prost(message, optional, tag = "9")]
    pub part: Option<ScanPart>,
    #[prost(uint32, tag = "10")]
    pub part_index: u32,
    #[prost(uint32, tag = "11")]
    pub part_count: u32,
    #[prost(string, tag = "12")]
    pub query_id: String,
    /// Zero bytes that round the encoded body up to a fixed size class, so
    /// a ticket's length doesn't reveal the layout of the data it names.
    #[prost(bytes = "vec", tag = "13")]
    pub padding: Vec<u8>,
    /// When the read was planned: time-window policies are measured from
    /// it, so every endpoint and retry of one read sees the same rows.
    #[prost(int64, tag = "14")]
    pub planned_at_ms: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct SignedTicket {
    #[prost(bytes = "vec", tag = "1")]
    pub body: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub mac: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct DescribeRequest {
    #[prost(string, tag = "1")]
    pub dataset: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct ColumnDescription {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub data_type: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, repeated, tag = "4")]
    pub tags: Vec<String>,
    #[prost(string, tag = "5")]
    pub mask: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct DatasetDescription {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub description: String,
    #[prost(string, repeated, tag = "3")]
    pub owners: Vec<String>,
    #[prost(string, repeated, tag = "4")]
    pub tags: Vec<String>,
    #[prost(message, repeated, tag = "5")]
    pub columns: Vec<ColumnDescription>,
    #[prost(string, tag = "6")]
    pub format: String,
    #[prost(bool, tag = "7")]
    pub rows_filtered: bool,
    /// `read`, or `request` for a dataset open on request that the caller
    /// may not read yet (the columns show what an approval would give).
    #[prost(string, tag = "8")]
    pub access: String,
    /// People to ask about the data (being one grants nothing).
    #[prost(string, repeated, tag = "9")]
    pub experts: Vec<String>,
}

/// Search the catalog: datasets whose name, description, tags, column
/// names, column descriptions or column tags contain every word of `query`
/// (case-insensitive), among those the caller may see.
#[derive(Clone, PartialEq, Message)]
pub struct SearchRequest {
    #[prost(string, tag = "1")]
    pub query: String,
    /// Most hits returned (0: 50).
    #[prost(uint32, tag = "2")]
    pub limit: u32,
}

/// One dataset a search found (one per action result, best first).
#[derive(Clone, PartialEq, Message)]
pub struct SearchHit {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub description: String,
    /// `read`, or `request` (open on request, not yet approved).
    #[prost(string, tag = "3")]
    pub access: String,
    /// Where the words matched: `name`, `description`, `tag PII`,
    /// `owner dave`, `expert erin`, `column ssn`, `column ssn: tag PII`,
    /// `column ssn: description`.
    #[prost(string, repeated, tag = "4")]
    pub matches: Vec<String>,
    #[prost(string, repeated, tag = "5")]
    pub owners: Vec<String>,
    #[prost(string, repeated, tag = "6")]
    pub tags: Vec<String>,
    #[prost(string, repeated, tag = "7")]
    pub experts: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct WhoAmI {
    #[prost(string, tag = "1")]
    pub issuer: String,
    #[prost(string, tag = "2")]
    pub subject: String,
    #[prost(string, repeated, tag = "3")]
    pub groups: Vec<String>,
    #[prost(btree_map = "string, string", tag = "4")]
    pub attributes: std::collections::BTreeMap<String, String>,
    #[prost(string, repeated, tag = "5")]
    pub permissions: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RegisterDatasetRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub format: String,
    #[prost(string, tag = "3")]
    pub location: String,
    #[prost(string, tag = "4")]
    pub description: String,
    #[prost(bool, tag = "5")]
    pub hive_partitioned: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct DropDatasetRequest {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct SetColumnTagsRequest {
    #[prost(string, tag = "1")]
    pub dataset: String,
    #[prost(string, tag = "2")]
    pub column: String,
    #[prost(string, repeated, tag = "3")]
    pub tags: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SetDescriptionRequest {
    #[prost(string, tag = "1")]
    pub dataset: String,
    #[prost(string, tag = "2")]
    pub column: String,
    #[prost(string, tag = "3")]
    pub description: String,
}

/// Name the people to ask about a dataset (replaces the list).
#[derive(Clone, PartialEq, Message)]
pub struct SetExpertsRequest {
    #[prost(string, tag = "1")]
    pub dataset: String,
    #[prost(message, repeated, tag = "2")]
    pub experts: Vec<UserRef>,
}

/// Sample a dataset and propose column tags (answered with JSON).
#[derive(Clone, PartialEq, Message)]
pub struct DiscoverRequest {
    #[prost(string, tag = "1")]
    pub dataset: String,
    /// 0: the default (1000); at most 100000.
    #[prost(uint32, tag = "2")]
    pub sample_rows: u32,
    /// 0: the default (50); else 1 to 100.
    #[prost(uint32, tag = "3")]
    pub min_confidence: u32,
}

/// Accept or reject a pending tag proposal.
#[derive(Clone, PartialEq, Message)]
pub struct DecideTagProposalRequest {
    #[prost(string, tag = "1")]
    pub dataset: String,
    #[prost(string, tag = "2")]
    pub column: String,
    #[prost(string, tag = "3")]
    pub tag: String,
    #[prost(bool, tag = "4")]
    pub accept: bool,
    /// Accept under this tag instead of the proposed one.
    #[prost(string, tag = "5")]
    pub tag_as: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct UserRef {
    #[prost(string, tag = "1")]
    pub issuer: String,
    #[prost(string, tag = "2")]
    pub subject: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct SetUserDisabledRequest {
    #[prost(message, optional, tag = "1")]
    pub user: Option<UserRef>,
    #[prost(bool, tag = "2")]
    pub disabled: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct PermissionRequest {
    #[prost(message, optional, tag = "1")]
    pub user: Option<UserRef>,
    #[prost(string, tag = "2")]
    pub permission: String,
}

/// One attribute and its values (attributes are multi-valued).
#[derive(Clone, PartialEq, Message)]
pub struct AttributeValues {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, repeated, tag = "2")]
    pub values: Vec<String>,
}

/// Create or replace a runtime directory entry.
#[derive(Clone, PartialEq, Message)]
pub struct PutUserRequest {
    #[prost(message, optional, tag = "1")]
    pub user: Option<UserRef>,
    #[prost(string, repeated, tag = "2")]
    pub groups: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    pub attributes: Vec<AttributeValues>,
}

#[derive(Clone, PartialEq, Message)]
pub struct DeleteUserRequest {
    #[prost(message, optional, tag = "1")]
    pub user: Option<UserRef>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ListUsersRequest {}

/// One directory entry, as `veil.list_users` returns it (one per result).
#[derive(Clone, PartialEq, Message)]
pub struct UserEntry {
    #[prost(string, tag = "1")]
    pub issuer: String,
    #[prost(string, tag = "2")]
    pub subject: String,
    #[prost(string, repeated, tag = "3")]
    pub groups: Vec<String>,
    #[prost(message, repeated, tag = "4")]
    pub attributes: Vec<AttributeValues>,
    #[prost(string, repeated, tag = "5")]
    pub permissions: Vec<String>,
    #[prost(bool, tag = "6")]
    pub disabled: bool,
    /// `config` (read-only at run time) or `runtime`; empty when the user
    /// has grants or a disabled flag but no directory entry.
    #[prost(string, tag = "7")]
    pub origin: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct ReloadRequest {}

#[derive(Clone, PartialEq, Message)]
pub struct ActionAck {
    #[prost(string, tag = "1")]
    pub message: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct AuditTailRequest {
    #[prost(uint32, tag = "1")]
    pub limit: u32,
}

/// `veil.create_policy` / `veil.update_policy`: the policy as JSON, in the
/// form of a `[[policies]]` entry of the config file.
#[derive(Clone, PartialEq, Message)]
pub struct PolicyWriteRequest {
    #[prost(string, tag = "1")]
    pub spec_json: String,
    /// Update only if the policy is still at this version (0: any).
    #[prost(uint64, tag = "2")]
    pub expected_version: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct DeletePolicyRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint64, tag = "2")]
    pub expected_version: u64,
}

/// `veil.list_policies`: one JSON policy per result body; `dataset` limits
/// the list to the policies applying to one dataset.
#[derive(Clone, PartialEq, Message)]
pub struct ListPoliciesRequest {
    #[prost(string, tag = "1")]
    pub dataset: String,
}

/// `veil.explain`: what `user` gets from `dataset`. `groups` and
/// `attributes` stand for the token claims the user would present (merged
/// with the directory, as at sign-in).
#[derive(Clone, PartialEq, Message)]
pub struct ExplainRequest {
    #[prost(message, optional, tag = "1")]
    pub user: Option<UserRef>,
    #[prost(string, tag = "2")]
    pub dataset: String,
    #[prost(string, repeated, tag = "3")]
    pub groups: Vec<String>,
    #[prost(message, repeated, tag = "4")]
    pub attributes: Vec<AttributeValues>,
}

/// `veil.profile_k_anonymity`: what the data says about k-anonymizing
/// these columns of `dataset` together (distinct values, current and
/// suggested k). One JSON body.
#[derive(Clone, PartialEq, Message)]
pub struct ProfileKAnonymityRequest {
    #[prost(string, tag = "1")]
    pub dataset: String,
    #[prost(string, repeated, tag = "2")]
    pub columns: Vec<String>,
}

/// `veil.request_unmask`: ask to see the original of values a reversible
/// (or format-preserving) mask produced, with a reason. One JSON body.
#[derive(Clone, PartialEq, Message)]
pub struct RequestUnmaskRequest {
    #[prost(string, tag = "1")]
    pub dataset: String,
    #[prost(string, tag = "2")]
    pub column: String,
    #[prost(string, repeated, tag = "3")]
    pub values: Vec<String>,
    #[prost(string, tag = "4")]
    pub reason: String,
}

/// `veil.unmask_result`: the requester's plaintext of an approved unmask
/// request. One JSON body.
#[derive(Clone, PartialEq, Message)]
pub struct UnmaskResultRequest {
    #[prost(string, tag = "1")]
    pub request_id: String,
}

/// `veil.request_access`: ask to read an *on request* dataset.
#[derive(Clone, PartialEq, Message)]
pub struct RequestAccessRequest {
    #[prost(string, tag = "1")]
    pub dataset: String,
    #[prost(string, tag = "2")]
    pub reason: String,
}

/// `veil.approve_access` / `veil.deny_access`.
#[derive(Clone, PartialEq, Message)]
pub struct DecideAccessRequest {
    #[prost(string, tag = "1")]
    pub request_id: String,
    #[prost(string, tag = "2")]
    pub note: String,
}

/// `veil.list_access_requests`: the requests the caller may decide (and
/// their own); `all` includes decided ones.
#[derive(Clone, PartialEq, Message)]
pub struct ListAccessRequestsRequest {
    #[prost(string, tag = "1")]
    pub dataset: String,
    #[prost(bool, tag = "2")]
    pub all: bool,
}

/// `veil.revoke_access`: withdraw an approved request.
#[derive(Clone, PartialEq, Message)]
pub struct RevokeAccessRequest {
    #[prost(string, tag = "1")]
    pub dataset: String,
    #[prost(message, optional, tag = "2")]
    pub user: Option<UserRef>,
    #[prost(string, tag = "3")]
    pub note: String,
}

named!(
    PolicyWriteRequest,
    DeletePolicyRequest,
    ListPoliciesRequest,
    ExplainRequest,
    ProfileKAnonymityRequest,
    RequestUnmaskRequest,
    UnmaskResultRequest,
    RequestAccessRequest,
    DecideAccessRequest,
    ListAccessRequestsRequest,
    RevokeAccessRequest,
    SearchRequest,
    SearchHit,
);

named!(
    ScanCommand,
    SqlCommand,
    SignedTicket,
    TicketBody,
    DescribeRequest,
    DatasetDescription,
    WhoAmI,
    RegisterDatasetRequest,
    DropDatasetRequest,
    SetColumnTagsRequest,
    SetDescriptionRequest,
    SetUserDisabledRequest,
    PermissionRequest,
    ActionAck,
    AuditTailRequest,
    AttributeValues,
    PutUserRequest,
    DeleteUserRequest,
    ListUsersRequest,
    UserEntry,
    ReloadRequest,
);

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
    pub const DISCOVER: &str = "veil.discover";
    pub const DECIDE_TAG_PROPOSAL: &str = "veil.decide_tag_proposal";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Python client encodes these bytes by hand; pin them.
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

    #[test]
    fn any_round_trip_checks_the_type() {
        let bytes = SqlCommand {
            query: "SELECT 1".into(),
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
