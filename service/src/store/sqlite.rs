//! The embedded default store: one SQLite file, versioned migrations.
//!
//! rusqlite is synchronous; every call runs on the blocking pool with the one
//! connection behind a mutex. SQLite serialises writers anyway, and WAL mode
//! keeps the file consistent across crashes.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use super::model::{DatasetRecord, Snapshot, UserRecord};
use super::{PutMode, Store};
use crate::audit::AuditEvent;
use crate::auth::identity::{Identity, Permission};
use crate::error::{Result, VeilError};
use crate::policy::model::{Origin, Policy, PolicySpec};

/// Ordered migrations; a database records the highest one applied.
const MIGRATIONS: &[(i64, &str)] = &[(
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
)];

#[derive(Debug, Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

fn db_err(e: impl std::fmt::Display) -> VeilError {
    VeilError::Unavailable(format!("state store (SQLite) error: {e}"))
}

fn origin_str(o: Origin) -> &'static str {
    match o {
        Origin::Config => "config",
        Origin::Runtime => "runtime",
    }
}

fn parse_origin(s: &str) -> Origin {
    if s == "config" {
        Origin::Config
    } else {
        Origin::Runtime
    }
}

fn bump(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE state_version SET version = version + 1 WHERE id = 1",
        [],
    )
    .map(|_| ())
}

impl SqliteStore {
    /// Open (creating if needed) and migrate.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(|e| {
            VeilError::FailedPrecondition(format!(
                "cannot open the SQLite store {}: {e}",
                path.display()
            ))
        })?;
        Self::init(conn)
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
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db_err)?;
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
        })
    }

    /// Run `f` on the blocking pool with the connection.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = Arc::clone(&self.conn);
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

fn load_snapshot(conn: &mut Connection) -> Result<Snapshot> {
    let tx = conn.transaction().map_err(db_err)?;
    let version: i64 = tx
        .query_row("SELECT version FROM state_version WHERE id = 1", [], |r| {
            r.get(0)
        })
        .map_err(db_err)?;
    let mut snap = Snapshot {
        version: version as u64,
        ..Default::default()
    };

    let mut stmt = tx.prepare("SELECT body FROM datasets").map_err(db_err)?;
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(db_err)?;
    for body in rows {
        let d: DatasetRecord = serde_json::from_str(&body.map_err(db_err)?)
            .map_err(|e| VeilError::internal("corrupt dataset record", e))?;
        snap.datasets.insert(d.name.clone(), d);
    }
    drop(stmt);

    let mut stmt = tx
        .prepare("SELECT id, origin, version, body FROM policies ORDER BY name")
        .map_err(db_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .map_err(db_err)?;
    for row in rows {
        let (id, origin, version, body) = row.map_err(db_err)?;
        let spec: PolicySpec = serde_json::from_str(&body)
            .map_err(|e| VeilError::internal("corrupt policy record", e))?;
        // A stored policy that no longer validates is a bug; refusing to load
        // it would silently drop enforcement, so fail the whole snapshot.
        let rule = spec.validate()?;
        snap.policies.push(Policy {
            id,
            version: version as u64,
            origin: parse_origin(&origin),
            spec,
            rule,
        });
    }
    drop(stmt);

    let mut stmt = tx
        .prepare("SELECT issuer, subject, body FROM users")
        .map_err(db_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(db_err)?;
    let mut users = HashMap::new();
    for row in rows {
        let (issuer, subject, body) = row.map_err(db_err)?;
        let u: UserRecord = serde_json::from_str(&body)
            .map_err(|e| VeilError::internal("corrupt user record", e))?;
        users.insert(Identity::new(issuer, subject), u);
    }
    snap.users = users;
    drop(stmt);

    let mut stmt = tx
        .prepare("SELECT issuer, subject FROM disabled_users")
        .map_err(db_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok(Identity::new(
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
            ))
        })
        .map_err(db_err)?;
    for row in rows {
        snap.disabled.insert(row.map_err(db_err)?);
    }
    drop(stmt);

    let mut stmt = tx
        .prepare("SELECT issuer, subject, permission, origin FROM grants")
        .map_err(db_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .map_err(db_err)?;
    let mut grants: HashMap<Identity, BTreeMap<Permission, Origin>> = HashMap::new();
    for row in rows {
        let (issuer, subject, perm, origin) = row.map_err(db_err)?;
        let perm =
            Permission::from_str(&perm).map_err(|e| VeilError::internal("corrupt grant", e))?;
        grants
            .entry(Identity::new(issuer, subject))
            .or_default()
            .insert(perm, parse_origin(&origin));
    }
    snap.grants = grants;
    drop(stmt);
    tx.commit().map_err(db_err)?;
    Ok(snap)
}

#[async_trait]
impl Store for SqliteStore {
    async fn version(&self) -> Result<u64> {
        self.with(|c| {
            c.query_row("SELECT version FROM state_version WHERE id = 1", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|v| v as u64)
            .map_err(db_err)
        })
        .await
    }

    async fn snapshot(&self) -> Result<Snapshot> {
        self.with(load_snapshot).await
    }

    async fn put_dataset(&self, dataset: &DatasetRecord, mode: PutMode) -> Result<()> {
        let d = dataset.clone();
        self.with(move |c| {
            let body =
                serde_json::to_string(&d).map_err(|e| VeilError::internal("encode dataset", e))?;
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

    async fn drop_dataset(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.with(move |c| {
            let tx = c.transaction().map_err(db_err)?;
            let n = tx
                .execute("DELETE FROM datasets WHERE name = ?1", [&name])
                .map_err(db_err)?;
            if n > 0 {
                bump(&tx).map_err(db_err)?;
            }
            tx.commit().map_err(db_err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn put_user(&self, identity: &Identity, user: &UserRecord, origin: Origin) -> Result<()> {
        let (id, u) = (identity.clone(), user.clone());
        self.with(move |c| {
            let body = serde_json::to_string(&u).map_err(|e| VeilError::internal("encode user", e))?;
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

    async fn grant(
        &self,
        identity: &Identity,
        permission: Permission,
        origin: Origin,
    ) -> Result<bool> {
        let id = identity.clone();
        self.with(move |c| {
            let tx = c.transaction().map_err(db_err)?;
            let n = tx
                .execute(
                    "INSERT OR IGNORE INTO grants (issuer, subject, permission, origin) VALUES (?1, ?2, ?3, ?4)",
                    params![id.issuer, id.subject, permission.as_str(), origin_str(origin)],
                )
                .map_err(db_err)?;
            if n > 0 {
                bump(&tx).map_err(db_err)?;
            }
            tx.commit().map_err(db_err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn revoke(&self, identity: &Identity, permission: Permission) -> Result<bool> {
        let id = identity.clone();
        self.with(move |c| {
            let tx = c.transaction().map_err(db_err)?;
            let n = tx
                .execute(
                    "DELETE FROM grants WHERE issuer = ?1 AND subject = ?2 AND permission = ?3 AND origin = 'runtime'",
                    params![id.issuer, id.subject, permission.as_str()],
                )
                .map_err(db_err)?;
            if n > 0 {
                bump(&tx).map_err(db_err)?;
            }
            tx.commit().map_err(db_err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn replace_config_policies(&self, policies: &[PolicySpec]) -> Result<()> {
        let specs = policies.to_vec();
        self.with(move |c| {
            let tx = c.transaction().map_err(db_err)?;
            // Keep ids and versions of unchanged policies stable, so tickets
            // and caches keyed by them survive a no-op reload.
            let mut existing: HashMap<String, (String, i64, String, String)> = HashMap::new();
            {
                let mut stmt = tx.prepare("SELECT name, id, version, body, origin FROM policies").map_err(db_err)?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
                    })
                    .map_err(db_err)?;
                for row in rows {
                    let (name, v) = row.map_err(db_err)?;
                    existing.insert(name, v);
                }
            }
            let mut changed = false;
            for spec in &specs {
                let body = serde_json::to_string(spec).map_err(|e| VeilError::internal("encode policy", e))?;
                match existing.remove(&spec.name) {
                    Some((_, _, old_body, origin)) if origin == "runtime" => {
                        let _ = old_body;
                        return Err(VeilError::AlreadyExists(format!(
                            "policy '{}' is declared in the config file but a runtime policy has that name; rename one",
                            spec.name
                        )));
                    }
                    Some((_, _, old_body, _)) if old_body == body => {}
                    Some((id, version, _, _)) => {
                        tx.execute(
                            "UPDATE policies SET body = ?1, version = ?2 WHERE id = ?3",
                            params![body, version + 1, id],
                        )
                        .map_err(db_err)?;
                        changed = true;
                    }
                    None => {
                        tx.execute(
                            "INSERT INTO policies (id, name, origin, version, body) VALUES (?1, ?2, 'config', 1, ?3)",
                            params![uuid::Uuid::new_v4().to_string(), spec.name, body],
                        )
                        .map_err(db_err)?;
                        changed = true;
                    }
                }
            }
            for (name, (_, _, _, origin)) in existing {
                if origin == "config" {
                    tx.execute("DELETE FROM policies WHERE name = ?1", [&name]).map_err(db_err)?;
                    changed = true;
                }
            }
            if changed {
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
                let body = serde_json::to_string(u).map_err(|e| VeilError::internal("encode user", e))?;
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

    async fn append_audit(&self, events: &[AuditEvent]) -> Result<()> {
        let events = events.to_vec();
        self.with(move |c| {
            let tx = c.transaction().map_err(db_err)?;
            for e in &events {
                let body = serde_json::to_string(e).map_err(|e| VeilError::internal("encode audit event", e))?;
                tx.execute(
                    "INSERT INTO audit_events (event_id, time_ms, node_id, action, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![e.event_id, e.time_ms, e.node_id, e.action, body],
                )
                .map_err(db_err)?;
            }
            tx.commit().map_err(db_err)
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
                e.seq = Some(seq as u64);
                out.push(e);
            }
            out.reverse();
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::{ColumnRecord, FileFormatKind, SourceSpec};

    fn dataset(name: &str) -> DatasetRecord {
        DatasetRecord {
            id: format!("id-{name}"),
            name: name.into(),
            source: SourceSpec {
                format: FileFormatKind::Csv,
                location: "/x".into(),
                hive_partitioned: false,
            },
            description: String::new(),
            owners: vec![Identity::new("i", "o")],
            tags: vec![],
            columns: vec![ColumnRecord {
                name: "a".into(),
                data_type: "Int64".into(),
                nullable: true,
                description: String::new(),
                tags: vec![],
                partition: false,
            }],
            origin: Origin::Runtime,
        }
    }

    #[tokio::test]
    async fn every_change_bumps_the_version() {
        let s = SqliteStore::in_memory().unwrap();
        let v0 = s.version().await.unwrap();
        s.put_dataset(&dataset("a.b"), PutMode::Create)
            .await
            .unwrap();
        let v1 = s.version().await.unwrap();
        assert!(v1 > v0);
        assert!(matches!(
            s.put_dataset(&dataset("a.b"), PutMode::Create).await,
            Err(VeilError::AlreadyExists(_))
        ));
        let id = Identity::new("i", "u");
        assert!(
            s.grant(&id, Permission::Audit, Origin::Runtime)
                .await
                .unwrap()
        );
        assert!(
            !s.grant(&id, Permission::Audit, Origin::Runtime)
                .await
                .unwrap()
        );
        let v2 = s.version().await.unwrap();
        assert!(v2 > v1);
        assert_eq!(s.version().await.unwrap(), v2, "reads do not bump");
        let snap = s.snapshot().await.unwrap();
        assert_eq!(snap.version, v2);
        assert!(snap.datasets.contains_key("a.b"));
        assert!(snap.grants[&id].contains_key(&Permission::Audit));
    }

    #[tokio::test]
    async fn config_grants_survive_runtime_revoke_and_reload_keeps_runtime_ones() {
        let s = SqliteStore::in_memory().unwrap();
        let id = Identity::new("i", "u");
        s.replace_config_directory(&[], &[(id.clone(), Permission::Governance)])
            .await
            .unwrap();
        assert!(
            !s.revoke(&id, Permission::Governance).await.unwrap(),
            "config grants are read-only"
        );
        s.grant(&id, Permission::Audit, Origin::Runtime)
            .await
            .unwrap();
        assert!(s.revoke(&id, Permission::Audit).await.unwrap());
        s.replace_config_directory(&[], &[]).await.unwrap();
        let snap = s.snapshot().await.unwrap();
        assert!(snap.grants.get(&id).is_none_or(|g| g.is_empty()));
    }

    #[tokio::test]
    async fn unchanged_config_policies_keep_their_version() {
        let s = SqliteStore::in_memory().unwrap();
        let p: PolicySpec =
            toml::from_str("name = \"p\"\ndataset = \"a.b\"\nsubscription = { anyone = true }")
                .unwrap();
        s.replace_config_policies(std::slice::from_ref(&p))
            .await
            .unwrap();
        let v = s.version().await.unwrap();
        s.replace_config_policies(std::slice::from_ref(&p))
            .await
            .unwrap();
        assert_eq!(s.version().await.unwrap(), v);
        s.replace_config_policies(&[]).await.unwrap();
        assert!(s.snapshot().await.unwrap().policies.is_empty());
    }

    #[tokio::test]
    async fn audit_appends_are_ordered() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("veil.db")).unwrap();
        for i in 0..3 {
            s.append_audit(&[AuditEvent::new(&format!("a{i}"), None)])
                .await
                .unwrap();
        }
        let tail = s.tail_audit(2).await.unwrap();
        assert_eq!(
            tail.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
            ["a1", "a2"]
        );
        assert!(tail[0].seq < tail[1].seq);
    }
}
