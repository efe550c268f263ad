//! Wiring: config → store → keys → engine → Flight service on a socket.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::audit::AuditLog;
use crate::audit::auth_failures::{AuthFailureAudit, DEFAULT_MAX_KEYS};
use crate::audit::chain::AuditSealer;
use crate::audit::checkpoint::CheckpointSink;
use crate::auth::authenticator::Authenticator;
use crate::auth::jwt::TokenVerifier;
use crate::catalog::database::Databases;
use crate::catalog::object_stores::ObjectStores;
use crate::catalog::roots::{LocationRoots, SharedRoots};
use crate::catalog::state::StateCache;
use crate::config::Config;
use crate::config::StoreBackend;
use crate::engine::Engine;
use crate::error::{Result, VeilError};
use crate::flight::actions::FlightActions;
use crate::flight::auth_layer::AuthLayer;
use crate::flight::service::VeilFlight;
use crate::flight::tickets::TicketSigner;
use crate::flight::zero_copy_do_get::{FlightRoutes, MAX_REQUEST_BYTES, MESSAGE_HARD_CAP_BYTES};
use crate::governance::Governance;
use crate::provisioning::reload::Reloader;
use crate::provisioning::sync_config;
use crate::secrets::{KeyPurpose, MasterKey};
use crate::store::Store;
use crate::store::postgres::{PostgresOptions, PostgresStore};
use crate::store::sqlite::SqliteStore;

/// A running server.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub tls: bool,
    reloader: Arc<Reloader>,
    audit: AuditLog,
    auth_failures: Arc<AuthFailureAudit>,
    purger: Option<JoinHandle<()>>,
    dp_purger: JoinHandle<()>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<()>>,
}

impl Running {
    /// Re-reads the config file (what SIGHUP and `veil.reload` do).
    pub fn reloader(&self) -> Arc<Reloader> {
        Arc::clone(&self.reloader)
    }

    /// Stop accepting calls, let in-flight ones finish, commit the audit
    /// and checkpoint its chain, and wait.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let served = self
            .handle
            .await
            .map_err(|e| VeilError::internal("server task", e))?;
        if let Some(p) = self.purger.take() {
            p.abort();
        }
        self.dp_purger.abort();
        // Counted authentication failures go in before the writer stops.
        self.auth_failures.shutdown().await;
        self.audit.shutdown().await;
        served
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
    let store = open_store(&cfg).await?;
    store.check_master_key(&master.check_value()).await?;
    let roots = LocationRoots::from_config(&cfg)?;
    let stores = Arc::new(ObjectStores::from_config(&cfg)?);
    let databases = Arc::new(Databases::from_config(&cfg)?);
    sync_config(&store, &cfg, &roots, &stores, &databases).await?;

    let node_id = match cfg.server.node_id.clone() {
        Some(id) => id,
        None => default_node_id(&data_dir)?,
    };
    let audit = AuditLog::start(
        Arc::clone(&store),
        AuditSealer::new(master.derive(KeyPurpose::AuditChain), node_id.clone()),
        CheckpointSink::file(cfg.audit_checkpoint_path()),
        std::time::Duration::from_secs(cfg.audit.checkpoint_interval_secs),
    );
    let purger = cfg.audit.retention_days.map(|days| {
        spawn_purger(
            audit.clone(),
            std::time::Duration::from_secs(u64::from(days) * 86_400),
            std::time::Duration::from_secs(cfg.audit.purge_interval_secs.max(1)),
        )
    });
    let state = Arc::new(StateCache::new(Arc::clone(&store)));
    let verifier = TokenVerifier::from_config(&cfg.auth, &cfg.base_dir)?;
    let engine = Arc::new(
        Engine::new(
            Arc::clone(&state),
            master.clone(),
            cfg.auth.default_issuer(),
            cfg.engine.clone(),
            Arc::clone(&stores),
        )?
        .with_databases(Arc::clone(&databases))
        .with_acceleration(&data_dir.join("accelerated").join(&node_id))?
        .with_kept_masks(
            &data_dir.join("kept-masks"),
            cfg.engine.kept_masks_max_mb * 1024 * 1024,
        )?,
    );
    if let Some(acc) = engine.accelerator() {
        acc.set_audit(audit.clone());
    }
    let dp_purger = spawn_dp_purger(Arc::clone(engine.dp_answers()));
    let auth_failures = Arc::new(AuthFailureAudit::start(
        audit.clone(),
        std::time::Duration::from_secs(cfg.audit.auth_failure_window_secs),
        DEFAULT_MAX_KEYS,
    ));
    let auth = Arc::new(Authenticator::new(
        verifier,
        Arc::clone(&state),
        master.derive(KeyPurpose::Fingerprint),
        Arc::clone(&auth_failures),
    ));
    let roots = Arc::new(SharedRoots::new(roots));
    let reloader = Arc::new(Reloader::new(
        cfg.clone(),
        Arc::clone(&store),
        Arc::clone(&stores),
        databases,
        Arc::clone(&roots),
        Arc::clone(&auth),
        audit.clone(),
    ));
    let governance = Arc::new(Governance::new(
        Arc::clone(&engine),
        audit.clone(),
        roots,
        Arc::clone(&reloader),
        Arc::clone(&auth),
    ));
    let actions = Arc::new(FlightActions::new(governance));
    let locations = endpoint_locations(&cfg)?;
    let flight = VeilFlight::new(
        engine,
        TicketSigner::from_master(&master),
        audit.clone(),
        actions,
        locations,
    )?;

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
        let (cert, key) = (
            read(&t.cert_file, "certificate")?,
            read(&t.key_file, "key")?,
        );
        check_tls_pem(&cert, &t.cert_file, &key, &t.key_file)?;
        let identity = tonic::transport::Identity::from_pem(cert, key);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| {
                VeilError::FailedPrecondition(format!(
                    "TLS configuration is invalid: {} (tls.cert_file must hold the server's certificate chain, leaf first, and tls.key_file that certificate's private key)",
                    crate::logging::ErrorChain(&e)
                ))
            })?;
    }
    let service = FlightRoutes::new(Arc::new(flight), MAX_REQUEST_BYTES, MESSAGE_HARD_CAP_BYTES);
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
        reloader,
        audit,
        auth_failures,
        purger,
        dp_purger,
        shutdown: Some(tx),
        handle,
    })
}

/// The TLS files hold what they should: at least one PEM certificate, and
/// a PEM private key. (Whether the key belongs to the certificate is
/// rustls's check, when the server's TLS configuration is built.)
fn check_tls_pem(cert: &[u8], cert_file: &Path, key: &[u8], key_file: &Path) -> Result<()> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| {
            VeilError::FailedPrecondition(format!(
                "tls.cert_file {}: cannot read its PEM certificates: {e}",
                cert_file.display()
            ))
        })?;
    let cert_holds_key = PrivateKeyDer::from_pem_slice(cert).is_ok();
    if certs.is_empty() {
        return Err(VeilError::FailedPrecondition(format!(
            "tls.cert_file {} holds no certificate: it must be PEM, with a '-----BEGIN CERTIFICATE-----' block (the server's certificate first, then any intermediates){}",
            cert_file.display(),
            match cert_holds_key {
                true => "; it holds a private key: are the two files swapped?",
                false => "",
            }
        )));
    }
    if PrivateKeyDer::from_pem_slice(key).is_err() {
        return Err(VeilError::FailedPrecondition(format!(
            "tls.key_file {} holds no private key: it must be PEM ('-----BEGIN PRIVATE KEY-----', 'RSA PRIVATE KEY' or 'EC PRIVATE KEY', unencrypted){}",
            key_file.display(),
            match cert_holds_key {
                true => "; tls.cert_file holds the key too: set key_file to that file",
                false => "",
            }
        )));
    }
    Ok(())
}

/// `server.endpoint_locations`, checked: Flight URIs of a host and a port
/// (nothing after them), and none in plaintext when this server speaks TLS
/// (a client following it would send its token in cleartext).
fn endpoint_locations(cfg: &Config) -> Result<Vec<String>> {
    for l in &cfg.server.endpoint_locations {
        check_location(l, cfg.tls.is_some())?;
    }
    Ok(cfg.server.endpoint_locations.clone())
}

fn check_location(l: &str, tls: bool) -> Result<()> {
    const REUSE: &str = "arrow-flight-reuse-connection://?";
    let shown: String = l.chars().filter(|c| !c.is_control()).take(200).collect();
    let bad = |why: &str| {
        Err(VeilError::FailedPrecondition(format!(
            "server.endpoint_locations: '{shown}' {why} (write grpc+tls://host:port, grpc://host:port without TLS, or {REUSE})"
        )))
    };
    if l == REUSE {
        return Ok(());
    }
    let Some((scheme, authority)) = ["grpc+tls://", "grpc://", "grpc+tcp://"]
        .iter()
        .find_map(|s| l.strip_prefix(s).map(|rest| (*s, rest)))
    else {
        return bad("is not a Flight location");
    };
    if authority
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || "/?#@".contains(c))
    {
        return bad("must be just a host and a port");
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p))
            if !h.is_empty() && (!h.contains(':') || (h.starts_with('[') && h.ends_with(']'))) =>
        {
            (h, p)
        }
        _ => return bad("has no port"),
    };
    if host.is_empty() || !matches!(port.parse::<u16>(), Ok(1..)) {
        return bad("has no valid port (1 to 65535)");
    }
    if tls && scheme != "grpc+tls://" {
        return bad(
            "is plaintext, but this server speaks TLS: a client following it would send its token in cleartext",
        );
    }
    Ok(())
}

/// Open the configured state store (and migrate it).
pub async fn open_store(cfg: &Config) -> Result<Arc<dyn Store>> {
    match cfg.store.backend {
        StoreBackend::Sqlite => Ok(Arc::new(SqliteStore::open(&cfg.sqlite_path())?)),
        StoreBackend::Postgres => {
            let url = cfg.store.url.clone().ok_or_else(|| {
                VeilError::FailedPrecondition(
                    "store.backend = \"postgres\" needs store.url (a postgres:// URL or host=... user=... dbname=...)".into(),
                )
            })?;
            let password = match &cfg.store.password_file {
                Some(p) => Some(
                    std::fs::read_to_string(cfg.resolve(p))
                        .map_err(|e| {
                            VeilError::FailedPrecondition(format!(
                                "cannot read store.password_file {}: {e}",
                                p.display()
                            ))
                        })?
                        .trim_end_matches(['\r', '\n'])
                        .to_string(),
                ),
                None => None,
            };
            let store = PostgresStore::connect(&PostgresOptions {
                url,
                schema: cfg.store.schema.clone(),
                password,
                pool_size: cfg.store.pool_size,
            })
            .await?;
            tracing::info!(schema = %cfg.store.schema, "using the PostgreSQL store");
            Ok(Arc::new(store))
        }
    }
}

/// The node id when the config names none: kept in `<data_dir>/node-id`
/// (created once), so a node's audit chain continues across restarts.
fn default_node_id(data_dir: &std::path::Path) -> Result<String> {
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(VeilError::FailedPrecondition(format!(
                "cannot read the node id file {}: {e}",
                path.display()
            )));
        }
    }
    let id = format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    std::fs::write(&path, format!("{id}\n")).map_err(|e| {
        VeilError::FailedPrecondition(format!(
            "cannot write the node id file {}: {e}",
            path.display()
        ))
    })?;
    Ok(id)
}

/// Forget differentially private answers past their keeping time, hourly
/// (a lost round only leaves them a while longer: an expired answer is
/// never served).
fn spawn_dp_purger(answers: Arc<crate::engine::dp::DpAnswers>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(3_600));
        loop {
            tick.tick().await;
            match answers.purge().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    answers = n,
                    "forgot differentially private answers past their keeping time"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "purging differentially private answers failed; retrying in an hour")
                }
            }
        }
    })
}

/// Purges audit events past retention now and every `every`.
fn spawn_purger(
    audit: AuditLog,
    retention: std::time::Duration,
    every: std::time::Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = audit.purge_older_than(retention).await {
                tracing::error!(error = %e, "audit retention purge failed; retrying at the next interval");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::check_location;

    #[test]
    fn endpoint_locations_name_a_host_and_a_port_and_keep_tls() {
        for ok in [
            "grpc+tls://veil-2:8815",
            "grpc+tls://[::1]:8815",
            "arrow-flight-reuse-connection://?",
        ] {
            assert!(check_location(ok, true).is_ok(), "{ok}");
        }
        assert!(check_location("grpc://veil-2:8815", false).is_ok());
        for (bad, tls, says) in [
            ("grpc://veil-2:8815", true, "plaintext"),
            ("grpc+tcp://veil-2:8815", true, "plaintext"),
            ("grpc+tls://veil-2", true, "no port"),
            ("grpc+tls://[::1]:99999", true, "valid port"),
            ("grpc+tls://veil-2:0", true, "valid port"),
            ("grpc+tls://veil-2:8815\nx", true, "just a host"),
            ("grpc://127.0.0.1:1/../x?y#z", false, "just a host"),
            ("http://veil-2:8815", false, "not a Flight location"),
            ("grpc+tls://", true, "no port"),
        ] {
            let e = check_location(bad, tls).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
