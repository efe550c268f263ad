//! Reversible masks: values that authorized people can turn back into the
//! original through an unmask request (see `governance::unmask`).
//!
//! * **Reversible** (`mask = "reversible"`): deterministic authenticated
//!   encryption, AES-SIV (RFC 5297, AES-128-SIV with a 256-bit key) under a
//!   key derived per dataset *and* column, with the dataset id and column
//!   name as associated data, so a token decrypts only where it was made.
//!   The plaintext is the value's text form (as the hash mask encodes
//!   dates, decimals, ...); the token is `rv1.` + unpadded base64url. Same
//!   value, same token within a column: counting and grouping still work.
//! * **Format-preserving** (`mask = "format_preserving"`): FF1 (NIST SP
//!   800-38G) with AES-256 under a key derived per dataset and column, on
//!   text columns. Every ASCII digit stays a digit, every ASCII letter a
//!   letter of the same case, and every other character (separators,
//!   spaces, punctuation) stays in place. The value's digits and letters
//!   form one mixed-radix number (10 per digit, 26 per letter) which FF1
//!   encrypts in radix 2 with cycle walking, so the output has exactly the
//!   same shape. The tweak is derived from that shape.
//!
//! **Small domains.** FF1 needs at least 1,000,000 possible values. A value
//! whose shape allows fewer (`AB-12`, `4217`), or that holds letters or
//! digits outside ASCII, is not encrypted: every ASCII digit becomes `0`,
//! every ASCII letter `x` (`X` if upper case) and any other letter or digit
//! `ẋ` (`Ẋ`), separators kept. It keeps its format, reveals nothing but its
//! shape, and can't be unmasked.
//!
//! Long values are cut into chunks of about 100 bits of domain (none below
//! FF1's minimum), encrypted in two chained passes (forward, then backward,
//! each chunk's tweak naming the chunk and its neighbour's output), so a
//! change anywhere changes the whole value.

use aes::Aes256;
use aes::Block;
use aes::cipher::{BlockCipherEncrypt, KeyInit};
use aes_siv::KeyInit as _;
use aes_siv::siv::Aes128Siv;
use arrow::array::{Array, StringArray};
use arrow::buffer::OffsetBuffer;
use arrow::error::ArrowError;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::secrets::SecretKey;

/// Smallest domain FF1 may encrypt (NIST SP 800-38G rev. 1).
pub const FF1_MIN_DOMAIN: u128 = 1_000_000;

/// Prefix of reversible tokens.
pub const TOKEN_PREFIX: &str = "rv1.";

/// Most bits of domain one FF1 chunk covers.
const CHUNK_BITS: f64 = 100.0;

/// Why a masked value can't be turned back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmaskable {
    /// Not a token this column's key made (or altered).
    NotAToken,
    /// Masked by the small-domain rule: there is nothing to decrypt.
    SmallDomain,
}

impl std::fmt::Display for Unmaskable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unmaskable::NotAToken => f.write_str("not a value this column's mask produced"),
            Unmaskable::SmallDomain => f.write_str(
                "too short to have been encrypted (fewer than 1,000,000 values of its format): it was masked irreversibly",
            ),
        }
    }
}

/// AES-SIV tokens for one dataset column.
pub struct SivTokens {
    key: [u8; 32],
    dataset_id: String,
    column: String,
}

impl std::fmt::Debug for SivTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SivTokens(<keyed>, {}.{})", self.dataset_id, self.column)
    }
}

impl SivTokens {
    pub fn new(key: &SecretKey, dataset_id: &str, column: &str) -> Self {
        Self {
            key: *key.bytes(),
            dataset_id: dataset_id.to_string(),
            column: column.to_string(),
        }
    }

    fn cipher(&self) -> Aes128Siv {
        Aes128Siv::new_from_slice(&self.key).expect("a 32-byte AES-SIV key")
    }

    fn headers(&self) -> [&[u8]; 3] {
        [
            b"veil/v1/reversible",
            self.dataset_id.as_bytes(),
            self.column.as_bytes(),
        ]
    }

    /// The token for `text`.
    pub fn encrypt(&self, text: &str) -> String {
        let sealed = self
            .cipher()
            .encrypt(self.headers(), text.as_bytes())
            .expect("AES-SIV encrypts any length");
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(sealed))
    }

    /// Encrypt many values with one key schedule.
    pub fn encrypt_all<'a>(
        &self,
        values: impl Iterator<Item = Option<&'a str>>,
    ) -> Vec<Option<String>> {
        let mut cipher = self.cipher();
        values
            .map(|v| {
                v.map(|t| {
                    let sealed = cipher
                        .encrypt(self.headers(), t.as_bytes())
                        .expect("AES-SIV encrypts any length");
                    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(sealed))
                })
            })
            .collect()
    }

    /// The text a token was made from.
    pub fn decrypt(&self, token: &str) -> Result<String, Unmaskable> {
        let body = token
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(Unmaskable::NotAToken)?;
        let sealed = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| Unmaskable::NotAToken)?;
        let plain = self
            .cipher()
            .decrypt(self.headers(), &sealed)
            .map_err(|_| Unmaskable::NotAToken)?;
        String::from_utf8(plain).map_err(|_| Unmaskable::NotAToken)
    }
}

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
fn ceil_log2(m: u128) -> u32 {
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

/// One character's role in a value's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Digit,
    Lower,
    Upper,
}

impl Slot {
    fn of(c: char) -> Option<Slot> {
        match c {
            '0'..='9' => Some(Slot::Digit),
            'a'..='z' => Some(Slot::Lower),
            'A'..='Z' => Some(Slot::Upper),
            _ => None,
        }
    }

    fn radix(self) -> u128 {
        match self {
            Slot::Digit => 10,
            _ => 26,
        }
    }

    fn value(self, c: char) -> u128 {
        let base = match self {
            Slot::Digit => '0',
            Slot::Lower => 'a',
            Slot::Upper => 'A',
        };
        u128::from(c as u32 - base as u32)
    }

    /// How the shape's pattern writes this slot.
    fn pattern_byte(self) -> u8 {
        match self {
            Slot::Digit => b'9',
            Slot::Lower => b'a',
            Slot::Upper => b'A',
        }
    }

    fn char(self, v: u128) -> char {
        let base = match self {
            Slot::Digit => b'0',
            Slot::Lower => b'a',
            Slot::Upper => b'A',
        };
        (base + v as u8) as char
    }
}

/// Format-preserving encryption of text values for one dataset column.
#[derive(Debug)]
pub struct FormatPreserving {
    ff1: Ff1,
    /// The last shape's pattern and tweak digest: a column's values mostly
    /// share one shape, so the digest is rarely recomputed.
    last: std::cell::RefCell<(String, [u8; 6])>,
}

enum Shape {
    /// Encryptable: the positions of each chunk, and the shape's digest.
    Chunks(Vec<Vec<usize>>, [u8; 6]),
    SmallDomain,
}

impl FormatPreserving {
    pub fn new(key: &SecretKey) -> Self {
        Self {
            ff1: Ff1::new(key.bytes()),
            last: Default::default(),
        }
    }

    /// The chunks of a value's digit and letter positions, or why it can't
    /// be encrypted.
    fn shape(&self, chars: &[char]) -> Shape {
        let mut positions = Vec::new();
        let mut pattern = String::with_capacity(chars.len());
        for (i, c) in chars.iter().enumerate() {
            match Slot::of(*c) {
                Some(s) => {
                    positions.push(i);
                    pattern.push(char::from(s.pattern_byte()));
                }
                None if c.is_alphanumeric() => return Shape::SmallDomain,
                None => pattern.push(*c),
            }
        }
        let bits: Vec<f64> = positions
            .iter()
            .map(|i| (Slot::of(chars[*i]).expect("a slot").radix() as f64).log2())
            .collect();
        let total: f64 = bits.iter().sum();
        if total < (FF1_MIN_DOMAIN as f64).log2() {
            return Shape::SmallDomain;
        }
        let count = (total / CHUNK_BITS).ceil().max(1.0);
        let target = total / count;
        let mut chunks = vec![Vec::new()];
        let mut acc = 0.0;
        for (p, b) in positions.iter().zip(&bits) {
            if acc >= target - 1e-9 && chunks.len() < count as usize {
                chunks.push(Vec::new());
                acc = 0.0;
            }
            chunks.last_mut().expect("one chunk").push(*p);
            acc += b;
        }
        // A short remainder joins the chunk before it, so every chunk's
        // domain reaches FF1's minimum.
        if chunks.len() > 1 && acc < (FF1_MIN_DOMAIN as f64).log2() {
            let tail = chunks.pop().expect("a remainder");
            chunks.last_mut().expect("a chunk before").extend(tail);
        }
        let mut last = self.last.borrow_mut();
        if last.0 != pattern || last.0.is_empty() {
            let digest = Sha256::digest(pattern.as_bytes());
            last.1.copy_from_slice(&digest[..6]);
            last.0 = pattern;
        }
        Shape::Chunks(chunks, last.1)
    }

    /// FF1 (or its inverse) on one chunk of `chars`, cycle-walking inside
    /// the chunk's mixed-radix domain.
    fn chunk(&self, chars: &mut [char], chunk: &[usize], tweak: &[u8], forward: bool) {
        let slots: Vec<Slot> = chunk
            .iter()
            .map(|i| Slot::of(chars[*i]).expect("a slot"))
            .collect();
        let domain: u128 = slots.iter().map(|s| s.radix()).product();
        let mut x: u128 = 0;
        for (i, s) in chunk.iter().zip(&slots) {
            x = x * s.radix() + s.value(chars[*i]);
        }
        let n = ceil_log2(domain);
        let step = |v: u128| {
            if forward {
                self.ff1.encrypt(v, 2, n, tweak)
            } else {
                self.ff1.decrypt(v, 2, n, tweak)
            }
            .expect("chunk domains stay within FF1's supported sizes")
        };
        let mut y = step(x);
        while y >= domain {
            y = step(y);
        }
        if let Ok(mut y) = u64::try_from(y) {
            // 64-bit division is far cheaper than 128-bit.
            for (i, s) in chunk.iter().zip(&slots).rev() {
                let r = s.radix() as u64;
                chars[*i] = s.char(u128::from(y % r));
                y /= r;
            }
            return;
        }
        for (i, s) in chunk.iter().zip(&slots).rev() {
            chars[*i] = s.char(y % s.radix());
            y /= s.radix();
        }
    }

    /// The tweak of chunk `k` in `pass`: the shape's digest, bound to the
    /// neighbouring chunk's current characters when there is one.
    fn tweak(
        pass: u8,
        k: usize,
        digest: [u8; 6],
        chars: &[char],
        neighbour: Option<&Vec<usize>>,
    ) -> [u8; 9] {
        let mut t = [0u8; 9];
        t[0] = pass;
        t[1..3].copy_from_slice(&(k as u16).to_be_bytes());
        match neighbour {
            None => t[3..].copy_from_slice(&digest),
            Some(positions) => {
                let mut h = Sha256::new();
                h.update(digest);
                for i in positions {
                    let mut buf = [0u8; 4];
                    h.update(chars[*i].encode_utf8(&mut buf).as_bytes());
                }
                t[3..].copy_from_slice(&h.finalize()[..6]);
            }
        }
        t
    }

    /// Encrypt (or decrypt) every chunk. With several chunks, two chained
    /// passes (forward, each chunk tweaked by the previous one's output;
    /// then backward, by the next one's) make every output character
    /// depend on every input character.
    fn transform(&self, chars: &mut [char], chunks: &[Vec<usize>], digest: [u8; 6], forward: bool) {
        let c = chunks.len();
        let pass1 = |chars: &mut [char], k: usize, fwd: bool| {
            let t = Self::tweak(1, k, digest, chars, k.checked_sub(1).map(|j| &chunks[j]));
            self.chunk(chars, &chunks[k], &t, fwd);
        };
        let pass2 = |chars: &mut [char], k: usize, fwd: bool| {
            let t = Self::tweak(2, k, digest, chars, chunks.get(k + 1));
            self.chunk(chars, &chunks[k], &t, fwd);
        };
        if forward {
            (0..c).for_each(|k| pass1(chars, k, true));
            if c > 1 {
                (0..c).rev().for_each(|k| pass2(chars, k, true));
            }
        } else {
            if c > 1 {
                (0..c).for_each(|k| pass2(chars, k, false));
            }
            (0..c).rev().for_each(|k| pass1(chars, k, false));
        }
    }

    /// The masked form of `text`.
    pub fn encrypt(&self, text: &str) -> String {
        let mut chars: Vec<char> = text.chars().collect();
        match self.shape(&chars) {
            Shape::Chunks(chunks, digest) => {
                self.transform(&mut chars, &chunks, digest, true);
                chars.into_iter().collect()
            }
            Shape::SmallDomain => filler(text),
        }
    }

    /// The masked form of every value of `values`, nulls kept. The same
    /// results as [`FormatPreserving::encrypt`] on each value, faster:
    /// ASCII values of one chunk (SSNs, phone and card numbers, most
    /// identifiers) reuse their shape's layout, are written straight into
    /// the output and are encrypted [`LANES`] at a time; anything else
    /// takes the one-value path.
    pub fn encrypt_array(&self, values: &StringArray) -> Result<StringArray, ArrowError> {
        let offsets = values.value_offsets();
        let size = (offsets[values.len()] - offsets[0]) as usize;
        let mut out = Vec::with_capacity(size);
        let mut ends = Vec::with_capacity(values.len() + 1);
        ends.push(0i32);
        let mut window = Window::new();
        for i in 0..values.len() {
            if values.is_valid(i) {
                window.push(self, values.value(i), &mut out);
                if window.is_full() {
                    window.flush(self, &mut out);
                }
            }
            ends.push(i32::try_from(out.len()).map_err(|_| {
                ArrowError::ComputeError(
                    "a batch's masked text exceeds 2 GiB; lower the batch size".into(),
                )
            })?);
        }
        window.flush(self, &mut out);
        StringArray::try_new(
            OffsetBuffer::new(ends.into()),
            out.into(),
            values.nulls().cloned(),
        )
    }

    /// The text a masked value came from.
    pub fn decrypt(&self, masked: &str) -> Result<String, Unmaskable> {
        let mut chars: Vec<char> = masked.chars().collect();
        match self.shape(&chars) {
            Shape::Chunks(chunks, digest) => {
                self.transform(&mut chars, &chunks, digest, false);
                Ok(chars.into_iter().collect())
            }
            Shape::SmallDomain => Err(Unmaskable::SmallDomain),
        }
    }
}

/// Values whose encryptions [`FormatPreserving::encrypt_array`] queues
/// before running them together.
const WINDOW: usize = 1024;

/// The layout of one ASCII shape, computed once and reused by every value
/// of the same shape (a column's values mostly share one or a few).
struct Layout {
    /// The value's bytes with each digit written `9`, each lower-case
    /// letter `a` and each upper-case letter `A`, as `shape` writes it.
    pattern: Vec<u8>,
    /// Offset and slot of every encrypted character, in order.
    slots: Vec<(usize, Slot)>,
    kind: LayoutKind,
    /// The numerals that matter fit in 64 bits (those of other kinds than
    /// one chunk are only matched, never used).
    narrow: bool,
}

enum LayoutKind {
    /// Below FF1's minimum: every value of the shape masks to this text.
    Small(Vec<u8>),
    /// One chunk: one FF1 encryption of `n` bits under `tweak`.
    OneChunk {
        n: u32,
        domain: u128,
        tweak: [u8; 9],
    },
    /// Several chunks: the one-value path.
    Chunked,
}

impl Layout {
    /// The layout of `text`'s shape; mirrors [`FormatPreserving::shape`]
    /// (the same sums in the same order decide the same shapes).
    fn of(text: &[u8]) -> Layout {
        let (digit_bits, letter_bits) = (
            (Slot::Digit.radix() as f64).log2(),
            (Slot::Lower.radix() as f64).log2(),
        );
        let mut pattern = Vec::with_capacity(text.len());
        let mut slots = Vec::new();
        let mut total = 0.0f64;
        let mut domain = 1u128;
        for (i, &c) in text.iter().enumerate() {
            match Slot::of(char::from(c)) {
                Some(s) => {
                    slots.push((i, s));
                    pattern.push(s.pattern_byte());
                    total += if s == Slot::Digit {
                        digit_bits
                    } else {
                        letter_bits
                    };
                    // Past 100 bits the value takes the chunked path, so
                    // this never overflows.
                    if total <= CHUNK_BITS {
                        domain *= s.radix();
                    }
                }
                None => pattern.push(c),
            }
        }
        let kind = if total < (FF1_MIN_DOMAIN as f64).log2() {
            LayoutKind::Small(
                pattern
                    .iter()
                    .map(|&p| match p {
                        b'9' => b'0',
                        b'a' => b'x',
                        b'A' => b'X',
                        other => other,
                    })
                    .collect(),
            )
        } else if (total / CHUNK_BITS).ceil() > 1.0 {
            LayoutKind::Chunked
        } else {
            let digest = Sha256::digest(&pattern);
            let mut tweak = [0u8; 9];
            tweak[0] = 1;
            tweak[3..].copy_from_slice(&digest[..6]);
            LayoutKind::OneChunk {
                n: ceil_log2(domain),
                domain,
                tweak,
            }
        };
        Layout {
            narrow: !matches!(kind, LayoutKind::OneChunk { domain, .. } if domain > u128::from(u64::MAX)),
            pattern,
            slots,
            kind,
        }
    }

    /// The numeral `text` spells if it has this shape, else `None`.
    fn numeral(&self, text: &[u8]) -> Option<u128> {
        if text.len() != self.pattern.len() {
            return None;
        }
        if self.narrow {
            // 64-bit multiplications: one instruction each, not three.
            let mut x = 0u64;
            for (&c, &p) in text.iter().zip(&self.pattern) {
                if let Some((radix, digit)) = numeral_digit(c, p)? {
                    x = x.wrapping_mul(radix) + digit;
                }
            }
            Some(u128::from(x))
        } else {
            let mut x = 0u128;
            for (&c, &p) in text.iter().zip(&self.pattern) {
                if let Some((radix, digit)) = numeral_digit(c, p)? {
                    x = x.wrapping_mul(u128::from(radix)) + u128::from(digit);
                }
            }
            Some(x)
        }
    }
}

/// Character `c` of a value against `p`, its place in a layout's pattern:
/// `Some(Some((radix, digit)))` for an encrypted character of the
/// pattern's class, `Some(None)` for the pattern's literal, `None` when the
/// value does not have the shape.
#[inline]
fn numeral_digit(c: u8, p: u8) -> Option<Option<(u64, u64)>> {
    let (radix, base, class) = match c {
        b'0'..=b'9' => (10, b'0', b'9'),
        b'a'..=b'z' => (26, b'a', b'a'),
        b'A'..=b'Z' => (26, b'A', b'A'),
        _ if c == p => return Some(None),
        _ => return None,
    };
    (p == class).then_some(Some((radix, u64::from(c - base))))
}

/// Where a queued encryption's output goes: the value's start in the
/// output and the layout that places its characters.
struct Place {
    start: usize,
    layout: usize,
}

/// The state of [`FormatPreserving::encrypt_array`]: the shapes seen since
/// the last flush and the one-chunk encryptions still to do.
struct Window {
    layouts: Vec<Layout>,
    /// The layout the last ASCII value had.
    current: Option<usize>,
    jobs: Vec<Radix2Job>,
    places: Vec<Place>,
}

/// Layouts kept between flushes; past this a column has too many shapes
/// for reuse to pay, and they are dropped at the next flush.
const MAX_LAYOUTS: usize = 64;

/// Layouts a value that doesn't match the current one is tried against
/// before a new one is made.
const RECENT_LAYOUTS: usize = 8;

impl Window {
    fn new() -> Self {
        Self {
            layouts: Vec::new(),
            current: None,
            jobs: Vec::with_capacity(WINDOW),
            places: Vec::with_capacity(WINDOW),
        }
    }

    /// Time to flush: a window of encryptions is queued, or as many new
    /// layouts were made (values that queue nothing still add layouts).
    fn is_full(&self) -> bool {
        self.jobs.len() >= WINDOW || self.layouts.len() >= WINDOW
    }

    /// Append `text`'s masked form to `out` (one-chunk encryptions are
    /// queued: their characters are written by the next flush).
    fn push(&mut self, fpe: &FormatPreserving, text: &str, out: &mut Vec<u8>) {
        if text.is_ascii() {
            let bytes = text.as_bytes();
            let found = match self.current {
                Some(k) => self.layouts[k].numeral(bytes).map(|x| (k, x)),
                None => None,
            }
            .or_else(|| {
                // One of the last few shapes, or a new one.
                let recent = self.layouts.len().saturating_sub(RECENT_LAYOUTS);
                let seen = self.layouts[recent..]
                    .iter()
                    .enumerate()
                    .rev()
                    .find_map(|(k, l)| l.numeral(bytes).map(|x| (recent + k, x)));
                if seen.is_some() {
                    return seen;
                }
                let layout = Layout::of(bytes);
                let x = layout.numeral(bytes);
                self.layouts.push(layout);
                x.map(|x| (self.layouts.len() - 1, x))
            });
            if let Some((k, x)) = found {
                self.current = Some(k);
                match &self.layouts[k].kind {
                    LayoutKind::Small(filled) => {
                        out.extend_from_slice(filled);
                        return;
                    }
                    LayoutKind::OneChunk { n, domain, tweak } => {
                        self.jobs.push(Radix2Job {
                            x,
                            n: *n,
                            domain: *domain,
                            tweak: *tweak,
                            y: 0,
                        });
                        self.places.push(Place {
                            start: out.len(),
                            layout: k,
                        });
                        out.extend_from_slice(bytes);
                        return;
                    }
                    LayoutKind::Chunked => {}
                }
            }
        }
        out.extend_from_slice(fpe.encrypt(text).as_bytes());
    }

    /// Run the queued encryptions and write their characters into `out`.
    fn flush(&mut self, fpe: &FormatPreserving, out: &mut [u8]) {
        fpe.ff1.encrypt_radix2_many(&mut self.jobs);
        for (job, place) in self.jobs.iter().zip(&self.places) {
            let slots = self.layouts[place.layout].slots.iter().rev();
            let value = &mut out[place.start..];
            if let Ok(mut y) = u64::try_from(job.y) {
                // 64-bit division by a constant is a multiplication; 128-bit
                // division is a call.
                for &(i, s) in slots {
                    let (digit, rest) = match s {
                        Slot::Digit => (y % 10, y / 10),
                        Slot::Lower | Slot::Upper => (y % 26, y / 26),
                    };
                    value[i] = s.char(u128::from(digit)) as u8;
                    y = rest;
                }
            } else {
                let mut y = job.y;
                for &(i, s) in slots {
                    value[i] = s.char(y % s.radix()) as u8;
                    y /= s.radix();
                }
            }
        }
        self.jobs.clear();
        self.places.clear();
        if self.layouts.len() > MAX_LAYOUTS {
            self.layouts.clear();
            self.current = None;
        }
    }
}

/// The small-domain rule: ASCII digits become `0`, ASCII letters `x` or
/// `X`; any other letter or digit becomes `ẋ` (`Ẋ` if upper case), which
/// no encrypted value contains, so such a value is never "decrypted".
fn filler(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_digit() {
                '0'
            } else if c.is_ascii_alphabetic() {
                if c.is_ascii_uppercase() { 'X' } else { 'x' }
            } else if c.is_alphanumeric() {
                if c.is_uppercase() { 'Ẋ' } else { 'ẋ' }
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::{KeyPurpose, MasterKey};
    use proptest::prelude::*;

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

    fn fpe() -> FormatPreserving {
        FormatPreserving::new(&MasterKey::from_bytes([3; 32]).derive(
            KeyPurpose::FormatPreserving {
                dataset_id: "d",
                column: "c",
            },
        ))
    }

    #[test]
    fn formats_are_kept_and_small_domains_are_filled() {
        let f = fpe();
        let card = f.encrypt("4111-1111-1111-1111");
        assert_ne!(card, "4111-1111-1111-1111");
        assert_eq!(card.len(), 19);
        assert!(card.chars().enumerate().all(|(i, c)| if i % 5 == 4 {
            c == '-'
        } else {
            c.is_ascii_digit()
        }));
        assert_eq!(f.decrypt(&card).unwrap(), "4111-1111-1111-1111");
        // Mixed letters and digits keep their classes and cases.
        let id = f.encrypt("AB12-cd34x");
        let classes = |s: &str| {
            s.chars()
                .map(|c| Slot::of(c).map(|s| s as u8))
                .collect::<Vec<_>>()
        };
        assert_eq!(classes(&id), classes("AB12-cd34x"));
        assert_eq!(f.decrypt(&id).unwrap(), "AB12-cd34x");
        // Below a million values: filled, never raw, never unmaskable.
        assert_eq!(f.encrypt("AB-12"), "XX-00");
        assert_eq!(f.encrypt("42"), "00");
        assert_eq!(f.decrypt("XX-00"), Err(Unmaskable::SmallDomain));
        assert_eq!(f.encrypt("Zoë-123456"), "Xxẋ-000000");
        assert_eq!(f.decrypt("Xxẋ-000000"), Err(Unmaskable::SmallDomain));
        assert_eq!(f.encrypt(""), "");
    }

    #[test]
    fn long_values_are_chunked_and_round_trip() {
        let f = fpe();
        let text = "The quick brown fox 0123456789 jumps over the lazy dog 9876543210";
        let m = f.encrypt(text);
        assert_eq!(m.len(), text.len());
        assert_ne!(m, text);
        assert_eq!(f.decrypt(&m).unwrap(), text);
        // Every chunk depends on every other: a change at either end
        // changes the other end too.
        let changed = |a: &str, b: &str| a.chars().zip(b.chars()).filter(|(x, y)| x != y).count();
        let first = f.encrypt(&text.replacen('T', "U", 1));
        let last = f.encrypt(&format!("{}1", &text[..text.len() - 1]));
        assert!(
            changed(&m[m.len() - 10..], &first[m.len() - 10..]) > 3,
            "{m} / {first}"
        );
        assert!(changed(&m[..10], &last[..10]) > 3, "{m} / {last}");
        // Shared suffixes don't encrypt alike.
        let a = f.encrypt("ana.brown107285@example.com");
        let b = f.encrypt("ana.novak101235@example.com");
        assert_ne!(a[16..], b[16..]);
        // No remainder chunk is left below FF1's minimum domain.
        for n in [755, 931, 400] {
            let digits: String = (0..n).map(|i| char::from(b'0' + (i % 10) as u8)).collect();
            let Shape::Chunks(chunks, _) = f.shape(&digits.chars().collect::<Vec<_>>()) else {
                panic!("{n}")
            };
            assert!(
                chunks.iter().all(|c| c.len() >= 6),
                "{n}: {:?}",
                chunks.iter().map(Vec::len).collect::<Vec<_>>()
            );
            assert_eq!(f.decrypt(&f.encrypt(&digits)).unwrap(), digits);
        }
    }

    #[test]
    fn siv_tokens_are_deterministic_and_bound_to_their_column() {
        let key = |c: &str| {
            MasterKey::from_bytes([4; 32]).derive(KeyPurpose::Reversible {
                dataset_id: "d",
                column: c,
            })
        };
        let a = SivTokens::new(&key("ssn"), "d", "ssn");
        let t = a.encrypt("123-45-6789");
        assert!(t.starts_with(TOKEN_PREFIX));
        assert_eq!(t, a.encrypt("123-45-6789"));
        assert_ne!(t, a.encrypt("123-45-6780"));
        assert_eq!(a.decrypt(&t).unwrap(), "123-45-6789");
        // Another column (even given this column's key) can't open it.
        let b = SivTokens::new(&key("ssn"), "d", "email");
        assert_eq!(b.decrypt(&t), Err(Unmaskable::NotAToken));
        let mut altered = t.clone();
        altered.pop();
        altered.push(if t.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(a.decrypt(&altered), Err(Unmaskable::NotAToken));
        assert_eq!(a.decrypt("123-45-6789"), Err(Unmaskable::NotAToken));
    }

    /// `values` through [`FormatPreserving::encrypt_array`].
    fn masked(f: &FormatPreserving, values: &[Option<String>]) -> Vec<Option<String>> {
        let array = StringArray::from(values.to_vec());
        let out = f.encrypt_array(&array).unwrap();
        assert_eq!(out.nulls(), array.nulls());
        out.iter().map(|v| v.map(str::to_owned)).collect()
    }

    /// The windowed path gives exactly what one value at a time gives,
    /// across shapes: one chunk, small domains, several chunks, non-ASCII,
    /// nulls, and values that cycle-walk.
    #[test]
    fn encrypt_array_matches_one_value_at_a_time() {
        let f = fpe();
        let mut values: Vec<Option<String>> = vec![
            Some("123-45-6789".into()),
            None,
            Some("AB-12".into()),
            Some("Zoë-123456".into()),
            Some("4111–1111–1111–1111".into()),
            Some("The quick brown fox 0123456789 jumps over the lazy dog".into()),
            Some(String::new()),
            Some("ana.brown107285@example.com".into()),
            // One chunk whose Q takes two blocks (B over six bytes).
            Some("123456789012345678901234567890".into()),
            Some("98765432109876543210987654321".into()),
        ];
        for i in 0..3000u64 {
            let n = i.wrapping_mul(2_654_435_761) % 1_000_000_000;
            values.push(Some(format!(
                "{:03}-{:02}-{:04}",
                n / 1_000_000,
                n / 10_000 % 100,
                n % 10_000
            )));
            if i % 7 == 0 {
                values.push(Some(format!("user{n}@Example{}.org", i % 13)));
            }
            // Shapes that alternate (their encryptions are grouped), and
            // more distinct shapes than a window keeps layouts for.
            if i % 3 == 0 {
                values.push(Some(format!(
                    "({:03}) {:03}-{:04}",
                    n % 1000,
                    i % 1000,
                    n % 10_000
                )));
            }
            if i % 5 == 0 {
                values.push(Some(format!("Ab{:06}", n % 1_000_000)));
            }
            if i % 11 == 0 {
                values.push(Some(format!(
                    "{}{:07}",
                    "-".repeat((i % 97) as usize),
                    n % 10_000_000
                )));
            }
        }
        let got = masked(&f, &values);
        let want: Vec<Option<String>> = values
            .iter()
            .map(|v| v.as_deref().map(|t| f.encrypt(t)))
            .collect();
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "value {i}: {:?}", values[i]);
        }
    }

    proptest! {
        #[test]
        fn fpe_round_trips_and_keeps_every_class(s in "[A-Za-z0-9 ./@-]{0,40}") {
            let f = fpe();
            let m = f.encrypt(&s);
            prop_assert_eq!(m.chars().count(), s.chars().count());
            for (a, b) in s.chars().zip(m.chars()) {
                match Slot::of(a) {
                    Some(x) => prop_assert_eq!(Slot::of(b), Some(x)),
                    None => prop_assert_eq!(a, b),
                }
            }
            match f.decrypt(&m) {
                Ok(back) => prop_assert_eq!(back, s),
                Err(Unmaskable::SmallDomain) => {
                    let domain: f64 = s.chars().filter_map(Slot::of).map(|x| (x.radix() as f64).log2()).sum();
                    prop_assert!(domain < 20.0);
                }
                Err(e) => prop_assert!(false, "{e}"),
            }
        }

        #[test]
        fn fpe_encrypt_array_agrees(v in proptest::collection::vec(proptest::option::of("[A-Za-z0-9 ./@é-]{0,30}"), 0..40)) {
            let f = fpe();
            let got = masked(&f, &v);
            let want: Vec<Option<String>> = v.iter().map(|x| x.as_deref().map(|t| f.encrypt(t))).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn fpe_is_a_permutation_of_each_shape(
            (a, b) in (6usize..=12).prop_flat_map(|n| (
                proptest::collection::vec(0u8..10, n),
                proptest::collection::vec(0u8..10, n),
            ))
        ) {
            prop_assume!(a != b);
            let text = |v: &[u8]| v.iter().map(|d| char::from(b'0' + d)).collect::<String>();
            let (a, b) = (text(&a), text(&b));
            let f = fpe();
            prop_assert_ne!(f.encrypt(&a), f.encrypt(&b));
        }
    }
}
