//! The master key and the keys derived from it.
//!
//! Every use of a secret has its own key, derived with HKDF-SHA256 from the
//! master key and a purpose label (DESIGN invariant 4), so a key leaked from
//! one use (say, a hash mask) says nothing about another (tickets). Keys are
//! never printed: `Debug` is redacted.

use hkdf::Hkdf;
use sha2::Sha256;
use std::fmt;
use std::path::Path;

use crate::error::{Result, VeilError};

/// What a derived key is for. Each variant is a distinct HKDF `info` label.
#[derive(Debug, Clone, Copy)]
pub enum KeyPurpose<'a> {
    /// Signing Flight tickets.
    Tickets,
    /// Encrypting ticket bodies, so a ticket reveals nothing of the source.
    TicketCipher,
    /// Keyed hash masking, one key per dataset id.
    HashMask {
        dataset_id: &'a str,
    },
    /// Reversible (AES-SIV) masks, one key per dataset and column.
    Reversible {
        dataset_id: &'a str,
        column: &'a str,
    },
    /// Format-preserving (FF1) masks, one key per dataset and column.
    FormatPreserving {
        dataset_id: &'a str,
        column: &'a str,
    },
    /// Minimization samples, one key per dataset id.
    Sample {
        dataset_id: &'a str,
    },
    /// Identity fingerprints (so a fingerprint can't be brute-forced offline).
    Fingerprint,
    /// The audit's hash chain (`crate::audit::chain`).
    AuditChain,
    /// A public check value stored with shared state, so nodes with
    /// different master keys refuse to share one store.
    KeyCheck,
    /// Names of kept masked copies (`engine::kept_masks`): a copy's name
    /// says nothing of the file, the policy or the keys it was made with.
    KeptMasks,
    /// Differential privacy: the pseudo-random order in which a privacy
    /// unit's groups are kept (one key per dataset id), and the keys
    /// answers are cached under.
    DpBounding {
        dataset_id: &'a str,
    },
    DpAnswers,
}

impl KeyPurpose<'_> {
    fn info(&self) -> Vec<u8> {
        match self {
            KeyPurpose::Tickets => b"veil/v1/tickets".to_vec(),
            KeyPurpose::TicketCipher => b"veil/v1/tickets/cipher".to_vec(),
            KeyPurpose::HashMask { dataset_id } => {
                format!("veil/v1/mask/hash/{dataset_id}").into_bytes()
            }
            // Lengths first, so no (dataset, column) pair can collide.
            KeyPurpose::Reversible { dataset_id, column } => format!(
                "veil/v1/mask/reversible/{}:{dataset_id}/{column}",
                dataset_id.len()
            )
            .into_bytes(),
            KeyPurpose::FormatPreserving { dataset_id, column } => format!(
                "veil/v1/mask/ff1/{}:{dataset_id}/{column}",
                dataset_id.len()
            )
            .into_bytes(),
            KeyPurpose::Sample { dataset_id } => {
                format!("veil/v1/sample/{dataset_id}").into_bytes()
            }
            KeyPurpose::Fingerprint => b"veil/v1/fingerprint".to_vec(),
            KeyPurpose::AuditChain => b"veil/v1/audit/chain".to_vec(),
            KeyPurpose::KeyCheck => b"veil/v1/key-check".to_vec(),
            KeyPurpose::KeptMasks => b"veil/v1/kept-masks".to_vec(),
            KeyPurpose::DpBounding { dataset_id } => {
                format!("veil/v1/dp/bounding/{dataset_id}").into_bytes()
            }
            KeyPurpose::DpAnswers => b"veil/v1/dp/answers".to_vec(),
        }
    }
}

/// A 32-byte secret.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// The root secret all other keys derive from.
#[derive(Clone)]
pub struct MasterKey(SecretKey);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(SecretKey(bytes))
    }

    pub fn random() -> Self {
        Self::from_bytes(rand::random())
    }

    /// Read a key file: 64 hex characters (surrounding whitespace ignored).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            VeilError::FailedPrecondition(format!(
                "cannot read the master key file {}: {e}",
                path.display()
            ))
        })?;
        let bytes = decode_hex_32(text.trim()).ok_or_else(|| {
            VeilError::FailedPrecondition(format!(
                "master key file {} must hold 64 hex characters (32 bytes)",
                path.display()
            ))
        })?;
        Ok(Self::from_bytes(bytes))
    }

    /// Write a new random key to `path` with mode 0600, or load it if present.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        if path.exists() {
            return Self::load(path);
        }
        let key = Self::random();
        write_private_file(path, &encode_hex(key.0.bytes()))?;
        Ok(key)
    }

    /// A value that identifies this key without revealing it or any key
    /// derived for another purpose (HKDF outputs are independent).
    pub fn check_value(&self) -> String {
        encode_hex(&self.derive(KeyPurpose::KeyCheck).bytes()[..16])
    }

    pub fn derive(&self, purpose: KeyPurpose<'_>) -> SecretKey {
        let hk = Hkdf::<Sha256>::new(Some(b"veil"), self.0.bytes());
        let mut out = [0u8; 32];
        hk.expand(&purpose.info(), &mut out)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        SecretKey(out)
    }
}

/// Create `path` readable and writable by its owner only (0600).
pub fn write_private_file(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| {
        VeilError::FailedPrecondition(format!("cannot create {}: {e}", path.display()))
    })?;
    file.write_all(contents.as_bytes())
        .map_err(|e| VeilError::FailedPrecondition(format!("cannot write {}: {e}", path.display())))
}

pub fn encode_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

pub fn decode_hex_32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hi = (chunk[0] as char).to_digit(16)?;
        let lo = (chunk[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_derive_distinct_keys() {
        let m = MasterKey::from_bytes([7; 32]);
        let a = m.derive(KeyPurpose::Tickets);
        let b = m.derive(KeyPurpose::HashMask { dataset_id: "d1" });
        let c = m.derive(KeyPurpose::HashMask { dataset_id: "d2" });
        assert_ne!(a, b);
        assert_ne!(b, c);
        assert_eq!(b, m.derive(KeyPurpose::HashMask { dataset_id: "d1" }));
    }

    #[test]
    fn keys_are_redacted_in_debug() {
        let m = MasterKey::from_bytes([1; 32]);
        assert_eq!(format!("{m:?}"), "MasterKey(<redacted>)");
        assert!(!format!("{:?}", m.derive(KeyPurpose::Tickets)).contains('1'));
    }

    #[test]
    fn key_file_round_trip_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let a = MasterKey::load_or_create(&p).unwrap();
        let b = MasterKey::load_or_create(&p).unwrap();
        assert_eq!(a.0, b.0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
}
