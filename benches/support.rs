//! Shared set-up for the criterion benches: the demo's engine, built the way
//! the server builds it, and its principals.

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
        let cfg = Config::load(&veil::demo::prepare(dir.path()).expect("demo")).expect("config");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().expect("store"));
        let roots = LocationRoots::from_config(&cfg).expect("roots");
        let stores = Arc::new(ObjectStores::local_only());
        veil::provisioning::sync_config(&store, &cfg, &roots, &stores)
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
        let id = Identity::new("veil-demo", name);
        let u = self.snapshot.users.get(&id).cloned().unwrap_or_default();
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
