//! `veil audit verify`: every node chain in the store, checked against the
//! exported checkpoints, reporting each chain's first broken link.

use super::chain::{ChainVerifier, Checkpoint, NodeVerdict, nodes_to_verify};
use crate::error::Result;
use crate::secrets::SecretKey;
use crate::store::Store;

/// Rows read per store call.
const PAGE: usize = 5000;

/// What verification found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    pub nodes: Vec<NodeVerdict>,
    /// Events stored before the chain existed (not verifiable).
    pub unchained: u64,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.nodes.iter().all(|n| n.broken.is_none())
    }

    /// Human-readable report, one line per node chain.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let span = match (n.first_seq, n.last_seq) {
                (Some(a), Some(b)) => format!("events {a} to {b} ({} verified)", n.events),
                _ => "no events".to_string(),
            };
            let purged = if n.purged_through > 0 {
                format!(", purged through {}", n.purged_through)
            } else {
                String::new()
            };
            match &n.broken {
                None => out.push_str(&format!(
                    "node {}: ok, {span}{purged}, {} checkpoint(s) matched\n",
                    n.node_id, n.checkpoints
                )),
                Some(why) => out.push_str(&format!("node {}: BROKEN: {why}\n", n.node_id)),
            }
        }
        if self.nodes.is_empty() {
            out.push_str("no audit chains in the store\n");
        }
        if self.unchained > 0 {
            out.push_str(&format!(
                "{} event(s) predate the audit chain and can't be verified\n",
                self.unchained
            ));
        }
        out
    }
}

/// Verify every chain in `store` with `key` against `checkpoints`.
pub async fn verify_store(
    store: &dyn Store,
    key: &SecretKey,
    checkpoints: &[Checkpoint],
) -> Result<Verification> {
    let heads = store.audit_heads().await?;
    let mut nodes = Vec::new();
    for node in nodes_to_verify(&heads, checkpoints) {
        let head = heads.iter().find(|h| h.node_id == node).cloned();
        let mut verifier = ChainVerifier::new(key, &node, head, checkpoints);
        let mut after = 0;
        while !verifier.is_broken() {
            let rows = store.audit_rows(&node, after, PAGE).await?;
            let Some(last) = rows.last() else { break };
            after = last.seq;
            rows.iter().for_each(|r| verifier.next(r));
            if rows.len() < PAGE {
                break;
            }
        }
        nodes.push(verifier.finish());
    }
    Ok(Verification {
        nodes,
        unchained: store.unchained_audit_events().await?,
    })
}
