//! State: catalog, directory, permissions, policies and the audit log.
//!
//! [`Store`] is the one abstraction over the backends. Everything above it is
//! backend-agnostic: SQLite (embedded default, [`sqlite::SqliteStore`]) and
//! PostgreSQL (shared by several nodes, [`postgres::PostgresStore`]); the
//! one test suite in [`suite`] runs against both. Every mutation bumps a single
//! monotonic version in the same transaction, so a node learns that anything
//! policy-relevant changed by reading one number ([`Store::version`]) and then
//! reloads a [`Snapshot`].

pub mod postgres;
mod rows;
pub mod sqlite;
#[cfg(test)]
pub(crate) mod suite;

use async_trait::async_trait;
use std::fmt::Debug;
use std::sync::Arc;

use crate::error::Result;
use crate::model::Origin;
use crate::model::audit::{AuditEvent, ChainHead, StoredAuditRow};
use crate::model::dataset::DatasetRecord;
use crate::model::identity::{Identity, Permission, UserRecord};
use crate::model::policy::PolicySpec;
use crate::model::privacy::{DpAnswerRow, DpCharge, DpLedgerRow, DpPut, DpSpent, DpView};
use crate::model::request::{AccessDecision, AccessRequest, RequestStatus};
use crate::model::snapshot::Snapshot;

/// Seals audit events into one node's hash chain: numbers them after the
/// node's head and links each to the one before. A store calls it inside
/// the transaction that read the head, so every writer of a node extends
/// the same chain; the store holds rows, the sealer holds the key
/// (`crate::audit::chain::AuditSealer`).
pub trait AuditChainSealer: Send + Sync + Debug {
    /// The node whose chain this sealer extends.
    fn node_id(&self) -> &str;
    /// The rows to insert for `events` after `head`, in order.
    fn seal(&self, head: &ChainHead, events: &[AuditEvent]) -> Result<Vec<StoredAuditRow>>;
}

/// When an audit group must be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Before the append returns (the store's commit waits for the flush):
    /// every event a request waits on before it proceeds.
    Now,
    /// With the next durable commit, or at [`Store::sync_audit`] at the
    /// latest: events nothing waits on (a read's end, after its last
    /// batch). A crash of the machine (not of Veil) may lose the newest
    /// of them, as it could lose the ones not yet handed to the store.
    WithNext,
}

/// Does `c` fit under its caps (ε or ρ, and δ) with `spent` already
/// spent? (A hair of slack for the float sum of many equal charges.)
pub(crate) fn within_cap(spent: DpSpent, c: &DpCharge) -> bool {
    let fits = |spent: f64, cost: f64, cap: Option<f64>| {
        cap.is_none_or(|cap| spent + cost <= cap * (1.0 + 1e-9))
    };
    fits(spent.value, c.cost, c.cap) && (c.delta == 0.0 || fits(spent.delta, c.delta, c.delta_cap))
}

/// A kept answer's bytes as text (base64), the same on both backends.
pub(crate) fn encode_answer(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn decode_answer(text: &str) -> Result<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| crate::error::VeilError::internal("a kept answer is corrupt", e))
}

/// How [`Store::put_dataset`] treats an existing dataset of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Fail with `AlreadyExists`.
    Create,
    /// Replace it (dictionary edits).
    Replace,
}

/// How [`Store::put_policy`] treats an existing policy of the same name in
/// the same namespace ([`PolicySpec::namespace`]: policy names are unique
/// per dataset, per restriction and among global policies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyPut {
    /// Fail with `AlreadyExists` if a policy of the namespace has the name.
    Create,
    /// Replace a runtime policy (`NotFound` if none; config policies are
    /// read-only). With an expected version, fail with `FailedPrecondition`
    /// if the policy changed since the caller read it.
    Update { expected_version: Option<u64> },
}

/// Contract for state backends.
///
/// * Every mutating call is atomic and increments [`Store::version`] exactly
///   when it changed something.
/// * Config-declared records (`Origin::Config`) are replaced wholesale by the
///   `replace_config_*` calls; runtime records are never touched by them.
/// * `append_audit` is durable when it returns `Ok`: callers serve data only
///   after it did.
#[async_trait]
pub trait Store: Send + Sync + Debug {
    /// Current state version.
    async fn version(&self) -> Result<u64>;
    /// Everything policy-relevant, consistent at one version.
    async fn snapshot(&self) -> Result<Snapshot>;
    /// Record the master key's check value on first use; afterwards refuse
    /// (`FailedPrecondition`) a node whose key differs.
    async fn check_master_key(&self, check_value: &str) -> Result<()>;

    async fn put_dataset(&self, dataset: &DatasetRecord, mode: PutMode) -> Result<()>;

    /// Replace a dataset's record with `new` only if the stored one still
    /// equals `expected` (compare and swap): `false`, and nothing written,
    /// when someone changed or dropped it since it was read. Edits go
    /// through this, so two concurrent edits can't lose one another.
    async fn replace_dataset_if(
        &self,
        expected: &DatasetRecord,
        new: &DatasetRecord,
    ) -> Result<bool>;
    /// Returns whether a dataset was dropped.
    async fn drop_dataset(&self, name: &str) -> Result<bool>;

    async fn put_user(&self, identity: &Identity, user: &UserRecord, origin: Origin) -> Result<()>;
    /// Deletes a runtime directory entry; returns whether one existed.
    async fn delete_user(&self, identity: &Identity) -> Result<bool>;
    async fn set_user_disabled(&self, identity: &Identity, disabled: bool) -> Result<()>;
    /// Returns whether the grant is new.
    async fn grant(
        &self,
        identity: &Identity,
        permission: Permission,
        origin: Origin,
    ) -> Result<bool>;
    /// Revokes a runtime grant; returns whether one existed.
    async fn revoke(&self, identity: &Identity, permission: Permission) -> Result<bool>;

    /// Replace every config-declared policy with `policies`.
    async fn replace_config_policies(&self, policies: &[PolicySpec]) -> Result<()>;
    /// Replace every config-declared user and grant.
    async fn replace_config_directory(
        &self,
        users: &[(Identity, UserRecord)],
        grants: &[(Identity, Permission)],
    ) -> Result<()>;

    /// Create or update a runtime policy; returns its version afterwards
    /// (unchanged, and the state version with it, if the body is the same).
    async fn put_policy(&self, spec: &PolicySpec, mode: PolicyPut) -> Result<u64>;
    /// Delete the runtime policy `name` of `namespace`
    /// ([`PolicySpec::namespace`]; `NotFound` if none; config policies are
    /// read-only), optionally only at an expected version.
    async fn delete_policy(
        &self,
        namespace: &str,
        name: &str,
        expected_version: Option<u64>,
    ) -> Result<()>;

    /// Record a new access request (`AlreadyExists` if the requester has one
    /// pending or approved for that dataset).
    async fn create_access_request(&self, request: &AccessRequest) -> Result<()>;
    /// Move a request from `from` to the decision's status, atomically
    /// (`FailedPrecondition` if it is no longer in `from`).
    async fn decide_access_request(
        &self,
        id: &str,
        from: RequestStatus,
        decision: &AccessDecision,
    ) -> Result<AccessRequest>;
    /// Every access request, oldest first.
    async fn access_requests(&self) -> Result<Vec<AccessRequest>>;

    /// Append audit events to the sealer's node chain, in one
    /// transaction: read the node's head (locking it against other writers
    /// of that node), seal the events after it (gap-free sequence numbers,
    /// link MACs), insert them and move the head. Returns the new head.
    /// `durability` says when the group must be on disk: appends are
    /// ordered, so a durable one makes every earlier one durable too.
    async fn append_audit(
        &self,
        sealer: &Arc<dyn AuditChainSealer>,
        events: &[AuditEvent],
        durability: Durability,
    ) -> Result<ChainHead>;
    /// [`Store::append_audit`] on the calling thread, for a caller that owns
    /// its thread and may block it (the audit writer): no hand-off to a
    /// pool and back, which on an idle machine costs more than the append.
    /// `None` when this store appends only asynchronously (the caller then
    /// uses `append_audit`).
    fn append_audit_blocking(
        &self,
        _sealer: &Arc<dyn AuditChainSealer>,
        _events: &[AuditEvent],
        _durability: Durability,
    ) -> Option<Result<ChainHead>> {
        None
    }
    /// Put every audit event appended so far on disk.
    async fn sync_audit(&self) -> Result<()>;
    /// Up to `limit` events recorded after position `after` (0: from the
    /// start), in the order recorded, each with its position.
    async fn audit_page(&self, after: u64, limit: usize) -> Result<Vec<(u64, AuditEvent)>>;
    /// Every node chain's head.
    async fn audit_heads(&self) -> Result<Vec<ChainHead>>;
    /// Up to `limit` events of a node's chain after `after_seq`, in order.
    async fn audit_rows(
        &self,
        node_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredAuditRow>>;
    /// How many stored events predate the chain (no node sequence number).
    async fn unchained_audit_events(&self) -> Result<u64>;
    /// The last sequence number of a node's events older than `time_ms`
    /// (0 if none).
    async fn audit_seq_before(&self, node_id: &str, time_ms: i64) -> Result<u64>;
    /// Delete a node's events through `through_seq` (a prefix of its
    /// chain) and record in its head where the purge ended and that
    /// event's MAC. Returns how many were deleted and the new head.
    async fn purge_audit(&self, node_id: &str, through_seq: u64) -> Result<(u64, ChainHead)>;
    /// The newest `limit` events, oldest first.
    async fn tail_audit(&self, limit: usize) -> Result<Vec<AuditEvent>>;

    // Differential privacy. None of these move the state version: answers
    // and ledgers are not policy.

    /// The answer kept under `key`, if any.
    async fn dp_answer(&self, key: &str) -> Result<Option<DpAnswerRow>>;
    /// Keep a fresh answer, in one transaction with charging the dataset
    /// ledger: if an answer is kept under the key for this window or a
    /// later one (another node drew first), return it and charge nothing;
    /// if `charge` would pass its cap, write nothing.
    async fn put_dp_answer(&self, answer: &DpAnswerRow, charge: &DpCharge) -> Result<DpPut>;
    /// Carry the draw `answer_id` kept under `key` into window `window`
    /// (its data didn't change), kept until `expires_ms` at least. False
    /// (nothing written) if another draw replaced it or it was forgotten.
    async fn renew_dp_answer(
        &self,
        key: &str,
        answer_id: &str,
        window: i64,
        expires_ms: i64,
    ) -> Result<bool>;
    /// A user's view of the draw `answer_id`: the first one is charged to
    /// their ledger (unless that passes its cap), later ones are free.
    async fn view_dp_answer(
        &self,
        answer_id: &str,
        charge: &DpCharge,
        now_ms: i64,
    ) -> Result<DpView>;
    /// Every ledger's spending, optionally of one dataset, from period
    /// `from_period` on.
    async fn dp_ledgers(
        &self,
        dataset_id: Option<&str>,
        from_period: i64,
    ) -> Result<Vec<DpLedgerRow>>;
    /// Forget answers kept until before `now_ms`, with their views, and
    /// views of draws never kept (a failed or lost draw) older than
    /// `stray_before_ms`. Returns how many answers went. Ledgers stay.
    async fn purge_dp_answers(&self, now_ms: i64, stray_before_ms: i64) -> Result<u64>;
}
