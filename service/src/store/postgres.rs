//! The shared store: PostgreSQL, for several Veil nodes behind one state.
//!
//! Same tables and JSON bodies as SQLite (decoded by [`super::rows`]). How
//! several nodes stay consistent:
//!
//! * every mutating transaction updates the single `state_version` row, so
//!   writers serialise on that row lock and each commit moves the version by
//!   at least one; a node compares that number on each request and reloads
//!   ([`crate::catalog::state::StateCache`]);
//! * a snapshot is read in one `REPEATABLE READ` transaction, so it is
//!   consistent at the version it reports;
//! * migrations run under a transaction-scoped advisory lock, so nodes
//!   starting together migrate once;
//! * the first node records a check value of its master key; a node with a
//!   different key refuses to start (its tickets and hashes would differ).

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::{IsolationLevel, NoTls, Transaction};

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

/// Ordered migrations; the database records the highest one applied.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
    CREATE TABLE state_version (id INTEGER PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL);
    INSERT INTO state_version (id, version) VALUES (1, 1);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
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
        name TEXT NOT NULL UNIQUE,
        origin TEXT NOT NULL,
        version BIGINT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE audit_events (
        seq BIGSERIAL PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        time_ms BIGINT NOT NULL,
        node_id TEXT NOT NULL,
        action TEXT NOT NULL,
        body TEXT NOT NULL
    );
    "#,
    ),
    (2, super::sqlite::ACCESS_REQUESTS_TABLE),
    (
        3,
        r#"
    ALTER TABLE audit_events ADD COLUMN node_seq BIGINT, ADD COLUMN mac TEXT;
    CREATE UNIQUE INDEX audit_events_chain ON audit_events (node_id, node_seq);
    "#,
    ),
    (4, super::sqlite::AUDIT_HEADS_TABLE),
    (
        POLICY_NAMESPACES,
        r#"
    ALTER TABLE policies ADD COLUMN namespace TEXT NOT NULL DEFAULT '';
    ALTER TABLE policies DROP CONSTRAINT IF EXISTS policies_name_key;
    CREATE UNIQUE INDEX policies_namespace_name ON policies (namespace, name);
    "#,
    ),
    (6, super::sqlite::DP_TABLES),
    (7, super::sqlite::DP_DELTA_AND_EXPIRY),
];

/// The migration that scopes policy names (`PolicySpec::namespace`); after
/// its SQL, each existing row's namespace is filled in from its body.
const POLICY_NAMESPACES: i64 = 5;

/// Arbitrary constant: the advisory lock key migrations hold.
const MIGRATION_LOCK: i64 = 0x7665_696c_6d69_6772; // "veilmigr"

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// A libpq-style connection string or `postgres://` URL.
    pub url: String,
    /// Schema holding Veil's tables (created if absent).
    pub schema: String,
    /// Password, when not in the URL (read from a file by the caller).
    pub password: Option<String>,
    pub pool_size: usize,
}

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// For messages only (never the password).
    target: String,
    schema: String,
}

/// The state store failed: Veil's words for everyone, the store's own
/// text in the server log (for operators) and behind the detail separator
/// (for the caller), never in the audit trail.
fn db_err(e: impl std::fmt::Display) -> VeilError {
    tracing::warn!(error = %e, "state store (PostgreSQL) error");
    VeilError::Unavailable(VeilError::detailed(
        "the state store (PostgreSQL) failed; retry later, and if it persists ask an administrator to check the server log",
        e,
    ))
}

fn pg_err(e: tokio_postgres::Error) -> VeilError {
    // `Display` of a server error is only "db error"; the detail is inside.
    match e.as_db_error() {
        Some(d) => db_err(format!("{} ({})", d.message(), d.code().code())),
        None => db_err(e),
    }
}

fn valid_schema_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

async fn bump(tx: &Transaction<'_>) -> Result<()> {
    tx.execute(
        "UPDATE state_version SET version = version + 1 WHERE id = 1",
        &[],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}

impl PostgresStore {
    /// Drop this store's schema and everything in it: for benchmarks and
    /// tests that made a schema of their own. Best effort.
    pub async fn drop_schema_for_tests(&self) {
        if let Ok(client) = self.client().await {
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
                .await;
        }
    }

    /// Connect, create the schema if needed and migrate.
    pub async fn connect(opts: &PostgresOptions) -> Result<Self> {
        if !valid_schema_name(&opts.schema) {
            return Err(VeilError::FailedPrecondition(format!(
                "store.schema '{}' must be lowercase letters, digits and underscores",
                opts.schema
            )));
        }
        let mut config: tokio_postgres::Config = opts.url.parse().map_err(|e| {
            VeilError::FailedPrecondition(format!(
                "store.url is not a valid PostgreSQL connection string: {e}"
            ))
        })?;
        if let Some(p) = &opts.password {
            config.password(p.as_bytes());
        }
        config.options(format!("-c search_path={}", opts.schema));
        config.application_name("veil");
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let target = format!(
            "{}:{}/{}",
            config
                .get_hosts()
                .first()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(s) => s.clone(),
                    #[cfg(unix)]
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .unwrap_or_default(),
            config.get_ports().first().copied().unwrap_or(5432),
            config.get_dbname().unwrap_or("")
        );
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(opts.pool_size.max(1))
            .build()
            .map_err(|e| VeilError::internal("PostgreSQL pool", e))?;
        let store = Self {
            pool,
            target,
            schema: opts.schema.clone(),
        };
        // At start the operator reads the error: where the store is and why.
        // (The connection goes back to the pool for the migrations, which
        // need one even with pool_size = 1.)
        let connected = store.pool.get().await.map_err(|e| {
            VeilError::Unavailable(format!(
                "cannot reach the PostgreSQL store at {}: {e}; check store.url and that the server is running",
                store.target
            ))
        })?;
        drop(connected);
        store.migrate(&opts.schema).await?;
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| {
            // Where the store is and why it failed are the operator's (the
            // log); a caller learns only that it is unavailable.
            tracing::error!(target_store = %self.target, error = %e, "cannot reach the PostgreSQL store; check store.url and that the server is running");
            VeilError::Unavailable(
                "Veil's state store can't be reached right now; retry later, and if it persists ask an administrator to check the server log (it says where the store is and why)"
                    .into(),
            )
        })
    }

    /// One statement in its own transaction, bumping the version when it
    /// changed rows; returns whether it did.
    async fn change(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let n = tx.execute(sql, params).await.map_err(pg_err)?;
        if n > 0 {
            bump(&tx).await?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(n > 0)
    }

    async fn migrate(&self, schema: &str) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg_err)?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL);"
        ))
        .await
        .map_err(pg_err)?;
        let current: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations",
                &[],
            )
            .await
            .map_err(pg_err)?
            .get(0);
        let newest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        if current > newest {
            return Err(VeilError::FailedPrecondition(format!(
                "the PostgreSQL store is at schema version {current}, newer than this Veil ({newest}); upgrade Veil"
            )));
        }
        for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            tx.batch_execute(sql).await.map_err(pg_err)?;
            if *version == POLICY_NAMESPACES {
                let rows: Vec<(String, String)> = tx
                    .query("SELECT id, body FROM policies", &[])
                    .await
                    .map_err(pg_err)?
                    .into_iter()
                    .map(|r| (r.get(0), r.get(1)))
                    .collect();
                for (id, namespace) in policy_namespaces(&rows)? {
                    tx.execute(
                        "UPDATE policies SET namespace = $1 WHERE id = $2",
                        &[&namespace, &id],
                    )
                    .await
                    .map_err(pg_err)?;
                }
            }
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_ms) VALUES ($1, $2)",
                &[version, &chrono::Utc::now().timestamp_millis()],
            )
            .await
            .map_err(pg_err)?;
            tracing::info!(version, schema, "applied store migration (PostgreSQL)");
        }
        tx.commit().await.map_err(pg_err)
    }
}

async fn load_snapshot(tx: &Transaction<'_>) -> Result<Snapshot> {
    let version: i64 = tx
        .query_one("SELECT version FROM state_version WHERE id = 1", &[])
        .await
        .map_err(pg_err)?
        .get(0);
    let mut b = SnapshotBuilder::new(version as u64);
    for row in tx
        .query("SELECT body FROM datasets", &[])
        .await
        .map_err(pg_err)?
    {
        b.dataset(row.get(0))?;
    }
    for row in tx
        .query("SELECT id, origin, version, body FROM policies", &[])
        .await
        .map_err(pg_err)?
    {
        b.policy(row.get(0), row.get(1), row.get(2), row.get(3))?;
    }
    for row in tx
        .query("SELECT issuer, subject, origin, body FROM users", &[])
        .await
        .map_err(pg_err)?
    {
        b.user(row.get(0), row.get(1), row.get(2), row.get(3))?;
    }
    for row in tx
        .query("SELECT issuer, subject FROM disabled_users", &[])
        .await
        .map_err(pg_err)?
    {
        b.disabled(row.get(0), row.get(1));
    }
    for row in tx
        .query(
            "SELECT issuer, subject, permission, origin FROM grants",
            &[],
        )
        .await
        .map_err(pg_err)?
    {
        b.grant(row.get(0), row.get(1), row.get(2), row.get(3))?;
    }
    for row in tx
        .query(
            "SELECT body FROM access_requests WHERE status = 'approved'",
            &[],
        )
        .await
        .map_err(pg_err)?
    {
        b.access_request(row.get(0))?;
    }
    Ok(b.finish())
}

async fn stored_policy(
    tx: &Transaction<'_>,
    namespace: &str,
    name: &str,
) -> Result<Option<StoredPolicy>> {
    Ok(tx
        .query_opt(
            "SELECT id, namespace, name, version, body, origin FROM policies WHERE namespace = $1 AND name = $2",
            &[&namespace, &name],
        )
        .await
        .map_err(pg_err)?
        .map(|r| StoredPolicy {
            id: r.get(0),
            namespace: r.get(1),
            name: r.get(2),
            version: r.get(3),
            body: r.get(4),
            origin: r.get(5),
        }))
}

async fn all_requests(tx: &Transaction<'_>) -> Result<Vec<AccessRequest>> {
    tx.query(
        "SELECT body FROM access_requests ORDER BY created_ms, id",
        &[],
    )
    .await
    .map_err(pg_err)?
    .iter()
    .map(|r| decode_request(r.get(0)))
    .collect()
}

#[async_trait]
impl Store for PostgresStore {
    async fn version(&self) -> Result<u64> {
        let client = self.client().await?;
        let v: i64 = client
            .query_one("SELECT version FROM state_version WHERE id = 1", &[])
            .await
            .map_err(pg_err)?
            .get(0);
        Ok(v as u64)
    }

    async fn snapshot(&self) -> Result<Snapshot> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg_err)?;
        let snap = load_snapshot(&tx).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(snap)
    }

    async fn check_master_key(&self, check_value: &str) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO meta (key, value) VALUES ('master_key_check', $1) ON CONFLICT (key) DO NOTHING",
                &[&check_value],
            )
            .await
            .map_err(pg_err)?;
        let stored: String = client
            .query_one("SELECT value FROM meta WHERE key = 'master_key_check'", &[])
            .await
            .map_err(pg_err)?
            .get(0);
        compare_key_fingerprint(&stored, check_value)
    }

    async fn put_dataset(&self, d: &DatasetRecord, mode: PutMode) -> Result<()> {
        let body = encode("dataset", d)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // Take the version row lock first: writers queue here, not on a
        // unique-key conflict.
        bump(&tx).await?;
        let existing = tx
            .query_opt(
                "SELECT id FROM datasets WHERE name = $1 FOR UPDATE",
                &[&d.name],
            )
            .await
            .map_err(pg_err)?
            .map(|r| r.get::<_, String>(0));
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
            "INSERT INTO datasets (name, id, origin, body) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET origin = excluded.origin, body = excluded.body",
            &[&d.name, &d.id, &origin_str(d.origin), &body],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)
    }

    async fn replace_dataset_if(
        &self,
        expected: &DatasetRecord,
        new: &DatasetRecord,
    ) -> Result<bool> {
        check_same_dataset(expected, new)?;
        let body = encode("dataset", new)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        bump(&tx).await?;
        let stored = tx
            .query_opt(
                "SELECT body FROM datasets WHERE name = $1 FOR UPDATE",
                &[&expected.name],
            )
            .await
            .map_err(pg_err)?
            .map(|r| r.get::<_, String>(0));
        match stored {
            Some(b) if decode_dataset(&b)? == *expected => {}
            // Dropping the transaction rolls the version bump back.
            _ => return Ok(false),
        }
        tx.execute(
            "UPDATE datasets SET origin = $2, body = $3 WHERE name = $1",
            &[&new.name, &origin_str(new.origin), &body],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(true)
    }

    async fn drop_dataset(&self, name: &str) -> Result<bool> {
        self.change("DELETE FROM datasets WHERE name = $1", &[&name])
            .await
    }

    async fn put_user(&self, id: &Identity, user: &UserRecord, origin: Origin) -> Result<()> {
        let body = encode("user", user)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        tx.execute(
            "INSERT INTO users (issuer, subject, origin, body) VALUES ($1, $2, $3, $4)
             ON CONFLICT (issuer, subject) DO UPDATE SET origin = excluded.origin, body = excluded.body",
            &[&id.issuer, &id.subject, &origin_str(origin), &body],
        )
        .await
        .map_err(pg_err)?;
        bump(&tx).await?;
        tx.commit().await.map_err(pg_err)
    }

    async fn delete_user(&self, id: &Identity) -> Result<bool> {
        self.change(
            "DELETE FROM users WHERE issuer = $1 AND subject = $2 AND origin = 'runtime'",
            &[&id.issuer, &id.subject],
        )
        .await
    }

    async fn set_user_disabled(&self, id: &Identity, disabled: bool) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        if disabled {
            tx.execute(
                "INSERT INTO disabled_users (issuer, subject) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&id.issuer, &id.subject],
            )
            .await
        } else {
            tx.execute(
                "DELETE FROM disabled_users WHERE issuer = $1 AND subject = $2",
                &[&id.issuer, &id.subject],
            )
            .await
        }
        .map_err(pg_err)?;
        bump(&tx).await?;
        tx.commit().await.map_err(pg_err)
    }

    async fn grant(&self, id: &Identity, permission: Permission, origin: Origin) -> Result<bool> {
        self.change(
            "INSERT INTO grants (issuer, subject, permission, origin) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            &[
                &id.issuer,
                &id.subject,
                &permission.as_str(),
                &origin_str(origin),
            ],
        )
        .await
    }

    async fn revoke(&self, id: &Identity, permission: Permission) -> Result<bool> {
        self.change(
            "DELETE FROM grants WHERE issuer = $1 AND subject = $2 AND permission = $3 AND origin = 'runtime'",
            &[&id.issuer, &id.subject, &permission.as_str()],
        )
        .await
    }

    async fn replace_config_policies(&self, policies: &[PolicySpec]) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // Lock first so two nodes reloading together plan against the same rows.
        bump(&tx).await?;
        let existing = tx
            .query(
                "SELECT id, namespace, name, version, body, origin FROM policies",
                &[],
            )
            .await
            .map_err(pg_err)?
            .into_iter()
            .map(|r| StoredPolicy {
                id: r.get(0),
                namespace: r.get(1),
                name: r.get(2),
                version: r.get(3),
                body: r.get(4),
                origin: r.get(5),
            })
            .collect();
        let writes = plan_config_policies(existing, policies)?;
        if writes.is_empty() {
            // Nothing changed: roll back, so the version does not move.
            tx.rollback().await.map_err(pg_err)?;
            return Ok(());
        }
        for w in &writes {
            match w {
                PolicyWrite::Insert {
                    id,
                    namespace,
                    name,
                    body,
                } => tx
                    .execute(
                        "INSERT INTO policies (id, namespace, name, origin, version, body) VALUES ($1, $2, $3, 'config', 1, $4)",
                        &[id, namespace, name, body],
                    )
                    .await,
                PolicyWrite::Update { id, version, body } => tx
                    .execute(
                        "UPDATE policies SET body = $1, version = $2 WHERE id = $3",
                        &[body, version, id],
                    )
                    .await,
                PolicyWrite::Delete { id } => {
                    tx.execute("DELETE FROM policies WHERE id = $1", &[id]).await
                }
            }
            .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)
    }

    async fn put_policy(&self, spec: &PolicySpec, mode: PolicyPut) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // Lock first: concurrent writers of one policy serialise here.
        bump(&tx).await?;
        let existing = stored_policy(&tx, &spec.namespace(), &spec.name).await?;
        let current = existing.as_ref().map(|p| p.version as u64);
        let version = match plan_runtime_put(existing, spec, mode)? {
            None => {
                tx.rollback().await.map_err(pg_err)?;
                return current.ok_or_else(|| VeilError::Internal("policy vanished".into()));
            }
            Some(PolicyWrite::Insert {
                id,
                namespace,
                name,
                body,
            }) => {
                tx.execute(
                    "INSERT INTO policies (id, namespace, name, origin, version, body) VALUES ($1, $2, $3, 'runtime', 1, $4)",
                    &[&id, &namespace, &name, &body],
                )
                .await
                .map_err(pg_err)?;
                1
            }
            Some(PolicyWrite::Update { id, version, body }) => {
                tx.execute(
                    "UPDATE policies SET body = $1, version = $2 WHERE id = $3",
                    &[&body, &version, &id],
                )
                .await
                .map_err(pg_err)?;
                version as u64
            }
            Some(PolicyWrite::Delete { .. }) => {
                return Err(VeilError::Internal("a put never deletes".into()));
            }
        };
        tx.commit().await.map_err(pg_err)?;
        Ok(version)
    }

    async fn delete_policy(
        &self,
        namespace: &str,
        name: &str,
        expected_version: Option<u64>,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        bump(&tx).await?;
        let id = plan_runtime_delete(
            stored_policy(&tx, namespace, name).await?,
            name,
            expected_version,
        )?;
        tx.execute("DELETE FROM policies WHERE id = $1", &[&id])
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)
    }

    async fn create_access_request(&self, r: &AccessRequest) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        bump(&tx).await?;
        check_no_open_request(&all_requests(&tx).await?, r)?;
        let body = encode("access request", r)?;
        tx.execute(
            "INSERT INTO access_requests (id, dataset_id, issuer, subject, status, created_ms, body) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &r.id,
                &r.dataset_id,
                &r.requester.issuer,
                &r.requester.subject,
                &r.status.as_str(),
                &r.created_ms,
                &body,
            ],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)
    }

    async fn decide_access_request(
        &self,
        id: &str,
        from: RequestStatus,
        decision: &AccessDecision,
    ) -> Result<AccessRequest> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        bump(&tx).await?;
        let Some(row) = tx
            .query_opt(
                "SELECT body FROM access_requests WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await
            .map_err(pg_err)?
        else {
            return Err(VeilError::NotFound(format!("no access request {id}")));
        };
        let r = apply_decision(row.get(0), from, decision)?;
        let body = encode("access request", &r)?;
        tx.execute(
            "UPDATE access_requests SET status = $1, body = $2 WHERE id = $3",
            &[&r.status.as_str(), &body, &id],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(r)
    }

    async fn access_requests(&self) -> Result<Vec<AccessRequest>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let out = all_requests(&tx).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(out)
    }

    async fn replace_config_directory(
        &self,
        users: &[(Identity, UserRecord)],
        grants: &[(Identity, Permission)],
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        bump(&tx).await?;
        tx.execute("DELETE FROM users WHERE origin = 'config'", &[])
            .await
            .map_err(pg_err)?;
        tx.execute("DELETE FROM grants WHERE origin = 'config'", &[])
            .await
            .map_err(pg_err)?;
        for (id, u) in users {
            let body = encode("user", u)?;
            tx.execute(
                "INSERT INTO users (issuer, subject, origin, body) VALUES ($1, $2, 'config', $3)
                 ON CONFLICT (issuer, subject) DO UPDATE SET origin = 'config', body = excluded.body",
                &[&id.issuer, &id.subject, &body],
            )
            .await
            .map_err(pg_err)?;
        }
        for (id, p) in grants {
            tx.execute(
                "INSERT INTO grants (issuer, subject, permission, origin) VALUES ($1, $2, $3, 'config')
                 ON CONFLICT DO NOTHING",
                &[&id.issuer, &id.subject, &p.as_str()],
            )
            .await
            .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)
    }

    async fn append_audit(
        &self,
        sealer: &Arc<dyn AuditChainSealer>,
        events: &[AuditEvent],
        durability: Durability,
    ) -> Result<ChainHead> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        if durability == Durability::WithNext {
            // Committed without waiting for the WAL flush: the WAL writer
            // flushes it within 3 x wal_writer_delay, and any later
            // synchronous commit flushes it first.
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .await
                .map_err(pg_err)?;
        }
        // Four round trips per group, since a read waits for them: BEGIN;
        // lock the head; insert the events and move the head in one
        // statement; COMMIT. Statements are prepared once per connection.
        // The head row's lock serialises writers of one node across nodes
        // and processes; other nodes' chains don't wait.
        let lock = tx
            .prepare_cached(
                "SELECT seq, mac, purged_through, purged_mac FROM audit_heads WHERE node_id = $1 FOR UPDATE",
            )
            .await
            .map_err(pg_err)?;
        let head = match tx
            .query_opt(&lock, &[&sealer.node_id()])
            .await
            .map_err(pg_err)?
        {
            Some(row) => head_from(
                sealer.node_id().to_string(),
                row.get(0),
                row.get(1),
                row.get(2),
                row.get(3),
            )?,
            // This node's first event: create its head, then lock it.
            None => lock_head(&tx, sealer.node_id()).await?,
        };
        let rows = sealer.seal(&head, events)?;
        let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
        let times: Vec<i64> = rows.iter().map(|r| r.time_ms).collect();
        let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
        let bodies: Vec<&str> = rows.iter().map(|r| r.body.as_str()).collect();
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq as i64).collect();
        let macs: Vec<&str> = rows
            .iter()
            .map(|r| r.mac.as_deref().unwrap_or(""))
            .collect();
        let head = moved_head(head, &rows);
        // The whole group in one INSERT (arrays unnested server-side, in
        // order), and the head moved by the same statement.
        let append = tx
            .prepare_cached(
                "WITH appended AS (
                     INSERT INTO audit_events (event_id, time_ms, node_id, action, body, node_seq, mac)
                     SELECT e.id, e.t, $1, e.a, e.b, e.s, e.m
                     FROM UNNEST($2::text[], $3::bigint[], $4::text[], $5::text[], $6::bigint[], $7::text[])
                          WITH ORDINALITY AS e(id, t, a, b, s, m, o)
                     ORDER BY e.o
                     RETURNING 1
                 )
                 UPDATE audit_heads SET seq = $8, mac = $9 WHERE node_id = $1",
            )
            .await
            .map_err(pg_err)?;
        tx.execute(
            &append,
            &[
                &sealer.node_id(),
                &ids,
                &times,
                &actions,
                &bodies,
                &seqs,
                &macs,
                &(head.seq as i64),
                &encode_hex(&head.mac),
            ],
        )
        .await
        .map_err(pg_err)?;
        // Commit returns after the WAL is flushed (synchronous_commit on, the
        // server default), which is what "durable before data" needs.
        tx.commit().await.map_err(pg_err)?;
        Ok(head)
    }

    async fn sync_audit(&self) -> Result<()> {
        // A transaction with an id commits with a WAL record; with
        // synchronous_commit on (the session's setting) the commit waits
        // for the WAL to be flushed past it, and so past every
        // asynchronous commit before it.
        let client = self.client().await?;
        client
            .batch_execute("BEGIN; SELECT txid_current(); COMMIT")
            .await
            .map_err(pg_err)
    }

    async fn audit_page(&self, after: u64, limit: usize) -> Result<Vec<(u64, AuditEvent)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT seq, body FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&(after as i64), &(limit as i64)],
            )
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|r| {
                let pos: i64 = r.get(0);
                Ok((pos as u64, decode_event(pos, r.get(1))?))
            })
            .collect()
    }

    async fn audit_heads(&self) -> Result<Vec<ChainHead>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT node_id, seq, mac, purged_through, purged_mac FROM audit_heads ORDER BY node_id",
                &[],
            )
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|r| head_from(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect()
    }

    async fn audit_rows(
        &self,
        node_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredAuditRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT node_seq, time_ms, action, body, mac FROM audit_events
                 WHERE node_id = $1 AND node_seq > $2 ORDER BY node_seq LIMIT $3",
                &[&node_id, &(after_seq as i64), &(limit as i64)],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows
            .iter()
            .map(|r| StoredAuditRow {
                node_id: node_id.to_string(),
                seq: r.get::<_, i64>(0) as u64,
                time_ms: r.get(1),
                action: r.get(2),
                body: r.get(3),
                mac: r.get(4),
            })
            .collect())
    }

    async fn unchained_audit_events(&self) -> Result<u64> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT COUNT(*) FROM audit_events WHERE node_seq IS NULL",
                &[],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn audit_seq_before(&self, node_id: &str, time_ms: i64) -> Result<u64> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT COALESCE(MAX(node_seq), 0) FROM audit_events WHERE node_id = $1 AND time_ms < $2",
                &[&node_id, &time_ms],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn purge_audit(&self, node_id: &str, through_seq: u64) -> Result<(u64, ChainHead)> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let head = lock_head(&tx, node_id).await?;
        let through = through_seq.min(head.seq);
        if through <= head.purged_through {
            return Ok((0, head));
        }
        let mac: Option<String> = tx
            .query_opt(
                "SELECT mac FROM audit_events WHERE node_id = $1 AND node_seq = $2",
                &[&node_id, &(through as i64)],
            )
            .await
            .map_err(pg_err)?
            .and_then(|r| r.get(0));
        let head = purged_head(head, through, mac.as_deref())?;
        let deleted = tx
            .execute(
                "DELETE FROM audit_events WHERE node_id = $1 AND node_seq <= $2",
                &[&node_id, &(through as i64)],
            )
            .await
            .map_err(pg_err)?;
        tx.execute(
            "UPDATE audit_heads SET purged_through = $2, purged_mac = $3 WHERE node_id = $1",
            &[&node_id, &(through as i64), &encode_hex(&head.purged_mac)],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok((deleted, head))
    }

    async fn tail_audit(&self, limit: usize) -> Result<Vec<AuditEvent>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT seq, body FROM audit_events ORDER BY seq DESC LIMIT $1",
                &[&(limit as i64)],
            )
            .await
            .map_err(pg_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows.iter().rev() {
            let seq: i64 = row.get(0);
            let body: &str = row.get(1);
            let mut e: AuditEvent = serde_json::from_str(body)
                .map_err(|e| VeilError::internal("corrupt audit event", e))?;
            // Chained events carry their node sequence number.
            e.seq.get_or_insert(seq as u64);
            out.push(e);
        }
        Ok(out)
    }

    async fn dp_answer(&self, key: &str) -> Result<Option<DpAnswerRow>> {
        let client = self.client().await?;
        pg_dp_answer(&client, key).await
    }

    async fn put_dp_answer(&self, answer: &DpAnswerRow, charge: &DpCharge) -> Result<DpPut> {
        let a = answer;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // Concurrent nodes drawing for one key queue on its row; the
        // first kept for a window wins, later ones read it.
        let kept = tx
            .query_opt(
                "INSERT INTO dp_answers (key, dataset_id, answer_id, window_index, source_version, created_ms, answer, expires_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (key) DO UPDATE SET dataset_id = EXCLUDED.dataset_id, answer_id = EXCLUDED.answer_id,
                     window_index = EXCLUDED.window_index, source_version = EXCLUDED.source_version,
                     created_ms = EXCLUDED.created_ms, answer = EXCLUDED.answer, expires_ms = EXCLUDED.expires_ms
                 WHERE dp_answers.window_index < EXCLUDED.window_index
                     OR (dp_answers.expires_ms > 0 AND dp_answers.expires_ms < EXCLUDED.created_ms)
                 RETURNING answer_id",
                &[
                    &a.key,
                    &a.dataset_id,
                    &a.answer_id,
                    &a.window,
                    &a.source_version,
                    &a.created_ms,
                    &encode_answer(&a.answer),
                    &a.expires_ms,
                ],
            )
            .await
            .map_err(pg_err)?;
        if kept.is_none() {
            let row = pg_dp_answer(&tx, &a.key).await?.ok_or_else(|| {
                VeilError::Internal("a kept answer vanished inside its transaction".into())
            })?;
            tx.commit().await.map_err(pg_err)?;
            return Ok(DpPut::Kept {
                answer: row,
                charged: false,
            });
        }
        match pg_charge_ledger(&tx, charge).await? {
            Err(spent) => Ok(DpPut::OverBudget { spent }),
            Ok(_) => {
                tx.commit().await.map_err(pg_err)?;
                Ok(DpPut::Kept {
                    answer: a.clone(),
                    charged: true,
                })
            }
        }
    }

    async fn renew_dp_answer(
        &self,
        key: &str,
        answer_id: &str,
        window: i64,
        expires_ms: i64,
    ) -> Result<bool> {
        let client = self.client().await?;
        let renewed = client
            .execute(
                "UPDATE dp_answers SET window_index = GREATEST(window_index, $3),
                     expires_ms = CASE WHEN expires_ms = 0 THEN 0 ELSE GREATEST(expires_ms, $4) END
                 WHERE key = $1 AND answer_id = $2",
                &[&key, &answer_id, &window, &expires_ms],
            )
            .await
            .map_err(pg_err)?;
        Ok(renewed == 1)
    }

    async fn view_dp_answer(
        &self,
        answer_id: &str,
        charge: &DpCharge,
        now_ms: i64,
    ) -> Result<DpView> {
        let mut client = self.client().await?;
        // Seen before (the usual case on a kept answer): one read.
        let seen = client
            .query_opt(
                "SELECT l.spent, l.delta_spent FROM dp_views v
                 LEFT JOIN dp_ledger l ON l.ledger = $2 AND l.dataset_id = $3 AND l.period = $4
                 WHERE v.answer_id = $1 AND v.user_key = $2",
                &[
                    &answer_id,
                    &charge.ledger,
                    &charge.dataset_id,
                    &charge.period,
                ],
            )
            .await
            .map_err(pg_err)?;
        if let Some(row) = seen {
            let (value, delta): (Option<f64>, Option<f64>) = (row.get(0), row.get(1));
            return Ok(DpView::Seen {
                spent: DpSpent {
                    value: value.unwrap_or(0.0),
                    delta: delta.unwrap_or(0.0),
                },
            });
        }
        let tx = client.transaction().await.map_err(pg_err)?;
        let first = tx
            .execute(
                "INSERT INTO dp_views (answer_id, user_key, viewed_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&answer_id, &charge.ledger, &now_ms],
            )
            .await
            .map_err(pg_err)?
            == 1;
        if !first {
            let spent = pg_ledger_spent(&tx, charge, false).await?;
            tx.commit().await.map_err(pg_err)?;
            return Ok(DpView::Seen { spent });
        }
        match pg_charge_ledger(&tx, charge).await? {
            Err(spent) => Ok(DpView::OverBudget { spent }),
            Ok(spent) => {
                tx.commit().await.map_err(pg_err)?;
                Ok(DpView::Charged { spent })
            }
        }
    }

    async fn dp_ledgers(
        &self,
        dataset_id: Option<&str>,
        from_period: i64,
    ) -> Result<Vec<DpLedgerRow>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT ledger, dataset_id, period, spent, delta_spent FROM dp_ledger
                 WHERE period >= $1 AND ($2::TEXT IS NULL OR dataset_id = $2)
                 ORDER BY dataset_id, ledger, period",
                &[&from_period, &dataset_id],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows
            .iter()
            .map(|r| DpLedgerRow {
                ledger: r.get(0),
                dataset_id: r.get(1),
                period: r.get(2),
                spent: DpSpent {
                    value: r.get(3),
                    delta: r.get(4),
                },
            })
            .collect())
    }

    async fn purge_dp_answers(&self, now_ms: i64, stray_before_ms: i64) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // The answers and exactly their views in one statement: a renewal
        // that wins the row lock keeps the answer and its views together.
        let answers: i64 = tx
            .query_one(
                "WITH gone AS (
                     DELETE FROM dp_answers WHERE expires_ms > 0 AND expires_ms < $1 RETURNING answer_id
                 ), views AS (
                     DELETE FROM dp_views WHERE answer_id IN (SELECT answer_id FROM gone)
                 )
                 SELECT count(*) FROM gone",
                &[&now_ms],
            )
            .await
            .map_err(pg_err)?
            .get(0);
        let answers = answers as u64;
        tx.execute(
            "DELETE FROM dp_views WHERE viewed_ms < $1
             AND NOT EXISTS (SELECT 1 FROM dp_answers a WHERE a.answer_id = dp_views.answer_id)",
            &[&stray_before_ms],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(answers)
    }
}

/// The answer kept under `key`.
async fn pg_dp_answer(
    client: &impl deadpool_postgres::GenericClient,
    key: &str,
) -> Result<Option<DpAnswerRow>> {
    let row = client
        .query_opt(
            "SELECT dataset_id, answer_id, window_index, source_version, created_ms, answer, expires_ms
             FROM dp_answers WHERE key = $1",
            &[&key],
        )
        .await
        .map_err(pg_err)?;
    row.map(|r| {
        Ok(DpAnswerRow {
            key: key.to_string(),
            dataset_id: r.get(0),
            answer_id: r.get(1),
            window: r.get(2),
            source_version: r.get(3),
            created_ms: r.get(4),
            expires_ms: r.get(6),
            answer: decode_answer(r.get(5))?,
        })
    })
    .transpose()
}

/// A ledger's spending in the charge's period (0 if none), optionally
/// locking its row until the transaction ends.
async fn pg_ledger_spent(tx: &Transaction<'_>, c: &DpCharge, lock: bool) -> Result<DpSpent> {
    let sql = if lock {
        "SELECT spent, delta_spent FROM dp_ledger WHERE ledger = $1 AND dataset_id = $2 AND period = $3 FOR UPDATE"
    } else {
        "SELECT spent, delta_spent FROM dp_ledger WHERE ledger = $1 AND dataset_id = $2 AND period = $3"
    };
    let row = tx
        .query_opt(sql, &[&c.ledger, &c.dataset_id, &c.period])
        .await
        .map_err(pg_err)?;
    Ok(row
        .map(|r| DpSpent {
            value: r.get(0),
            delta: r.get(1),
        })
        .unwrap_or_default())
}

/// Add the charge inside `tx`: `Ok(spent after)`, or `Err(spent now)` when
/// it would pass the cap. The ledger row is created, then locked, so
/// concurrent charges on it queue and none passes the cap.
async fn pg_charge_ledger(
    tx: &Transaction<'_>,
    c: &DpCharge,
) -> Result<std::result::Result<DpSpent, DpSpent>> {
    tx.execute(
        "INSERT INTO dp_ledger (ledger, dataset_id, period, spent) VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING",
        &[&c.ledger, &c.dataset_id, &c.period],
    )
    .await
    .map_err(pg_err)?;
    let spent = pg_ledger_spent(tx, c, true).await?;
    if !super::within_cap(spent, c) {
        return Ok(Err(spent));
    }
    tx.execute(
        "UPDATE dp_ledger SET spent = spent + $4, delta_spent = delta_spent + $5
         WHERE ledger = $1 AND dataset_id = $2 AND period = $3",
        &[&c.ledger, &c.dataset_id, &c.period, &c.cost, &c.delta],
    )
    .await
    .map_err(pg_err)?;
    Ok(Ok(spent.after(c)))
}

/// The node's head row, created empty on first use, locked until `tx`
/// ends.
async fn lock_head(tx: &Transaction<'_>, node_id: &str) -> Result<ChainHead> {
    let genesis = encode_hex(&GENESIS);
    tx.execute(
        "INSERT INTO audit_heads (node_id, seq, mac, purged_through, purged_mac) VALUES ($1, 0, $2, 0, $2)
         ON CONFLICT (node_id) DO NOTHING",
        &[&node_id, &genesis],
    )
    .await
    .map_err(pg_err)?;
    let row = tx
        .query_one(
            "SELECT seq, mac, purged_through, purged_mac FROM audit_heads WHERE node_id = $1 FOR UPDATE",
            &[&node_id],
        )
        .await
        .map_err(pg_err)?;
    head_from(
        node_id.to_string(),
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
    )
}
