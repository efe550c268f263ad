//! FF1 (NIST SP 800-38G) with AES-256, on integers: one value at a time,
//! or many radix-2 values in lockstep (the AES back end encrypts
//! independent blocks together). The cipher under the format-preserving
//! mask (`super::format_preserving`).

use aes::Aes256;
use aes::Block;
use aes::cipher::{BlockCipherEncrypt, KeyInit};

/// Smallest domain FF1 may encrypt (NIST SP 800-38G rev. 1).
pub const FF1_MIN_DOMAIN: u128 = 1_000_000;

/// FF1 (NIST SP 800-38G) with AES-256, on integers: a numeral string of
/// length `n` in radix `r` is the number it spells (big-endian), so every
/// step works on `u128`. Supports `r^n < 2^128` with at most 96 bits in
/// the longer half (every use here is far below).
pub struct Ff1 {
    cipher: Aes256,
    /// Blocks the CPU's AES back end encrypts at once; lockstep calls are
    /// padded to a multiple of it.
    batch: usize,
}

impl std::fmt::Debug for Ff1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ff1(<keyed>)")
    }
}

/// FF1's per-call constants: radix^u, radix^v, the byte lengths b and d,
/// and the block P.
struct Params {
    mu: u128,
    mv: u128,
    b: usize,
    d: usize,
    p: [u8; 16],
}

/// `x mod m`, with a mask when `m` is a power of two (radix 2, the case
/// format-preserving masking uses): 128-bit division is slow.
#[inline]
fn modulo(x: u128, m: u128) -> u128 {
    if m.is_power_of_two() {
        x & (m - 1)
    } else {
        x % m
    }
}

/// `x / m`, with a shift when `m` is a power of two.
#[inline]
fn divide(x: u128, m: u128) -> u128 {
    if m.is_power_of_two() {
        x >> m.trailing_zeros()
    } else {
        x / m
    }
}

/// Bits needed for values below `m`: `⌈log2 m⌉`.
pub(super) fn ceil_log2(m: u128) -> u32 {
    if m <= 1 {
        0
    } else {
        128 - (m - 1).leading_zeros()
    }
}

impl Ff1 {
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: Aes256::new_from_slice(key).expect("a 32-byte AES-256 key"),
            batch: parallel_blocks(),
        }
    }

    fn ciph(&self, block: &mut [u8; 16]) {
        self.cipher.encrypt_block(block.into());
    }

    /// The round function's output y, for round `i` over `num` (NUM(B) on
    /// encryption, NUM(A) on decryption).
    /// `p_enc` is CIPH(P): the CBC-MAC state after P, the same every round.
    fn round(&self, p_enc: &[u8; 16], tweak: &[u8], i: u8, num: u128, b: usize, d: usize) -> u128 {
        // PRF: CBC-MAC over P || Q, Q = T || 0^pad || [i] || [num]^b.
        let mut state = *p_enc;
        let pad = (16 - (tweak.len() + b + 1) % 16) % 16;
        let len = tweak.len() + pad + 1 + b;
        let mut q = [0u8; 64];
        q[..tweak.len()].copy_from_slice(tweak);
        q[tweak.len() + pad] = i;
        q[len - b..len].copy_from_slice(&num.to_be_bytes()[16 - b..]);
        for chunk in q[..len].chunks(16) {
            for (s, c) in state.iter_mut().zip(chunk) {
                *s ^= c;
            }
            self.ciph(&mut state);
        }
        // S is the first d (≤ 16) bytes of R.
        let mut y = 0u128;
        for byte in &state[..d] {
            y = (y << 8) | u128::from(*byte);
        }
        y
    }

    fn params(radix: u32, n: u32, tweak: &[u8]) -> Option<Params> {
        let u = n / 2;
        let v = n - u;
        let r = u128::from(radix);
        let mu = r.checked_pow(u)?;
        let mv = r.checked_pow(v)?;
        mv.checked_mul(mu)?;
        let b = ceil_log2(mv).div_ceil(8) as usize;
        if b > 12 || radix < 2 || n < 2 || tweak.len() > 32 {
            return None;
        }
        let d = 4 * b.div_ceil(4) + 4;
        let mut p = [0u8; 16];
        p[..3].copy_from_slice(&[1, 2, 1]);
        p[3..6].copy_from_slice(&radix.to_be_bytes()[1..]);
        p[6] = 10;
        p[7] = (u % 256) as u8;
        p[8..12].copy_from_slice(&n.to_be_bytes());
        p[12..16].copy_from_slice(&(tweak.len() as u32).to_be_bytes());
        Some(Params { mu, mv, b, d, p })
    }

    /// Encrypt the numeral string of length `n` in `radix` that `x` spells.
    pub fn encrypt(&self, x: u128, radix: u32, n: u32, tweak: &[u8]) -> Option<u128> {
        let Params {
            mu,
            mv,
            b,
            d,
            mut p,
        } = Self::params(radix, n, tweak)?;
        self.ciph(&mut p);
        let (mut a, mut bb) = (divide(x, mv), modulo(x, mv));
        for i in 0..10u8 {
            let m = if i % 2 == 0 { mu } else { mv };
            let y = modulo(self.round(&p, tweak, i, bb, b, d), m);
            let c = modulo(modulo(a, m) + y, m);
            a = bb;
            bb = c;
        }
        Some(a * mv + bb)
    }

    /// Invert [`Ff1::encrypt`].
    pub fn decrypt(&self, x: u128, radix: u32, n: u32, tweak: &[u8]) -> Option<u128> {
        let Params {
            mu,
            mv,
            b,
            d,
            mut p,
        } = Self::params(radix, n, tweak)?;
        self.ciph(&mut p);
        let (mut a, mut bb) = (divide(x, mv), modulo(x, mv));
        for i in (0..10u8).rev() {
            let m = if i % 2 == 0 { mu } else { mv };
            let y = modulo(self.round(&p, tweak, i, a, b, d), m);
            let c = modulo(modulo(bb, m) + m - y, m);
            bb = a;
            a = c;
        }
        Some(a * mv + bb)
    }
}

/// One radix-2 FF1 encryption for [`Ff1::encrypt_radix2_many`]: `x`, an
/// `n`-bit numeral, is encrypted (cycle-walking until the result is below
/// `domain`) into `y`.
#[derive(Debug, Clone, Copy)]
pub struct Radix2Job {
    pub x: u128,
    pub n: u32,
    pub domain: u128,
    pub tweak: [u8; 9],
    pub y: u128,
}

/// FF1's constants for radix 2, `n` bits and one 9-byte tweak.
#[derive(Clone, Copy)]
struct Radix2Params {
    u: u32,
    v: u32,
    /// Where in R the last 8 of S's `d` bytes start (`d` - 8; `d` is at
    /// least 8): y mod 2^u or 2^v, what a round uses, lies in them, as u
    /// and v are at most 64.
    y_at: usize,
    /// Where the round number sits in Q's last block, as a left shift.
    round_shift: u32,
    /// The CBC-MAC input of Q's last block with the round number and B
    /// left zero (P, the tweak and, for a two-block Q, its first block
    /// folded in): a round XORs those two in and encrypts one block.
    base: u128,
}

/// The most AES blocks encrypted per call: independent encryptions advance
/// together, one block each per call.
const LANES: usize = 64;

/// Blocks the `aes` crate's back end for this CPU encrypts at once (it
/// picks VAES with AVX-512, VAES, or AES-NI at run time, in that order):
/// 64, 30 and 8. A call does the blocks past the last full batch one at a
/// time, about as slowly as a whole batch each, so lockstep calls are
/// padded to whole batches. Only speed depends on this, never a result.
fn parallel_blocks() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("vaes") {
            return if std::arch::is_x86_feature_detected!("avx512f") {
                64
            } else {
                30
            };
        }
    }
    8
}

impl Ff1 {
    /// The constants of every round for `n` bits under `tweak`. Q = T ||
    /// 0^pad || [i] || [B]^b: in its one-block form that is T, zeros, the
    /// round and B; in its two-block form (B over 6 bytes) the first block
    /// is T and zeros only, the same every round, so its CBC-MAC step is
    /// done here once.
    fn radix2_params(&self, n: u32, tweak: &[u8; 9]) -> Radix2Params {
        assert!(n <= 128, "radix-2 chunks stay within 128 bits");
        let Params { b, d, mut p, .. } =
            Self::params(2, n, tweak).expect("radix-2 chunks stay within FF1's sizes");
        self.ciph(&mut p);
        let pad = (16 - (9 + b + 1) % 16) % 16;
        let i_at = 9 + pad;
        let mut t = [0u8; 16];
        t[..9].copy_from_slice(tweak);
        let mut base = u128::from_be_bytes(p) ^ u128::from_be_bytes(t);
        if (9 + pad + 1 + b) / 16 == 2 {
            let mut block = base.to_be_bytes();
            self.ciph(&mut block);
            base = u128::from_be_bytes(block);
        }
        Radix2Params {
            u: n / 2,
            v: n - n / 2,
            y_at: d - 8,
            round_shift: 8 * (15 - (i_at % 16)) as u32,
            base,
        }
    }

    /// Radix-2 FF1 encryption of many numerals, the same results as
    /// [`Ff1::encrypt`] (with cycle walking) one at a time, but in
    /// lockstep: the rounds of one encryption depend on each other, those
    /// of different ones don't, so each AES call does [`LANES`] blocks in
    /// about the time of one. Jobs with the same size and tweak (a
    /// column's values mostly share one or a few shapes) run together and
    /// share their constants.
    pub fn encrypt_radix2_many(&self, jobs: &mut [Radix2Job]) {
        let Some(first) = jobs.first().map(|j| (j.n, j.tweak)) else {
            return;
        };
        if jobs.iter().all(|j| (j.n, j.tweak) == first) {
            // The usual case, one shape: no grouping needed.
            let run: Vec<usize> = (0..jobs.len()).collect();
            let params = self.radix2_params(first.0, &first.1);
            self.encrypt_radix2_run(jobs, &run, &params);
            return;
        }
        let keys: Vec<(u32, [u8; 9])> = jobs.iter().map(|j| (j.n, j.tweak)).collect();
        let mut order: Vec<usize> = (0..jobs.len()).collect();
        order.sort_by_key(|&k| keys[k]);
        for run in order.chunk_by(|&i, &k| keys[i] == keys[k]) {
            let (n, tweak) = keys[run[0]];
            let params = self.radix2_params(n, &tweak);
            self.encrypt_radix2_run(jobs, run, &params);
        }
    }

    /// The jobs `run` names, all of one size and tweak: ten rounds over all
    /// of them, then again for the few whose result fell outside their
    /// domain (cycle walking).
    fn encrypt_radix2_run(&self, jobs: &mut [Radix2Job], run: &[usize], pr: &Radix2Params) {
        let v_mask = (1u128 << pr.v) - 1;
        // Round i adds y mod 2^u (i even) or mod 2^v (i odd); u and v are
        // at most 64, so A and B are 64-bit.
        let low_bits = |bits: u32| u64::MAX >> (64 - bits);
        let masks = [low_bits(pr.u), low_bits(pr.v)];
        let constants: [u128; 10] =
            std::array::from_fn(|round| pr.base ^ ((round as u128) << pr.round_shift));
        let lanes_per_call = LANES / self.batch * self.batch;
        let mut blocks = [Block::default(); LANES];
        let mut halves = [(0u64, 0u64); LANES];
        // The encryptions to run (job, numeral): every job of the run, then
        // those whose result fell outside their domain (cycle walking).
        let mut pending: Vec<(usize, u128)> = run.iter().map(|&k| (k, jobs[k].x)).collect();
        let mut again = Vec::new();
        while !pending.is_empty() {
            // A group of lanes goes through all ten rounds while its A and
            // B stay in cache.
            for group in pending.chunks(lanes_per_call) {
                let halves = &mut halves[..group.len()];
                for (h, &(_, x)) in halves.iter_mut().zip(group) {
                    *h = ((x >> pr.v) as u64, (x & v_mask) as u64);
                }
                // The padding blocks hold whatever the last call left; their
                // output is not read.
                let padded = group.len().next_multiple_of(self.batch);
                for (round, constant) in constants.iter().enumerate() {
                    let mask = masks[round % 2];
                    for (block, h) in blocks.iter_mut().zip(halves.iter()) {
                        *block = Block::from((constant ^ u128::from(h.1)).to_be_bytes());
                    }
                    self.cipher.encrypt_blocks(&mut blocks[..padded]);
                    for (block, h) in blocks.iter().zip(halves.iter_mut()) {
                        let mut r = [0u8; 8];
                        r.copy_from_slice(&block[pr.y_at..pr.y_at + 8]);
                        // y = NUM(S), S the first d bytes of R; only y mod
                        // 2^bits counts, so the sum may wrap.
                        let y = u64::from_be_bytes(r);
                        *h = (h.1, h.0.wrapping_add(y) & mask);
                    }
                }
                for (h, &(k, _)) in halves.iter().zip(group) {
                    let out = (u128::from(h.0) << pr.v) | u128::from(h.1);
                    if out < jobs[k].domain {
                        jobs[k].y = out;
                    } else {
                        again.push((k, out));
                    }
                }
            }
            pending.clear();
            std::mem::swap(&mut pending, &mut again);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// NIST SP 800-38G FF1 samples 7-9 (AES-256), through the integer form.
    #[test]
    fn ff1_matches_the_nist_samples() {
        let key: [u8; 32] = hex("2B7E151628AED2A6ABF7158809CF4F3CEF4359D8D580AA4F7F036D6F04FC6A94")
            .try_into()
            .unwrap();
        let ff1 = Ff1::new(&key);
        let num = |s: &str, radix: u32| -> u128 {
            s.chars().fold(0, |acc, c| {
                acc * u128::from(radix) + u128::from(c.to_digit(radix).unwrap())
            })
        };
        let text = |mut x: u128, radix: u32, n: usize| -> String {
            let mut out = vec!['0'; n];
            for slot in out.iter_mut().rev() {
                *slot = std::char::from_digit((x % u128::from(radix)) as u32, radix).unwrap();
                x /= u128::from(radix);
            }
            out.into_iter().collect()
        };
        let cases = [
            ("0123456789", 10, "", "6657667009"),
            ("0123456789", 10, "39383736353433323130", "1001623463"),
            (
                "0123456789abcdefghi",
                36,
                "3737373770717273373737",
                "xs8a0azh2avyalyzuwd",
            ),
        ];
        for (x, radix, tweak, y) in cases {
            let t = hex(tweak);
            let n = x.len() as u32;
            let out = ff1.encrypt(num(x, radix), radix, n, &t).unwrap();
            assert_eq!(text(out, radix, x.len()), y, "{x}");
            let back = ff1.decrypt(out, radix, n, &t).unwrap();
            assert_eq!(text(back, radix, x.len()), x);
        }
    }

    /// Lockstep encryption gives what one-at-a-time encryption gives,
    /// whatever the AES back end's batch (the padding of the last call of
    /// each round differs), for groups of every size around the batch.
    #[test]
    fn lockstep_results_do_not_depend_on_the_batch() {
        let key = [9u8; 32];
        let ff1 = Ff1::new(&key);
        let mut jobs = Vec::new();
        for (shape, count) in [(30u32, 1usize), (30, 63), (40, 65), (53, 8), (20, 129)] {
            let mut tweak = [0u8; 9];
            tweak[0] = shape as u8;
            tweak[8] = count as u8;
            let domain = (1u128 << shape) - 12345;
            for k in 0..count {
                let x = (k as u128 * 0x9E37_79B9) % domain;
                jobs.push(Radix2Job {
                    x,
                    n: shape,
                    domain,
                    tweak,
                    y: 0,
                });
            }
        }
        let want: Vec<u128> = jobs
            .iter()
            .map(|j| {
                let mut y = ff1.encrypt(j.x, 2, j.n, &j.tweak).unwrap();
                while y >= j.domain {
                    y = ff1.encrypt(y, 2, j.n, &j.tweak).unwrap();
                }
                y
            })
            .collect();
        for batch in [1, 8, 30, 64] {
            let ff1 = Ff1 {
                batch,
                ..Ff1::new(&key)
            };
            let mut got = jobs.clone();
            ff1.encrypt_radix2_many(&mut got);
            assert_eq!(
                got.iter().map(|j| j.y).collect::<Vec<_>>(),
                want,
                "batch {batch}"
            );
            let mut one_shape = jobs[1..64].to_vec();
            ff1.encrypt_radix2_many(&mut one_shape);
            assert!(one_shape.iter().zip(&want[1..64]).all(|(j, w)| j.y == *w));
        }
    }
}
