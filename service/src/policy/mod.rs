//! Policies: what they say (`model`), whom they apply to (`effective`), and
//! how they are enforced inside DataFusion plans (`secure_view`, `masks`,
//! `rounding`, `sampling`, `kanon`, `barrier`, `guard`).

pub mod barrier;
#[cfg(test)]
mod crypto_vectors;
pub mod effective;
pub mod guard;
pub mod kanon;
pub mod masks;
pub mod model;
pub mod predicate;
pub mod reversible;
pub mod rounding;
pub mod sampling;
pub mod secure_view;
#[cfg(test)]
mod type_matrix;
