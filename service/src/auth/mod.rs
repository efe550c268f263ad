//! Authentication: verified tokens (`jwt`), the principal they become
//! (`identity`), and the tower layer that runs it on every call (`layer`).

pub mod identity;
pub mod jwt;
pub mod layer;
