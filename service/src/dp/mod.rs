//! Differential privacy's arithmetic, pure: exact discrete noise
//! ([`noise`]), and what a query may spend and how much noise each of its
//! measurements gets ([`accounting`]). Which queries are allowed, and how
//! they run, is the engine's (`crate::engine::dp`); the policy that asks
//! for it is `crate::policy::differential_privacy`.

pub mod accounting;
pub mod noise;
