//! Bearer-token verification.
//!
//! Each configured key is pinned to one algorithm and one issuer: a token is
//! only tried against keys whose algorithm equals the token header's, so an
//! RSA public key can never be abused as an HMAC secret, and `alg: none`
//! matches nothing. Issuer, audience, expiry, not-before and a maximum
//! lifetime (`exp - iat`) are all required.
//!
//! A verified token says who the user is; whether its group and attribute
//! claims are believed is the issuer's trust ([`ClaimTrust`]), built from the
//! same `[auth]` section so a reload swaps both at once.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use crate::auth::claim_trust::{AssertedClaims, ClaimTrust};
use crate::config::{AuthConfig, KeyConfig};
use crate::error::{Result, VeilError};
use crate::model::identity::{Attributes, Identity};

/// A verification key with what it may verify.
struct PinnedKey {
    issuer: String,
    algorithm: Algorithm,
    kid: Option<String>,
    key: DecodingKey,
}

impl fmt::Debug for PinnedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedKey")
            .field("issuer", &self.issuer)
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The verified content of a token: who, and the group and attribute claims
/// as asserted (not yet weighed against the issuer's trust).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedClaims {
    pub identity: Identity,
    pub asserted: AssertedClaims,
}

#[derive(Debug)]
pub struct TokenVerifier {
    keys: Vec<PinnedKey>,
    audience: String,
    max_lifetime_secs: u64,
    leeway_secs: u64,
    groups_claim: String,
    attributes_claim: String,
    trust: ClaimTrust,
}

fn unauthenticated(m: &str) -> VeilError {
    VeilError::Unauthenticated(format!(
        "{m}; send 'authorization: Bearer <JWT>' with a token from your identity provider (or `veil token` in development)"
    ))
}

fn parse_algorithm(s: &str) -> Result<Algorithm> {
    match s.to_ascii_uppercase().as_str() {
        "HS256" => Ok(Algorithm::HS256),
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        other => Err(VeilError::FailedPrecondition(format!(
            "unsupported token algorithm '{other}': use HS256, RS256 or ES256"
        ))),
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        VeilError::FailedPrecondition(format!("cannot read {what} {}: {e}", path.display()))
    })
}

impl TokenVerifier {
    pub fn from_config(cfg: &AuthConfig, base: &Path) -> Result<Self> {
        let mut keys = Vec::new();
        for k in &cfg.keys {
            keys.extend(load_key(k, base)?);
        }
        if keys.is_empty() {
            return Err(VeilError::FailedPrecondition(
                "no token keys configured: add at least one [[auth.keys]] entry".into(),
            ));
        }
        let trust = ClaimTrust::from_config(cfg)?;
        Ok(Self {
            keys,
            audience: cfg.audience.clone(),
            max_lifetime_secs: cfg.max_token_lifetime_secs,
            leeway_secs: cfg.leeway_secs,
            groups_claim: cfg.groups_claim.clone(),
            attributes_claim: cfg.attributes_claim.clone(),
            trust,
        })
    }

    /// Which claims each issuer's tokens are believed for.
    pub fn trust(&self) -> &ClaimTrust {
        &self.trust
    }

    /// Verify a compact JWT.
    pub fn verify(&self, token: &str) -> Result<VerifiedClaims> {
        if token.len() > 16 * 1024 {
            return Err(unauthenticated("the bearer token is too large"));
        }
        if token.is_empty() {
            return Err(VeilError::Unauthenticated(
                "the bearer token is empty: send 'authorization: Bearer <JWT>' with a token from your identity provider (is VEIL_TOKEN set? `veil token --user NAME` prints a development token)".into(),
            ));
        }
        if token
            .get(..7)
            .is_some_and(|b| b.eq_ignore_ascii_case("bearer "))
        {
            return Err(VeilError::Unauthenticated(
                "the token starts with 'Bearer ' a second time: clients add that word themselves, so set VEIL_TOKEN (or token=) to the JWT alone".into(),
            ));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            unauthenticated("the bearer token is not a well-formed JWT with a supported algorithm")
        })?;
        let candidates: Vec<&PinnedKey> = self
            .keys
            .iter()
            .filter(|k| k.algorithm == header.alg)
            .filter(|k| match (&k.kid, &header.kid) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(unauthenticated(
                "no configured key accepts this token's algorithm and key id",
            ));
        }
        // With several keys, the one that verified the signature tells why
        // the token is refused (expired, another audience, ...); the
        // others only that they didn't sign it.
        let mut last_err = String::from("signature does not verify");
        let mut signed = false;
        for key in candidates {
            let mut v = Validation::new(key.algorithm);
            v.set_issuer(&[&key.issuer]);
            v.set_audience(&[&self.audience]);
            v.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
            v.leeway = self.leeway_secs;
            v.validate_nbf = true;
            match jsonwebtoken::decode::<BTreeMap<String, Value>>(token, &key.key, &v) {
                Ok(data) => return self.claims(&key.issuer, data.claims),
                Err(_) if signed => {}
                Err(e) => {
                    signed = !matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature);
                    last_err = describe(&e);
                }
            }
        }
        Err(unauthenticated(&last_err))
    }

    fn claims(&self, issuer: &str, claims: BTreeMap<String, Value>) -> Result<VerifiedClaims> {
        // RFC 7519: `iss` is one StringOrURI. jsonwebtoken also takes a
        // list and passes it when any entry is trusted; a token claiming
        // several issuers is refused.
        if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
            return Err(unauthenticated(
                "the token's iss claim must be one string, the trusted issuer",
            ));
        }
        let num = |k: &str| claims.get(k).and_then(Value::as_i64);
        let (Some(iat), Some(exp)) = (num("iat"), num("exp")) else {
            return Err(unauthenticated("the token's iat and exp must be numbers"));
        };
        // Checked: an `exp` near i64::MAX with a negative `iat` must not
        // wrap below the limit (or panic).
        let lifetime = exp.checked_sub(iat).unwrap_or(i64::MAX);
        if lifetime > i64::try_from(self.max_lifetime_secs).unwrap_or(i64::MAX) {
            return Err(unauthenticated(&format!(
                "the token lives longer than the allowed {} seconds (exp - iat)",
                self.max_lifetime_secs
            )));
        }
        let now = chrono::Utc::now().timestamp();
        if iat > now.saturating_add(i64::try_from(self.leeway_secs).unwrap_or(i64::MAX)) {
            return Err(unauthenticated("the token was issued in the future"));
        }
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if subject.is_empty() || subject.len() > 256 {
            return Err(unauthenticated("the token's subject is empty or too long"));
        }
        let groups = match claims.get(&self.groups_claim) {
            None | Some(Value::Null) => BTreeSet::new(),
            Some(Value::String(s)) => BTreeSet::from([s.clone()]),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    unauthenticated(&format!(
                        "claim '{}' must be a list of strings",
                        self.groups_claim
                    ))
                })?,
            Some(_) => {
                return Err(unauthenticated(&format!(
                    "claim '{}' must be a list of strings",
                    self.groups_claim
                )));
            }
        };
        let mut attributes = Attributes::new();
        match claims.get(&self.attributes_claim) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let values: Option<BTreeSet<String>> = match v {
                        Value::String(s) => Some(BTreeSet::from([s.clone()])),
                        Value::Array(a) => {
                            a.iter().map(|x| x.as_str().map(str::to_string)).collect()
                        }
                        _ => None,
                    };
                    let values = values.ok_or_else(|| {
                        unauthenticated(&format!(
                            "attribute '{k}' in claim '{}' must be a string or a list of strings",
                            self.attributes_claim
                        ))
                    })?;
                    attributes.insert(k.clone(), values);
                }
            }
            Some(_) => {
                return Err(unauthenticated(&format!(
                    "claim '{}' must be an object",
                    self.attributes_claim
                )));
            }
        }
        Ok(VerifiedClaims {
            identity: Identity::new(issuer, subject),
            asserted: AssertedClaims { groups, attributes },
        })
    }
}

fn describe(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "the token has expired".into(),
        K::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        K::InvalidAudience => "the token is for another audience".into(),
        K::InvalidIssuer => "the token's issuer is not trusted".into(),
        K::InvalidSignature => {
            "the token's signature does not verify: another key signed it (a development token must come from `veil token` with the --data-dir or --config of the server you connect to)".into()
        }
        K::MissingRequiredClaim(c) => format!("the token lacks the required claim '{c}'"),
        _ => "the token is invalid".into(),
    }
}

fn load_key(k: &KeyConfig, base: &Path) -> Result<Vec<PinnedKey>> {
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    if let Some(jwks) = &k.jwks_file {
        let text = read(&resolve(jwks), "JWKS file")?;
        let set: JwkSet = serde_json::from_slice(&text).map_err(|e| {
            VeilError::FailedPrecondition(format!("JWKS file {} is not valid: {e}", jwks.display()))
        })?;
        let mut out = Vec::new();
        for jwk in &set.keys {
            let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
                (Some(KeyAlgorithm::RS256), AlgorithmParameters::RSA(_)) => Algorithm::RS256,
                (Some(KeyAlgorithm::ES256), AlgorithmParameters::EllipticCurve(_)) => {
                    Algorithm::ES256
                }
                (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
                (None, AlgorithmParameters::EllipticCurve(p)) if p.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                _ => {
                    tracing::warn!(kid = ?jwk.common.key_id, "skipping a JWKS key: only RS256 and ES256 (P-256) keys are used");
                    continue;
                }
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| {
                VeilError::FailedPrecondition(format!(
                    "JWKS key {:?} is unusable: {e}",
                    jwk.common.key_id
                ))
            })?;
            out.push(PinnedKey {
                issuer: k.issuer.clone(),
                algorithm,
                kid: jwk.common.key_id.clone(),
                key,
            });
        }
        return Ok(out);
    }
    let algorithm = parse_algorithm(k.algorithm.as_deref().unwrap_or(""))?;
    let key = match algorithm {
        Algorithm::HS256 => {
            let path = k.secret_file.as_ref().ok_or_else(|| {
                VeilError::FailedPrecondition("an HS256 key needs `secret_file`".into())
            })?;
            let secret = read(&resolve(path), "HS256 secret file")?;
            let secret = trim_ascii(&secret);
            if secret.len() < 32 {
                return Err(VeilError::FailedPrecondition(
                    "an HS256 secret must be at least 32 bytes".into(),
                ));
            }
            DecodingKey::from_secret(secret)
        }
        Algorithm::RS256 | Algorithm::ES256 => {
            let path = k.public_key_file.as_ref().ok_or_else(|| {
                VeilError::FailedPrecondition(format!(
                    "an {algorithm:?} key needs `public_key_file` (PEM)"
                ))
            })?;
            let pem = read(&resolve(path), "public key file")?;
            let parsed = if algorithm == Algorithm::RS256 {
                DecodingKey::from_rsa_pem(&pem)
            } else {
                DecodingKey::from_ec_pem(&pem)
            };
            parsed.map_err(|e| {
                VeilError::FailedPrecondition(format!(
                    "public key {} is not a valid PEM key: {e}",
                    path.display()
                ))
            })?
        }
        _ => unreachable!("parse_algorithm only returns HS256, RS256, ES256"),
    };
    Ok(vec![PinnedKey {
        issuer: k.issuer.clone(),
        algorithm,
        kid: k.kid.clone(),
        key,
    }])
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

/// Mints development tokens with the first configured HS256 key (`veil token`).
#[derive(Debug)]
pub struct TokenMinter {
    issuer: String,
    audience: String,
    max_lifetime_secs: u64,
    groups_claim: String,
    attributes_claim: String,
    secret: Vec<u8>,
}

impl TokenMinter {
    pub fn from_config(cfg: &AuthConfig, base: &Path) -> Result<Self> {
        let k = cfg
            .keys
            .iter()
            .find(|k| k.algorithm.as_deref().is_some_and(|a| a.eq_ignore_ascii_case("HS256")))
            .ok_or_else(|| {
                VeilError::FailedPrecondition(
                    "`veil token` needs an HS256 key in [[auth.keys]]; tokens for RS256/ES256 come from your identity provider".into(),
                )
            })?;
        let path = k.secret_file.as_ref().ok_or_else(|| {
            VeilError::FailedPrecondition("an HS256 key needs `secret_file`".into())
        })?;
        let path = if path.is_absolute() {
            path.clone()
        } else {
            base.join(path)
        };
        Ok(Self {
            issuer: k.issuer.clone(),
            audience: cfg.audience.clone(),
            max_lifetime_secs: cfg.max_token_lifetime_secs,
            groups_claim: cfg.groups_claim.clone(),
            attributes_claim: cfg.attributes_claim.clone(),
            secret: trim_ascii(&read(&path, "HS256 secret file")?).to_vec(),
        })
    }

    /// The issuer minted tokens carry.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn mint(
        &self,
        subject: &str,
        groups: &[String],
        attributes: &Attributes,
        ttl_secs: u64,
    ) -> Result<String> {
        if ttl_secs == 0 || ttl_secs > self.max_lifetime_secs {
            return Err(VeilError::InvalidArgument(format!(
                "--ttl must be between 1 and {} seconds",
                self.max_lifetime_secs
            )));
        }
        let now = chrono::Utc::now().timestamp();
        let mut claims = serde_json::Map::new();
        claims.insert("iss".into(), self.issuer.clone().into());
        claims.insert("sub".into(), subject.into());
        claims.insert("aud".into(), self.audience.clone().into());
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), (now + ttl_secs as i64).into());
        if !groups.is_empty() {
            claims.insert(self.groups_claim.clone(), groups.to_vec().into());
        }
        if !attributes.is_empty() {
            let attrs: serde_json::Map<String, Value> = attributes
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        Value::from(v.iter().cloned().collect::<Vec<_>>()),
                    )
                })
                .collect();
            claims.insert(self.attributes_claim.clone(), attrs.into());
        }
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.secret),
        )
        .map_err(|e| VeilError::internal("cannot sign token", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthConfig;
    use base64::Engine;

    fn setup() -> (tempfile::TempDir, TokenVerifier, TokenMinter) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s"), "0123456789abcdef0123456789abcdef").unwrap();
        let cfg: AuthConfig = toml::from_str(
            "audience = \"veil\"\n[[keys]]\nissuer = \"iss\"\nalgorithm = \"HS256\"\nsecret_file = \"s\"",
        )
        .unwrap();
        let v = TokenVerifier::from_config(&cfg, dir.path()).unwrap();
        let m = TokenMinter::from_config(&cfg, dir.path()).unwrap();
        (dir, v, m)
    }

    #[test]
    fn minted_tokens_verify_with_groups_and_attributes() {
        let (_d, v, m) = setup();
        let mut attrs = Attributes::new();
        attrs.insert("state".into(), ["CA".to_string(), "NY".to_string()].into());
        let t = m.mint("alice", &["analysts".into()], &attrs, 60).unwrap();
        let c = v.verify(&t).unwrap();
        assert_eq!(c.identity, Identity::new("iss", "alice"));
        assert!(c.asserted.groups.contains("analysts"));
        assert_eq!(c.asserted.attributes["state"].len(), 2);
    }

    /// With several keys of one algorithm, a token refused for its claims
    /// says why, not that another key didn't sign it (found by an
    /// outside review).
    #[test]
    fn with_several_keys_the_signing_key_says_why() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "0123456789abcdef0123456789abcdef").unwrap();
        std::fs::write(dir.path().join("b"), "fedcba9876543210fedcba9876543210").unwrap();
        let keys = |audience: &str, issuers: &[&str]| -> AuthConfig {
            let mut text = format!("audience = \"{audience}\"\n");
            for i in issuers {
                text.push_str(&format!(
                    "[[keys]]\nissuer = \"{i}\"\nalgorithm = \"HS256\"\nsecret_file = \"{i}\"\n"
                ));
            }
            toml::from_str(&text).unwrap()
        };
        let v = TokenVerifier::from_config(&keys("veil", &["b", "a"]), dir.path()).unwrap();
        let elsewhere = TokenMinter::from_config(&keys("another", &["b"]), dir.path())
            .unwrap()
            .mint("ann", &[], &Attributes::new(), 60)
            .unwrap();
        match v.verify(&elsewhere) {
            Err(VeilError::Unauthenticated(m)) => assert!(m.contains("another audience"), "{m}"),
            other => panic!("{other:?}"),
        }
        let fine = TokenMinter::from_config(&keys("veil", &["a"]), dir.path())
            .unwrap()
            .mint("ann", &[], &Attributes::new(), 60)
            .unwrap();
        assert_eq!(v.verify(&fine).unwrap().identity, Identity::new("a", "ann"));
    }

    #[test]
    fn alg_none_and_tampering_are_rejected() {
        let (_d, v, m) = setup();
        let t = m.mint("alice", &[], &Attributes::new(), 60).unwrap();
        let parts: Vec<&str> = t.split('.').collect();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none_header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let forged = format!("{none_header}.{}.", parts[1]);
        assert!(matches!(
            v.verify(&forged),
            Err(VeilError::Unauthenticated(_))
        ));
        let payload = String::from_utf8(b64.decode(parts[1]).unwrap())
            .unwrap()
            .replace("alice", "bobby");
        let tampered = format!("{}.{}.{}", parts[0], b64.encode(payload), parts[2]);
        assert!(matches!(
            v.verify(&tampered),
            Err(VeilError::Unauthenticated(_))
        ));
        assert!(matches!(
            v.verify("garbage"),
            Err(VeilError::Unauthenticated(_))
        ));
        // No token at all says so, and what to send.
        match v.verify("") {
            Err(VeilError::Unauthenticated(m)) => {
                assert!(m.contains("empty") && m.contains("VEIL_TOKEN"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        // Common mistakes say what to change: the header's word twice, a
        // token another server's key signed.
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("s"), "another key, for another server!").unwrap();
        let cfg: AuthConfig = toml::from_str(
            "audience = \"veil\"\n[[keys]]\nissuer = \"iss\"\nalgorithm = \"HS256\"\nsecret_file = \"s\"",
        )
        .unwrap();
        let foreign = TokenMinter::from_config(&cfg, other.path())
            .unwrap()
            .mint("alice", &[], &Attributes::new(), 60)
            .unwrap();
        let mistakes = [
            (format!("Bearer {t}"), "a second time"),
            (foreign, "another key signed it"),
        ];
        for (token, says) in mistakes {
            match v.verify(&token) {
                Err(VeilError::Unauthenticated(m)) => assert!(m.contains(says), "{m}"),
                other => panic!("{other:?}"),
            }
        }
    }

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    fn claims(sub: &str) -> serde_json::Value {
        let now = chrono::Utc::now().timestamp();
        serde_json::json!({"iss": "idp", "sub": sub, "aud": "veil", "iat": now, "exp": now + 60, "groups": ["g"]})
    }

    fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, sub: &str) -> String {
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&h, &claims(sub), key).unwrap()
    }

    fn verifier(keys: &str) -> TokenVerifier {
        let cfg: AuthConfig = toml::from_str(&format!("audience = \"veil\"\n{keys}")).unwrap();
        TokenVerifier::from_config(&cfg, &fixture("")).unwrap()
    }

    #[test]
    fn rs256_and_es256_pem_keys_verify_and_are_pinned() {
        let v = verifier(
            "[[keys]]\nissuer = \"idp\"\nalgorithm = \"RS256\"\npublic_key_file = \"rsa_public.pem\"\n\
             [[keys]]\nissuer = \"idp\"\nalgorithm = \"ES256\"\npublic_key_file = \"ec_public.pem\"",
        );
        let rsa =
            EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa_private.pem")).unwrap()).unwrap();
        let ec =
            EncodingKey::from_ec_pem(&std::fs::read(fixture("ec_private.pem")).unwrap()).unwrap();
        assert_eq!(
            v.verify(&sign(Algorithm::RS256, None, &rsa, "r"))
                .unwrap()
                .identity
                .subject,
            "r"
        );
        assert!(
            v.verify(&sign(Algorithm::ES256, None, &ec, "e"))
                .unwrap()
                .asserted
                .groups
                .contains("g")
        );
        // Key confusion: the RSA public key used as an HMAC secret.
        let public = std::fs::read(fixture("rsa_public.pem")).unwrap();
        let confused = sign(
            Algorithm::HS256,
            None,
            &EncodingKey::from_secret(&public),
            "x",
        );
        assert!(matches!(
            v.verify(&confused),
            Err(VeilError::Unauthenticated(_))
        ));
        // A different issuer than the key is pinned to.
        let mut c = claims("x");
        c["iss"] = "other".into();
        let t = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &c, &rsa).unwrap();
        assert!(v.verify(&t).is_err());
        // Several issuers, the trusted one among them: refused (iss is one
        // string).
        c["iss"] = serde_json::json!(["idp", "other"]);
        let t = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &c, &rsa).unwrap();
        assert!(v.verify(&t).is_err());
        c["iss"] = serde_json::json!(["idp"]);
        let t = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &c, &rsa).unwrap();
        let e = v.verify(&t).unwrap_err().to_string();
        assert!(e.contains("iss claim must be one string"), "{e}");
    }

    #[test]
    fn jwks_keys_are_selected_by_kid_and_type() {
        let v = verifier("[[keys]]\nissuer = \"idp\"\njwks_file = \"jwks.json\"");
        let rsa =
            EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa_private.pem")).unwrap()).unwrap();
        let ec =
            EncodingKey::from_ec_pem(&std::fs::read(fixture("ec_private.pem")).unwrap()).unwrap();
        assert!(
            v.verify(&sign(Algorithm::RS256, Some("rsa-1"), &rsa, "a"))
                .is_ok()
        );
        assert!(
            v.verify(&sign(Algorithm::ES256, Some("ec-1"), &ec, "b"))
                .is_ok()
        );
        assert!(
            v.verify(&sign(Algorithm::RS256, Some("ec-1"), &rsa, "c"))
                .is_err(),
            "kid of another key"
        );
        assert!(
            v.verify(&sign(Algorithm::RS256, Some("unknown"), &rsa, "d"))
                .is_err()
        );
    }

    #[test]
    fn a_lifetime_that_would_overflow_is_refused() {
        let v = verifier(
            "[[keys]]\nissuer = \"idp\"\nalgorithm = \"RS256\"\npublic_key_file = \"rsa_public.pem\"",
        );
        let rsa =
            EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa_private.pem")).unwrap()).unwrap();
        for (iat, exp) in [(-1000, i64::MAX), (i64::MIN, 0), (i64::MIN, i64::MAX)] {
            let claims = serde_json::json!({"iss": "idp", "sub": "a", "aud": "veil", "iat": iat, "exp": exp});
            let token =
                jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &rsa).unwrap();
            assert!(v.verify(&token).is_err(), "iat {iat}, exp {exp}");
        }
    }

    #[test]
    fn ttl_is_bounded_by_the_maximum_lifetime() {
        let (_d, _v, m) = setup();
        assert!(m.mint("a", &[], &Attributes::new(), 10 * 86400).is_err());
    }
}
