//! The config file (`veil.toml`). Every section is documented in README.md.
//! Relative paths are resolved against the config file's folder.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Result, VeilError};
use crate::model::policy::{PolicySpec, UserRefSpec};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    pub auth: AuthConfig,
    #[serde(default)]
    pub engine: EngineConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    /// Folders (and remote prefixes, `s3://bucket/prefix`) datasets may live
    /// under. A location outside them is refused.
    #[serde(default)]
    pub roots: Vec<PathBuf>,
    /// Remote object stores remote roots and datasets live in.
    #[serde(default)]
    pub object_stores: Vec<ObjectStoreConfig>,
    /// Databases datasets may read (PostgreSQL, MySQL/MariaDB).
    #[serde(default)]
    pub connections: Vec<ConnectionConfig>,
    #[serde(default)]
    pub datasets: Vec<DatasetConfig>,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub policies: Vec<PolicySpec>,
    /// Folder the file was read from; relative paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file itself (what a reload re-reads).
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// State, keys and (in demo mode) data live here.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// SQLite store file; default `<data_dir>/veil.db`.
    #[serde(default)]
    pub sqlite_path: Option<PathBuf>,
    /// 64 hex characters; default `<data_dir>/master.key`, created (0600) if absent.
    #[serde(default)]
    pub master_key_file: Option<PathBuf>,
    /// Identifies this node in audit records; default: a random id per start.
    #[serde(default)]
    pub node_id: Option<String>,
    /// Write the bound address here once listening (tests, supervisors).
    #[serde(default)]
    pub address_file: Option<PathBuf>,
    /// Nodes sharing this node's store (and master key) that may serve its
    /// tickets: endpoints are handed out round-robin over these locations,
    /// so clients spread a scan's reads over the nodes. Use
    /// `arrow-flight-reuse-connection://?` for "this node". Empty: this node.
    #[serde(default)]
    pub endpoint_locations: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            data_dir: default_data_dir(),
            sqlite_path: None,
            master_key_file: None,
            node_id: None,
            address_file: None,
            endpoint_locations: Vec::new(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8815".into()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("veil-data")
}

/// Where Veil keeps its state. SQLite (one file under `server.data_dir`) is
/// the default; PostgreSQL lets several nodes share one state.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default)]
    pub backend: StoreBackend,
    /// PostgreSQL: a `postgres://` URL or `host=... user=... dbname=...`.
    #[serde(default)]
    pub url: Option<String>,
    /// PostgreSQL: a file holding the password (kept out of the config).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PostgreSQL: the schema holding Veil's tables (created if absent).
    #[serde(default = "default_store_schema")]
    pub schema: String,
    /// PostgreSQL: connections per node.
    #[serde(default = "default_store_pool_size")]
    pub pool_size: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::default(),
            url: None,
            password_file: None,
            schema: default_store_schema(),
            pool_size: default_store_pool_size(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    Sqlite,
    Postgres,
}

fn default_store_schema() -> String {
    "veil".into()
}
fn default_store_pool_size() -> usize {
    8
}

/// One remote object store. Settings left out come from the environment
/// (`AWS_*`, `GOOGLE_*`, `AZURE_*`, as object_store reads them).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectStoreConfig {
    /// `s3://bucket`, `gs://bucket` or `az://container`.
    pub url: String,
    /// S3: region.
    #[serde(default)]
    pub region: Option<String>,
    /// S3 or Azure: endpoint of a compatible server (e.g. `http://127.0.0.1:9000`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Allow a plain-HTTP endpoint (only for servers on a trusted network).
    #[serde(default)]
    pub allow_http: bool,
    /// S3: path-style is the default; set for virtual-hosted-style servers.
    #[serde(default)]
    pub virtual_hosted_style: bool,
    /// S3: access key id.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// S3: a file holding the secret access key.
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    /// GCS: a service account JSON file.
    #[serde(default)]
    pub service_account_file: Option<PathBuf>,
    /// Azure: storage account name.
    #[serde(default)]
    pub account: Option<String>,
    /// Azure: a file holding the account access key.
    #[serde(default)]
    pub access_key_file: Option<PathBuf>,
    /// Retries of a failed request before the read fails ...
    #[serde(default = "default_store_retries")]
    pub max_retries: usize,
    /// ... and the most time spent retrying one request.
    #[serde(default = "default_store_retry_timeout")]
    pub retry_timeout_secs: u64,
    #[serde(default = "default_store_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// How long a listing of a dataset's files in this store is reused
    /// (0: list on every request). Files added or removed within this time
    /// may be missed by a read; local folders are always listed afresh.
    #[serde(default = "default_listing_cache")]
    pub listing_cache_secs: u64,
}

fn default_store_retries() -> usize {
    3
}
fn default_store_retry_timeout() -> u64 {
    15
}
fn default_store_connect_timeout() -> u64 {
    5
}
fn default_listing_cache() -> u64 {
    10
}

/// One database datasets may read. Its password never enters the catalog
/// or a log line: it is read from an environment variable or a file when
/// the connection opens.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// What datasets name it by (`veil admin register --connection NAME`).
    pub name: String,
    /// `postgres` or `mysql` (MySQL and MariaDB).
    pub kind: String,
    #[serde(default = "default_db_host")]
    pub host: String,
    /// Default: 5432 (postgres), 3306 (mysql).
    #[serde(default)]
    pub port: Option<u16>,
    pub user: String,
    /// The database to connect to.
    pub database: String,
    /// The environment variable holding the password ...
    #[serde(default)]
    pub password_env: Option<String>,
    /// ... or a file holding it (its first line). Neither: no password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// `disable` (the default), `require` (encrypted, the server's
    /// certificate checked against `ca_file` or the system's roots).
    #[serde(default)]
    pub tls: DatabaseTls,
    /// A PEM file of the certificate authorities to trust for `tls = "require"`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The most statements Veil runs at once on this database (its pool's
    /// size): reads beyond it wait for a connection.
    #[serde(default = "default_db_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_db_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// The longest one statement may run on the database (a whole read,
    /// streaming included); 0: the database's own setting.
    #[serde(default = "default_db_statement_timeout")]
    pub statement_timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseTls {
    #[default]
    Disable,
    Require,
}

fn default_db_host() -> String {
    "127.0.0.1".into()
}
fn default_db_max_connections() -> usize {
    4
}
fn default_db_connect_timeout() -> u64 {
    5
}
fn default_db_statement_timeout() -> u64 {
    300
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Required `aud` claim.
    pub audience: String,
    /// Issuer that bare user names in policies and `[[users]]` refer to;
    /// default: the first key's issuer.
    #[serde(default)]
    pub default_issuer: Option<String>,
    #[serde(default = "default_max_lifetime")]
    pub max_token_lifetime_secs: u64,
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    #[serde(default = "default_attributes_claim")]
    pub attributes_claim: String,
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// Which claims each issuer's tokens are believed for. An issuer with
    /// no entry asserts nothing beyond the directory.
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
}

impl AuthConfig {
    pub fn default_issuer(&self) -> String {
        self.default_issuer
            .clone()
            .or_else(|| self.keys.first().map(|k| k.issuer.clone()))
            .unwrap_or_default()
    }
}

fn default_max_lifetime() -> u64 {
    24 * 3600
}
fn default_leeway() -> u64 {
    30
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_attributes_claim() -> String {
    "attributes".into()
}

/// One trusted token key, pinned to an issuer and an algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub issuer: String,
    /// HS256, RS256 or ES256 (not used with `jwks_file`, where each key's
    /// `alg` or type decides).
    #[serde(default)]
    pub algorithm: Option<String>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    #[serde(default)]
    pub kid: Option<String>,
}

/// What Veil believes in one issuer's tokens (`[[auth.issuers]]`). Trust is
/// per issuer, not per key: every key of an issuer speaks for the same
/// identity provider, so its keys can rotate without the trust changing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The `iss` of one or more `[[auth.keys]]` entries.
    pub issuer: String,
    /// Which of the token's group and attribute claims are merged with the
    /// directory; the others are ignored.
    pub trust_claims: TrustedClaims,
    /// Put before every group this issuer's tokens assert (`idp2:` makes
    /// `analysts` the group `idp2:analysts`), so its groups can't take the
    /// names of the directory's or another issuer's.
    #[serde(default)]
    pub group_prefix: Option<String>,
}

/// The claims an issuer is trusted for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustedClaims {
    /// The token names the user; groups and attributes come from the
    /// directory only (the default for every issuer).
    #[default]
    None,
    Groups,
    Attributes,
    GroupsAndAttributes,
}

impl TrustedClaims {
    pub fn groups(self) -> bool {
        matches!(
            self,
            TrustedClaims::Groups | TrustedClaims::GroupsAndAttributes
        )
    }

    pub fn attributes(self) -> bool {
        matches!(
            self,
            TrustedClaims::Attributes | TrustedClaims::GroupsAndAttributes
        )
    }

    /// As written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            TrustedClaims::None => "none",
            TrustedClaims::Groups => "groups",
            TrustedClaims::Attributes => "attributes",
            TrustedClaims::GroupsAndAttributes => "groups_and_attributes",
        }
    }
}

/// The audit trail's checkpoints and retention (`[audit]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Where chain checkpoints are appended (JSON lines); default
    /// `<data_dir>/audit-checkpoints.jsonl`. Keep it outside the store's
    /// reach (another disk, a log shipper): `veil audit verify` reads it.
    #[serde(default)]
    pub checkpoint_file: Option<PathBuf>,
    /// Seconds between checkpoints while events arrive (0: after every
    /// commit). Each is also logged (`veil::audit::checkpoint`).
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval_secs: u64,
    /// Events older than this many days are purged (a checkpoint is
    /// written first); unset: kept forever.
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// Seconds between retention purges.
    #[serde(default = "default_purge_interval")]
    pub purge_interval_secs: u64,
    /// Failed authentications are aggregated per window of this many
    /// seconds (at least 1): the first per (client IP, reason) is recorded
    /// at once, the rest as one counted event when the window ends.
    #[serde(default = "default_auth_failure_window")]
    pub auth_failure_window_secs: u64,
}

fn default_checkpoint_interval() -> u64 {
    10
}

fn default_purge_interval() -> u64 {
    3600
}

fn default_auth_failure_window() -> u64 {
    60
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_file: None,
            checkpoint_interval_secs: default_checkpoint_interval(),
            retention_days: None,
            purge_interval_secs: default_purge_interval(),
            auth_failure_window_secs: default_auth_failure_window(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Rows per Arrow batch sent to clients.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Threads of parallelism inside one query.
    #[serde(default = "default_target_partitions")]
    pub target_partitions: usize,
    /// A scan is split into endpoints of about this many rows ...
    #[serde(default = "default_rows_per_endpoint")]
    pub rows_per_endpoint: u64,
    /// ... but never more than this many endpoints.
    #[serde(default = "default_max_endpoints")]
    pub max_endpoints: usize,
    /// A read a row policy filters, served from kept copies of the
    /// caller's rows, is dealt to at most this many endpoints (runs of
    /// `batch_size` of the caller's rows, round-robin; about
    /// `rows_per_endpoint` rows each); otherwise, and with 1, it is one
    /// endpoint. Never cut by files: that would show where hidden rows are.
    #[serde(default = "default_row_policy_endpoints")]
    pub row_policy_endpoints: usize,
    #[serde(default = "default_ticket_ttl")]
    pub ticket_ttl_secs: u64,
    /// The size Flight messages are split to (a soft target: larger
    /// batches are split; one row larger than this still goes, up to the
    /// hard cap `flight::zero_copy_do_get::MESSAGE_HARD_CAP_BYTES`). gRPC
    /// clients accept 4 MiB by default, so the default stays under that;
    /// raise it when every client accepts more (pyarrow does).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Memory for query execution on this node, all queries together, in
    /// MiB (0: unbounded).
    #[serde(default = "default_memory_limit")]
    pub memory_limit_mb: usize,
    /// Memory one query may use, in MiB, within `memory_limit_mb` (0: the
    /// whole node's).
    #[serde(default = "default_query_memory_limit")]
    pub query_memory_limit_mb: usize,
    /// A column with more distinct values than this can't be chosen for
    /// k-anonymization (checked when the policy is written).
    #[serde(default = "default_kanon_cutoff")]
    pub kanon_cardinality_cutoff: u64,
    /// Most distinct combinations one k-anonymized read may count; a read
    /// that finds more fails rather than use unbounded memory.
    #[serde(default = "default_kanon_max_groups")]
    pub kanon_max_groups: usize,
    /// Longest a query may take to plan (constant folding included); then
    /// it fails with `RESOURCE_EXHAUSTED`.
    #[serde(default = "default_plan_timeout")]
    pub plan_timeout_secs: u64,
    /// Most queries one user (issuer and subject) may have planning at
    /// once; more wait their turn (within the plan timeout), so one user
    /// can't occupy every planner.
    #[serde(default = "default_plans_per_user")]
    pub plans_per_user: usize,
    /// Most queries planning at once on this node, all users together.
    #[serde(default = "default_max_planning")]
    pub max_planning: usize,
    /// Longest a read may wait for its batches in all (computing them and
    /// waiting for its user's turn; not the time its client takes to read
    /// them); then it fails with `RESOURCE_EXHAUSTED`. 0: no limit.
    #[serde(default = "default_query_timeout")]
    pub query_timeout_secs: u64,
    /// Most queries of one user computing at once on this node; more wait
    /// their turn between batches.
    #[serde(default = "default_queries_per_user")]
    pub queries_per_user: usize,
    /// Threads queries execute on, apart from those serving the port
    /// (0: four per core, at least eight).
    #[serde(default)]
    pub query_threads: usize,
    /// Disk for kept copies (`<data_dir>/kept-masks`), in MiB: files are
    /// decoded and costly masks (hash, reversible, format-preserving,
    /// regex, rounding) computed once per file and read back. 0 decodes
    /// and masks on every read.
    #[serde(default = "default_kept_masks_max_mb")]
    pub kept_masks_max_mb: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            batch_size: default_batch_size(),
            target_partitions: default_target_partitions(),
            rows_per_endpoint: default_rows_per_endpoint(),
            max_endpoints: default_max_endpoints(),
            row_policy_endpoints: default_row_policy_endpoints(),
            ticket_ttl_secs: default_ticket_ttl(),
            max_message_bytes: default_max_message_bytes(),
            memory_limit_mb: default_memory_limit(),
            query_memory_limit_mb: default_query_memory_limit(),
            kanon_cardinality_cutoff: default_kanon_cutoff(),
            kanon_max_groups: default_kanon_max_groups(),
            plan_timeout_secs: default_plan_timeout(),
            plans_per_user: default_plans_per_user(),
            max_planning: default_max_planning(),
            query_timeout_secs: default_query_timeout(),
            queries_per_user: default_queries_per_user(),
            query_threads: 0,
            kept_masks_max_mb: default_kept_masks_max_mb(),
        }
    }
}

fn default_batch_size() -> usize {
    64 * 1024
}
fn default_target_partitions() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}
fn default_rows_per_endpoint() -> u64 {
    1_000_000
}
fn default_max_endpoints() -> usize {
    16
}
fn default_row_policy_endpoints() -> usize {
    16
}
fn default_ticket_ttl() -> u64 {
    3600
}
fn default_max_message_bytes() -> usize {
    3 * 1024 * 1024 + 512 * 1024
}

/// Default cardinality cutoff: a column with more distinct values can't be
/// a quasi-identifier of a k-anonymization policy.
pub const DEFAULT_KANON_CARDINALITY_CUTOFF: u64 = 500;

/// Most groups (distinct combinations) one k-anonymized read may count.
pub const DEFAULT_KANON_MAX_GROUPS: usize = 1_000_000;

fn default_kanon_cutoff() -> u64 {
    DEFAULT_KANON_CARDINALITY_CUTOFF
}
fn default_kanon_max_groups() -> usize {
    DEFAULT_KANON_MAX_GROUPS
}
fn default_query_timeout() -> u64 {
    600
}

fn default_queries_per_user() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

fn default_plan_timeout() -> u64 {
    30
}
fn default_plans_per_user() -> usize {
    2
}
fn default_kept_masks_max_mb() -> u64 {
    4096
}
fn default_max_planning() -> usize {
    16
}
fn default_query_memory_limit() -> usize {
    512
}
fn default_memory_limit() -> usize {
    2048
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// `schema.name`
    pub name: String,
    /// Files: parquet, csv or json (newline-delimited) ...
    #[serde(default)]
    pub format: Option<String>,
    /// ... and a file or a folder, under one of `roots`.
    #[serde(default)]
    pub location: Option<PathBuf>,
    /// A database: the name of a `[[connections]]` entry ...
    #[serde(default)]
    pub connection: Option<String>,
    /// ... and a table or view, `schema.table` ...
    #[serde(default)]
    pub table: Option<String>,
    /// ... or a `SELECT` statement.
    #[serde(default)]
    pub query: Option<String>,
    /// An integer column reads split over endpoints by (default: a primary
    /// key of one integer column).
    #[serde(default)]
    pub partition_column: Option<String>,
    /// A database dataset: keep a local copy and serve reads from it.
    #[serde(default)]
    pub accelerate: Option<crate::model::dataset::Acceleration>,
    #[serde(default)]
    pub hive_partitioned: bool,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub owners: Vec<UserRefSpec>,
    /// People to ask about the data; being an expert grants nothing.
    #[serde(default)]
    pub experts: Vec<UserRefSpec>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnConfig>,
    /// A date or timestamp column: what time-window policies measure.
    #[serde(default)]
    pub event_time: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Subject (`sub` claim).
    pub name: String,
    /// Default: `auth.default_issuer`.
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub permissions: Vec<String>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            VeilError::FailedPrecondition(format!(
                "cannot read config file {}: {e}",
                path.display()
            ))
        })?;
        let mut cfg: Config = toml::from_str(&text).map_err(|e| {
            VeilError::FailedPrecondition(format!("config file {} is invalid: {e}", path.display()))
        })?;
        cfg.base_dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."))
            .to_path_buf();
        cfg.path = Some(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
        Ok(cfg)
    }

    /// A dataset location or root as stored: remote URLs as written, local
    /// paths resolved against the config file's folder.
    pub fn resolve_location(&self, p: &Path) -> String {
        let text = p.to_string_lossy();
        if crate::model::dataset::is_remote(&text) {
            text.into_owned()
        } else {
            self.resolve(p).to_string_lossy().into_owned()
        }
    }

    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.resolve(&self.server.data_dir)
    }

    pub fn sqlite_path(&self) -> PathBuf {
        match &self.server.sqlite_path {
            Some(p) => self.resolve(p),
            None => self.data_dir().join("veil.db"),
        }
    }

    pub fn audit_checkpoint_path(&self) -> PathBuf {
        match &self.audit.checkpoint_file {
            Some(p) => self.resolve(p),
            None => self.data_dir().join("audit-checkpoints.jsonl"),
        }
    }

    pub fn master_key_path(&self) -> PathBuf {
        match &self.server.master_key_file {
            Some(p) => self.resolve(p),
            None => self.data_dir().join("master.key"),
        }
    }
}
