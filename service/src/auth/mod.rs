//! Authentication: verified tokens (`jwt`), which of their claims each
//! issuer is trusted for (`claim_trust`), the principal they become
//! (`identity`), and the authenticator that merges trusted claims with the
//! directory (`authenticator`; the tower layer that runs it on every call
//! lives in `flight::auth_layer`).

pub mod authenticator;
pub mod claim_trust;
pub mod identity;
pub mod jwt;
