//! Where datasets' bytes live: the local file system, and the remote object
//! stores the config declares (`[[object_stores]]`: S3 and S3-compatible
//! servers, Google Cloud Storage, Azure Blob Storage, each behind a cargo
//! feature mapped onto object_store's).
//!
//! A dataset location is a local absolute path or a URL `scheme://bucket/key`.
//! Every read goes through the `ObjectStore` resolved here, and the same
//! stores are registered in each DataFusion session, so a remote dataset is
//! planned, split into endpoints and read exactly like a local one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datafusion::datasource::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;

use crate::config::{Config, ObjectStoreConfig};
use crate::error::{Result, VeilError};
use crate::model::dataset::is_remote;

/// URL schemes of remote stores.
pub const REMOTE_SCHEMES: &[&str] = &["s3", "gs", "az"];

/// A remote location split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteLocation {
    pub scheme: String,
    pub bucket: String,
    /// The object key (or key prefix), validated: no empty, `.` or `..` parts.
    pub key: ObjectPath,
}

impl RemoteLocation {
    /// `scheme://bucket`, the key of the store registry.
    pub fn store_key(&self) -> String {
        format!("{}://{}", self.scheme, self.bucket)
    }

    /// The canonical text form, `scheme://bucket/key`.
    pub fn to_url(&self) -> String {
        if self.key.as_ref().is_empty() {
            self.store_key()
        } else {
            format!("{}/{}", self.store_key(), self.key)
        }
    }
}

/// Parse `scheme://bucket/key`. Keys with `..`, `.` or empty parts are
/// refused rather than normalised, so a location can't walk out of a root.
pub fn parse_remote(location: &str) -> Result<RemoteLocation> {
    let bad = |why: &str| {
        VeilError::InvalidArgument(format!(
            "remote location '{}' {why}",
            location.chars().take(256).collect::<String>()
        ))
    };
    let (scheme, rest) = location
        .split_once("://")
        .ok_or_else(|| bad("must look like s3://bucket/prefix"))?;
    let scheme = scheme.to_ascii_lowercase();
    if !REMOTE_SCHEMES.contains(&scheme.as_str()) {
        return Err(bad("uses an unknown scheme: use s3://, gs:// or az://"));
    }
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty()
        || !bucket
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(bad("has an invalid bucket name"));
    }
    let key = key.trim_end_matches('/');
    if !key.is_empty()
        && key
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == ".." || p.chars().any(char::is_control))
    {
        return Err(bad("has empty, '.' or '..' path parts"));
    }
    let key = ObjectPath::parse(key).map_err(|_| bad("is not a valid object key"))?;
    Ok(RemoteLocation {
        scheme,
        bucket: bucket.to_string(),
        key,
    })
}

/// A location resolved to the store that holds it.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub url: ObjectStoreUrl,
    pub store: Arc<dyn ObjectStore>,
    /// The location's path inside the store.
    pub path: ObjectPath,
    /// The local path, for local locations.
    pub local: Option<PathBuf>,
    /// How long a listing of this store may be reused (zero: never).
    pub listing_ttl: Duration,
    /// Names this store instance among every store the process built, so
    /// listings kept for one are never served for another.
    pub store_id: u64,
}

/// The local file system plus every configured remote store.
#[derive(Debug, Clone)]
pub struct ObjectStores {
    local: Arc<dyn ObjectStore>,
    remote: BTreeMap<String, Remote>,
}

/// A configured remote store and how long its listings may be reused.
#[derive(Debug, Clone)]
struct Remote {
    store: Arc<dyn ObjectStore>,
    listing_ttl: Duration,
    id: u64,
}

impl Remote {
    fn new(store: Arc<dyn ObjectStore>, listing_ttl: Duration) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self {
            store,
            listing_ttl,
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

impl Default for ObjectStores {
    fn default() -> Self {
        Self::local_only()
    }
}

impl ObjectStores {
    pub fn local_only() -> Self {
        Self {
            local: Arc::new(LocalFileSystem::new()),
            remote: BTreeMap::new(),
        }
    }

    /// Build the configured remote stores (credentials are read now, so a
    /// missing secret file fails at start, not at the first read).
    pub fn from_config(cfg: &Config) -> Result<Self> {
        let mut stores = Self::local_only();
        for sc in &cfg.object_stores {
            let loc = parse_remote(&sc.url)?;
            if !loc.key.as_ref().is_empty() {
                return Err(VeilError::FailedPrecondition(format!(
                    "object_stores url '{}' must name a bucket only (put prefixes in `roots`)",
                    sc.url
                )));
            }
            let key = loc.store_key();
            if stores.remote.contains_key(&key) {
                return Err(VeilError::FailedPrecondition(format!(
                    "object store {key} is declared twice"
                )));
            }
            let store = build_remote(&loc, sc, cfg)?;
            stores.remote.insert(
                key,
                Remote::new(store, Duration::from_secs(sc.listing_cache_secs)),
            );
        }
        Ok(stores)
    }

    /// Add a store under `scheme://bucket` (tests, embedding); its
    /// listings are never reused.
    pub fn with_remote(self, store_key: &str, store: Arc<dyn ObjectStore>) -> Self {
        self.with_remote_listed(store_key, store, Duration::ZERO)
    }

    /// Like [`ObjectStores::with_remote`], reusing a listing for `listing_ttl`.
    pub fn with_remote_listed(
        mut self,
        store_key: &str,
        store: Arc<dyn ObjectStore>,
        listing_ttl: Duration,
    ) -> Self {
        self.remote
            .insert(store_key.to_string(), Remote::new(store, listing_ttl));
        self
    }

    /// Register every store with a DataFusion runtime.
    pub fn register_with(&self, env: &RuntimeEnv) -> Result<()> {
        for (key, remote) in &self.remote {
            let url = url_of(key)?;
            env.register_object_store(url.as_ref(), Arc::clone(&remote.store));
        }
        Ok(())
    }

    /// The store holding `location` (already confined to a root).
    pub fn resolve(&self, location: &str) -> Result<Resolved> {
        if !is_remote(location) {
            let local = PathBuf::from(location);
            let path = ObjectPath::from_absolute_path(&local)
                .map_err(|e| VeilError::internal("local object path", e))?;
            return Ok(Resolved {
                url: ObjectStoreUrl::local_filesystem(),
                store: Arc::clone(&self.local),
                path,
                local: Some(local),
                listing_ttl: Duration::ZERO,
                store_id: 0,
            });
        }
        let loc = parse_remote(location)?;
        let key = loc.store_key();
        let remote = self.remote.get(&key).ok_or_else(|| {
            VeilError::FailedPrecondition(format!(
                "no object store is configured for {key}: add an [[object_stores]] entry with url = \"{key}\""
            ))
        })?;
        Ok(Resolved {
            url: url_of(&key)?,
            store: Arc::clone(&remote.store),
            path: loc.key,
            local: None,
            listing_ttl: remote.listing_ttl,
            store_id: remote.id,
        })
    }
}

fn url_of(store_key: &str) -> Result<ObjectStoreUrl> {
    ObjectStoreUrl::parse(store_key).map_err(|e| VeilError::internal("object store url", e))
}

#[cfg(any(feature = "s3", feature = "azure"))]
fn read_secret(cfg: &Config, path: &Path, what: &str) -> Result<String> {
    let text = std::fs::read_to_string(cfg.resolve(path)).map_err(|e| {
        VeilError::FailedPrecondition(format!("cannot read {what} {}: {e}", path.display()))
    })?;
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

/// A broker must answer, not hang: a few quick retries, then the read fails
/// (object_store's own default keeps retrying for three minutes).
#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
fn retry(sc: &ObjectStoreConfig) -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: sc.max_retries,
        retry_timeout: std::time::Duration::from_secs(sc.retry_timeout_secs),
        ..Default::default()
    }
}

#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
fn client_options(sc: &ObjectStoreConfig) -> object_store::ClientOptions {
    object_store::ClientOptions::new()
        .with_connect_timeout(std::time::Duration::from_secs(sc.connect_timeout_secs))
}

fn not_built(scheme: &str, feature: &str) -> VeilError {
    VeilError::FailedPrecondition(format!(
        "{scheme}:// locations need a Veil built with the `{feature}` feature (cargo build --features {feature})"
    ))
}

#[allow(unused_variables)]
fn build_remote(
    loc: &RemoteLocation,
    sc: &ObjectStoreConfig,
    cfg: &Config,
) -> Result<Arc<dyn ObjectStore>> {
    let failed = |e: object_store::Error| {
        VeilError::FailedPrecondition(format!(
            "object store {} is misconfigured: {e}",
            loc.store_key()
        ))
    };
    match loc.scheme.as_str() {
        #[cfg(feature = "s3")]
        "s3" => {
            // Settings absent from the config come from the environment
            // (AWS_ACCESS_KEY_ID, AWS_REGION, AWS_ENDPOINT, ...).
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_retry(retry(sc))
                .with_client_options(client_options(sc))
                .with_bucket_name(&loc.bucket)
                .with_allow_http(sc.allow_http)
                .with_virtual_hosted_style_request(sc.virtual_hosted_style);
            if let Some(r) = &sc.region {
                b = b.with_region(r);
            }
            if let Some(e) = &sc.endpoint {
                b = b.with_endpoint(e);
            }
            if let Some(k) = &sc.access_key_id {
                b = b.with_access_key_id(k);
            }
            if let Some(f) = &sc.secret_access_key_file {
                b = b.with_secret_access_key(read_secret(cfg, f, "secret_access_key_file")?);
            }
            Ok(Arc::new(b.build().map_err(failed)?))
        }
        #[cfg(feature = "gcs")]
        "gs" => {
            let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_retry(retry(sc))
                .with_client_options(client_options(sc))
                .with_bucket_name(&loc.bucket);
            if let Some(f) = &sc.service_account_file {
                b = b.with_service_account_path(cfg.resolve(f).to_string_lossy());
            }
            Ok(Arc::new(b.build().map_err(failed)?))
        }
        #[cfg(feature = "azure")]
        "az" => {
            let mut b = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_retry(retry(sc))
                .with_client_options(client_options(sc))
                .with_container_name(&loc.bucket)
                .with_allow_http(sc.allow_http);
            if let Some(a) = &sc.account {
                b = b.with_account(a);
            }
            if let Some(f) = &sc.access_key_file {
                b = b.with_access_key(read_secret(cfg, f, "access_key_file")?);
            }
            if let Some(e) = &sc.endpoint {
                b = b.with_endpoint(e.clone());
            }
            Ok(Arc::new(b.build().map_err(failed)?))
        }
        #[cfg(not(feature = "s3"))]
        "s3" => Err(not_built("s3", "s3")),
        #[cfg(not(feature = "gcs"))]
        "gs" => Err(not_built("gs", "gcs")),
        #[cfg(not(feature = "azure"))]
        "az" => Err(not_built("az", "azure")),
        other => Err(VeilError::FailedPrecondition(format!(
            "unknown object store scheme '{other}'"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_locations_parse_strictly() {
        let l = parse_remote("s3://bucket/a/b/").unwrap();
        assert_eq!(l.store_key(), "s3://bucket");
        assert_eq!(l.key.as_ref(), "a/b");
        assert_eq!(l.to_url(), "s3://bucket/a/b");
        assert_eq!(parse_remote("S3://bucket").unwrap().to_url(), "s3://bucket");
        for bad in [
            "s3://",
            "s3:///key",
            "s3://b/a/../c",
            "s3://b/a//c",
            "s3://b/./c",
            "ftp://b/c",
            "s3://b a/c",
            "s3://b/a\nb",
        ] {
            assert!(parse_remote(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unconfigured_stores_are_refused_with_advice() {
        let e = ObjectStores::local_only()
            .resolve("s3://nobody/x")
            .unwrap_err();
        assert!(e.message().contains("[[object_stores]]"), "{e}");
    }
}
