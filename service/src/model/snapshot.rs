//! Everything policy-relevant at one version of the store.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::Origin;
use super::dataset::DatasetRecord;
use super::identity::{Identity, Permission, UserRecord};
use super::policy::Policy;

/// Everything policy-relevant, at one version of the store.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub version: u64,
    pub datasets: BTreeMap<String, DatasetRecord>,
    pub policies: Vec<Policy>,
    pub users: HashMap<Identity, UserRecord>,
    /// Directory entries declared in the config file (read-only at run time).
    pub config_users: BTreeSet<Identity>,
    pub grants: HashMap<Identity, BTreeMap<Permission, Origin>>,
    pub disabled: BTreeSet<Identity>,
    /// Approved access requests: dataset id → who may read it.
    pub approvals: BTreeMap<String, BTreeSet<Identity>>,
}
