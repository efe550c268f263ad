//! The audit sink: every read, denial and admin action becomes an
//! [`AuditEvent`] appended to the store *before* the action takes effect or
//! data leaves (DESIGN invariant 6). If the append fails, the action fails
//! with `Unavailable`: Veil never serves what it could not record.

pub mod auth_failures;
pub mod chain;
pub mod checkpoint;
pub mod dataset;
pub mod verify;
mod writer;

use std::sync::Arc;

use crate::error::{Result, VeilError};
use crate::model::audit::{AuditEvent, ChainHead};
use crate::model::identity::Principal;
use crate::secrets::encode_hex;
use crate::store::{AuditChainSealer, Durability, Store};

/// Building events: a fresh id and the clock, the caller's identity, and
/// a failure's audit form (the record itself is plain data in
/// `crate::model::audit`).
pub trait AuditEventExt {
    /// An event for `action` by `principal` (or an anonymous caller).
    fn new(action: &str, principal: Option<&Principal>) -> Self;
    /// The same action, failed. A fresh event id: the attempt itself may
    /// already be recorded.
    fn failed(self, err: &VeilError) -> Self;
}

impl AuditEventExt for AuditEvent {
    fn new(action: &str, principal: Option<&Principal>) -> Self {
        let mut e = AuditEvent {
            event_id: uuid::Uuid::new_v4().to_string(),
            time_ms: chrono::Utc::now().timestamp_millis(),
            action: action.to_string(),
            status: "ok".to_string(),
            ..Default::default()
        };
        if let Some(p) = principal {
            e.issuer = p.identity.issuer.clone();
            e.subject = p.identity.subject.clone();
            e.identity_fingerprint = encode_hex(&p.fingerprint[..8]);
            e.client_address = p.client.address.clone();
            e.user_agent = p.client.user_agent.clone();
        }
        e
    }

    fn failed(mut self, err: &VeilError) -> Self {
        self.event_id = uuid::Uuid::new_v4().to_string();
        self.status = err.kind().to_string();
        self.message = err.audit_message();
        self
    }
}

/// Appends events to the store, failing closed, through one writer task
/// per node that commits them in groups (see [`writer`]).
#[derive(Debug, Clone)]
pub struct AuditLog {
    store: Arc<dyn Store>,
    node_id: String,
    writer: writer::WriterHandle,
    checkpoints: checkpoint::CheckpointSink,
    /// The chain key: a retention purge checks what it deletes first.
    key: crate::secrets::SecretKey,
}

impl AuditLog {
    /// Start the node's writer. Checkpoints go to `checkpoints` (and the
    /// log) every `checkpoint_interval` while events arrive, and when the
    /// log is shut down.
    pub fn start(
        store: Arc<dyn Store>,
        sealer: chain::AuditSealer,
        checkpoints: checkpoint::CheckpointSink,
        checkpoint_interval: std::time::Duration,
    ) -> Self {
        let node_id = sealer.node_id().to_string();
        let key = sealer.key().clone();
        let writer = writer::spawn(
            Arc::clone(&store),
            sealer,
            checkpoints.clone(),
            checkpoint_interval,
        );
        Self {
            store,
            node_id,
            writer,
            checkpoints,
            key,
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Record durably, or fail with `Unavailable`.
    pub async fn record(&self, event: AuditEvent) -> Result<()> {
        self.append(event, Durability::Now).await
    }

    /// Record an event whose request releases no data (a read's end, after
    /// its last batch; a plan, which answers with a schema and tickets):
    /// committed in order before the caller goes on, on disk with the next
    /// durable event or within a second ([`writer`]).
    pub async fn record_trailing(&self, event: AuditEvent) -> Result<()> {
        self.append(event, Durability::WithNext).await
    }

    /// Queue `event` to be recorded durably and return once it is queued:
    /// the returned future resolves when it is on disk (or fails with
    /// `Unavailable`). Whatever is recorded after this call is committed
    /// after this event, so a caller can work while it commits, holding
    /// back only what must follow it (a read's data).
    pub async fn record_queued(
        &self,
        mut event: AuditEvent,
    ) -> Result<impl Future<Output = Result<()>> + Send + 'static> {
        event.node_id = self.node_id.clone();
        let action = event.action.clone();
        let queued = self.writer.queued(event, Durability::Now).await;
        let committed = queued.map_err(|e| refused(&e, &action))?;
        Ok(async move { committed.await.map_err(|e| refused(&e, &action)) })
    }

    async fn append(&self, mut event: AuditEvent, durability: Durability) -> Result<()> {
        event.node_id = self.node_id.clone();
        let action = event.action.clone();
        self.writer
            .append(event, durability)
            .await
            .map_err(|e| refused(&e, &action))
    }

    pub async fn tail(&self, limit: usize) -> Result<Vec<AuditEvent>> {
        self.store.tail_audit(limit).await
    }

    /// Purge this node's events older than `retention` (a prefix of its
    /// chain), checkpointing each purge before it happens and auditing it.
    /// Another node's chain is purged here only when all of it is older
    /// than the retention (a node taken out of service, whose own purge no
    /// longer runs): a live node checkpoints its purges in its own file.
    /// Returns how many events were deleted.
    pub async fn purge_older_than(&self, retention: std::time::Duration) -> Result<u64> {
        let cutoff = chrono::Utc::now().timestamp_millis() - retention.as_millis() as i64;
        let mut total = 0;
        for head in self.store.audit_heads().await? {
            let through = self.store.audit_seq_before(&head.node_id, cutoff).await?;
            let own = head.node_id == self.node_id;
            if through <= head.purged_through || (!own && through < head.seq) {
                continue;
            }
            // The store's time column chose `through`, and anyone who can
            // write the database can change it: purge only a prefix whose
            // links and sealed bodies check out and whose sealed times are
            // all before the cutoff, or a one-cell edit would have Veil
            // delete recent events (and the evidence of the edit) itself.
            let through = self.checked_prefix(&head, through, cutoff).await?;
            if through <= head.purged_through || (!own && through < head.seq) {
                continue;
            }
            total += self.purge(&head.node_id, through).await?;
        }
        Ok(total)
    }

    /// The last event, at most `through`, of an unbroken prefix of `head`'s
    /// chain whose events are all older than `cutoff` (by their sealed
    /// bodies). A broken link stops the purge with an error (logged, and
    /// `veil audit verify` says where).
    async fn checked_prefix(&self, head: &ChainHead, through: u64, cutoff: i64) -> Result<u64> {
        let anchor = chain::Checkpoint::of(
            chain::CheckpointKind::Purge,
            &head.node_id,
            head.purged_through,
            &head.purged_mac,
        );
        let mut verifier =
            chain::ChainVerifier::new(&self.key, &head.node_id, Some(head.clone()), &[anchor]);
        let mut after = head.purged_through;
        let mut last_old = head.purged_through;
        while after < through {
            let rows = self.store.audit_rows(&head.node_id, after, 1000).await?;
            if rows.is_empty() {
                break;
            }
            for row in rows.iter().take_while(|r| r.seq <= through) {
                verifier.next(row);
                if verifier.is_broken() {
                    let why = verifier.finish().broken.unwrap_or_default();
                    tracing::error!(node = %head.node_id, %why, "audit chain broken: nothing purged");
                    return Err(VeilError::FailedPrecondition(format!(
                        "the audit chain of node {} is broken ({why}); nothing was purged: run `veil audit verify`",
                        head.node_id
                    )));
                }
                if row.time_ms >= cutoff {
                    return Ok(last_old);
                }
                last_old = row.seq;
            }
            after = rows.last().map_or(through, |r| r.seq);
        }
        Ok(last_old)
    }

    /// Purge a node's events through `through`; see [`Self::purge_older_than`].
    /// The purge checkpoint is written first: if it can't be, nothing is
    /// purged; if the purge then fails, the events are still there and the
    /// checkpoint still matches them.
    pub async fn purge(&self, node_id: &str, through: u64) -> Result<u64> {
        let Some(last) = self
            .store
            .audit_rows(node_id, through.saturating_sub(1), 1)
            .await?
            .into_iter()
            .find(|r| r.seq == through)
        else {
            return Ok(0);
        };
        let mac = last.mac.as_deref().and_then(crate::secrets::decode_hex_32).ok_or_else(|| {
            VeilError::FailedPrecondition(format!(
                "audit event {through} of node {node_id} has no valid MAC; run `veil audit verify` before purging"
            ))
        })?;
        self.checkpoints
            .write(&chain::Checkpoint::of(
                chain::CheckpointKind::Purge,
                node_id,
                through,
                &mac,
            ))
            .await?;
        let (deleted, head) = self.store.purge_audit(node_id, through).await?;
        if deleted == 0 {
            return Ok(0);
        }
        let mut event = AuditEvent::new("audit.purge", None);
        event.message = format!(
            "purged {deleted} audit events of node {node_id} through event {}",
            head.purged_through
        );
        event.rows = Some(deleted);
        self.record(event).await?;
        tracing::info!(node = %node_id, through = head.purged_through, deleted, "audit events purged");
        Ok(deleted)
    }

    /// Commit what is queued, write a final checkpoint and stop the writer;
    /// later records fail with `Unavailable`.
    pub async fn shutdown(&self) {
        self.writer.shutdown().await;
    }
}

/// A digest of a request's shape. Literals are replaced before hashing, so
/// two queries differing only in constants share a fingerprint, and no
/// value appears in the audit.
pub fn query_fingerprint(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut shape = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                // quoted literal or identifier: drop its contents
                for d in chars.by_ref() {
                    if d == c {
                        break;
                    }
                }
                shape.push('?');
            }
            c if c.is_ascii_digit() => {
                while chars
                    .peek()
                    .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '.')
                {
                    chars.next();
                }
                shape.push('?');
            }
            c if c.is_whitespace() => {
                if !shape.ends_with(' ') {
                    shape.push(' ');
                }
            }
            c => shape.push(c.to_ascii_lowercase()),
        }
    }
    encode_hex(&Sha256::digest(shape.trim().as_bytes())[..12])
}

/// A result column's name as the audit records it: an unaliased
/// expression's name is its text (`t.ssn = Utf8("123-45-6789")`), so every
/// literal in it (quoted, or a number not part of a name) becomes `?`.
/// Whoever reads the audit may not read the dataset; a name must not tell
/// them which value a query looked for.
pub fn column_words(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars().peekable();
    let mut in_word = false;
    // No `]` follows (found once, so a name of many `[` stays linear).
    let mut no_close = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                // Debug-formatted literals escape quotes with a backslash.
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == c {
                        break;
                    }
                }
                out.push('?');
                in_word = false;
            }
            // A field key or index (`s[Zed Quux]`, `a[3]`) is written bare:
            // a literal too. (`IN ([Utf8("a"), ...])` holds expressions:
            // those are read on.)
            // (The look ahead stops at the first `]`, `(`, `[` or quote,
            // which the main loop reads next: each character is looked at
            // a bounded number of times.)
            '[' if !no_close
                && match chars
                    .clone()
                    .find(|d| matches!(d, ']' | '(' | '[' | '\'' | '"'))
                {
                    Some(']') => true,
                    Some(_) => false,
                    None => {
                        no_close = true;
                        false
                    }
                } =>
            {
                for d in chars.by_ref() {
                    if d == ']' {
                        break;
                    }
                }
                out.push_str("[?]");
                in_word = false;
            }
            c if c.is_ascii_digit() && !in_word => {
                while chars
                    .peek()
                    .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '.')
                {
                    chars.next();
                }
                out.push('?');
            }
            c => {
                in_word = c.is_alphanumeric() || c == '_';
                out.push(c);
            }
        }
    }
    // A boolean literal is a value too (`t.positive = Boolean(true)`).
    out.replace("Boolean(true)", "Boolean(?)")
        .replace("Boolean(false)", "Boolean(?)")
}

/// An audit append that failed, as the caller's error: the action is
/// refused.
fn refused(e: &VeilError, action: &str) -> VeilError {
    tracing::error!(error = %e, %action, "audit append failed; refusing the action");
    VeilError::Unavailable(
        "the audit log cannot be written, so Veil is not serving this request; retry later or ask an administrator to check the store".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_words_keep_names_and_drop_literals() {
        for (name, words) in [
            ("participant_id", "participant_id"),
            ("col1", "col1"),
            ("count(*)", "count(*)"),
            ("sum(t.x2)", "sum(t.x2)"),
            (
                r#"hr.individuals.ssn = Utf8("123-45-6007")"#,
                "hr.individuals.ssn = Utf8(?)",
            ),
            (
                r#"count(*) FILTER (WHERE t.ssn = Utf8View("a'b"))"#,
                "count(*) FILTER (WHERE t.ssn = Utf8View(?))",
            ),
            ("t.age > Int64(61)", "t.age > Int64(?)"),
            ("t.salary * Float64(1.5e3)", "t.salary * Float64(?)"),
            ("Decimal128(Some(12345),10,2)", "Decimal128(Some(?),?,?)"),
            (
                r#"t.x IN ([Utf8("a"), Utf8("b")])"#,
                "t.x IN ([Utf8(?), Utf8(?)])",
            ),
            ("t.n = Int64(-7)", "t.n = Int64(-?)"),
            (r#"t.s = Utf8("a\"b 123-45-6789")"#, "t.s = Utf8(?)"),
            ("t.positive = Boolean(true)", "t.positive = Boolean(?)"),
            ("t.positive IS TRUE", "t.positive IS TRUE"),
            (
                "named_struct(Utf8(\"Zed Quux\"),hr.salaries.ssn)[Zed Quux 123-45-6789]",
                "named_struct(Utf8(?),hr.salaries.ssn)[?]",
            ),
            ("t.tags[3]", "t.tags[?]"),
            ("t.a[] x", "t.a[?] x"),
            ("t.a[b", "t.a[b"),
            ("t.a[(b)]", "t.a[(b)]"),
            ("t.a[[1]]", "t.a[[?]]"),
        ] {
            assert_eq!(column_words(name), words, "{name}");
        }
    }

    /// A name of many unclosed `[` (an alias is the caller's text) is kept
    /// as written, and read in one pass (looking ahead from every `[` to
    /// the end took 2*10^10 steps here).
    #[test]
    fn column_words_keep_unclosed_brackets() {
        let name = format!("{}x", "[".repeat(200_000));
        assert_eq!(column_words(&name), name);
    }

    /// A node's log on a SQLite store in a folder of its own, with its
    /// chain key and checkpoint file.
    struct Logged {
        _dir: tempfile::TempDir,
        store: Arc<dyn Store>,
        key: crate::secrets::SecretKey,
        file: std::path::PathBuf,
        log: AuditLog,
    }

    impl Logged {
        fn start(checkpoint_interval: std::time::Duration) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let store: Arc<dyn Store> = Arc::new(
                crate::store::sqlite::SqliteStore::open(&dir.path().join("v.db")).unwrap(),
            );
            let key = crate::secrets::MasterKey::from_bytes([5; 32])
                .derive(crate::secrets::KeyPurpose::AuditChain);
            let file = dir.path().join("checkpoints.jsonl");
            let log = AuditLog::start(
                Arc::clone(&store),
                chain::AuditSealer::new(key.clone(), "n"),
                checkpoint::CheckpointSink::file(&file),
                checkpoint_interval,
            );
            Self {
                _dir: dir,
                store,
                key,
                file,
                log,
            }
        }
    }

    /// A purge deletes a prefix, checkpoints it first, is itself audited,
    /// and leaves the chain verifiable; a shut-down log refuses events.
    #[tokio::test]
    async fn purges_are_checkpointed_audited_and_verifiable() {
        let Logged {
            _dir,
            store,
            key,
            file,
            log,
        } = Logged::start(std::time::Duration::ZERO);
        for i in 0..5 {
            log.record(AuditEvent::new(&format!("e{i}"), None))
                .await
                .unwrap();
        }
        assert_eq!(log.purge("n", 3).await.unwrap(), 3);
        log.shutdown().await;
        assert!(log.record(AuditEvent::new("late", None)).await.is_err());
        let cps = checkpoint::load(&[file]).unwrap().checkpoints;
        assert!(
            cps.iter()
                .any(|c| c.kind == chain::CheckpointKind::Purge && c.seq == 3)
        );
        let v = verify::verify_store(store.as_ref(), &key, &cps)
            .await
            .unwrap();
        assert!(v.ok(), "{}", v.report());
        assert_eq!(v.nodes[0].first_seq, Some(4));
        let tail = store.tail_audit(10).await.unwrap();
        assert_eq!(tail.last().unwrap().action, "audit.purge");
        assert_eq!(tail.last().unwrap().rows, Some(3));
    }

    /// A retention purge goes by the sealed times, over a chain that checks
    /// out: a store's time column edited to look old makes it purge nothing
    /// (found by an outside review: Veil deleted recent events, and the
    /// evidence of the edit, itself), and old events still go.
    #[tokio::test]
    async fn a_retention_purge_checks_what_it_deletes() {
        let Logged {
            _dir,
            store,
            key,
            file,
            log,
        } = Logged::start(std::time::Duration::ZERO);
        for i in 0..6 {
            log.record(AuditEvent::new(&format!("e{i}"), None))
                .await
                .unwrap();
        }
        let db = rusqlite::Connection::open(_dir.path().join("v.db")).unwrap();
        let old = chrono::Utc::now().timestamp_millis() - 3 * 86_400_000;
        let day = std::time::Duration::from_secs(86_400);
        let set_time = |seq: i64, t: i64| {
            db.execute(
                "UPDATE audit_events SET time_ms = ?1 WHERE node_seq = ?2",
                [t, seq],
            )
            .unwrap();
        };
        let sealed_time = |seq: i64| -> i64 {
            let body: String = db
                .query_row(
                    "SELECT body FROM audit_events WHERE node_seq = ?1",
                    [seq],
                    |r| r.get(0),
                )
                .unwrap();
            serde_json::from_str::<AuditEvent>(&body).unwrap().time_ms
        };
        // A later event made to look old: the recent ones before it stop
        // the purge there.
        set_time(4, old);
        assert_eq!(log.purge_older_than(day).await.unwrap(), 0);
        assert_eq!(store.audit_rows("n", 0, 100).await.unwrap().len(), 6);
        set_time(4, sealed_time(4));
        // The first made to look old: its column disagrees with its seal,
        // so the purge refuses, saying where.
        set_time(1, old);
        let e = log.purge_older_than(day).await.unwrap_err();
        assert!(
            e.to_string().contains("event 1's stored columns disagree"),
            "{e}"
        );
        assert_eq!(store.audit_rows("n", 0, 100).await.unwrap().len(), 6);
        set_time(1, sealed_time(1));
        assert_eq!(log.purge_older_than(day).await.unwrap(), 0);
        // With a zero retention, everything sealed before now goes.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert!(
            log.purge_older_than(std::time::Duration::ZERO)
                .await
                .unwrap()
                >= 6
        );
        log.shutdown().await;
        let cps = checkpoint::load(&[file]).unwrap().checkpoints;
        let v = verify::verify_store(store.as_ref(), &key, &cps)
            .await
            .unwrap();
        assert!(v.ok(), "{}", v.report());
    }

    /// A node purges its own chain; another node's only once all of it is
    /// older than the retention (a node out of service), so a live node's
    /// purges are checkpointed in its own file (found by an outside
    /// review: each node purged every chain).
    #[tokio::test]
    async fn a_node_purges_another_nodes_chain_only_when_all_of_it_is_old() {
        let Logged {
            _dir,
            store,
            key,
            file,
            log,
        } = Logged::start(std::time::Duration::ZERO);
        let other_file = _dir.path().join("other.jsonl");
        let other = AuditLog::start(
            Arc::clone(&store),
            chain::AuditSealer::new(key.clone(), "m"),
            checkpoint::CheckpointSink::file(&other_file),
            std::time::Duration::ZERO,
        );
        for i in 0..3 {
            log.record(AuditEvent::new(&format!("n{i}"), None))
                .await
                .unwrap();
            other
                .record(AuditEvent::new(&format!("m{i}"), None))
                .await
                .unwrap();
        }
        // (Wide margins: a loaded machine may stall for a while.)
        let retention = std::time::Duration::from_millis(1500);
        tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
        // Node m is live (it purges its own): n leaves m's chain alone once
        // m has an event newer than the retention.
        other.record(AuditEvent::new("m-late", None)).await.unwrap();
        assert_eq!(log.purge_older_than(retention).await.unwrap(), 3);
        let heads = store.audit_heads().await.unwrap();
        let head = |n: &str| heads.iter().find(|h| h.node_id == n).unwrap().clone();
        assert_eq!(head("n").purged_through, 3);
        assert_eq!(head("m").purged_through, 0);
        // Once all of m's chain is old (m is gone), n purges it.
        other.shutdown().await;
        tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
        assert!(log.purge_older_than(retention).await.unwrap() >= 4);
        let heads = store.audit_heads().await.unwrap();
        assert!(
            heads
                .iter()
                .find(|h| h.node_id == "m")
                .unwrap()
                .purged_through
                >= 4
        );
        log.shutdown().await;
        let cps = checkpoint::load(&[file, other_file]).unwrap().checkpoints;
        let v = verify::verify_store(store.as_ref(), &key, &cps)
            .await
            .unwrap();
        assert!(v.ok(), "{}", v.report());
    }

    /// A read's end is committed at once and in order without a flush of
    /// its own; the next checkpoint flushes it first, and the chain
    /// verifies.
    #[tokio::test]
    async fn trailing_events_are_committed_in_order_and_flushed_before_a_checkpoint() {
        let Logged {
            _dir,
            store,
            key,
            file,
            log,
        } = Logged::start(std::time::Duration::from_millis(100));
        log.record(AuditEvent::new("read.start", None))
            .await
            .unwrap();
        log.record_trailing(AuditEvent::new("read.end", None))
            .await
            .unwrap();
        log.record_trailing(AuditEvent::new("read.end", None))
            .await
            .unwrap();
        let tail = store.tail_audit(10).await.unwrap();
        assert_eq!(
            tail.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
            ["read.start", "read.end", "read.end"]
        );
        // Within the flush bound, a checkpoint names the last of them.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let cps = checkpoint::load(std::slice::from_ref(&file))
                .unwrap_or_default()
                .checkpoints;
            if cps.iter().any(|c| c.seq == 3) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint of the trailing events: {cps:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        log.shutdown().await;
        let cps = checkpoint::load(&[file]).unwrap().checkpoints;
        let v = verify::verify_store(store.as_ref(), &key, &cps)
            .await
            .unwrap();
        assert!(v.ok(), "{}", v.report());
    }

    #[test]
    fn fingerprints_ignore_literals_and_spacing() {
        assert_eq!(
            query_fingerprint("SELECT * FROM t WHERE ssn = '123-45-6789' AND age > 30"),
            query_fingerprint("select *  from t where ssn = 'x' and age > 99")
        );
        assert_ne!(
            query_fingerprint("SELECT a FROM t"),
            query_fingerprint("SELECT b FROM t")
        );
    }
}
