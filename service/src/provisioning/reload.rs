//! Re-reading the config file without a restart (SIGHUP or `veil.reload`).
//!
//! A reload re-applies the config-declared policies, users, grants and
//! datasets, the dataset roots, and the token keys with their issuers' claim
//! trust (`[auth]`, so keys can be rotated and trust changed: both live in the
//! `TokenVerifier` swapped here). Where the server listens, its TLS identity, its store, its
//! remote object stores, its database connections and its engine settings are fixed for the life of the process: a changed value
//! there is reported as needing a restart, and the running value stays.
//!
//! Reads already streaming keep the plan (and so the policies) they started
//! with; every request after the reload plans against the new state, because
//! the reload moves the store's version.

use std::sync::Arc;

use super::sync::{SyncReport, sync_config};
use crate::audit::{AuditEventExt, AuditLog};
use crate::auth::authenticator::Authenticator;
use crate::auth::jwt::TokenVerifier;
use crate::catalog::database::Databases;
use crate::catalog::object_stores::ObjectStores;
use crate::catalog::roots::{LocationRoots, SharedRoots};
use crate::config::{AuthConfig, Config, IssuerConfig, KeyConfig};
use crate::error::{Result, VeilError};
use crate::model::audit::AuditEvent;
use crate::store::Store;

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    pub sync: SyncReport,
    /// Token trust and dataset roots that changed and are now in force
    /// (`[auth]` settings, keys and issuers, in words; `roots`).
    pub applied: Vec<String>,
    /// Config sections that changed but only take effect after a restart.
    pub restart_needed: Vec<&'static str>,
}

impl ReloadReport {
    pub fn summary(&self) -> String {
        let s = &self.sync;
        let mut out = format!(
            "reloaded: {} policies, {} users from the config",
            s.policies, s.users
        );
        let mut changes = Vec::new();
        for (what, names) in [
            ("policies added", &s.policies_added),
            ("policies changed", &s.policies_changed),
            ("policies removed", &s.policies_removed),
            ("users added", &s.users_added),
            ("users changed", &s.users_changed),
            ("users removed", &s.users_removed),
            ("datasets added", &s.datasets_added),
            ("datasets updated", &s.datasets_updated),
            ("datasets dropped", &s.datasets_dropped),
        ] {
            if !names.is_empty() {
                changes.push(format!("{what}: {}", names.join(", ")));
            }
        }
        changes.extend(self.applied.iter().cloned());
        if changes.is_empty() {
            out.push_str("; nothing changed");
        } else {
            out.push_str("; ");
            out.push_str(&changes.join("; "));
        }
        if !self.restart_needed.is_empty() {
            out.push_str(&format!(
                "; changed but needing a restart (running values kept): {}",
                self.restart_needed.join(", ")
            ));
        }
        out
    }
}

#[derive(Debug)]
pub struct Reloader {
    /// The config in force; holding the lock serialises reloads.
    current: tokio::sync::Mutex<Config>,
    store: Arc<dyn Store>,
    stores: Arc<ObjectStores>,
    databases: Arc<Databases>,
    roots: Arc<SharedRoots>,
    auth: Arc<Authenticator>,
    audit: AuditLog,
}

impl Reloader {
    pub fn new(
        current: Config,
        store: Arc<dyn Store>,
        stores: Arc<ObjectStores>,
        databases: Arc<Databases>,
        roots: Arc<SharedRoots>,
        auth: Arc<Authenticator>,
        audit: AuditLog,
    ) -> Self {
        Self {
            current: tokio::sync::Mutex::new(current),
            store,
            stores,
            databases,
            roots,
            auth,
            audit,
        }
    }

    /// Re-read the config file and apply it; `trigger` says why (audited).
    /// A config that doesn't load or validate changes nothing.
    pub async fn reload(&self, trigger: &str) -> Result<ReloadReport> {
        let result = self.apply().await.map_err(|e| match e {
            // The store being down is not the file's fault.
            VeilError::Unavailable(_) | VeilError::Internal(_) => e,
            other => VeilError::FailedPrecondition(format!(
                "the config file was not applied, nothing changed: {}",
                other.message()
            )),
        });
        let mut event = AuditEvent::new("config.reload", None);
        event.message = match &result {
            Ok(r) => format!("{trigger}: {}", r.summary()),
            Err(_) => format!("{trigger}: refused"),
        };
        if let Err(e) = &result {
            event = event.failed(e);
        }
        self.audit.record(event).await?;
        match &result {
            Ok(r) => tracing::info!(trigger, "{}", r.summary()),
            Err(e) => {
                tracing::error!(trigger, error = %e, "config reload refused; nothing changed")
            }
        }
        result
    }

    async fn apply(&self) -> Result<ReloadReport> {
        let mut current = self.current.lock().await;
        let path = current.path.clone().ok_or_else(|| {
            VeilError::FailedPrecondition(
                "this server was started without a config file, so there is nothing to reload"
                    .into(),
            )
        })?;
        let mut next = Config::load(&path)?;
        if next.auth.default_issuer() != current.auth.default_issuer() {
            return Err(VeilError::FailedPrecondition(
                "the default issuer changed: bare user names in policies would name other users; restart Veil to change it".into(),
            ));
        }
        let mut restart_needed = Vec::new();
        // The running server's values stay (including command-line overrides
        // such as --listen and --address-file, which live in `server`).
        let mut keep = |changed: bool, section: &'static str| {
            if changed {
                restart_needed.push(section);
            }
        };
        keep(
            next.server.listen != current.server.listen
                || next.server.data_dir != current.server.data_dir
                || next.server.sqlite_path != current.server.sqlite_path
                || next.server.master_key_file != current.server.master_key_file
                || next.server.node_id != current.server.node_id
                || next.server.endpoint_locations != current.server.endpoint_locations,
            "server",
        );
        keep(next.store != current.store, "store");
        keep(next.tls != current.tls, "tls");
        keep(next.engine != current.engine, "engine");
        keep(next.object_stores != current.object_stores, "object_stores");
        next.object_stores = current.object_stores.clone();
        keep(next.connections != current.connections, "connections");
        next.connections = current.connections.clone();
        next.server = current.server.clone();
        next.store = current.store.clone();
        next.tls = current.tls.clone();
        next.engine = current.engine.clone();

        let mut applied = auth_changes(&current.auth, &next.auth);
        if next.roots != current.roots {
            applied.push("dataset roots changed".into());
        }
        let roots = LocationRoots::from_config(&next)?;
        let verifier = TokenVerifier::from_config(&next.auth, &next.base_dir)?;
        let sync = sync_config(&self.store, &next, &roots, &self.stores, &self.databases).await?;
        self.roots.set(roots);
        self.auth.set_verifier(verifier);
        *current = next;
        Ok(ReloadReport {
            sync,
            applied,
            restart_needed,
        })
    }
}

/// What changed in `[auth]`, in words: each issuer whose keys or claim
/// trust changed (by name; never a key or a secret), and the other
/// settings by name.
fn auth_changes(current: &AuthConfig, next: &AuthConfig) -> Vec<String> {
    let mut out = Vec::new();
    let mut issuers: Vec<&str> = current
        .keys
        .iter()
        .map(|k| k.issuer.as_str())
        .chain(current.issuers.iter().map(|i| i.issuer.as_str()))
        .chain(next.keys.iter().map(|k| k.issuer.as_str()))
        .chain(next.issuers.iter().map(|i| i.issuer.as_str()))
        .collect();
    issuers.sort_unstable();
    issuers.dedup();
    let keys = |a: &AuthConfig, issuer: &str| -> Vec<KeyConfig> {
        a.keys
            .iter()
            .filter(|k| k.issuer == issuer)
            .cloned()
            .collect()
    };
    let trust = |a: &AuthConfig, issuer: &str| -> Option<IssuerConfig> {
        a.issuers.iter().find(|i| i.issuer == issuer).cloned()
    };
    let mut keys_changed = Vec::new();
    let mut trust_changed = Vec::new();
    for issuer in issuers {
        if keys(current, issuer) != keys(next, issuer) {
            keys_changed.push(issuer.to_string());
        }
        if trust(current, issuer) != trust(next, issuer) {
            trust_changed.push(issuer.to_string());
        }
    }
    if !keys_changed.is_empty() {
        out.push(format!("token keys changed: {}", keys_changed.join(", ")));
    }
    if !trust_changed.is_empty() {
        out.push(format!(
            "issuers' claim trust changed: {}",
            trust_changed.join(", ")
        ));
    }
    let mut settings = Vec::new();
    for (name, changed) in [
        ("audience", current.audience != next.audience),
        (
            "max_token_lifetime_secs",
            current.max_token_lifetime_secs != next.max_token_lifetime_secs,
        ),
        ("leeway_secs", current.leeway_secs != next.leeway_secs),
        ("groups_claim", current.groups_claim != next.groups_claim),
        (
            "attributes_claim",
            current.attributes_claim != next.attributes_claim,
        ),
    ] {
        if changed {
            settings.push(name);
        }
    }
    if !settings.is_empty() {
        out.push(format!("[auth] settings changed: {}", settings.join(", ")));
    }
    out
}
