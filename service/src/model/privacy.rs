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
    /// Kept until then (its window's end, or later when it may be
    /// carried into later windows); then forgotten.
    pub expires_ms: i64,
    /// The noisy aggregates as an Arrow IPC stream.
    pub answer: Vec<u8>,
}

/// A charge to one ledger: `cost` (ε, or ρ) and `delta` added to
/// `ledger`'s spending on `dataset_id` in budget period `period`, unless
/// either passes its cap.
#[derive(Debug, Clone, PartialEq)]
pub struct DpCharge {
    /// `dataset`, or `user:["<issuer>","<subject>"]` (JSON).
    pub ledger: String,
    pub dataset_id: String,
    pub period: i64,
    pub cost: f64,
    pub cap: Option<f64>,
    /// The δ the answer spends (releasing private group keys; 0 if none).
    pub delta: f64,
    pub delta_cap: Option<f64>,
}

/// A ledger's spending in one period: ε (or ρ) and δ, each summed over
/// the answers charged to it (basic composition).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DpSpent {
    pub value: f64,
    pub delta: f64,
}

/// The spending of several ledger rows together, from +0.0 (an empty sum
/// shows as 0, not -0).
impl<'a> std::iter::Sum<&'a DpLedgerRow> for DpSpent {
    fn sum<I: Iterator<Item = &'a DpLedgerRow>>(rows: I) -> Self {
        rows.fold(Self::default(), |a, r| Self {
            value: a.value + r.spent.value,
            delta: a.delta + r.spent.delta,
        })
    }
}

/// A ledger figure as receipts and budgets show it: 12 significant
/// digits, so ε spent as 0.1 then 0.2 shows as 0.3, not as the float sum
/// 0.30000000000000004. Only for showing: charges compare exact sums.
pub fn shown(x: f64) -> f64 {
    match x.is_finite() && x != 0.0 {
        true => format!("{x:.11e}").parse().unwrap_or(x),
        false => x,
    }
}

/// What a cap leaves after `spent`, as shown: the difference of the two
/// figures as shown (spending exactly to the cap leaves 0, not the float
/// residue 1.8e-15), never below 0.
pub fn shown_left(cap: f64, spent: f64) -> f64 {
    shown((shown(cap) - shown(spent)).max(0.0))
}

impl DpSpent {
    pub fn after(self, c: &DpCharge) -> Self {
        Self {
            value: self.value + c.cost,
            delta: self.delta + c.delta,
        }
    }
}

/// What keeping a fresh answer did.
#[derive(Debug, Clone, PartialEq)]
pub enum DpPut {
    /// This answer is kept now (the given one, charged; or one another
    /// node kept first for the same window, not charged again).
    Kept { answer: DpAnswerRow, charged: bool },
    /// The dataset's budget can't pay for a fresh answer; nothing written.
    OverBudget { spent: DpSpent },
}

/// What a user's view of an answer cost them.
#[derive(Debug, Clone, PartialEq)]
pub enum DpView {
    /// First view: charged; `spent` is the ledger's spending afterwards.
    Charged { spent: DpSpent },
    /// Seen before: free.
    Seen { spent: DpSpent },
    /// The user's budget can't pay for it; nothing written.
    OverBudget { spent: DpSpent },
}

/// One ledger's spending in one period.
#[derive(Debug, Clone, PartialEq)]
pub struct DpLedgerRow {
    pub ledger: String,
    pub dataset_id: String,
    pub period: i64,
    pub spent: DpSpent,
}

#[cfg(test)]
mod shown_tests {
    use super::shown;

    #[test]
    fn float_sums_show_as_the_decimal_written() {
        assert_eq!(shown(0.1 + 0.2), 0.3);
        assert_eq!(shown(2.15 + 0.0000000000000004), 2.15);
        assert_eq!(shown(1e-6 + 2e-6), 3e-6);
        assert_eq!(shown(0.0), 0.0);
        assert_eq!(shown(123.456), 123.456);
        // Differences beyond 12 digits only.
        assert_ne!(shown(1.000000001), 1.0);
        // Spent exactly to the cap in steps: nothing left, not 1.8e-15.
        let spent = 9.5 + 0.2 + 0.1 + 0.2;
        assert_ne!(10.0 - spent, 0.0);
        assert_eq!(super::shown_left(10.0, spent), 0.0);
        assert_eq!(super::shown_left(10.0, 2.4000000000000004), 7.6);
        assert_eq!(super::shown_left(1.0, 1.5), 0.0);
        assert_eq!(super::shown_left(3e-5, 1e-6 + 2e-6), 2.7e-5);
    }
}
