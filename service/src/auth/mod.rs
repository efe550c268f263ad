//! Authentication: verified tokens (`jwt`), the principal they become
//! (`identity`), and the authenticator that merges claims with the directory
//! (`authenticator`; the tower layer that runs it on every call lives in
//! `flight::auth_layer`).

pub mod authenticator;
pub mod identity;
pub mod jwt;
