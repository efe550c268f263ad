//! Signed, encrypted tickets (DESIGN invariant 3).
//!
//! A ticket is a `SignedTicket { body, mac }`: `body` is the encoded
//! `TicketBody` encrypted with ChaCha20-Poly1305 (random nonce prepended),
//! and `mac` is HMAC-SHA256(ticket key, body), verified in constant time
//! before anything else is looked at. The body binds the ticket to (issuer,
//! subject), an expiry, the state version and the caller's identity
//! fingerprint, and names the part of the data it reads. Encryption keeps
//! that part (file paths, row-group counts, so the size of rows the caller
//! can't see) opaque to the holder.

use hmac::{Hmac, Mac};
use prost::Message;
use sha2::Sha256;

use veil_proto::{SignedTicket, TicketBody, TicketCommand, TicketUse};

use crate::error::{Result, VeilError};
use crate::model::identity::Principal;
use crate::secrets::SecretKey;

const TICKET_FORMAT: u32 = 1;

/// A ticket body for `command`, bound to `principal` (identity and
/// fingerprint) at state `version` and valid until `expires_at_ms`; the
/// caller sets what else it names (its part, its use).
pub fn body_for(
    principal: &Principal,
    version: u64,
    expires_at_ms: i64,
    command: TicketCommand,
) -> TicketBody {
    TicketBody {
        issuer: principal.identity.issuer.clone(),
        subject: principal.identity.subject.clone(),
        expires_at_ms,
        policy_version: version,
        identity_fingerprint: principal.fingerprint.to_vec(),
        command: Some(command),
        ..Default::default()
    }
}
/// Tickets carry their command (SQL up to `MAX_SQL_BYTES`), so the cap is above it.
const MAX_TICKET_BYTES: usize = 1024 * 1024;

const NONCE_LEN: usize = 12;

#[derive(Clone)]
pub struct TicketSigner {
    key: SecretKey,
    cipher: std::sync::Arc<ring::aead::LessSafeKey>,
}

impl std::fmt::Debug for TicketSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketSigner(<keyed>)")
    }
}

impl TicketSigner {
    /// `key` signs; `cipher_key` encrypts (two derived keys, two purposes).
    pub fn new(key: SecretKey, cipher_key: SecretKey) -> Self {
        let unbound =
            ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, cipher_key.bytes())
                .expect("a 32-byte key fits ChaCha20-Poly1305");
        Self {
            key,
            cipher: std::sync::Arc::new(ring::aead::LessSafeKey::new(unbound)),
        }
    }

    /// Both keys from the master key.
    pub fn from_master(master: &crate::secrets::MasterKey) -> Self {
        use crate::secrets::KeyPurpose;
        Self::new(
            master.derive(KeyPurpose::Tickets),
            master.derive(KeyPurpose::TicketCipher),
        )
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(self.key.bytes()).expect("any key length")
    }

    pub fn sign(&self, mut body: TicketBody) -> Vec<u8> {
        body.format = TICKET_FORMAT;
        pad(&mut body);
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut sealed = body.encode_to_vec();
        self.cipher
            .seal_in_place_append_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::empty(),
                &mut sealed,
            )
            .expect("sealing a ticket cannot fail");
        let mut body = nonce.to_vec();
        body.extend_from_slice(&sealed);
        let mac = self
            .mac()
            .chain_update(&body)
            .finalize()
            .into_bytes()
            .to_vec();
        SignedTicket { body, mac }.encode_to_vec()
    }

    /// Check a read ticket's signature, format, expiry and owner; return
    /// the body.
    pub fn verify(&self, ticket: &[u8], principal: &Principal, now_ms: i64) -> Result<TicketBody> {
        self.open(ticket, principal, now_ms, TicketUse::Read, || {
            VeilError::InvalidArgument(
                "the ticket is malformed or was not issued by this Veil; get a new one with GetFlightInfo".into(),
            )
        })
    }

    /// Check a Flight SQL prepared statement's handle as [`Self::verify`]
    /// checks a ticket.
    pub fn verify_handle(
        &self,
        handle: &[u8],
        principal: &Principal,
        now_ms: i64,
    ) -> Result<TicketBody> {
        self.open(handle, principal, now_ms, TicketUse::PreparedStatement, || {
            VeilError::InvalidArgument(
                "the prepared statement handle is malformed or was not issued by this Veil; prepare the statement again".into(),
            )
        })
    }

    fn open(
        &self,
        ticket: &[u8],
        principal: &Principal,
        now_ms: i64,
        wanted: TicketUse,
        forged: impl Fn() -> VeilError,
    ) -> Result<TicketBody> {
        if ticket.len() > MAX_TICKET_BYTES {
            return Err(forged());
        }
        let signed = SignedTicket::decode(ticket).map_err(|_| forged())?;
        self.mac()
            .chain_update(&signed.body)
            .verify_slice(&signed.mac)
            .map_err(|_| forged())?;
        if signed.body.len() < NONCE_LEN {
            return Err(forged());
        }
        let (nonce, sealed) = signed.body.split_at(NONCE_LEN);
        let nonce = ring::aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| forged())?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .cipher
            .open_in_place(nonce, ring::aead::Aad::empty(), &mut sealed)
            .map_err(|_| forged())?;
        let body = TicketBody::decode(&*plain).map_err(|_| forged())?;
        if body.format != TICKET_FORMAT || body.command.is_none() || body.r#use() != wanted {
            return Err(forged());
        }
        if body.issuer != principal.identity.issuer || body.subject != principal.identity.subject {
            return Err(VeilError::PermissionDenied(
                "this ticket was issued to another user; tickets cannot be shared".into(),
            ));
        }
        if body.expires_at_ms <= now_ms {
            return Err(VeilError::FailedPrecondition(match wanted {
                TicketUse::Read => {
                    "the ticket has expired; call GetFlightInfo again for a fresh one".into()
                }
                TicketUse::PreparedStatement => {
                    "the prepared statement has expired; prepare it again".into()
                }
            }));
        }
        Ok(body)
    }
}

/// Smallest size class of an encoded ticket body; larger bodies round up to
/// the next power of two.
const MIN_BODY_BYTES: usize = 2048;

/// Pad the body so its encoded length is exactly a size class.
fn pad(body: &mut TicketBody) {
    body.padding.clear();
    let bare = body.encoded_len();
    let target = bare.max(MIN_BODY_BYTES).next_power_of_two();
    // Field 13's key and length prefix take a few bytes themselves; shrink
    // the padding until the whole lands on the target.
    let mut n = target.saturating_sub(bare);
    while n > 0 {
        body.padding = vec![0; n];
        if body.encoded_len() <= target {
            break;
        }
        n -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::identity::{ClientInfo, Identity};
    use crate::secrets::{KeyPurpose, MasterKey};
    use veil_proto::{SqlCommand, TicketCommand};

    #[test]
    fn ticket_lengths_come_in_size_classes() {
        let s = TicketSigner::from_master(&MasterKey::from_bytes([2; 32]));
        let lens: Vec<usize> = [1usize, 10, 40]
            .iter()
            .map(|files| {
                let mut b = body("erin", 1000);
                b.part = Some(veil_proto::ScanPart {
                    files: (0..*files)
                        .map(|i| veil_proto::FileSlice {
                            path: format!("/data/part-{i:05}.parquet"),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                });
                s.sign(b).len()
            })
            .collect();
        assert!(lens.iter().all(|l| *l == lens[0]), "{lens:?}");
    }

    #[test]
    fn ticket_bodies_are_opaque() {
        let s = TicketSigner::from_master(&MasterKey::from_bytes([2; 32]));
        let t = s.sign(body("alice-with-a-long-name", 1000));
        let signed = SignedTicket::decode(t.as_slice()).unwrap();
        assert!(!signed.body.windows(5).any(|w| w == b"alice"));
        assert!(!signed.body.windows(8).any(|w| w == b"SELECT 1"));
    }

    fn principal(sub: &str) -> Principal {
        let k = MasterKey::from_bytes([1; 32]);
        crate::auth::identity::principal(
            Identity::new("iss", sub),
            Default::default(),
            Default::default(),
            Default::default(),
            &k.derive(KeyPurpose::Fingerprint),
            ClientInfo::default(),
        )
    }

    fn body(sub: &str, expires: i64) -> TicketBody {
        TicketBody {
            issuer: "iss".into(),
            subject: sub.into(),
            expires_at_ms: expires,
            command: Some(TicketCommand::Sql(SqlCommand {
                query: "SELECT 1".into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn tickets_verify_only_for_their_owner_before_expiry() {
        let s = TicketSigner::from_master(&MasterKey::from_bytes([2; 32]));
        let t = s.sign(body("alice", 1000));
        assert!(s.verify(&t, &principal("alice"), 999).is_ok());
        assert!(matches!(
            s.verify(&t, &principal("bob"), 999),
            Err(VeilError::PermissionDenied(_))
        ));
        assert!(matches!(
            s.verify(&t, &principal("alice"), 1000),
            Err(VeilError::FailedPrecondition(_))
        ));
    }

    #[test]
    fn forged_and_other_key_tickets_are_rejected() {
        let s = TicketSigner::from_master(&MasterKey::from_bytes([2; 32]));
        let other = TicketSigner::from_master(&MasterKey::from_bytes([3; 32]));
        let t = other.sign(body("alice", i64::MAX));
        assert!(matches!(
            s.verify(&t, &principal("alice"), 0),
            Err(VeilError::InvalidArgument(_))
        ));
        // Re-signing a modified body without the key is impossible; flipping
        // a byte of a valid ticket fails.
        let mut t = s.sign(body("alice", i64::MAX));
        let n = t.len();
        t[n / 2] ^= 1;
        assert!(s.verify(&t, &principal("alice"), 0).is_err());
        assert!(s.verify(b"garbage", &principal("alice"), 0).is_err());
        assert!(s.verify(&[], &principal("alice"), 0).is_err());
    }
}
