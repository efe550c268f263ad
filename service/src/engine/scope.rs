//! One request's view of the node's state: the snapshot read once (by the
//! authenticator, for the same call), the principal, and what follows from
//! them, computed only for the datasets the request names and then kept
//! for the rest of the request: access verdicts, file listings. Planning,
//! layout, the audit and every governance check of one RPC see the same
//! version, so a layout can't split files the plan didn't read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::catalog::files::{Listing, list_files};
use crate::catalog::object_stores::ObjectStores;
use crate::error::Result;
use crate::model::dataset::DatasetRecord;
use crate::model::identity::Principal;
use crate::model::snapshot::Snapshot;
use crate::policy::effective::{Access, access};

#[derive(Debug)]
pub struct RequestScope {
    principal: Arc<Principal>,
    snapshot: Arc<Snapshot>,
    default_issuer: String,
    /// Access verdicts by dataset name, computed on first use.
    access: Mutex<HashMap<String, Access>>,
    /// File listings by dataset id, made on first use.
    listings: tokio::sync::Mutex<HashMap<String, Listing>>,
}

impl RequestScope {
    pub fn new(principal: Arc<Principal>, snapshot: Arc<Snapshot>, default_issuer: &str) -> Self {
        Self {
            principal,
            snapshot,
            default_issuer: default_issuer.to_string(),
            access: Mutex::new(HashMap::new()),
            listings: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    pub fn principal(&self) -> &Arc<Principal> {
        &self.principal
    }

    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// The state version everything in this request is decided at.
    pub fn version(&self) -> u64 {
        self.snapshot.version
    }

    /// The principal's access to `d` (subscription policies, approvals).
    pub fn access(&self, d: &DatasetRecord) -> Access {
        if let Some(a) = self
            .access
            .lock()
            .ok()
            .and_then(|m| m.get(&d.name).copied())
        {
            return a;
        }
        let none = Default::default();
        let verdict = access(
            &self.principal,
            d,
            &self.snapshot.policies,
            self.snapshot.approvals.get(&d.id).unwrap_or(&none),
            &self.default_issuer,
            None,
        );
        if let Ok(mut m) = self.access.lock() {
            m.insert(d.name.clone(), verdict);
        }
        verdict
    }

    /// The dataset named `name` (case-insensitively), whatever the caller
    /// may see of it.
    fn named(&self, name: &str) -> Option<&DatasetRecord> {
        self.snapshot.datasets.get(name).or_else(|| {
            self.snapshot
                .datasets
                .values()
                .find(|d| d.name.eq_ignore_ascii_case(name))
        })
    }

    /// The dataset by name (case-insensitive) if the principal may read it.
    pub fn readable(&self, name: &str) -> Option<&DatasetRecord> {
        self.named(name).filter(|d| self.access(d) == Access::Read)
    }

    /// Is `name` visible to the principal, readable (`true`) or only on
    /// request (`false`)?
    pub fn visible(&self, name: &str) -> Option<(&DatasetRecord, bool)> {
        let d = self.named(name)?;
        match self.access(d) {
            Access::Read => Some((d, true)),
            Access::Request => Some((d, false)),
            Access::Hidden => None,
        }
    }

    /// Every dataset the principal may read (this one visits them all).
    pub fn readable_datasets(&self) -> Vec<&DatasetRecord> {
        self.snapshot
            .datasets
            .values()
            .filter(|d| self.access(d) == Access::Read)
            .collect()
    }

    /// Every dataset the principal may see but not yet read (on request).
    pub fn requestable_datasets(&self) -> Vec<&DatasetRecord> {
        self.snapshot
            .datasets
            .values()
            .filter(|d| self.access(d) == Access::Request)
            .collect()
    }

    /// How many datasets' access was decided, and how many listed, so far.
    #[cfg(test)]
    pub(crate) async fn work_done(&self) -> (usize, usize) {
        let decided = self.access.lock().map(|m| m.len()).unwrap_or_default();
        (decided, self.listings.lock().await.len())
    }

    /// The dataset's files, listed once per request: the plan and the
    /// layout of one request see the same files.
    pub async fn listing(&self, stores: &ObjectStores, d: &DatasetRecord) -> Result<Listing> {
        let mut listings = self.listings.lock().await;
        if let Some(l) = listings.get(&d.id) {
            return Ok(l.clone());
        }
        let listing = list_files(stores, &d.source).await?;
        listings.insert(d.id.clone(), listing.clone());
        Ok(listing)
    }
}
