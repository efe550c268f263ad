//! Policies: what they say (`rules`, over the records in
//! `crate::model::policy`), whom they apply to (`effective`), and how they
//! are enforced inside DataFusion plans (`secure_view`, `masks`,
//! `rounding`, `sampling`, `kanon`, `barrier`, `guard`). Pure over records:
//! policy reads no state and opens no source (the mask-by-type matrix over
//! real files is `engine::type_matrix`).

pub mod barrier;
#[cfg(test)]
mod crypto_vectors;
pub mod effective;
pub mod guard;
pub mod kanon;
pub mod masks;
pub mod predicate;
pub mod reversible;
pub mod rounding;
pub mod rules;
pub mod sampling;
pub mod secure_view;
