//! The format-preserving mask (`mask = "format_preserving"`), reversible
//! (see `super::reversible`): FF1 (NIST SP 800-38G, `super::ff1`) with
//! AES-256 under a key derived per dataset and column, on text columns.
//! Every ASCII digit stays a digit, every ASCII letter a letter of the same
//! case, and every other character (separators, spaces, punctuation) stays
//! in place. The value's digits and letters form one mixed-radix number (10
//! per digit, 26 per letter) which FF1 encrypts in radix 2 with cycle
//! walking, so the output has exactly the same shape. The tweak is derived
//! from that shape.
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

use arrow::array::{Array, StringArray};
use arrow::buffer::OffsetBuffer;
use arrow::error::ArrowError;
use sha2::{Digest, Sha256};

use super::ff1::{FF1_MIN_DOMAIN, Ff1, Radix2Job, ceil_log2};
use super::reversible::Unmaskable;
use crate::secrets::SecretKey;

/// Most bits of domain one FF1 chunk covers.
const CHUNK_BITS: f64 = 100.0;

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
    /// the output and are encrypted [`LANES`](super::ff1::LANES) at a
    /// time; anything else takes the one-value path.
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
