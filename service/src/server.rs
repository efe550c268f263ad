//! Wiring: config → store → keys → engine → Flight service on a socket.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use arrow_flight::flight_service_server::FlightServiceServer;

use crate::audit::AuditLog;
use crate::auth::authenticator::Authenticator;
use crate::auth::identity::{Identity, Permission};
use crate::auth::jwt::TokenVerifier;
use crate::catalog::roots::LocationRoots;
use crate::catalog::state::StateCache;
use crate::catalog::{NewDataset, build_dataset};
use crate::config::Config;
use crate::engine::Engine;
use crate::error::{Result, VeilError};
use crate::flight::actions::Admin;
use crate::flight::auth_layer::AuthLayer;
use crate::flight::service::VeilFlight;
use crate::flight::tickets::TicketSigner;
use crate::policy::model::Origin;
use crate::secrets::{KeyPurpose, MasterKey};
use crate::store::model::UserRecord;
use crate::store::sqlite::SqliteStore;
use crate::store::{PutMode, Store};

/// A running server.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub tls: bool,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<()>>,
}

impl Running {
    /// Stop accepting calls, let in-flight ones finish, and wait.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.handle
            .await
            .map_err(|e| VeilError::internal("server task", e))?
    }

    /// Wait until the server stops on its own (or the task fails).
    pub async fn wait(self) -> Result<()> {
        self.handle
            .await
            .map_err(|e| VeilError::internal("server task", e))?
    }

    /// A future that resolves when `signal` fires, then stops the server.
    pub async fn stop_on(self, signal: impl std::future::Future<Output = ()>) -> Result<()> {
        signal.await;
        self.stop().await
    }
}

#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Overrides `server.listen`.
    pub listen: Option<String>,
    /// Allow plaintext on a non-loopback address.
    pub insecure: bool,
}

/// Start serving; returns once the socket is bound.
pub async fn start(cfg: Config, opts: ServeOptions) -> Result<Running> {
    let data_dir = cfg.data_dir();
    std::fs::create_dir_all(&data_dir).map_err(|e| {
        VeilError::FailedPrecondition(format!(
            "cannot create the data directory {}: {e}",
            data_dir.display()
        ))
    })?;
    let master = MasterKey::load_or_create(&cfg.master_key_path())?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&cfg.sqlite_path())?);
    let roots = LocationRoots::new(&cfg.roots.iter().map(|r| cfg.resolve(r)).collect::<Vec<_>>())?;
    sync_config(&store, &cfg, &roots).await?;

    let node_id = cfg
        .server
        .node_id
        .clone()
        .unwrap_or_else(|| format!("node-{}", &uuid::Uuid::new_v4().to_string()[..8]));
    let audit = AuditLog::new(Arc::clone(&store), node_id);
    let state = Arc::new(StateCache::new(Arc::clone(&store)));
    let verifier = TokenVerifier::from_config(&cfg.auth, &cfg.base_dir)?;
    let engine = Arc::new(Engine::new(
        Arc::clone(&state),
        master.clone(),
        cfg.auth.default_issuer(),
        cfg.engine.clone(),
    )?);
    let auth = Arc::new(Authenticator::new(
        verifier,
        Arc::clone(&state),
        master.derive(KeyPurpose::Fingerprint),
        audit.clone(),
    ));
    let admin = Arc::new(Admin::new(Arc::clone(&engine), audit.clone(), roots));
    let flight = VeilFlight::new(engine, TicketSigner::from_master(&master), audit, admin);

    let listen = opts
        .listen
        .clone()
        .unwrap_or_else(|| cfg.server.listen.clone());
    let addr: SocketAddr = tokio::net::lookup_host(&listen)
        .await
        .map_err(|e| {
            VeilError::FailedPrecondition(format!("cannot resolve listen address '{listen}': {e}"))
        })?
        .next()
        .ok_or_else(|| {
            VeilError::FailedPrecondition(format!("listen address '{listen}' resolves to nothing"))
        })?;
    if !addr.ip().is_loopback() && cfg.tls.is_none() && !opts.insecure {
        return Err(VeilError::FailedPrecondition(format!(
            "refusing to serve plaintext on {addr}, which is not a loopback address: configure [tls] cert_file and key_file, or pass --insecure if a trusted proxy terminates TLS"
        )));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| VeilError::FailedPrecondition(format!("cannot listen on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| VeilError::internal("local addr", e))?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));

    let mut builder = tonic::transport::Server::builder();
    let tls = cfg.tls.is_some();
    if let Some(t) = &cfg.tls {
        let read = |p: &PathBuf, what: &str| {
            std::fs::read(cfg.resolve(p)).map_err(|e| {
                VeilError::FailedPrecondition(format!(
                    "cannot read TLS {what} {}: {e}",
                    p.display()
                ))
            })
        };
        let identity = tonic::transport::Identity::from_pem(
            read(&t.cert_file, "certificate")?,
            read(&t.key_file, "key")?,
        );
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| {
                VeilError::FailedPrecondition(format!("TLS configuration is invalid: {e}"))
            })?;
    }
    let service = FlightServiceServer::new(flight)
        .max_decoding_message_size(16 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    let router = builder.layer(AuthLayer::new(auth)).add_service(service);

    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, async {
                let _ = rx.await;
            })
            .await
            .map_err(|e| VeilError::Unavailable(format!("the server stopped: {e}")))
    });
    if let Some(p) = &cfg.server.address_file {
        let scheme = if tls { "grpc+tls" } else { "grpc" };
        std::fs::write(cfg.resolve(p), format!("{scheme}://{bound}\n")).map_err(|e| {
            VeilError::FailedPrecondition(format!("cannot write the address file: {e}"))
        })?;
    }
    tracing::info!(address = %bound, tls, "Veil is serving Arrow Flight");
    Ok(Running {
        addr: bound,
        tls,
        shutdown: Some(tx),
        handle,
    })
}

/// Bring the store in line with the config file: config-declared policies,
/// users, grants and datasets are replaced; runtime ones are untouched.
pub async fn sync_config(
    store: &Arc<dyn Store>,
    cfg: &Config,
    roots: &LocationRoots,
) -> Result<()> {
    let issuer = cfg.auth.default_issuer();
    for p in &cfg.policies {
        p.validate()?;
    }
    let mut names = BTreeSet::new();
    for p in &cfg.policies {
        if !names.insert(&p.name) {
            return Err(VeilError::FailedPrecondition(format!(
                "two policies in the config are named '{}'",
                p.name
            )));
        }
    }
    store.replace_config_policies(&cfg.policies).await?;

    let mut users = Vec::new();
    let mut grants = Vec::new();
    for u in &cfg.users {
        let id = Identity::new(
            u.issuer.clone().unwrap_or_else(|| issuer.clone()),
            u.name.clone(),
        );
        let record = UserRecord {
            groups: u.groups.iter().cloned().collect(),
            attributes: u
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
                .collect(),
        };
        for perm in &u.permissions {
            let perm: Permission = perm.parse().map_err(|e: String| {
                VeilError::FailedPrecondition(format!("user {}: {e}", u.name))
            })?;
            grants.push((id.clone(), perm));
        }
        users.push((id, record));
    }
    store.replace_config_directory(&users, &grants).await?;

    let snapshot = store.snapshot().await?;
    let declared: BTreeSet<&str> = cfg.datasets.iter().map(|d| d.name.as_str()).collect();
    for d in &cfg.datasets {
        let location = roots.confine(&cfg.resolve(&d.location)).map_err(|e| {
            VeilError::FailedPrecondition(format!("dataset {}: {}", d.name, e.message()))
        })?;
        let owners: Vec<Identity> = d.owners.iter().map(|o| o.resolve(&issuer)).collect();
        match snapshot.datasets.get(&d.name) {
            None => {
                let record = build_dataset(
                    NewDataset {
                        name: d.name.clone(),
                        format: d.format.clone(),
                        location: location.clone(),
                        hive_partitioned: d.hive_partitioned,
                        description: d.description.clone(),
                        owners,
                        tags: d.tags.clone(),
                        columns: d.columns.clone(),
                        origin: Origin::Config,
                    },
                    &location,
                )
                .await
                .map_err(|e| {
                    VeilError::FailedPrecondition(format!("dataset {}: {}", d.name, e.message()))
                })?;
                tracing::info!(dataset = %d.name, columns = record.columns.len(), "registered dataset from the config");
                store.put_dataset(&record, PutMode::Create).await?;
            }
            Some(existing) => {
                // The stored dictionary stays: new columns in the files are
                // not served until someone adds them (schema drift).
                let mut updated = existing.clone();
                updated.description = d.description.clone();
                updated.owners = owners;
                updated.tags = d.tags.clone();
                updated.origin = Origin::Config;
                updated.source.location = location.to_string_lossy().to_string();
                updated.source.hive_partitioned = d.hive_partitioned;
                for (name, c) in &d.columns {
                    let col = updated.columns.iter_mut().find(|x| &x.name == name).ok_or_else(|| {
                        VeilError::FailedPrecondition(format!(
                            "dataset {}: column '{name}' is described in the config but is not in the data dictionary",
                            d.name
                        ))
                    })?;
                    col.description = c.description.clone();
                    col.tags = c.tags.clone();
                }
                if &updated != existing {
                    store.put_dataset(&updated, PutMode::Replace).await?;
                }
            }
        }
    }
    for d in snapshot.datasets.values() {
        if d.origin == Origin::Config && !declared.contains(d.name.as_str()) {
            tracing::info!(dataset = %d.name, "dataset removed from the config; dropping it");
            store.drop_dataset(&d.name).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    fn config(dir: &std::path::Path, extra: &str) -> Config {
        let text = format!(
            "roots = [\"data\"]\n[auth]\naudience = \"veil\"\n[[auth.keys]]\nissuer = \"i\"\nalgorithm = \"HS256\"\nsecret_file = \"s\"\n{extra}"
        );
        std::fs::write(dir.join("veil.toml"), text).unwrap();
        Config::load(&dir.join("veil.toml")).unwrap()
    }

    fn roots(cfg: &Config) -> LocationRoots {
        LocationRoots::new(&cfg.roots.iter().map(|r| cfg.resolve(r)).collect::<Vec<_>>()).unwrap()
    }

    const EVENTS: &str =
        "[[datasets]]\nname = \"ops.events\"\nformat = \"json\"\nlocation = \"data/events\"\n";

    #[tokio::test]
    async fn config_datasets_keep_their_dictionary_and_go_when_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data/events")).unwrap();
        std::fs::write(
            dir.path().join("data/events/a.json"),
            "{\"id\": 1, \"kind\": \"x\"}\n",
        )
        .unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let cfg = config(dir.path(), EVENTS);
        sync_config(&store, &cfg, &roots(&cfg)).await.unwrap();
        let names = |s: &crate::store::model::Snapshot| -> Vec<String> {
            s.datasets["ops.events"]
                .columns
                .iter()
                .map(|c| c.name.clone())
                .collect()
        };
        assert_eq!(names(&store.snapshot().await.unwrap()), ["id", "kind"]);
        // A file with a new field appears; a restart does not serve it.
        std::fs::write(
            dir.path().join("data/events/b.json"),
            "{\"id\": 2, \"kind\": \"y\", \"secret\": \"s\"}\n",
        )
        .unwrap();
        sync_config(&store, &cfg, &roots(&cfg)).await.unwrap();
        assert_eq!(names(&store.snapshot().await.unwrap()), ["id", "kind"]);
        // Removed from the config: dropped.
        let cfg = config(dir.path(), "");
        sync_config(&store, &cfg, &roots(&cfg)).await.unwrap();
        assert!(store.snapshot().await.unwrap().datasets.is_empty());
    }

    #[tokio::test]
    async fn invalid_configs_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let p = "[[policies]]\nname = \"p\"\ndataset = \"a.b\"\nsubscription = { anyone = true }\n";
        for (extra, needle) in [
            (format!("{p}{p}"), "two policies"),
            (
                "[[datasets]]\nname = \"ops.x\"\nformat = \"csv\"\nlocation = \"/etc/passwd\"\n"
                    .to_string(),
                "outside",
            ),
            (
                "[[users]]\nname = \"u\"\npermissions = [\"ROOT\"]\n".to_string(),
                "unknown permission",
            ),
            (
                "[[policies]]\nname = \"q\"\nmask = \"hash\"\n".to_string(),
                "either `dataset`",
            ),
        ] {
            let cfg = config(dir.path(), &extra);
            let e = sync_config(&store, &cfg, &roots(&cfg)).await.unwrap_err();
            assert!(e.message().contains(needle), "{needle}: {e}");
        }
    }
}
