//! Tamper evidence: each node's audit events form one keyed hash chain.
//!
//! Event `n` of node `N` is stored with
//! `mac_n = HMAC-SHA256(K, "veil/v1/audit-link" ‖ N ‖ n ‖ mac_{n-1} ‖ body_n)`,
//! where `K` is derived from the master key for the audit only
//! ([`KeyPurpose::AuditChain`]), `body_n` is the event's stored JSON (which
//! carries `n` and `N` itself) and `mac_0` is 32 zero bytes. Sequence
//! numbers are gap-free per node: the store assigns `n` from the node's
//! head row inside the appending transaction, so every writer of a node
//! extends the same chain.
//!
//! What each kind of tampering breaks:
//! * an altered event: its MAC (and every later one, which the attacker
//!   can't recompute without `K`);
//! * a deleted event: the sequence (a gap);
//! * a truncated tail, head row adjusted: the checkpoints, exported outside
//!   the database (a file and a log line), which name heads the chain no
//!   longer reaches;
//! * a purge: allowed only as a prefix, recorded in the head row (where it
//!   ended and that event's MAC) *and* as a purge checkpoint, so a faked
//!   purge of older events doesn't match the checkpoints.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Result, VeilError};
use crate::model::audit::{AuditEvent, ChainHead, StoredAuditRow};
use crate::secrets::{SecretKey, decode_hex_32, encode_hex};
use crate::store::AuditChainSealer;

/// Seals events into one node's chain.
#[derive(Clone)]
pub struct AuditSealer {
    key: SecretKey,
    node_id: String,
}

impl std::fmt::Debug for AuditSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditSealer(<keyed>, node {})", self.node_id)
    }
}

/// The MAC linking `body` (event `seq` of `node_id`) to the one before.
pub fn link_mac(key: &SecretKey, node_id: &str, seq: u64, prev: &[u8; 32], body: &str) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.bytes()).expect("HMAC takes any key length");
    mac.update(b"veil/v1/audit-link");
    mac.update(&(node_id.len() as u64).to_be_bytes());
    mac.update(node_id.as_bytes());
    mac.update(&seq.to_be_bytes());
    mac.update(prev);
    mac.update(&(body.len() as u64).to_be_bytes());
    mac.update(body.as_bytes());
    mac.finalize().into_bytes().into()
}

impl AuditSealer {
    pub fn new(key: SecretKey, node_id: impl Into<String>) -> Self {
        Self {
            key,
            node_id: node_id.into(),
        }
    }

    /// The chain key (to check a chain before purging it).
    pub fn key(&self) -> &SecretKey {
        &self.key
    }
}

impl AuditChainSealer for AuditSealer {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Number `events` after `head` and link each to the one before; the
    /// rows to insert, in order. The caller (a store, inside the
    /// transaction that read `head`) also moves the head to the last row.
    fn seal(&self, head: &ChainHead, events: &[AuditEvent]) -> Result<Vec<StoredAuditRow>> {
        let mut prev = head.mac;
        let mut out = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            let seq = head.seq + 1 + i as u64;
            let mut e = e.clone();
            e.seq = Some(seq);
            e.node_id = self.node_id.clone();
            let body = serde_json::to_string(&e)
                .map_err(|err| VeilError::internal("cannot encode an audit event", err))?;
            let mac = link_mac(&self.key, &self.node_id, seq, &prev, &body);
            prev = mac;
            out.push(StoredAuditRow {
                node_id: self.node_id.clone(),
                seq,
                time_ms: e.time_ms,
                action: e.action,
                body,
                mac: Some(encode_hex(&mac)),
            });
        }
        Ok(out)
    }
}

/// What a checkpoint records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointKind {
    /// The chain reached `seq` with `mac`.
    Head,
    /// Events through `seq` (whose MAC was `mac`) were purged.
    Purge,
}

/// A chain position exported outside the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub kind: CheckpointKind,
    pub node_id: String,
    pub seq: u64,
    /// Hex of the MAC of event `seq`.
    pub mac: String,
    pub time_ms: i64,
}

impl Checkpoint {
    pub fn of(kind: CheckpointKind, node_id: &str, seq: u64, mac: &[u8; 32]) -> Self {
        Self {
            kind,
            node_id: node_id.to_string(),
            seq,
            mac: encode_hex(mac),
            time_ms: chrono::Utc::now().timestamp_millis(),
        }
    }
}

/// One node's verification outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeVerdict {
    pub node_id: String,
    /// First and last sequence numbers present (`None`: no events).
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub events: u64,
    pub purged_through: u64,
    pub checkpoints: usize,
    /// The first broken link, if any.
    pub broken: Option<String>,
}

/// Checks one node's chain, fed its rows in sequence order.
#[derive(Debug)]
pub struct ChainVerifier<'a> {
    key: &'a SecretKey,
    head: ChainHead,
    verdict: NodeVerdict,
    expected: u64,
    prev: [u8; 32],
    /// Head checkpoints still to meet: seq → MAC.
    pending: BTreeMap<u64, String>,
}

impl<'a> ChainVerifier<'a> {
    /// Start on `head` (as the store records it; `None` if the store has no
    /// head row for the node) with the node's exported checkpoints.
    pub fn new(
        key: &'a SecretKey,
        node_id: &str,
        head: Option<ChainHead>,
        checkpoints: &[Checkpoint],
    ) -> Self {
        let stored_head = head.is_some();
        let head = head.unwrap_or_else(|| ChainHead::empty(node_id));
        let mine: Vec<&Checkpoint> = checkpoints
            .iter()
            .filter(|c| c.node_id == node_id)
            .collect();
        let mut verdict = NodeVerdict {
            node_id: node_id.to_string(),
            first_seq: None,
            last_seq: None,
            events: 0,
            purged_through: head.purged_through,
            checkpoints: mine.len(),
            broken: None,
        };
        if !stored_head && !mine.is_empty() {
            verdict.broken = Some(format!(
                "the store has no chain for node {node_id}, but {} checkpoint(s) say it had events: its events and head were deleted",
                mine.len()
            ));
        }
        // The head's purge must be one a checkpoint recorded. Purge
        // checkpoints are written before purging, so one beyond the head's
        // purge (a purge that then failed) names an event still stored.
        let recorded = head.purged_through == 0
            || mine.iter().any(|c| {
                c.kind == CheckpointKind::Purge
                    && c.seq == head.purged_through
                    && c.mac == encode_hex(&head.purged_mac)
            });
        if verdict.broken.is_none() && !recorded {
            let last = mine
                .iter()
                .filter(|c| c.kind == CheckpointKind::Purge)
                .map(|c| c.seq)
                .max()
                .unwrap_or(0);
            verdict.broken = Some(format!(
                "the store says events 1 to {} were purged, but no purge checkpoint records that purge (the newest covers events through {last}): events were deleted or the head was altered",
                head.purged_through
            ));
        }
        let pending = mine
            .iter()
            .filter(|c| c.seq > head.purged_through)
            .map(|c| (c.seq, c.mac.clone()))
            .collect();
        Self {
            key,
            expected: head.purged_through + 1,
            prev: head.purged_mac,
            head,
            verdict,
            pending,
        }
    }

    pub fn is_broken(&self) -> bool {
        self.verdict.broken.is_some()
    }

    fn breaks(&mut self, why: String) {
        if self.verdict.broken.is_none() {
            self.verdict.broken = Some(why);
        }
    }

    /// Check the next stored row.
    pub fn next(&mut self, row: &StoredAuditRow) {
        if self.is_broken() {
            return;
        }
        let seq = row.seq;
        if seq != self.expected {
            return self.breaks(if seq > self.expected {
                format!(
                    "event {} is missing (the next stored event is {seq}): events were deleted",
                    self.expected
                )
            } else {
                format!(
                    "event {seq} appears out of order (expected {})",
                    self.expected
                )
            });
        }
        let Some(mac) = row.mac.as_deref().and_then(decode_hex_32) else {
            return self.breaks(format!("event {seq} has no valid link MAC: it was altered"));
        };
        if link_mac(self.key, &self.head.node_id, seq, &self.prev, &row.body) != mac {
            return self.breaks(format!(
                "event {seq} does not match its link MAC: it (or the MAC) was altered"
            ));
        }
        // The indexed columns must say what the sealed body says.
        match serde_json::from_str::<AuditEvent>(&row.body) {
            Ok(e)
                if e.seq == Some(seq)
                    && e.node_id == self.head.node_id
                    && e.time_ms == row.time_ms
                    && e.action == row.action => {}
            _ => {
                return self.breaks(format!(
                    "event {seq}'s stored columns disagree with its sealed body: they were altered"
                ));
            }
        }
        if let Some(want) = self.pending.remove(&seq)
            && want != encode_hex(&mac)
        {
            return self.breaks(format!(
                "event {seq} differs from the checkpoint exported for it: the chain was rewritten"
            ));
        }
        self.verdict.first_seq.get_or_insert(seq);
        self.verdict.last_seq = Some(seq);
        self.verdict.events += 1;
        self.prev = mac;
        self.expected += 1;
    }

    /// The verdict, once every row was fed.
    pub fn finish(mut self) -> NodeVerdict {
        if !self.is_broken() {
            let last = self.expected - 1;
            if let Some((&seq, _)) = self.pending.iter().next_back() {
                self.breaks(format!(
                    "a checkpoint records event {seq}, but the chain ends at event {last}: events were truncated"
                ));
            } else if self.head.seq != last || self.head.mac != self.prev {
                self.breaks(if self.head.seq > last {
                    format!(
                        "the head says the chain reaches event {}, but it ends at event {last}: events were truncated",
                        self.head.seq
                    )
                } else {
                    format!(
                        "the chain reaches event {last}, but its head says {}: the head was altered",
                        self.head.seq
                    )
                });
            }
        }
        self.verdict
    }
}

/// Checkpoints read from a JSON-lines file (one [`Checkpoint`] per line),
/// and where each line that isn't one is. Such a line is skipped, not fatal:
/// a write cut short by a crash leaves one, and the checkpoints around it
/// still hold (a line made unreadable on purpose hides no more than a line
/// deleted would).
pub fn read_checkpoints(text: &str, origin: &str) -> (Vec<Checkpoint>, Vec<String>) {
    let mut checkpoints = Vec::new();
    let mut unreadable = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(c) => checkpoints.push(c),
            Err(e) => unreadable.push(format!(
                "{origin}, line {}: not an audit checkpoint ({e})",
                i + 1
            )),
        }
    }
    (checkpoints, unreadable)
}

/// Nodes named by heads or checkpoints, sorted.
pub fn nodes_to_verify(heads: &[ChainHead], checkpoints: &[Checkpoint]) -> BTreeSet<String> {
    heads
        .iter()
        .map(|h| h.node_id.clone())
        .chain(checkpoints.iter().map(|c| c.node_id.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditEventExt;
    use crate::secrets::{KeyPurpose, MasterKey};

    fn key() -> SecretKey {
        MasterKey::from_bytes([7; 32]).derive(KeyPurpose::AuditChain)
    }

    fn chain(n: usize) -> (ChainHead, Vec<StoredAuditRow>) {
        let sealer = AuditSealer::new(key(), "n1");
        let events: Vec<AuditEvent> = (0..n)
            .map(|i| AuditEvent::new(&format!("a{i}"), None))
            .collect();
        let head = ChainHead::empty("n1");
        let rows = sealer.seal(&head, &events).unwrap();
        let last = rows.last().unwrap();
        let head = ChainHead {
            seq: last.seq,
            mac: decode_hex_32(last.mac.as_deref().unwrap()).unwrap(),
            ..head
        };
        (head, rows)
    }

    fn verify(head: Option<ChainHead>, rows: &[StoredAuditRow], cps: &[Checkpoint]) -> NodeVerdict {
        let k = key();
        let mut v = ChainVerifier::new(&k, "n1", head, cps);
        rows.iter().for_each(|r| v.next(r));
        v.finish()
    }

    #[test]
    fn an_intact_chain_verifies_and_every_tampering_breaks_it() {
        let (head, rows) = chain(5);
        let cp = Checkpoint::of(CheckpointKind::Head, "n1", 5, &head.mac);
        let ok = verify(Some(head.clone()), &rows, std::slice::from_ref(&cp));
        assert_eq!(ok.broken, None);
        assert_eq!(
            (ok.first_seq, ok.last_seq, ok.events),
            (Some(1), Some(5), 5)
        );

        // Altered body.
        let mut altered = rows.clone();
        altered[2].body = altered[2].body.replace("a2", "zz");
        let v = verify(Some(head.clone()), &altered, &[]);
        assert!(v.broken.unwrap().starts_with("event 3 does not match"));
        // Altered column only.
        let mut altered = rows.clone();
        altered[1].action = "nothing".into();
        assert!(
            verify(Some(head.clone()), &altered, &[])
                .broken
                .unwrap()
                .contains("event 2")
        );
        // Deleted.
        let mut deleted = rows.clone();
        deleted.remove(1);
        assert!(
            verify(Some(head.clone()), &deleted, &[])
                .broken
                .unwrap()
                .contains("event 2 is missing")
        );
        // Truncated with the head moved back: the checkpoint catches it.
        let truncated = &rows[..3];
        let moved = ChainHead {
            seq: 3,
            mac: decode_hex_32(rows[2].mac.as_deref().unwrap()).unwrap(),
            ..head.clone()
        };
        assert_eq!(
            verify(Some(moved.clone()), truncated, &[]).broken,
            None,
            "without checkpoints, undetectable"
        );
        assert!(
            verify(Some(moved), truncated, std::slice::from_ref(&cp))
                .broken
                .unwrap()
                .contains("truncated")
        );
        // Truncated, head left alone.
        assert!(
            verify(Some(head.clone()), truncated, &[])
                .broken
                .unwrap()
                .contains("truncated")
        );
        // Re-hashed with another key.
        let forger = AuditSealer::new(
            MasterKey::from_bytes([8; 32]).derive(KeyPurpose::AuditChain),
            "n1",
        );
        let events: Vec<AuditEvent> = rows
            .iter()
            .map(|r| serde_json::from_str(&r.body).unwrap())
            .collect();
        let forged = forger.seal(&ChainHead::empty("n1"), &events).unwrap();
        assert!(
            verify(Some(head.clone()), &forged, &[])
                .broken
                .unwrap()
                .contains("event 1")
        );
        // Everything deleted, checkpoint remains.
        assert!(
            verify(None, &[], std::slice::from_ref(&cp))
                .broken
                .unwrap()
                .contains("deleted")
        );
    }

    #[test]
    fn purges_verify_only_with_their_checkpoint() {
        let (head, rows) = chain(6);
        let mac2 = decode_hex_32(rows[1].mac.as_deref().unwrap()).unwrap();
        let purged = ChainHead {
            purged_through: 2,
            purged_mac: mac2,
            ..head.clone()
        };
        let cp = Checkpoint::of(CheckpointKind::Purge, "n1", 2, &mac2);
        let v = verify(Some(purged.clone()), &rows[2..], std::slice::from_ref(&cp));
        assert_eq!(v.broken, None);
        assert_eq!(v.first_seq, Some(3));
        // A purge nobody checkpointed is a deletion.
        assert!(
            verify(Some(purged), &rows[2..], &[])
                .broken
                .unwrap()
                .contains("no purge checkpoint")
        );
    }
}
