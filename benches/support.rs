//! Shared set-up for the criterion benches: the demo's engine, or a
//! generated catalog's, built the way the server builds it, and their
//! principals.

use std::sync::Arc;

use veil::catalog::object_stores::ObjectStores;
use veil::catalog::roots::LocationRoots;
use veil::catalog::state::StateCache;
use veil::config::Config;
use veil::engine::Engine;
use veil::model::identity::{ClientInfo, Identity, Principal};
use veil::model::snapshot::Snapshot;
use veil::secrets::{KeyPurpose, MasterKey};
use veil::store::Store;
use veil::store::sqlite::SqliteStore;

/// The demo's engine over a temporary copy of its data.
#[derive(Debug)]
pub struct DemoEngine {
    pub engine: Arc<Engine>,
    pub snapshot: Arc<Snapshot>,
    master: MasterKey,
    _dir: tempfile::TempDir,
}

impl DemoEngine {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = veil::demo::prepare(dir.path()).expect("demo");
        Self::from_config(dir, &path).await
    }

    /// A generated catalog (as `planning_probe.py` makes): `datasets`
    /// datasets of `columns` columns over one 10-row parquet file, every
    /// column tagged (1,000 tags across the catalog), each dataset readable
    /// by user `reader`, and `policies` global masking policies, one per tag
    /// (hash, null, constant, regex, rounding in turn, fitted to the
    /// column's type).
    pub async fn generated(datasets: usize, columns: usize, policies: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let file = data.join("probe.parquet");
        write_probe_file(&file, columns);
        let mut cfg = format!(
            "roots = [{data:?}]\n[auth]\naudience = \"veil\"\ndefault_issuer = \"bench\"\n\n\
             [[users]]\nname = \"reader\"\ngroups = [\"readers\"]\n\n"
        );
        for d in 0..datasets {
            cfg += &format!(
                "[[datasets]]\nname = \"probe.d{d}\"\nformat = \"parquet\"\nlocation = {file:?}\nowners = [\"owner\"]\n"
            );
            for c in 0..columns {
                cfg += &format!(
                    "columns.c{c} = {{ tags = [\"t{}\"] }}\n",
                    (d * columns + c) % 1000
                );
            }
            cfg += &format!(
                "\n[[policies]]\nname = \"read-d{d}\"\ndataset = \"probe.d{d}\"\nsubscription = {{ groups = [\"readers\"] }}\n\n"
            );
        }
        for t in 0..policies {
            cfg += &format!(
                "[[policies]]\nname = \"mask-t{t}\"\ntags = [\"t{t}\"]\n{}\n\n",
                mask_for(t, t % columns.max(1))
            );
        }
        let path = dir.path().join("veil.toml");
        std::fs::write(&path, cfg).expect("config");
        Self::from_config(dir, &path).await
    }

    /// An engine for the config `text`, written into `dir` (which holds
    /// the data it names).
    pub async fn from_config_text(dir: tempfile::TempDir, text: &str) -> Self {
        let path = dir.path().join("veil.toml");
        std::fs::write(&path, text).expect("config");
        Self::from_config(dir, &path).await
    }

    async fn from_config(dir: tempfile::TempDir, path: &std::path::Path) -> Self {
        let cfg = Config::load(path).expect("config");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().expect("store"));
        let roots = LocationRoots::from_config(&cfg).expect("roots");
        let stores = Arc::new(ObjectStores::local_only());
        veil::provisioning::sync_config(
            &store,
            &cfg,
            &roots,
            &stores,
            &veil::catalog::database::Databases::none(),
        )
        .await
        .expect("sync");
        let state = Arc::new(StateCache::new(store));
        let snapshot = state.current().await.expect("snapshot");
        let master = MasterKey::random();
        let engine = Engine::new(
            state,
            master.clone(),
            cfg.auth.default_issuer(),
            cfg.engine.clone(),
            stores,
        )
        .expect("engine");
        Self {
            engine: Arc::new(engine),
            snapshot,
            master,
            _dir: dir,
        }
    }

    /// A demo user with their directory groups and attributes.
    pub fn principal(&self, name: &str) -> Arc<Principal> {
        self.principal_of("veil-demo", name)
    }

    /// A user of a config's default issuer `issuer`.
    pub fn user(&self, issuer: &str, name: &str) -> Arc<Principal> {
        self.principal_of(issuer, name)
    }

    /// A user of the generated catalog.
    pub fn reader(&self) -> Arc<Principal> {
        self.principal_of("bench", "reader")
    }

    /// The reader with one more attribute, `n`: a principal whose
    /// fingerprint no request has used yet.
    pub fn reader_with_attribute(&self, n: u64) -> Arc<Principal> {
        let id = Identity::new("bench", "reader");
        let mut u = self.snapshot.users.get(&id).cloned().unwrap_or_default();
        u.attributes
            .insert("n".into(), std::iter::once(n.to_string()).collect());
        self.principal_from(id, u)
    }

    fn principal_of(&self, issuer: &str, name: &str) -> Arc<Principal> {
        let id = Identity::new(issuer, name);
        let u = self.snapshot.users.get(&id).cloned().unwrap_or_default();
        self.principal_from(id, u)
    }

    fn principal_from(&self, id: Identity, u: veil::model::identity::UserRecord) -> Arc<Principal> {
        Arc::new(veil::auth::identity::principal(
            id,
            u.groups,
            u.attributes,
            Default::default(),
            &self.master.derive(KeyPurpose::Fingerprint),
            ClientInfo::default(),
        ))
    }
}

const MASKS: [&str; 5] = [
    "mask = \"hash\"",
    "mask = \"null\"",
    "mask = { constant = \"REDACTED\" }",
    "mask = { regex = { pattern = \"[0-9]\", replacement = \"#\" } }",
    "mask = { round = { digits = 0 } }",
];

/// A mask that fits the column's type: strings take any string mask,
/// integers hash, null or round to tens, floats hash, null or round to
/// whole numbers (as `planning_probe.py` chooses).
fn mask_for(tag: usize, column: usize) -> &'static str {
    match column % 4 {
        0 | 3 => MASKS[tag % 4],
        1 => [
            "mask = \"hash\"",
            "mask = \"null\"",
            "mask = { round = { digits = -1 } }",
        ][tag % 3],
        _ => MASKS[[0, 1, 4][tag % 3]],
    }
}

/// 10 rows of `columns` columns: strings, integers, floats, strings.
fn write_probe_file(path: &std::path::Path, columns: usize) {
    use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for c in 0..columns {
        let (dt, a): (DataType, ArrayRef) = match c % 4 {
            1 => (
                DataType::Int64,
                Arc::new(Int64Array::from_iter_values(0..10)),
            ),
            2 => (
                DataType::Float64,
                Arc::new(Float64Array::from_iter_values(
                    (0..10).map(|i| i as f64 * 1.5),
                )),
            ),
            _ => (
                DataType::Utf8,
                Arc::new(StringArray::from_iter_values(
                    (0..10).map(|i| format!("v{i}-{c}")),
                )),
            ),
        };
        fields.push(Field::new(format!("c{c}"), dt, true));
        arrays.push(a);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(Arc::clone(&schema), arrays).expect("batch");
    let mut w = veil::demo::parquet_writer(std::fs::File::create(path).expect("file"), schema)
        .expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
}
