//! The Arrow Flight surface: a thin adapter from Flight calls to the engine.

pub mod actions;
pub mod auth_layer;
pub mod batch_messages;
pub mod gate;
pub mod service;
pub mod sql;
pub mod status;
pub mod tickets;
pub mod zero_copy_do_get;
