//! The node's view of the store: the latest [`Snapshot`], reloaded when the
//! store's version moves. Each request reads one number from the store and
//! reuses the cached snapshot when nothing changed, so policy changes made by
//! any node take effect on the next request (DESIGN invariant 7).

use std::sync::{Arc, RwLock};

use crate::error::{Result, VeilError};
use crate::model::snapshot::Snapshot;
use crate::store::Store;

#[derive(Debug)]
pub struct StateCache {
    store: Arc<dyn Store>,
    current: RwLock<Option<Arc<Snapshot>>>,
    reload: tokio::sync::Mutex<()>,
}

impl StateCache {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            current: RwLock::new(None),
            reload: tokio::sync::Mutex::new(()),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn cached(&self) -> Result<Option<Arc<Snapshot>>> {
        Ok(self
            .current
            .read()
            .map_err(|_| VeilError::Internal("state lock poisoned".into()))?
            .clone())
    }

    /// The snapshot at the store's current version.
    pub async fn current(&self) -> Result<Arc<Snapshot>> {
        let version = self.store.version().await?;
        if let Some(s) = self.cached()?
            && s.version == version
        {
            return Ok(s);
        }
        // One reload at a time; others wait and reuse its result.
        let _guard = self.reload.lock().await;
        if let Some(s) = self.cached()?
            && s.version >= version
        {
            return Ok(s);
        }
        let mut snap = self.store.snapshot().await?;
        crate::audit::dataset::add_builtins(&mut snap);
        let snap = Arc::new(snap);
        *self
            .current
            .write()
            .map_err(|_| VeilError::Internal("state lock poisoned".into()))? =
            Some(Arc::clone(&snap));
        Ok(snap)
    }
}
