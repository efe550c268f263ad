//! The records Veil's layers pass to one another: who is calling
//! (`identity`), what data exists (`dataset`), what policies say
//! (`policy`), differential privacy's answers and ledgers (`privacy`),
//! what people asked for (`request`), what happened (`audit`)
//! and everything policy-relevant at one state version (`snapshot`).
//!
//! A leaf: plain data with serde forms and lookups, importing nothing else
//! from Veil (a unit test in `crate::layers` checks it). The logic over
//! these records lives in the layer that owns it: validating and applying
//! policies in `policy`, building principals in `auth`, building audit
//! events in `audit`.

pub mod audit;
pub mod dataset;
pub mod identity;
pub mod policy;
pub mod privacy;
pub mod request;
pub mod snapshot;
pub mod source_kind;

use serde::{Deserialize, Serialize};

/// Where a record was declared. Config-declared records are read-only at run
/// time, so a reload can't resurrect something revoked at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Config,
    Runtime,
}
