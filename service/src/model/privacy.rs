//! Differential privacy's state: answers kept per latency window (shared
//! by every node) and the ledgers budgets are charged to.

/// A noisy answer as kept, shared by every node.
#[derive(Debug, Clone, PartialEq)]
pub struct DpAnswerRow {
    /// Hex SHA-256 of what the answer answers: dataset, policy version,
    /// row-visibility scope, canonical query and privacy parameters.
    pub key: String,
    pub dataset_id: String,
    /// This draw; users are charged once per draw they see.
    pub answer_id: String,
    /// The latency-tolerance window it was drawn in, or last renewed in.
    pub window: i64,
    /// The source's version when drawn (empty: unknown, never renewed).
    pub source_version: String,
    pub created_ms: i64,
    /// The noisy aggregates as an Arrow IPC stream.
    pub answer: Vec<u8>,
}

/// A charge to one ledger: `cost` added to `ledger`'s spending on
/// `dataset_id` in budget period `period`, unless that passes `cap`.
#[derive(Debug, Clone, PartialEq)]
pub struct DpCharge {
    /// `dataset`, or `user:["<issuer>","<subject>"]` (JSON).
    pub ledger: String,
    pub dataset_id: String,
    pub period: i64,
    pub cost: f64,
    pub cap: Option<f64>,
}

/// What keeping a fresh answer did.
#[derive(Debug, Clone, PartialEq)]
pub enum DpPut {
    /// This answer is kept now (the given one, charged; or one another
    /// node kept first for the same window, not charged again).
    Kept { answer: DpAnswerRow, charged: bool },
    /// The dataset's budget can't pay for a fresh answer; nothing written.
    OverBudget { spent: f64 },
}

/// What a user's view of an answer cost them.
#[derive(Debug, Clone, PartialEq)]
pub enum DpView {
    /// First view: charged; `spent` is the ledger's spending afterwards.
    Charged { spent: f64 },
    /// Seen before: free.
    Seen { spent: f64 },
    /// The user's budget can't pay for it; nothing written.
    OverBudget { spent: f64 },
}

/// One ledger's spending in one period.
#[derive(Debug, Clone, PartialEq)]
pub struct DpLedgerRow {
    pub ledger: String,
    pub dataset_id: String,
    pub period: i64,
    pub spent: f64,
}
