//! Veil: a governed data-access broker over Apache Arrow Flight.
//!
//! The folders say what Veil is: `model` (the records every layer passes
//! on), `auth` (who is calling), `catalog` (what data exists), `policy`
//! (what they may see), `dp` (differential privacy's noise and accounting), `engine` (planning and running reads through
//! DataFusion), `audit` (what happened), `store` (state), `provisioning`
//! (the config file applied to state), `flight` (the protocol adapter),
//! `server` (wiring), `demo`. They form layers without import circles
//! (listed, and checked, in `layers.rs`).

pub mod audit;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod demo;
pub mod dp;
pub mod engine;
pub mod error;
pub mod flight;
pub mod governance;
#[cfg(test)]
mod layers;
pub mod logging;
pub mod memory;
pub mod model;
pub mod policy;
pub mod provisioning;
pub mod redact;
pub mod secrets;
pub mod server;
pub mod sql;
pub mod store;
