//! Provisioning: applying the config file's declarations (datasets, users,
//! grants, policies) to the store, at start-up (`sync`) and when the file is
//! re-read without a restart (`reload`). Below the engine, so tests can set
//! up a node's state as a real start does; below the protocol and wiring
//! layers that trigger it (`veil.reload`, SIGHUP, `server::start`).

pub mod reload;
pub mod sync;

pub use sync::{SyncReport, sync_config};
