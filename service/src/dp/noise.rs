//! Exact samplers of discrete noise: the discrete Laplace and the discrete
//! Gaussian, after Canonne, Kamath and Steinke, "The Discrete Gaussian for
//! Differential Privacy" (NeurIPS 2020), Algorithms 1 to 3.
//!
//! Every step is integer arithmetic on exact rationals over uniform draws
//! from a cryptographically secure generator: no floating-point number
//! touches a sample. Floating-point Laplace noise leaks through the gaps
//! and rounding of the doubles it can produce (Mironov, CCS 2012); these
//! samplers have exactly the distribution the privacy proof assumes.

use num_bigint::{BigInt, BigUint, Sign};
use num_traits::{One, ToPrimitive, Zero};
use rand::{CryptoRng, Rng};

/// A non-negative exact rational `num / den` (`den > 0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rational {
    pub num: BigUint,
    pub den: BigUint,
}

impl Rational {
    pub fn new(num: impl Into<BigUint>, den: impl Into<BigUint>) -> Self {
        let (num, den) = (num.into(), den.into());
        assert!(!den.is_zero(), "a rational's denominator is positive");
        Self { num, den }
    }

    pub fn integer(n: u64) -> Self {
        Self::new(n, 1u32)
    }

    /// The nearest rational at or above `x` with denominator `den`: a
    /// conservative (never smaller) exact stand-in for a computed noise
    /// parameter. `None` for a negative or non-finite `x`.
    pub fn at_least(x: f64, den: u64) -> Option<Self> {
        if !x.is_finite() || x < 0.0 {
            return None;
        }
        let scaled = (x * den as f64).ceil();
        if scaled > 1e30 {
            return None;
        }
        Some(Self::new(BigUint::from(scaled as u128), den))
    }

    /// The nearest rational at or below `x` with denominator `den`.
    pub fn at_most(x: f64, den: u64) -> Option<Self> {
        if !x.is_finite() || x < 0.0 {
            return None;
        }
        let scaled = (x * den as f64).floor();
        if scaled > 1e30 {
            return None;
        }
        Some(Self::new(BigUint::from(scaled as u128), den))
    }

    pub fn to_f64(&self) -> f64 {
        // Only for messages and accounting, never for sampling.
        let n = self.num.to_f64().unwrap_or(f64::INFINITY);
        let d = self.den.to_f64().unwrap_or(f64::INFINITY);
        n / d
    }

    fn floor(&self) -> BigUint {
        &self.num / &self.den
    }

    fn is_zero(&self) -> bool {
        self.num.is_zero()
    }
}

/// A uniform integer in `[0, n)`, by rejection over random bytes (unbiased).
fn uniform_below<R: Rng + CryptoRng>(rng: &mut R, n: &BigUint) -> BigUint {
    assert!(!n.is_zero(), "a uniform draw needs a non-empty range");
    if n.is_one() {
        return BigUint::zero();
    }
    let bits = (n - 1u32).bits();
    let bytes = bits.div_ceil(8) as usize;
    let top_mask: u8 = match bits % 8 {
        0 => 0xff,
        r => (1u8 << r) - 1,
    };
    let mut buf = vec![0u8; bytes];
    loop {
        rng.fill_bytes(&mut buf);
        // Big-endian: the first byte holds the top bits.
        buf[0] &= top_mask;
        let candidate = BigUint::from_bytes_be(&buf);
        if &candidate < n {
            return candidate;
        }
    }
}

/// `true` with probability `p` (`p <= 1`).
fn bernoulli<R: Rng + CryptoRng>(rng: &mut R, p: &Rational) -> bool {
    uniform_below(rng, &p.den) < p.num
}

/// `true` with probability `exp(-gamma)` (Algorithm 1 for `gamma <= 1`,
/// then one factor `exp(-1)` per whole unit of `gamma`).
fn bernoulli_exp_minus<R: Rng + CryptoRng>(rng: &mut R, gamma: &Rational) -> bool {
    if gamma.num > gamma.den {
        let whole = gamma.floor();
        let one = Rational::integer(1);
        let mut k = BigUint::zero();
        while k < whole {
            if !bernoulli_exp_minus_unit(rng, &one) {
                return false;
            }
            k += 1u32;
        }
        let rest = Rational::new(&gamma.num - &whole * &gamma.den, gamma.den.clone());
        return bernoulli_exp_minus_unit(rng, &rest);
    }
    bernoulli_exp_minus_unit(rng, gamma)
}

/// Algorithm 1 for `gamma` in `[0, 1]`: draw `A_k ~ Bernoulli(gamma / k)`
/// for k = 1, 2, ... until one is 0; the answer is whether that `k` is odd.
fn bernoulli_exp_minus_unit<R: Rng + CryptoRng>(rng: &mut R, gamma: &Rational) -> bool {
    if gamma.is_zero() {
        return true;
    }
    let mut k = BigUint::one();
    loop {
        let p = Rational::new(gamma.num.clone(), &gamma.den * &k);
        if !bernoulli(rng, &p) {
            return (&k % 2u32).is_one();
        }
        k += 1u32;
    }
}

/// A draw of the discrete Laplace distribution with `scale` (`> 0`):
/// `P[x] ∝ exp(-|x| / scale)` over the integers (Algorithm 2 with
/// `scale = t / s`).
pub fn discrete_laplace<R: Rng + CryptoRng>(rng: &mut R, scale: &Rational) -> BigInt {
    assert!(
        !scale.is_zero(),
        "a discrete Laplace needs a positive scale"
    );
    let (t, s) = (&scale.num, &scale.den);
    loop {
        let u = uniform_below(rng, t);
        if !bernoulli_exp_minus(rng, &Rational::new(u.clone(), t.clone())) {
            continue;
        }
        let mut v = BigUint::zero();
        let one = Rational::integer(1);
        while bernoulli_exp_minus(rng, &one) {
            v += 1u32;
        }
        let x = u + t * v;
        let y = x / s;
        let negative = rng.random::<bool>();
        if negative && y.is_zero() {
            continue;
        }
        let sign = if negative { Sign::Minus } else { Sign::Plus };
        return BigInt::from_biguint(sign, y);
    }
}

/// A draw of the discrete Gaussian with parameter `sigma2` (`σ² > 0`):
/// `P[x] ∝ exp(-x² / 2σ²)` over the integers (Algorithm 3: discrete
/// Laplace proposals with scale `t = ⌊σ⌋ + 1`, accepted with probability
/// `exp(-(|y| - σ²/t)² / 2σ²)`).
pub fn discrete_gaussian<R: Rng + CryptoRng>(rng: &mut R, sigma2: &Rational) -> BigInt {
    assert!(!sigma2.is_zero(), "a discrete Gaussian needs a positive σ²");
    let (a, b) = (&sigma2.num, &sigma2.den);
    // ⌊σ⌋ = ⌊√⌊σ²⌋⌋.
    let t = sigma2.floor().sqrt() + 1u32;
    let proposal = Rational::new(t.clone(), 1u32);
    // γ = (|y|·b·t − a)² / (2·a·b·t²).
    let den = BigUint::from(2u32) * a * b * &t * &t;
    let bt = b * &t;
    loop {
        let y = discrete_laplace(rng, &proposal);
        let abs = BigInt::from_biguint(Sign::Plus, y.magnitude() * &bt);
        let diff = abs - BigInt::from_biguint(Sign::Plus, a.clone());
        let num = diff.magnitude() * diff.magnitude();
        if bernoulli_exp_minus(rng, &Rational::new(num, den.clone())) {
            return y;
        }
    }
}

/// A noise draw as a machine integer; `None` if it doesn't fit (the
/// caller refuses the answer rather than clip noise).
pub fn to_i128(x: &BigInt) -> Option<i128> {
    x.to_i128()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// The exact pmf of the discrete Laplace with `scale`, on `[-m, m]`.
    pub(crate) fn laplace_pmf(scale: f64, m: i64) -> Vec<(i64, f64)> {
        let q = (-1.0 / scale).exp();
        let norm = (1.0 - q) / (1.0 + q);
        (-m..=m)
            .map(|x| (x, norm * q.powi(x.unsigned_abs() as i32)))
            .collect()
    }

    /// The discrete Gaussian's pmf with `sigma2`, normalised numerically.
    pub(crate) fn gaussian_pmf(sigma2: f64, m: i64) -> Vec<(i64, f64)> {
        let weights: Vec<(i64, f64)> = (-m..=m)
            .map(|x| (x, (-(x as f64).powi(2) / (2.0 * sigma2)).exp()))
            .collect();
        let total: f64 = weights.iter().map(|(_, w)| w).sum();
        weights.into_iter().map(|(x, w)| (x, w / total)).collect()
    }

    fn moments(pmf: &[(i64, f64)]) -> (f64, f64) {
        // Mean zero by symmetry: variance and fourth moment.
        let var = pmf.iter().map(|(x, p)| (*x as f64).powi(2) * p).sum();
        let m4 = pmf.iter().map(|(x, p)| (*x as f64).powi(4) * p).sum();
        (var, m4)
    }

    /// The sample variance of `n` draws is within 5 standard errors of
    /// the exact variance.
    fn check_variance(draws: &[i64], pmf: &[(i64, f64)]) {
        let n = draws.len() as f64;
        let mean = draws.iter().map(|&x| x as f64).sum::<f64>() / n;
        let sample_var = draws
            .iter()
            .map(|&x| (x as f64 - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0);
        let (var, m4) = moments(pmf);
        let se = ((m4 - var * var) / n).sqrt();
        assert!(
            (sample_var - var).abs() <= 5.0 * se,
            "sample variance {sample_var} vs exact {var} (5σ band ±{})",
            5.0 * se
        );
        // The mean is zero within 5 standard errors too.
        assert!(mean.abs() <= 5.0 * (var / n).sqrt(), "mean {mean}");
    }

    /// Upper tail of the χ² distribution with `k` degrees of freedom at
    /// `x`, by the Wilson–Hilferty normal approximation.
    fn chi2_upper_tail(x: f64, k: f64) -> f64 {
        let z = ((x / k).cbrt() - (1.0 - 2.0 / (9.0 * k))) / (2.0 / (9.0 * k)).sqrt();
        0.5 * erfc(z / std::f64::consts::SQRT_2)
    }

    fn erfc(x: f64) -> f64 {
        // Numerical Recipes' erfc (fractional error < 1.2e-7).
        let z = x.abs();
        let t = 1.0 / (1.0 + 0.5 * z);
        let r = t
            * (-z * z - 1.265_512_23
                + t * (1.000_023_68
                    + t * (0.374_091_96
                        + t * (0.096_784_18
                            + t * (-0.186_288_06
                                + t * (0.278_868_07
                                    + t * (-1.135_203_98
                                        + t * (1.488_515_87
                                            + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
                .exp();
        if x >= 0.0 { r } else { 2.0 - r }
    }

    /// Pearson's χ² of `draws` against `pmf`: one bin per value with an
    /// expected count of at least 5, the outermost two also holding their
    /// tails; fails when the fit is rejected at p < 1e-4.
    fn check_chi2(draws: &[i64], pmf: &[(i64, f64)]) {
        let n = draws.len() as f64;
        let mut counts = std::collections::BTreeMap::<i64, f64>::new();
        for &x in draws {
            *counts.entry(x).or_default() += 1.0;
        }
        let inner: Vec<(i64, f64)> = pmf.iter().filter(|(_, p)| p * n >= 5.0).cloned().collect();
        let (lo, hi) = (inner.first().unwrap().0, inner.last().unwrap().0);
        let tail_p = (1.0 - inner.iter().map(|(_, p)| p).sum::<f64>()) / 2.0;
        let mut chi2 = 0.0;
        for (x, p) in &inner {
            let (observed, p) = if *x == lo {
                (counts.range(..=lo).map(|(_, c)| c).sum(), p + tail_p)
            } else if *x == hi {
                (counts.range(hi..).map(|(_, c)| c).sum(), p + tail_p)
            } else {
                (counts.get(x).copied().unwrap_or(0.0), *p)
            };
            chi2 += (observed - p * n).powi(2) / (p * n);
        }
        let dof = (inner.len() - 1) as f64;
        let p = chi2_upper_tail(chi2, dof);
        assert!(
            p > 1e-4,
            "χ² = {chi2} with {dof} degrees of freedom: p = {p}"
        );
    }

    fn draws(n: usize, seed: u64, mut f: impl FnMut(&mut StdRng) -> BigInt) -> Vec<i64> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n).map(|_| f(&mut rng).to_i64().unwrap()).collect()
    }

    #[test]
    fn discrete_laplace_has_the_exact_variance_and_pmf() {
        for (num, den) in [(1u32, 1u32), (5, 2), (10, 1), (1, 3)] {
            let scale = Rational::new(num, den);
            let xs = draws(20_000, u64::from(num * 31 + den), |r| {
                discrete_laplace(r, &scale)
            });
            let pmf = laplace_pmf(scale.to_f64(), 2_000);
            check_variance(&xs, &pmf);
            check_chi2(&xs, &pmf);
        }
    }

    #[test]
    fn discrete_gaussian_has_the_exact_variance_and_pmf() {
        for (num, den) in [(1u32, 1u32), (9, 4), (50, 1), (2_500, 3)] {
            let sigma2 = Rational::new(num, den);
            let xs = draws(20_000, u64::from(num * 17 + den), |r| {
                discrete_gaussian(r, &sigma2)
            });
            let pmf = gaussian_pmf(sigma2.to_f64(), 2_000);
            check_variance(&xs, &pmf);
            check_chi2(&xs, &pmf);
        }
    }

    #[test]
    fn the_checks_reject_the_wrong_distribution() {
        // Laplace draws tested against a Gaussian of the same variance
        // fail: the statistical tests can fail.
        let scale = Rational::integer(3);
        let xs = draws(20_000, 7, |r| discrete_laplace(r, &scale));
        let (var, _) = moments(&laplace_pmf(3.0, 2_000));
        let wrong = gaussian_pmf(var, 2_000);
        let outcome = std::panic::catch_unwind(|| check_chi2(&xs, &wrong));
        assert!(outcome.is_err(), "χ² accepted Laplace draws as Gaussian");
        let wider = laplace_pmf(3.6, 2_000);
        let outcome = std::panic::catch_unwind(|| check_variance(&xs, &wider));
        assert!(
            outcome.is_err(),
            "the variance check accepted scale 3 as 3.6"
        );
    }

    #[test]
    fn large_parameters_stay_exact_and_fast() {
        // Sums in fixed point have large sensitivities: σ² of 10¹⁴.
        let sigma2 = Rational::new(BigUint::from(10u64).pow(14), 1u32);
        let mut rng = StdRng::seed_from_u64(3);
        let xs: Vec<f64> = (0..500)
            .map(|_| discrete_gaussian(&mut rng, &sigma2).to_f64().unwrap())
            .collect();
        let var = xs.iter().map(|x| x * x).sum::<f64>() / xs.len() as f64;
        assert!((var / 1e14 - 1.0).abs() < 0.3, "variance {var}");
        let scale = Rational::new(BigUint::from(10u64).pow(9), 7u32);
        let x = discrete_laplace(&mut rng, &scale);
        assert!(x.magnitude().bits() < 64);
    }

    #[test]
    fn uniform_draws_cover_the_range_evenly() {
        let mut rng = StdRng::seed_from_u64(11);
        let n = BigUint::from(6u32);
        let mut counts = [0u32; 6];
        for _ in 0..60_000 {
            counts[uniform_below(&mut rng, &n).to_usize().unwrap()] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn conservative_rationals_round_outward() {
        let up = Rational::at_least(0.1, 1_000_000).unwrap();
        assert!(up.to_f64() >= 0.1);
        let down = Rational::at_most(0.1, 1_000_000).unwrap();
        assert!(down.to_f64() <= 0.1);
        assert!(Rational::at_least(f64::NAN, 10).is_none());
        assert!(Rational::at_most(-1.0, 10).is_none());
    }
}
