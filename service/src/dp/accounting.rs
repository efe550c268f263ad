//! What one query may spend, and the noise each of its measurements gets.
//!
//! A query's budget (ε for the discrete Laplace, ρ of zero-concentrated
//! DP for the discrete Gaussian) is split evenly among its noisy
//! measurements (basic composition: each COUNT, SUM, the two halves of an
//! AVG, and the unit count that decides which private group keys are
//! released). Each measurement's noise is scaled to its sensitivity: how
//! much adding or removing one privacy unit, after contribution bounding,
//! can move it. Parameters computed in floating point (ρ from ε and δ) are
//! rounded to exact rationals on the safe side (less budget, more noise);
//! the noise itself is drawn exactly ([`super::noise`]).

use num_bigint::{BigInt, BigUint};
use rand::{CryptoRng, Rng};

use super::noise::{Rational, discrete_gaussian, discrete_laplace};
use crate::model::policy::DpMechanism;

/// Denominator of the rationals ε and ρ are rounded to.
const PRECISION: u64 = 1_000_000_000;

/// How far one privacy unit can move a measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sensitivity {
    /// The L1 norm of the change, over every group.
    pub l1: u128,
    /// The squared L2 norm of the change.
    pub l2_squared: u128,
}

impl Sensitivity {
    /// A unit changes at most `groups` groups, each by at most `per_group`.
    pub fn bounded(groups: u64, per_group: u128) -> Self {
        let g = u128::from(groups);
        Self {
            l1: g.saturating_mul(per_group),
            l2_squared: g.saturating_mul(per_group.saturating_mul(per_group)),
        }
    }
}

/// The per-query privacy of a policy, exact.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryPrivacy {
    /// Pure ε-DP with discrete Laplace noise; `delta` only for releasing
    /// private group keys.
    Laplace {
        epsilon: Rational,
        delta: Option<f64>,
    },
    /// ρ-zCDP with discrete Gaussian noise: ρ from (ε, δ/2), the other
    /// half of δ for releasing private group keys.
    Gaussian { rho: Rational, delta: f64 },
}

/// The ρ of zero-concentrated DP that implies (ε, δ)-DP:
/// ρ-zCDP gives (ρ + 2√(ρ ln(1/δ)), δ)-DP (Bun and Steinke 2016,
/// Proposition 1.3), solved for ρ.
pub fn rho_for(epsilon: f64, delta: f64) -> f64 {
    let l = (1.0 / delta).ln();
    ((epsilon + l).sqrt() - l.sqrt()).powi(2)
}

impl QueryPrivacy {
    pub fn new(mechanism: DpMechanism, epsilon: f64, delta: Option<f64>) -> Result<Self, String> {
        if !(epsilon.is_finite() && epsilon > 0.0) {
            return Err(format!("ε must be a positive number (got {epsilon})"));
        }
        match mechanism {
            DpMechanism::Laplace => Ok(Self::Laplace {
                epsilon: Rational::at_most(epsilon, PRECISION)
                    .filter(|e| e.num > BigUint::ZERO)
                    .ok_or_else(|| format!("ε = {epsilon} is too small"))?,
                delta,
            }),
            DpMechanism::Gaussian => {
                let delta = delta
                    .ok_or("the Gaussian mechanism needs `delta` (for example 1e-6)".to_string())?;
                let rho = Rational::at_most(rho_for(epsilon, delta / 2.0), PRECISION)
                    .filter(|r| r.num > BigUint::ZERO)
                    .ok_or_else(|| format!("ε = {epsilon} with δ = {delta} leaves no ρ"))?;
                Ok(Self::Gaussian { rho, delta })
            }
        }
    }

    /// What one query charges a ledger, in the ledger's unit
    /// ([`Self::unit`]).
    pub fn cost(&self) -> f64 {
        match self {
            Self::Laplace { epsilon, .. } => epsilon.to_f64(),
            Self::Gaussian { rho, .. } => rho.to_f64(),
        }
    }

    /// The unit ledgers of this policy count in.
    pub fn unit(&self) -> &'static str {
        match self {
            Self::Laplace { .. } => "epsilon",
            Self::Gaussian { .. } => "rho",
        }
    }

    /// A budget written as ε, in the ledger's unit (for the Gaussian, the
    /// ρ that implies it at the policy's δ).
    pub fn budget_in_unit(&self, epsilon: f64) -> f64 {
        match self {
            Self::Laplace { .. } => epsilon,
            Self::Gaussian { delta, .. } => rho_for(epsilon, delta / 2.0),
        }
    }

    /// δ left for releasing private group keys (`None`: only public keys
    /// may be grouped by).
    pub fn selection_delta(&self) -> Option<f64> {
        match self {
            Self::Laplace { delta, .. } => *delta,
            Self::Gaussian { delta, .. } => Some(delta / 2.0),
        }
    }

    /// The noise of one of `measurements` equal shares of the query's
    /// budget, for a measurement of `sensitivity`.
    pub fn noise(&self, measurements: u32, sensitivity: Sensitivity) -> Noise {
        let k = BigUint::from(measurements.max(1));
        match self {
            // scale = Δ₁ / (ε / k) = Δ₁·k·den / num.
            Self::Laplace { epsilon, .. } => Noise::Laplace {
                scale: Rational::new(
                    BigUint::from(sensitivity.l1.max(1)) * k * &epsilon.den,
                    epsilon.num.clone(),
                ),
            },
            // σ² = Δ₂² / (2ρ / k) = Δ₂²·k·den / (2·num).
            Self::Gaussian { rho, .. } => Noise::Gaussian {
                sigma2: Rational::new(
                    BigUint::from(sensitivity.l2_squared.max(1)) * k * &rho.den,
                    BigUint::from(2u32) * &rho.num,
                ),
            },
        }
    }
}

/// The noise one measurement gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Noise {
    Laplace { scale: Rational },
    Gaussian { sigma2: Rational },
}

impl Noise {
    pub fn sample<R: Rng + CryptoRng>(&self, rng: &mut R) -> BigInt {
        match self {
            Noise::Laplace { scale } => discrete_laplace(rng, scale),
            Noise::Gaussian { sigma2 } => discrete_gaussian(rng, sigma2),
        }
    }

    /// The least noisy unit count at which a group key seen only because
    /// of one unit is released with probability at most `delta / groups`
    /// (so at most `delta` over the `groups` groups a unit reaches):
    /// `1 + X ≥ τ` with `P[X ≥ k] ≤ exp(-k / scale)` for the discrete
    /// Laplace and `≤ exp(-k² / 2σ²)` for the discrete Gaussian (it is
    /// sub-Gaussian, Canonne, Kamath and Steinke 2020).
    pub fn threshold(&self, delta: f64, groups: u64) -> u64 {
        let log = (groups.max(1) as f64 / delta).ln().max(0.0);
        let k = match self {
            Noise::Laplace { scale } => scale.to_f64() * log,
            Noise::Gaussian { sigma2 } => (2.0 * sigma2.to_f64() * log).sqrt(),
        };
        1 + k.ceil().min(u64::MAX as f64 / 2.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laplace_scale_is_sensitivity_times_shares_over_epsilon() {
        let q = QueryPrivacy::new(DpMechanism::Laplace, 0.5, None).unwrap();
        let Noise::Laplace { scale } = q.noise(2, Sensitivity::bounded(3, 4)) else {
            panic!()
        };
        // Δ₁ = 12, two shares of ε = 0.5: scale 48.
        assert!((scale.to_f64() - 48.0).abs() < 1e-6, "{}", scale.to_f64());
        assert_eq!(q.cost(), 0.5);
    }

    #[test]
    fn gaussian_rho_implies_the_policy_epsilon() {
        let q = QueryPrivacy::new(DpMechanism::Gaussian, 1.0, Some(1e-6)).unwrap();
        let QueryPrivacy::Gaussian { rho, .. } = &q else {
            panic!()
        };
        let rho = rho.to_f64();
        let l = (1.0 / 5e-7f64).ln();
        let eps = rho + 2.0 * (rho * l).sqrt();
        assert!(eps <= 1.0 + 1e-9 && eps > 0.999, "{eps}");
        let Noise::Gaussian { sigma2 } = q.noise(1, Sensitivity::bounded(1, 1)) else {
            panic!()
        };
        assert!((sigma2.to_f64() - 1.0 / (2.0 * rho)).abs() < 1e-3);
        assert!(QueryPrivacy::new(DpMechanism::Gaussian, 1.0, None).is_err());
    }

    #[test]
    fn thresholds_bound_the_release_of_a_lone_key() {
        let noise = Noise::Laplace {
            scale: Rational::integer(2),
        };
        let tau = noise.threshold(1e-6, 1);
        // P[X ≥ τ - 1] ≤ exp(-(τ-1)/2) ≤ 1e-6.
        assert!((-((tau - 1) as f64) / 2.0).exp() <= 1e-6);
        assert!((-((tau - 2) as f64) / 2.0).exp() > 1e-6);
    }
}
