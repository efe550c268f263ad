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
    /// Lines of the checkpoint files that weren't checkpoints ("FILE, line
    /// N: why"), skipped: a write cut short by a crash leaves one.
    pub unreadable_checkpoint_lines: Vec<String>,
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
                    "node {}: ok, {span}{purged}, {} checkpoint(s) matched{}\n",
                    n.node_id,
                    n.checkpoints,
                    if n.checkpoints == 0 && n.events > 0 {
                        " (none of its checkpoints was given: a truncated or deleted tail can't show; pass every node's checkpoint file with --checkpoints)"
                    } else {
                        ""
                    }
                )),
                Some(why) => out.push_str(&format!("node {}: BROKEN: {why}\n", n.node_id)),
            }
        }
        if self.nodes.is_empty() {
            out.push_str("no audit chains in the store\n");
        }
        for line in &self.unreadable_checkpoint_lines {
            out.push_str(&format!(
                "warning: {line}; skipped (a write cut short by a crash leaves such a line; the chains were checked against the other checkpoints)\n"
            ));
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
        unreadable_checkpoint_lines: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditEventExt;
    use crate::audit::chain::{AuditSealer, CheckpointKind};
    use crate::model::audit::AuditEvent;
    use crate::store::sqlite::SqliteStore;
    use crate::store::suite::PgSchema;
    use crate::store::{AuditChainSealer, Durability};
    use std::sync::Arc;

    /// A chain verified without any of its node's checkpoints says that a
    /// cut tail can't show (found by an outside review: with several
    /// nodes, one node's config lists only its own file).
    #[test]
    fn a_chain_without_checkpoints_says_a_cut_tail_cant_show() {
        let verdict = |checkpoints| crate::audit::chain::NodeVerdict {
            node_id: "veil-1".into(),
            first_seq: Some(1),
            last_seq: Some(100),
            events: 100,
            purged_through: 0,
            checkpoints,
            broken: None,
        };
        let report = |checkpoints| {
            Verification {
                nodes: vec![verdict(checkpoints)],
                unchained: 0,
                unreadable_checkpoint_lines: vec![
                    "cp.jsonl, line 4: not an audit checkpoint".into(),
                ],
            }
            .report()
        };
        assert!(
            report(0).contains("pass every node's checkpoint file"),
            "{}",
            report(0)
        );
        assert!(!report(3).contains("pass every node's"), "{}", report(3));
        assert!(
            report(3).contains("warning: cp.jsonl, line 4: not an audit checkpoint; skipped"),
            "{}",
            report(3)
        );
    }

    /// Chains appended through either backend are numbered in order,
    /// gap-free under concurrent appends, and verify (the store's part of
    /// the chain contract; the rest of that contract is `store::suite`).
    #[tokio::test]
    async fn sqlite_chains_verify() {
        appends_are_ordered_and_verify(Arc::new(SqliteStore::in_memory().unwrap())).await;
    }

    #[tokio::test]
    async fn postgres_chains_verify() {
        let Some((store, schema)) = PgSchema::create().await else {
            return;
        };
        appends_are_ordered_and_verify(Arc::new(store)).await;
        schema.drop_schema().await;
    }

    async fn appends_are_ordered_and_verify(s: Arc<dyn Store>) {
        let key = crate::secrets::MasterKey::from_bytes([1; 32])
            .derive(crate::secrets::KeyPurpose::AuditChain);
        let a: Arc<dyn AuditChainSealer> = Arc::new(AuditSealer::new(key.clone(), "a"));
        let b: Arc<dyn AuditChainSealer> = Arc::new(AuditSealer::new(key.clone(), "b"));
        // Appends flushed with the next (or synced) count like any other.
        for i in 0..3 {
            let durability = match i % 2 {
                0 => Durability::WithNext,
                _ => Durability::Now,
            };
            s.append_audit(&a, &[AuditEvent::new(&format!("a{i}"), None)], durability)
                .await
                .unwrap();
        }
        s.sync_audit().await.unwrap();
        let head = s
            .append_audit(
                &a,
                &[AuditEvent::new("b0", None), AuditEvent::new("b1", None)],
                Durability::Now,
            )
            .await
            .unwrap();
        assert_eq!(head.seq, 5);
        let tail = s.tail_audit(3).await.unwrap();
        assert_eq!(
            tail.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
            ["a2", "b0", "b1"]
        );
        assert!(tail.windows(2).all(|w| w[0].seq < w[1].seq));
        // Another node's chain numbers from 1; both verify.
        assert_eq!(
            s.append_audit(&b, &[AuditEvent::new("x", None)], Durability::Now)
                .await
                .unwrap()
                .seq,
            1
        );
        let v = verify_store(s.as_ref(), &key, &[]).await.unwrap();
        assert!(v.ok(), "{}", v.report());
        assert_eq!(v.nodes.iter().map(|n| n.events).collect::<Vec<_>>(), [5, 1]);
        // Concurrent appends to one node stay gap-free.
        let writes = (0..8).map(|i| {
            let (s, a) = (Arc::clone(&s), Arc::clone(&a));
            tokio::spawn(async move {
                s.append_audit(
                    &a,
                    &[
                        AuditEvent::new(&format!("c{i}"), None),
                        AuditEvent::new("d", None),
                    ],
                    Durability::Now,
                )
                .await
                .unwrap()
            })
        });
        for w in writes {
            w.await.unwrap();
        }
        let rows = s.audit_rows("a", 0, 100).await.unwrap();
        assert_eq!(
            rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (1..=21).collect::<Vec<_>>()
        );
        // A purge keeps the rest verifiable (with its checkpoint).
        let mac3 = crate::secrets::decode_hex_32(rows[2].mac.as_deref().unwrap()).unwrap();
        let (deleted, head) = s.purge_audit("a", 3).await.unwrap();
        assert_eq!((deleted, head.purged_through), (3, 3));
        let cp = Checkpoint::of(CheckpointKind::Purge, "a", 3, &mac3);
        let v = verify_store(s.as_ref(), &key, &[cp]).await.unwrap();
        assert!(v.ok(), "{}", v.report());
        let v = verify_store(s.as_ref(), &key, &[]).await.unwrap();
        assert!(!v.ok(), "a purge without its checkpoint is a deletion");
    }
}
