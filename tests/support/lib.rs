//! Test support: a real Veil server on 127.0.0.1 with the demo's data, users
//! and policies, and clients that authenticate as the demo users.

pub mod mysql;
pub mod pg;
pub mod process;
pub mod proxy;
pub mod s3;

use std::path::{Path, PathBuf};

use veil::auth::jwt::TokenMinter;
use veil::config::Config;
use veil::model::identity::Attributes;
use veil::server::{Running, ServeOptions, start};
use veil_client::Connection;

/// A running demo server in a temporary directory.
#[derive(Debug)]
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub address: String,
    pub config_path: PathBuf,
    running: Option<Running>,
    minter: TokenMinter,
    /// A PostgreSQL schema the server reads, dropped when it stops.
    schema: Option<pg::Schema>,
}

impl TestServer {
    /// The demo, listening on an ephemeral loopback port.
    pub async fn demo() -> Self {
        Self::demo_with(|_| {}).await
    }

    /// The demo, after `edit` changed the files in the data directory
    /// (config, data) before the server starts.
    pub async fn demo_with(edit: impl FnOnce(&Path)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = veil::demo::prepare(dir.path()).expect("demo prepares");
        edit(dir.path());
        let cfg = Config::load(&config_path).expect("config loads");
        let minter = TokenMinter::from_config(&cfg.auth, &cfg.base_dir).expect("minter");
        let running = start_on_loopback(cfg).await;
        let address = format!("grpc://{}", running.addr);
        Self {
            dir,
            address,
            config_path,
            running: Some(running),
            minter,
            schema: None,
        }
    }

    /// The demo with `clinical.trials` read from a PostgreSQL table holding
    /// the same rows (its policies unchanged); `None` when PostgreSQL tests
    /// are skipped.
    pub async fn demo_trials_in_postgres() -> Option<Self> {
        let url = pg::postgres_url()?;
        let schema = pg::Schema::create(&url).await;
        pg::load_trials(&url, &schema.name).await;
        let connection = pg::connection_config("trials_db", &url);
        let table = format!("{}.trials", schema.name);
        let mut server = Self::demo_with(|dir| {
            let path = dir.join("veil.toml");
            let config = std::fs::read_to_string(&path).expect("config");
            let files = "format = \"parquet\"\nlocation = \"data/clinical/trials.parquet\"\n";
            assert!(config.contains(files), "the demo's trials are parquet");
            let config = config.replace(
                files,
                &format!("connection = \"trials_db\"\ntable = \"{table}\"\n"),
            ) + &connection;
            std::fs::write(&path, config).expect("config");
        })
        .await;
        server.schema = Some(schema);
        Some(server)
    }

    pub fn token(&self, user: &str) -> String {
        self.minter
            .mint(user, &[], &Attributes::new(), 600)
            .expect("token")
    }

    pub fn token_with(&self, user: &str, groups: &[&str], attrs: &[(&str, &str)]) -> String {
        let mut a = Attributes::new();
        for (k, v) in attrs {
            a.entry(k.to_string()).or_default().insert(v.to_string());
        }
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        self.minter.mint(user, &groups, &a, 600).expect("token")
    }

    pub async fn connect(&self, user: &str) -> Connection {
        Connection::connect(&self.address, &self.token(user))
            .await
            .expect("connects")
    }

    pub async fn connect_token(&self, token: &str) -> Connection {
        Connection::connect(&self.address, token)
            .await
            .expect("connects")
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("veil.db")
    }

    /// Stop the server and start it again on the same directory and
    /// config (a new port).
    pub async fn restart(mut self) -> Self {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("server stops");
        }
        let cfg = Config::load(&self.config_path).expect("config loads");
        let running = start_on_loopback(cfg).await;
        self.address = format!("grpc://{}", running.addr);
        self.running = Some(running);
        self
    }

    /// Stop the server (which commits and checkpoints its audit) and keep
    /// its directory for inspection.
    pub async fn stop_keeping_files(mut self) -> tempfile::TempDir {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("server stops");
        }
        self.dir
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("server stops");
        }
        if let Some(s) = self.schema.take() {
            s.drop_now().await;
        }
    }
}

/// A server for `cfg` on an ephemeral loopback port.
async fn start_on_loopback(cfg: Config) -> Running {
    start(
        cfg,
        ServeOptions {
            listen: Some("127.0.0.1:0".into()),
            insecure: false,
        },
    )
    .await
    .expect("server starts")
}

/// Every value of a string column across batches.
pub fn strings(batches: &[arrow::record_batch::RecordBatch], column: &str) -> Vec<Option<String>> {
    use arrow::array::{Array, AsArray};
    use arrow::compute::cast;
    use arrow::datatypes::DataType;
    let mut out = Vec::new();
    for b in batches {
        let c = b
            .column_by_name(column)
            .unwrap_or_else(|| panic!("no column {column}"));
        let c = cast(c, &DataType::Utf8).expect("castable to text");
        let s = c.as_string::<i32>();
        for i in 0..s.len() {
            out.push(s.is_valid(i).then(|| s.value(i).to_string()));
        }
    }
    out
}

pub fn row_count(batches: &[arrow::record_batch::RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

/// The raw demo data (the demo writes exactly this batch, seed 42).
pub fn raw_trials() -> Vec<arrow::record_batch::RecordBatch> {
    vec![veil::demo::trials_batch(veil::demo::DEMO_ROWS, 42)]
}

pub type ParquetWriter = veil::demo::ParquetFileWriter;

/// A parquet writer for test data.
pub fn parquet_writer(file: std::fs::File, schema: arrow::datatypes::SchemaRef) -> ParquetWriter {
    veil::demo::parquet_writer(file, schema).expect("parquet writer")
}

/// The `veil` binary cargo built next to this test.
pub fn veil_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join(format!("veil{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} not built: run `cargo build --workspace` first",
        bin.display()
    );
    bin
}

/// A number no other call in this process returns (names of test schemas
/// and databases).
pub fn unique_number() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
