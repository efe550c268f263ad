//! The embedded default store: one SQLite file, versioned migrations.
//!
//! rusqlite is synchronous; every call runs on the blocking pool with the one
//! connection behind a mutex. SQLite serialises writers anyway, and WAL mode
//! keeps the file consistent across crashes. The state version, read by
//! every request, has a read-only connection of its own, so it never waits
//! behind a commit's flush.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::rows::{
    PolicyWrite, SnapshotBuilder, StoredPolicy, apply_decision, check_no_open_request,
    check_same_dataset, compare_key_fingerprint, decode_dataset, decode_event, decode_request,
    encode, head_from, moved_head, origin_str, plan_config_policies, plan_runtime_delete,
    plan_runtime_put, policy_namespaces, purged_head,
};
use super::{
    AuditChainSealer, Durability, PolicyPut, PutMode, Store, decode_answer, encode_answer,
};
use crate::error::{Result, VeilError};
use crate::model::Origin;
use crate::model::audit::{AuditEvent, ChainHead, GENESIS, StoredAuditRow};
use crate::model::dataset::DatasetRecord;
use crate::model::identity::UserRecord;
use crate::model::identity::{Identity, Permission};
use crate::model::policy::PolicySpec;
use crate::model::privacy::{DpAnswerRow, DpCharge, DpLedgerRow, DpPut, DpSpent, DpView};
use crate::model::request::{AccessDecision, AccessRequest, RequestStatus};
use crate::model::snapshot::Snapshot;
use crate::secrets::encode_hex;

/// Ordered migrations; a database records the highest one applied.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
    CREATE TABLE state_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
    INSERT INTO state_version (id, version) VALUES (1, 1);
    CREATE TABLE datasets (
        name TEXT PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        origin TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE users (
        issuer TEXT NOT NULL,
        subject TEXT NOT NULL,
        origin TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (issuer, subject)
    );
    CREATE TABLE disabled_users (
        issuer TEXT NOT NULL,
        subject TEXT NOT NULL,
        PRIMARY KEY (issuer, subject)
    );
    CREATE TABLE grants (
        issuer TEXT NOT NULL,
        subject TEXT NOT NULL,
        permission TEXT NOT NULL,
        origin TEXT NOT NULL,
        PRIMARY KEY (issuer, subject, permission, origin)
    );
    CREATE TABLE policies (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        origin TEXT NOT NULL,
        version INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE UNIQUE INDEX policies_name ON policies (name);
    CREATE TABLE audit_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        time_ms INTEGER NOT NULL,
        node_id TEXT NOT NULL,
        action TEXT NOT NULL,
        body TEXT NOT NULL
    );
    "#,
    ),
    (
        2,
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    ),
    (3, ACCESS_REQUESTS_TABLE),
    (
        4,
        r#"
    ALTER TABLE audit_events ADD COLUMN node_seq INTEGER;
    ALTER TABLE audit_events ADD COLUMN mac TEXT;
    CREATE UNIQUE INDEX audit_events_chain ON audit_events (node_id, node_seq);
    "#,
    ),
    (5, AUDIT_HEADS_TABLE),
    (POLICY_NAMESPACES, POLICY_NAMESPACES_SQL_SQLITE),
    (7, DP_TABLES),
    (8, DP_DELTA_AND_EXPIRY),
];

/// Differential privacy's answers, ledgers and views (`crate::model::privacy`),
/// the same on both backends.
pub(crate) const DP_TABLES: &str = r#"
    CREATE TABLE dp_answers (
        key TEXT PRIMARY KEY,
        dataset_id TEXT NOT NULL,
        answer_id TEXT NOT NULL,
        window_index BIGINT NOT NULL,
        source_version TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        answer TEXT NOT NULL
    );
    CREATE TABLE dp_ledger (
        ledger TEXT NOT NULL,
        dataset_id TEXT NOT NULL,
        period BIGINT NOT NULL,
        spent DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (ledger, dataset_id, period)
    );
    CREATE TABLE dp_views (
        answer_id TEXT NOT NULL,
        user_key TEXT NOT NULL,
        viewed_ms BIGINT NOT NULL,
        PRIMARY KEY (answer_id, user_key)
    );
"#;

/// δ spent per ledger, and how long each answer is kept. 0: no keeping
/// time (answers kept before this migration, or written by a node not yet
/// upgraded): kept until a newer draw replaces it, as before.
pub(crate) const DP_DELTA_AND_EXPIRY: &str = r#"
    ALTER TABLE dp_ledger ADD COLUMN delta_spent DOUBLE PRECISION NOT NULL DEFAULT 0;
    ALTER TABLE dp_answers ADD COLUMN expires_ms BIGINT NOT NULL DEFAULT 0;
    CREATE INDEX dp_answers_expiry ON dp_answers (expires_ms);
    CREATE INDEX dp_answers_answer ON dp_answers (answer_id);
"#;

/// The migration that scopes policy names (unique per
/// `PolicySpec::namespace` instead of everywhere); after its SQL, each
/// existing row's namespace is filled in from its body.
pub(crate) const POLICY_NAMESPACES: i64 = 6;

const POLICY_NAMESPACES_SQL_SQLITE: &str = r#"
    ALTER TABLE policies ADD COLUMN namespace TEXT NOT NULL DEFAULT '';
    DROP INDEX policies_name;
    CREATE UNIQUE INDEX policies_namespace_name ON policies (namespace, name);
"#;

/// The audit chains' heads (`crate::audit::chain`), the same on both
/// backends.
pub(crate) const AUDIT_HEADS_TABLE: &str = r#"
    CREATE TABLE audit_heads (
        node_id TEXT PRIMARY KEY,
        seq BIGINT NOT NULL,
        mac TEXT NOT NULL,
        purged_through BIGINT NOT NULL,
        purged_mac TEXT NOT NULL
    );
"#;

/// Migration 3, the same on both backends.
pub(crate) const ACCESS_REQUESTS_TABLE: &str = r#"
    CREATE TABLE access_requests (
        id TEXT PRIMARY KEY,
        dataset_id TEXT NOT NULL,
        issuer TEXT NOT NULL,
        subject TEXT NOT NULL,
        status TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX access_requests_status ON access_requests (status);
"#;

#[derive(Debug, Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// A read-only connection for the state version every request reads,
    /// so it never waits behind a write's flush (WAL readers don't block
    /// on writers). `None` in memory, where connections share nothing.
    reader: Option<Arc<Mutex<Connection>>>,
}

/// The state store failed: Veil's words for everyone, the store's own
/// text in the server log (for operators) and behind the detail separator
/// (for the caller), never in the audit trail.
fn db_err(e: impl std::fmt::Display) -> VeilError {
    tracing::warn!(error = %e, "state store (SQLite) error");
    VeilError::Unavailable(VeilError::detailed(
        "the state store (SQLite) failed; retry later, and if it persists ask an administrator to check the server log",
        e,
    ))
}

fn bump(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE state_version SET version = version + 1 WHERE id = 1",
        [],
    )
    .map(|_| ())
}

/// Seal `events` after the node's head and append them, in one IMMEDIATE
/// transaction (the write lock taken before the head is read, so another
/// process appending to the same node waits).
/// Append `events` as `durability` says. In WAL mode `synchronous = FULL`
/// syncs the log at each commit (and so every frame before it); NORMAL
/// leaves it to the next such commit. Every append sets its own level, so
/// a durable one is durable whatever happened before.
fn append_audit_at(
    c: &mut Connection,
    sealer: &Arc<dyn AuditChainSealer>,
    events: &[AuditEvent],
    durability: Durability,
) -> Result<ChainHead> {
    let level = match durability {
        Durability::Now => "FULL",
        Durability::WithNext => "NORMAL",
    };
    c.pragma_update(None, "synchronous", level)
        .map_err(db_err)?;
    let appended = append_events(c, sealer, events);
    if durability == Durability::WithNext
        && let Err(e) = c.pragma_update(None, "synchronous", "FULL")
    {
        // The next durable audit append sets FULL again itself.
        tracing::error!(error = %e, "the store could not go back to flushing every commit");
    }
    appended
}

fn append_events(
    c: &mut Connection,
    sealer: &Arc<dyn AuditChainSealer>,
    events: &[AuditEvent],
) -> Result<ChainHead> {
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    let head = lock_head(&tx, sealer.node_id())?;
    let rows = sealer.seal(&head, &events)?;
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO audit_events (event_id, time_ms, node_id, action, body, node_seq, mac) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(db_err)?;
        for (e, r) in events.iter().zip(&rows) {
            insert
                .execute(params![
                    e.event_id,
                    r.time_ms,
                    r.node_id,
                    r.action,
                    r.body,
                    r.seq as i64,
                    r.mac
                ])
                .map_err(db_err)?;
        }
    }
    let head = moved_head(head, &rows);
    tx.prepare_cached("UPDATE audit_heads SET seq = ?2, mac = ?3 WHERE node_id = ?1")
        .and_then(|mut update| {
            update.execute(params![
                head.node_id,
                head.seq as i64,
                encode_hex(&head.mac)
            ])
        })
        .map_err(db_err)?;
    tx.commit().map_err(db_err)?;
    Ok(head)
}

impl SqliteStore {
    /// Open (creating if needed) and migrate.
    pub fn open(path: &Path) -> Result<Self> {
        // A new store file is the owner's alone (mode 0600): it holds the
        // audit trail and the directory. SQLite gives its WAL and shared
        // memory files the same mode. (An empty file is a new database.)
        #[cfg(unix)]
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path);
        }
        let conn = Connection::open(path).map_err(|e| {
            VeilError::FailedPrecondition(format!(
                "cannot open the SQLite store {}: {e}",
                path.display()
            ))
        })?;
        let mut store = Self::init(conn)?;
        let reader = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_err)?;
        reader.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
        store.reader = Some(Arc::new(Mutex::new(reader)));
        Ok(store)
    }

    /// Whether the store at `path` has `who` in its directory, read
    /// through a read-only connection (no migration, no schema or mode
    /// change, at most a short wait for a writer): for commands that run
    /// beside a server, such as `veil token`.
    pub fn has_user(path: &Path, who: &Identity) -> Result<bool> {
        let unreadable = |e: rusqlite::Error| VeilError::Unavailable(format!("{e}"));
        let c = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(unreadable)?;
        c.busy_timeout(std::time::Duration::from_millis(500))
            .map_err(unreadable)?;
        c.query_row(
            "SELECT EXISTS (SELECT 1 FROM users WHERE issuer = ?1 AND subject = ?2)",
            params![who.issuer, who.subject],
            |r| r.get::<_, bool>(0),
        )
        .map_err(unreadable)
    }

    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory().map_err(db_err)?)
    }

    fn init(mut conn: Connection) -> Result<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(db_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL)",
            [],
        )
        .map_err(db_err)?;
        let current: i64 = conn
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )
            .map_err(db_err)?;
        let newest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        if current > newest {
            return Err(VeilError::FailedPrecondition(format!(
                "the SQLite store is at schema version {current}, newer than this Veil ({newest}); upgrade Veil"
            )));
        }
        for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            let tx = conn.transaction().map_err(db_err)?;
            tx.execute_batch(sql).map_err(db_err)?;
            if *version == POLICY_NAMESPACES {
                let mut rows = Vec::new();
                each_row(&tx, "SELECT id, body FROM policies", |r| {
                    rows.push((col::<String>(r, 0)?, col::<String>(r, 1)?));
                    Ok(())
                })?;
                for (id, namespace) in policy_namespaces(&rows)? {
                    tx.execute(
                        "UPDATE policies SET namespace = ?1 WHERE id = ?2",
                        params![namespace, id],
                    )
                    .map_err(db_err)?;
                }
            }
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_ms) VALUES (?1, ?2)",
                params![version, chrono::Utc::now().timestamp_millis()],
            )
            .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            tracing::info!(version, "applied store migration");
        }
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            reader: None,
        })
    }

    /// One statement in its own transaction, bumping the version when it
    /// changed rows; returns whether it did.
    async fn change(&self, sql: &'static str, params: Vec<String>) -> Result<bool> {
        self.with(move |c| {
            let tx = c.transaction().map_err(db_err)?;
            let n = tx
                .execute(sql, rusqlite::params_from_iter(params.iter()))
                .map_err(db_err)?;
            if n > 0 {
                bump(&tx).map_err(db_err)?;
            }
            tx.commit().map_err(db_err)?;
            Ok(n > 0)
        })
        .await
    }

    /// Run `f` on the blocking pool with the connection.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        Self::on(Arc::clone(&self.conn), f).await
    }

    /// Run a read `f` on the read-only connection (the connection when
    /// there is none).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        Self::on(Arc::clone(self.reader.as_ref().unwrap_or(&self.conn)), f).await
    }

    async fn on<T: Send + 'static>(
        conn: Arc<Mutex<Connection>>,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| VeilError::Internal("store mutex poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| VeilError::internal("store task failed", e))?
    }
}

/// How long a connection waits for another's lock before failing.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The store's state version.
fn read_version(c: &Connection) -> rusqlite::Result<u64> {
    c.prepare_cached("SELECT version FROM state_version WHERE id = 1")?
        .query_row([], |r| r.get::<_, i64>(0))
        .map(|v| v as u64)
}

/// Run a query and hand each row to `f`.
fn each_row(
    tx: &rusqlite::Transaction<'_>,
    sql: &str,
    mut f: impl FnMut(&rusqlite::Row<'_>) -> Result<()>,
) -> Result<()> {
    let mut stmt = tx.prepare(sql).map_err(db_err)?;
    let mut rows = stmt.query([]).map_err(db_err)?;
    while let Some(r) = rows.next().map_err(db_err)? {
        f(r)?;
    }
    Ok(())
}

/// Column `i` of a row.
fn col<T: rusqlite::types::FromSql>(r: &rusqlite::Row<'_>, i: usize) -> Result<T> {
    r.get(i).map_err(db_err)
}

fn load_snapshot(conn: &mut Connection) -> Result<Snapshot> {
    let tx = conn.transaction().map_err(db_err)?;
    let version: i64 = tx
        .query_row("SELECT version FROM state_version WHERE id = 1", [], |r| {
            r.get(0)
        })
        .map_err(db_err)?;
    let mut b = SnapshotBuilder::new(version as u64);
    each_row(&tx, "SELECT body FROM datasets", |r| {
        b.dataset(&col::<String>(r, 0)?)
    })?;
    each_row(&tx, "SELECT id, origin, version, body FROM policies", |r| {
        b.policy(
            col(r, 0)?,
            &col::<String>(r, 1)?,
            col(r, 2)?,
            &col::<String>(r, 3)?,
        )
    })?;
    each_row(
        &tx,
        "SELECT issuer, subject, origin, body FROM users",
        |r| {
            b.user(
                col(r, 0)?,
                col(r, 1)?,
                &col::<String>(r, 2)?,
                &col::<String>(r, 3)?,
            )
        },
    )?;
    each_row(&tx, "SELECT issuer, subject FROM disabled_users", |r| {
        b.disabled(col(r, 0)?, col(r, 1)?);
        Ok(())
    })?;
    each_row(
        &tx,
        "SELECT issuer, subject, permission, origin FROM grants",
        |r| {
            b.grant(
                col(r, 0)?,
                col(r, 1)?,
                &col::<String>(r, 2)?,
                &col::<String>(r, 3)?,
            )
        },
    )?;
    each_row(
        &tx,
        "SELECT body FROM access_requests WHERE status = 'approved'",
        |r| b.access_request(&col::<String>(r, 0)?),
    )?;
    tx.commit().map_err(db_err)?;
    Ok(b.finish())
}

fn stored_policy(
    tx: &rusqlite::Transaction<'_>,
    namespace: &str,
    name: &str,
) -> Result<Option<StoredPolicy>> {
    tx.query_row(
        "SELECT id, namespace, name, version, body, origin FROM policies WHERE namespace = ?1 AND name = ?2",
        [namespace, name],
        |r| {
            Ok(StoredPolicy {
                id: r.get(0)?,
                namespace: r.get(1)?,
                name: r.get(2)?,
                version: r.get(3)?,
                body: r.get(4)?,
                origin: r.get(5)?,
            })
        },
    )
    .optional()
    .map_err(db_err)
}

fn all_requests(tx: &rusqlite::Transaction<'_>) -> Result<Vec<AccessRequest>> {
    let mut out = Vec::new();
    each_row(
        tx,
        "SELECT body FROM access_requests ORDER BY created_ms, id",
        |r| {
            out.push(decode_request(&col::<String>(r, 0)?)?);
            Ok(())
        },
    )?;
    Ok(out)
}

#[async_trait]
impl Store for SqliteStore {
    async fn version(&self) -> Result<u64> {
        // Every request reads this one indexed row, in microseconds: when
        // the connection is free it is read right here, without waiting
        // for any lock (no busy wait on this thread), instead of a trip to
        // the blocking pool and back (a thread switch each way). Anything
        // else (the connection in use, the database busy) takes the trip.
        let conn = self.reader.as_ref().unwrap_or(&self.conn);
        if let Ok(c) = conn.try_lock() {
            let here = c
                .busy_timeout(std::time::Duration::ZERO)
                .and_then(|()| read_version(&c));
            let restored = c.busy_timeout(BUSY_TIMEOUT);
            if let (Ok(v), Ok(())) = (here, restored) {
                return Ok(v);
            }
        }
        self.read(|c| read_version(c).map_err(db_err)).await
    }

    async fn snapshot(&self) -> Result<Snapshot> {
        self.with(load_snapshot).await
    }

    async fn check_master_key(&self, check_value: &str) -> Result<()> {
        let ours = check_value.to_string();
        self.with(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('master_key_check', ?1)",
                [&ours],
            )
            .map_err(db_err)?;
            let stored: String = c
                .query_row(
                    "SELECT value FROM meta WHERE key = 'master_key_check'",
                    [],
                    |r| r.get(0),
                )
                .map_err(db_err)?;
            compare_key_fingerprint(&stored, &ours)
        })
        .await
    }

    async fn put_dataset(&self, dataset: &DatasetRecord, mode: PutMode) -> Result<()> {
        let d = dataset.clone();
        self.with(move |c| {
            let body = encode("dataset", &d)?;
            let tx = c.transaction().map_err(db_err)?;
            let existing: Option<String> = tx
                .query_row("SELECT id FROM datasets WHERE name = ?1", [&d.name], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(db_err)?;
            match (existing, mode) {
                (Some(_), PutMode::Create) => {
                    return Err(VeilError::AlreadyExists(format!(
                        "dataset '{}' already exists",
                        d.name
                    )));
                }
                (Some(id), PutMode::Replace) if id != d.id => {
                    return Err(VeilError::Internal(
                        "dataset id cannot change on replace".into(),
                    ));
                }
                _ => {}
            }
            tx.execute(
                "INSERT INTO datasets (name, id, origin, body) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(name) DO UPDATE SET origin = excluded.origin, body = excluded.body",
                params![d.name, d.id, origin_str(d.origin), body],
            )
            .map_err(db_err)?;
            bump(&tx).map_err(db_err)?;
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn replace_dataset_if(
        &self,
        expected: &DatasetRecord,
        new: &DatasetRecord,
    ) -> Result<bool> {
        check_same_dataset(expected, new)?;
        let (expected, new) = (expected.clone(), new.clone());
        self.with(move |c| {
            let body = encode("dataset", &new)?;
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let stored: Option<String> = tx
                .query_row(
                    "SELECT body FROM datasets WHERE name = ?1",
                    [&expected.name],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            match stored {
                Some(b) if decode_dataset(&b)? == expected => {}
                _ => return Ok(false),
            }
            tx.execute(
                "UPDATE datasets SET origin = ?2, body = ?3 WHERE name = ?1",
                params![new.name, origin_str(new.origin), body],
            )
            .map_err(db_err)?;
            bump(&tx).map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            Ok(true)
        })
        .await
    }

    async fn drop_dataset(&self, name: &str) -> Result<bool> {
        self.change(
            "DELETE FROM datasets WHERE name = ?1",
            vec![name.to_string()],
        )
        .await
    }

    async fn put_user(&self, identity: &Identity, user: &UserRecord, origin: Origin) -> Result<()> {
        let (id, u) = (identity.clone(), user.clone());
        self.with(move |c| {
            let body = encode("user", &u)?;
            let tx = c.transaction().map_err(db_err)?;
            tx.execute(
                "INSERT INTO users (issuer, subject, origin, body) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(issuer, subject) DO UPDATE SET origin = excluded.origin, body = excluded.body",
                params![id.issuer, id.subject, origin_str(origin), body],
            )
            .map_err(db_err)?;
            bump(&tx).map_err(db_err)?;
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn delete_user(&self, id: &Identity) -> Result<bool> {
        self.change(
            "DELETE FROM users WHERE issuer = ?1 AND subject = ?2 AND origin = 'runtime'",
            vec![id.issuer.clone(), id.subject.clone()],
        )
        .await
    }

    async fn set_user_disabled(&self, identity: &Identity, disabled: bool) -> Result<()> {
        let id = identity.clone();
        self.with(move |c| {
            let tx = c.transaction().map_err(db_err)?;
            if disabled {
                tx.execute(
                    "INSERT OR IGNORE INTO disabled_users (issuer, subject) VALUES (?1, ?2)",
                    params![id.issuer, id.subject],
                )
            } else {
                tx.execute(
                    "DELETE FROM disabled_users WHERE issuer = ?1 AND subject = ?2",
                    params![id.issuer, id.subject],
                )
            }
            .map_err(db_err)?;
            bump(&tx).map_err(db_err)?;
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn grant(&self, id: &Identity, permission: Permission, origin: Origin) -> Result<bool> {
        self.change(
            "INSERT OR IGNORE INTO grants (issuer, subject, permission, origin) VALUES (?1, ?2, ?3, ?4)",
            vec![
                id.issuer.clone(),
                id.subject.clone(),
                permission.as_str().to_string(),
                origin_str(origin).to_string(),
            ],
        )
        .await
    }

    async fn revoke(&self, id: &Identity, permission: Permission) -> Result<bool> {
        self.change(
            "DELETE FROM grants WHERE issuer = ?1 AND subject = ?2 AND permission = ?3 AND origin = 'runtime'",
            vec![
                id.issuer.clone(),
                id.subject.clone(),
                permission.as_str().to_string(),
            ],
        )
        .await
    }

    async fn replace_config_policies(&self, policies: &[PolicySpec]) -> Result<()> {
        let specs = policies.to_vec();
        self.with(move |c| {
            let tx = c.transaction().map_err(db_err)?;
            let mut existing = Vec::new();
            each_row(
                &tx,
                "SELECT id, namespace, name, version, body, origin FROM policies",
                |r| {
                    existing.push(StoredPolicy {
                        id: col(r, 0)?,
                        namespace: col(r, 1)?,
                        name: col(r, 2)?,
                        version: col(r, 3)?,
                        body: col(r, 4)?,
                        origin: col(r, 5)?,
                    });
                    Ok(())
                },
            )?;
            let writes = plan_config_policies(existing, &specs)?;
            for w in &writes {
                match w {
                    PolicyWrite::Insert {
                        id,
                        namespace,
                        name,
                        body,
                    } => tx.execute(
                        "INSERT INTO policies (id, namespace, name, origin, version, body) VALUES (?1, ?2, ?3, 'config', 1, ?4)",
                        params![id, namespace, name, body],
                    ),
                    PolicyWrite::Update { id, version, body } => tx.execute(
                        "UPDATE policies SET body = ?1, version = ?2 WHERE id = ?3",
                        params![body, version, id],
                    ),
                    PolicyWrite::Delete { id } => {
                        tx.execute("DELETE FROM policies WHERE id = ?1", [id])
                    }
                }
                .map_err(db_err)?;
            }
            if !writes.is_empty() {
                bump(&tx).map_err(db_err)?;
            }
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn replace_config_directory(
        &self,
        users: &[(Identity, UserRecord)],
        grants: &[(Identity, Permission)],
    ) -> Result<()> {
        let (users, grants) = (users.to_vec(), grants.to_vec());
        self.with(move |c| {
            let tx = c.transaction().map_err(db_err)?;
            tx.execute("DELETE FROM users WHERE origin = 'config'", []).map_err(db_err)?;
            tx.execute("DELETE FROM grants WHERE origin = 'config'", []).map_err(db_err)?;
            for (id, u) in &users {
                let body = encode("user", u)?;
                tx.execute(
                    "INSERT INTO users (issuer, subject, origin, body) VALUES (?1, ?2, 'config', ?3)
                     ON CONFLICT(issuer, subject) DO UPDATE SET origin = 'config', body = excluded.body",
                    params![id.issuer, id.subject, body],
                )
                .map_err(db_err)?;
            }
            for (id, p) in &grants {
                tx.execute(
                    "INSERT OR IGNORE INTO grants (issuer, subject, permission, origin) VALUES (?1, ?2, ?3, 'config')",
                    params![id.issuer, id.subject, p.as_str()],
                )
                .map_err(db_err)?;
            }
            bump(&tx).map_err(db_err)?;
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn put_policy(&self, spec: &PolicySpec, mode: PolicyPut) -> Result<u64> {
        let spec = spec.clone();
        self.with(move |c| {
            let tx = c.transaction().map_err(db_err)?;
            let existing = stored_policy(&tx, &spec.namespace(), &spec.name)?;
            let current = existing.as_ref().map(|p| p.version as u64);
            let version = match plan_runtime_put(existing, &spec, mode)? {
                None => return current.ok_or_else(|| VeilError::Internal("policy vanished".into())),
                Some(PolicyWrite::Insert {
                    id,
                    namespace,
                    name,
                    body,
                }) => {
                    tx.execute(
                        "INSERT INTO policies (id, namespace, name, origin, version, body) VALUES (?1, ?2, ?3, 'runtime', 1, ?4)",
                        params![id, namespace, name, body],
                    )
                    .map_err(db_err)?;
                    1
                }
                Some(PolicyWrite::Update { id, version, body }) => {
                    tx.execute(
                        "UPDATE policies SET body = ?1, version = ?2 WHERE id = ?3",
                        params![body, version, id],
                    )
                    .map_err(db_err)?;
                    version as u64
                }
                Some(PolicyWrite::Delete { .. }) => {
                    return Err(VeilError::Internal("a put never deletes".into()));
                }
            };
            bump(&tx).map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            Ok(version)
        })
        .await
    }

    async fn delete_policy(
        &self,
        namespace: &str,
        name: &str,
        expected_version: Option<u64>,
    ) -> Result<()> {
        let (namespace, name) = (namespace.to_string(), name.to_string());
        self.with(move |c| {
            let tx = c.transaction().map_err(db_err)?;
            let id = plan_runtime_delete(
                stored_policy(&tx, &namespace, &name)?,
                &name,
                expected_version,
            )?;
            tx.execute("DELETE FROM policies WHERE id = ?1", [id])
                .map_err(db_err)?;
            bump(&tx).map_err(db_err)?;
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn create_access_request(&self, request: &AccessRequest) -> Result<()> {
        let r = request.clone();
        self.with(move |c| {
            let tx = c.transaction().map_err(db_err)?;
            check_no_open_request(&all_requests(&tx)?, &r)?;
            tx.execute(
                "INSERT INTO access_requests (id, dataset_id, issuer, subject, status, created_ms, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    r.id,
                    r.dataset_id,
                    r.requester.issuer,
                    r.requester.subject,
                    r.status.as_str(),
                    r.created_ms,
                    encode("access request", &r)?
                ],
            )
            .map_err(db_err)?;
            bump(&tx).map_err(db_err)?;
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn decide_access_request(
        &self,
        id: &str,
        from: RequestStatus,
        decision: &AccessDecision,
    ) -> Result<AccessRequest> {
        let (id, d) = (id.to_string(), decision.clone());
        self.with(move |c| {
            let tx = c.transaction().map_err(db_err)?;
            let body: Option<String> = tx
                .query_row(
                    "SELECT body FROM access_requests WHERE id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            let Some(body) = body else {
                return Err(VeilError::NotFound(format!("no access request {id}")));
            };
            let r = apply_decision(&body, from, &d)?;
            tx.execute(
                "UPDATE access_requests SET status = ?1, body = ?2 WHERE id = ?3",
                params![r.status.as_str(), encode("access request", &r)?, id],
            )
            .map_err(db_err)?;
            bump(&tx).map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            Ok(r)
        })
        .await
    }

    async fn access_requests(&self) -> Result<Vec<AccessRequest>> {
        self.with(|c| {
            let tx = c.transaction().map_err(db_err)?;
            let out = all_requests(&tx)?;
            tx.commit().map_err(db_err)?;
            Ok(out)
        })
        .await
    }

    async fn append_audit(
        &self,
        sealer: &Arc<dyn AuditChainSealer>,
        events: &[AuditEvent],
        durability: Durability,
    ) -> Result<ChainHead> {
        let events = events.to_vec();
        let sealer = Arc::clone(sealer);
        self.with(move |c| append_audit_at(c, &sealer, &events, durability))
            .await
    }

    fn append_audit_blocking(
        &self,
        sealer: &Arc<dyn AuditChainSealer>,
        events: &[AuditEvent],
        durability: Durability,
    ) -> Option<Result<ChainHead>> {
        Some(
            self.conn
                .lock()
                .map_err(|_| VeilError::Internal("store mutex poisoned".into()))
                .and_then(|mut c| append_audit_at(&mut c, sealer, events, durability)),
        )
    }

    async fn sync_audit(&self) -> Result<()> {
        // A write committed with FULL syncs the log, and with it every
        // frame before (a checkpoint would not when a reader pins them).
        self.with(|c| {
            c.pragma_update(None, "synchronous", "FULL")
                .map_err(db_err)?;
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            tx.execute("UPDATE audit_heads SET seq = seq", [])
                .map_err(db_err)?;
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn audit_page(&self, after: u64, limit: usize) -> Result<Vec<(u64, AuditEvent)>> {
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT seq, body FROM audit_events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![after as i64, limit as i64], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(db_err)?;
            let mut out = Vec::new();
            for row in rows {
                let (pos, body) = row.map_err(db_err)?;
                out.push((pos as u64, decode_event(pos, &body)?));
            }
            Ok(out)
        })
        .await
    }

    async fn audit_heads(&self) -> Result<Vec<ChainHead>> {
        self.with(|c| {
            let mut stmt = c
                .prepare("SELECT node_id, seq, mac, purged_through, purged_mac FROM audit_heads ORDER BY node_id")
                .map_err(db_err)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })
                .map_err(db_err)?;
            let mut out = Vec::new();
            for row in rows {
                let (node, seq, mac, through, purged) = row.map_err(db_err)?;
                out.push(head_from(node, seq, &mac, through, &purged)?);
            }
            Ok(out)
        })
        .await
    }

    async fn audit_rows(
        &self,
        node_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredAuditRow>> {
        let node_id = node_id.to_string();
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT node_seq, time_ms, action, body, mac FROM audit_events
                     WHERE node_id = ?1 AND node_seq > ?2 ORDER BY node_seq LIMIT ?3",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![node_id, after_seq as i64, limit as i64], |r| {
                    Ok(StoredAuditRow {
                        node_id: node_id.clone(),
                        seq: r.get::<_, i64>(0)? as u64,
                        time_ms: r.get(1)?,
                        action: r.get(2)?,
                        body: r.get(3)?,
                        mac: r.get(4)?,
                    })
                })
                .map_err(db_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
        })
        .await
    }

    async fn unchained_audit_events(&self) -> Result<u64> {
        self.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM audit_events WHERE node_seq IS NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(db_err)
        })
        .await
    }

    async fn audit_seq_before(&self, node_id: &str, time_ms: i64) -> Result<u64> {
        let node_id = node_id.to_string();
        self.with(move |c| {
            c.query_row(
                "SELECT COALESCE(MAX(node_seq), 0) FROM audit_events WHERE node_id = ?1 AND time_ms < ?2",
                params![node_id, time_ms],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(db_err)
        })
        .await
    }

    async fn purge_audit(&self, node_id: &str, through_seq: u64) -> Result<(u64, ChainHead)> {
        let node_id = node_id.to_string();
        self.with(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let head = lock_head(&tx, &node_id)?;
            let through = through_seq.min(head.seq);
            if through <= head.purged_through {
                return Ok((0, head));
            }
            let mac: Option<String> = tx
                .query_row(
                    "SELECT mac FROM audit_events WHERE node_id = ?1 AND node_seq = ?2",
                    params![node_id, through as i64],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?
                .flatten();
            let head = purged_head(head, through, mac.as_deref())?;
            let deleted = tx
                .execute(
                    "DELETE FROM audit_events WHERE node_id = ?1 AND node_seq <= ?2",
                    params![node_id, through as i64],
                )
                .map_err(db_err)?;
            tx.execute(
                "UPDATE audit_heads SET purged_through = ?2, purged_mac = ?3 WHERE node_id = ?1",
                params![node_id, through as i64, encode_hex(&head.purged_mac)],
            )
            .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            Ok((deleted as u64, head))
        })
        .await
    }

    async fn tail_audit(&self, limit: usize) -> Result<Vec<AuditEvent>> {
        self.with(move |c| {
            let mut stmt = c
                .prepare("SELECT seq, body FROM audit_events ORDER BY seq DESC LIMIT ?1")
                .map_err(db_err)?;
            let rows = stmt
                .query_map([limit as i64], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(db_err)?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, body) = row.map_err(db_err)?;
                let mut e: AuditEvent = serde_json::from_str(&body)
                    .map_err(|e| VeilError::internal("corrupt audit event", e))?;
                // Chained events carry their node sequence number.
                e.seq.get_or_insert(seq as u64);
                out.push(e);
            }
            out.reverse();
            Ok(out)
        })
        .await
    }

    async fn dp_answer(&self, key: &str) -> Result<Option<DpAnswerRow>> {
        let key = key.to_string();
        self.with(move |c| {
            let tx = c.transaction().map_err(db_err)?;
            let row = dp_answer_row(&tx, &key)?;
            tx.commit().map_err(db_err)?;
            Ok(row)
        })
        .await
    }

    async fn put_dp_answer(&self, answer: &DpAnswerRow, charge: &DpCharge) -> Result<DpPut> {
        let (a, charge) = (answer.clone(), charge.clone());
        self.with(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let kept: Option<String> = tx
                .query_row(
                    "INSERT INTO dp_answers (key, dataset_id, answer_id, window_index, source_version, created_ms, answer, expires_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (key) DO UPDATE SET dataset_id = excluded.dataset_id, answer_id = excluded.answer_id,
                         window_index = excluded.window_index, source_version = excluded.source_version,
                         created_ms = excluded.created_ms, answer = excluded.answer, expires_ms = excluded.expires_ms
                     WHERE dp_answers.window_index < excluded.window_index
                         OR (dp_answers.expires_ms > 0 AND dp_answers.expires_ms < excluded.created_ms)
                     RETURNING answer_id",
                    params![
                        a.key,
                        a.dataset_id,
                        a.answer_id,
                        a.window,
                        a.source_version,
                        a.created_ms,
                        encode_answer(&a.answer),
                        a.expires_ms
                    ],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            if kept.is_none() {
                // Another node drew for this window first: its answer.
                let row = dp_answer_row(&tx, &a.key)?.ok_or_else(|| {
                    VeilError::Internal("a kept answer vanished inside its transaction".into())
                })?;
                tx.commit().map_err(db_err)?;
                return Ok(DpPut::Kept {
                    answer: row,
                    charged: false,
                });
            }
            match charge_ledger(&tx, &charge)? {
                Err(spent) => Ok(DpPut::OverBudget { spent }),
                Ok(_) => {
                    tx.commit().map_err(db_err)?;
                    Ok(DpPut::Kept {
                        answer: a,
                        charged: true,
                    })
                }
            }
        })
        .await
    }

    async fn renew_dp_answer(
        &self,
        key: &str,
        answer_id: &str,
        window: i64,
        expires_ms: i64,
    ) -> Result<bool> {
        let (key, answer_id) = (key.to_string(), answer_id.to_string());
        self.with(move |c| {
            let renewed = c
                .execute(
                    "UPDATE dp_answers SET window_index = MAX(window_index, ?3),
                         expires_ms = CASE WHEN expires_ms = 0 THEN 0 ELSE MAX(expires_ms, ?4) END
                     WHERE key = ?1 AND answer_id = ?2",
                    params![key, answer_id, window, expires_ms],
                )
                .map_err(db_err)?;
            Ok(renewed == 1)
        })
        .await
    }

    async fn view_dp_answer(
        &self,
        answer_id: &str,
        charge: &DpCharge,
        now_ms: i64,
    ) -> Result<DpView> {
        let (answer_id, charge) = (answer_id.to_string(), charge.clone());
        // Seen before (the usual case on a kept answer): a read on the
        // read-only connection, which doesn't wait behind commits.
        let seen = {
            let (answer_id, charge) = (answer_id.clone(), charge.clone());
            self.read(move |c| {
                let tx = c.transaction().map_err(db_err)?;
                let seen = tx
                    .query_row(
                        "SELECT 1 FROM dp_views WHERE answer_id = ?1 AND user_key = ?2",
                        params![answer_id, charge.ledger],
                        |_| Ok(()),
                    )
                    .optional()
                    .map_err(db_err)?
                    .is_some();
                let spent = match seen {
                    true => Some(ledger_spent(&tx, &charge)?),
                    false => None,
                };
                tx.commit().map_err(db_err)?;
                Ok(spent)
            })
            .await?
        };
        if let Some(spent) = seen {
            return Ok(DpView::Seen { spent });
        }
        self.with(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let first = tx
                .execute(
                    "INSERT INTO dp_views (answer_id, user_key, viewed_ms) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                    params![answer_id, charge.ledger, now_ms],
                )
                .map_err(db_err)?
                == 1;
            if !first {
                let spent = ledger_spent(&tx, &charge)?;
                tx.commit().map_err(db_err)?;
                return Ok(DpView::Seen { spent });
            }
            match charge_ledger(&tx, &charge)? {
                Err(spent) => Ok(DpView::OverBudget { spent }),
                Ok(spent) => {
                    tx.commit().map_err(db_err)?;
                    Ok(DpView::Charged { spent })
                }
            }
        })
        .await
    }

    async fn dp_ledgers(
        &self,
        dataset_id: Option<&str>,
        from_period: i64,
    ) -> Result<Vec<DpLedgerRow>> {
        let dataset_id = dataset_id.map(str::to_string);
        self.with(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT ledger, dataset_id, period, spent, delta_spent FROM dp_ledger
                     WHERE period >= ?1 AND (?2 IS NULL OR dataset_id = ?2)
                     ORDER BY dataset_id, ledger, period",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![from_period, dataset_id], |r| {
                    Ok(DpLedgerRow {
                        ledger: r.get(0)?,
                        dataset_id: r.get(1)?,
                        period: r.get(2)?,
                        spent: DpSpent {
                            value: r.get(3)?,
                            delta: r.get(4)?,
                        },
                    })
                })
                .map_err(db_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
        })
        .await
    }

    async fn purge_dp_answers(&self, now_ms: i64, stray_before_ms: i64) -> Result<u64> {
        self.with(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            // One writer at a time: no renewal can come between the two.
            tx.execute(
                "DELETE FROM dp_views WHERE answer_id IN
                     (SELECT answer_id FROM dp_answers WHERE expires_ms > 0 AND expires_ms < ?1)",
                [now_ms],
            )
            .map_err(db_err)?;
            let answers = tx
                .execute(
                    "DELETE FROM dp_answers WHERE expires_ms > 0 AND expires_ms < ?1",
                    [now_ms],
                )
                .map_err(db_err)?;
            tx.execute(
                "DELETE FROM dp_views WHERE viewed_ms < ?1
                 AND NOT EXISTS (SELECT 1 FROM dp_answers a WHERE a.answer_id = dp_views.answer_id)",
                [stray_before_ms],
            )
            .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            Ok(answers as u64)
        })
        .await
    }
}

/// The answer kept under `key`.
fn dp_answer_row(tx: &rusqlite::Transaction<'_>, key: &str) -> Result<Option<DpAnswerRow>> {
    let row = tx
        .query_row(
            "SELECT dataset_id, answer_id, window_index, source_version, created_ms, answer, expires_ms
             FROM dp_answers WHERE key = ?1",
            [key],
            |r| {
                Ok((
                    DpAnswerRow {
                        key: key.to_string(),
                        dataset_id: r.get(0)?,
                        answer_id: r.get(1)?,
                        window: r.get(2)?,
                        source_version: r.get(3)?,
                        created_ms: r.get(4)?,
                        expires_ms: r.get(6)?,
                        answer: Vec::new(),
                    },
                    r.get::<_, String>(5)?,
                ))
            },
        )
        .optional()
        .map_err(db_err)?;
    row.map(|(row, answer)| {
        Ok(DpAnswerRow {
            answer: decode_answer(&answer)?,
            ..row
        })
    })
    .transpose()
}

/// A ledger's spending in the charge's period (nothing if it has none).
fn ledger_spent(tx: &rusqlite::Transaction<'_>, c: &DpCharge) -> Result<DpSpent> {
    let spent = tx
        .query_row(
            "SELECT spent, delta_spent FROM dp_ledger WHERE ledger = ?1 AND dataset_id = ?2 AND period = ?3",
            params![c.ledger, c.dataset_id, c.period],
            |r| {
                Ok(DpSpent {
                    value: r.get(0)?,
                    delta: r.get(1)?,
                })
            },
        )
        .optional()
        .map_err(db_err)?;
    Ok(spent.unwrap_or_default())
}

/// Add the charge inside `tx`: `Ok(spent after)`, or `Err(spent now)` when
/// it would pass the cap (nothing written).
fn charge_ledger(
    tx: &rusqlite::Transaction<'_>,
    c: &DpCharge,
) -> Result<std::result::Result<DpSpent, DpSpent>> {
    let spent = ledger_spent(tx, c)?;
    if !super::within_cap(spent, c) {
        return Ok(Err(spent));
    }
    tx.execute(
        "INSERT INTO dp_ledger (ledger, dataset_id, period, spent, delta_spent) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (ledger, dataset_id, period) DO UPDATE SET spent = dp_ledger.spent + excluded.spent,
             delta_spent = dp_ledger.delta_spent + excluded.delta_spent",
        params![c.ledger, c.dataset_id, c.period, c.cost, c.delta],
    )
    .map_err(db_err)?;
    Ok(Ok(spent.after(c)))
}

/// The node's head row, created empty on first use (inside `tx`, which
/// holds the write lock).
fn lock_head(tx: &rusqlite::Transaction<'_>, node_id: &str) -> Result<ChainHead> {
    let genesis = encode_hex(&GENESIS);
    // Every audit append runs these: parsed once per connection.
    tx.prepare_cached(
        "INSERT INTO audit_heads (node_id, seq, mac, purged_through, purged_mac) VALUES (?1, 0, ?2, 0, ?2)
         ON CONFLICT (node_id) DO NOTHING",
    )
    .and_then(|mut insert| insert.execute(params![node_id, genesis]))
    .map_err(db_err)?;
    let (seq, mac, through, purged) = tx
        .prepare_cached(
            "SELECT seq, mac, purged_through, purged_mac FROM audit_heads WHERE node_id = ?1",
        )
        .and_then(|mut select| {
            select.query_row([node_id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
        })
        .map_err(db_err)?;
    head_from(node_id.to_string(), seq, &mac, through, &purged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_new_store_file_is_the_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("veil.db");
        let _store = SqliteStore::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }

    /// Numbers events after the head, with a fixed MAC (the chain's keyed
    /// sealer lives in a higher layer; the store only stores its rows).
    #[derive(Debug)]
    struct PlainSealer;

    impl AuditChainSealer for PlainSealer {
        fn node_id(&self) -> &str {
            "n"
        }

        fn seal(&self, head: &ChainHead, events: &[AuditEvent]) -> Result<Vec<StoredAuditRow>> {
            Ok(events
                .iter()
                .enumerate()
                .map(|(i, e)| StoredAuditRow {
                    node_id: "n".into(),
                    seq: head.seq + 1 + i as u64,
                    time_ms: e.time_ms,
                    action: e.action.clone(),
                    body: "{}".into(),
                    mac: Some(encode_hex(&[7; 32])),
                })
                .collect())
        }
    }

    /// An append without its own flush leaves the connection flushing
    /// every later commit again, and the version is read on its own
    /// connection, which sees every commit at once.
    #[tokio::test]
    async fn trailing_appends_leave_commits_flushed_and_the_reader_sees_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("v.db")).unwrap();
        let sealer: Arc<dyn AuditChainSealer> = Arc::new(PlainSealer);
        let synchronous = || async {
            store
                .with(|c| {
                    c.query_row("PRAGMA synchronous", [], |r| r.get::<_, i64>(0))
                        .map_err(db_err)
                })
                .await
                .unwrap()
        };
        assert_eq!(synchronous().await, 2, "FULL");
        store
            .append_audit(
                &sealer,
                &[AuditEvent {
                    action: "read.end".into(),
                    ..Default::default()
                }],
                Durability::WithNext,
            )
            .await
            .unwrap();
        assert_eq!(synchronous().await, 2, "FULL again after the append");
        store.sync_audit().await.unwrap();
        assert!(store.reader.is_some());
        let before = store.version().await.unwrap();
        store
            .change(
                "UPDATE state_version SET version = version WHERE id = 1",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(store.version().await.unwrap(), before + 1);
    }

    /// A store written before policy names were scoped gets each policy's
    /// namespace from its body, and its names stay unique per namespace.
    #[tokio::test]
    async fn the_namespace_migration_fills_existing_policies() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL)",
            [],
        )
        .unwrap();
        for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 < POLICY_NAMESPACES) {
            conn.execute_batch(sql).unwrap();
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_ms) VALUES (?1, 0)",
                [version],
            )
            .unwrap();
        }
        let spec: PolicySpec =
            toml::from_str("name = \"p\"\ndataset = \"A.B\"\nsubscription = { anyone = true }")
                .unwrap();
        conn.execute(
            "INSERT INTO policies (id, name, origin, version, body) VALUES ('id-p', 'p', 'runtime', 1, ?1)",
            [encode("policy", &spec).unwrap()],
        )
        .unwrap();
        let store = SqliteStore::init(conn).unwrap();
        let namespace: String = store
            .with(|c| {
                c.query_row(
                    "SELECT namespace FROM policies WHERE id = 'id-p'",
                    [],
                    |r| r.get(0),
                )
                .map_err(db_err)
            })
            .await
            .unwrap();
        assert_eq!(namespace, "dataset:a.b");
        assert!(matches!(
            store.put_policy(&spec, PolicyPut::Create).await,
            Err(VeilError::AlreadyExists(_))
        ));
        store.delete_policy("dataset:a.b", "p", None).await.unwrap();
    }
}
