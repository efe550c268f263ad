//! Policies: what they say (`rules`, over the records in
//! `crate::model::policy`), whom they apply to (`effective`), and how they
//! are enforced inside DataFusion plans (`secure_view`, `masks` with its
//! mechanisms: keyed hash, reversible and format-preserving ciphers,
//! rounding, sampling, k-anonymization; `barrier`, `guard`), and the
//! checked form of a differential privacy policy (`differential_privacy`). Pure over
//! records: policy reads no state and opens no source (the mask-by-type
//! matrix over real files is `engine::type_matrix`).

pub mod barrier;
pub mod deal;
pub mod differential_privacy;
pub mod effective;
pub mod guard;
pub mod masks;
pub mod predicate;
pub mod pushdown;
pub mod rules;
pub mod secure_view;
