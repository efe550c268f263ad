//! Turning a bearer token into a [`Principal`]: verify the token, keep the
//! claims its issuer is trusted for, then merge them with Veil's directory
//! (groups, attributes, permissions, disabled users). Transport-agnostic;
//! the Flight layer calls it from a tower layer so no handler can skip it.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use super::claim_trust::{AdmittedClaims, AssertedClaims, ClaimSource, ClaimSources, IssuerTrust};
use super::jwt::TokenVerifier;
use crate::audit::AuditEventExt;
use crate::audit::auth_failures::AuthFailureAudit;
use crate::catalog::state::StateCache;
use crate::error::{Result, VeilError};
use crate::model::audit::AuditEvent;
use crate::model::identity::{ClientInfo, Identity, Principal};
use crate::model::snapshot::Snapshot;
use crate::secrets::SecretKey;

#[derive(Debug)]
pub struct Authenticator {
    /// Replaced whole on reload (key rotation); a call uses the one it read.
    verifier: RwLock<Arc<TokenVerifier>>,
    state: Arc<StateCache>,
    fingerprint_key: SecretKey,
    failures: Arc<AuthFailureAudit>,
}

impl Authenticator {
    pub fn new(
        verifier: TokenVerifier,
        state: Arc<StateCache>,
        fingerprint_key: SecretKey,
        failures: Arc<AuthFailureAudit>,
    ) -> Self {
        Self {
            verifier: RwLock::new(Arc::new(verifier)),
            state,
            fingerprint_key,
            failures,
        }
    }

    /// Use `verifier` for every call from now on.
    pub fn set_verifier(&self, verifier: TokenVerifier) {
        let mut guard = self
            .verifier
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = Arc::new(verifier);
    }

    /// Weigh `asserted` against the trust of `source`'s issuer, as a token
    /// from it would be (explain uses this for its hypothetical claims).
    pub fn admit(&self, source: ClaimSource, asserted: AssertedClaims) -> AdmittedClaims {
        self.verifier().trust().admit(source, asserted)
    }

    /// `claims` merged with the directory as for a call by `identity`
    /// (explain's hypothetical principal), fingerprinted with the real key
    /// so no stand-in key is ever needed; the fingerprint is not shown.
    pub fn merge_with_directory(
        &self,
        snapshot: &Snapshot,
        identity: Identity,
        claims: AdmittedClaims,
    ) -> MergedPrincipal {
        merge_with_directory(
            snapshot,
            identity,
            claims,
            &self.fingerprint_key,
            ClientInfo::default(),
        )
    }

    fn verifier(&self) -> Arc<TokenVerifier> {
        Arc::clone(
            &self
                .verifier
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Authenticate the value of an `authorization` header. Failures are
    /// audited, repeats aggregated per window ([`AuthFailureAudit`]); if a
    /// failure's own record can't be written, the answer is `Unavailable`.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        client: ClientInfo,
    ) -> Result<Authenticated> {
        match self.resolve(authorization, client.clone()).await {
            Ok(a) => Ok(a),
            Err(e) => {
                let mut event = AuditEvent::new("auth.failure", None).failed(&e);
                event.client_address = client.address;
                event.user_agent = client.user_agent;
                self.failures.record(event).await?;
                Err(e)
            }
        }
    }

    async fn resolve(
        &self,
        authorization: Option<&str>,
        client: ClientInfo,
    ) -> Result<Authenticated> {
        let header = authorization.ok_or_else(|| {
            VeilError::Unauthenticated(
                "no credentials: send 'authorization: Bearer <JWT>' (get a development token with `veil token --user NAME`)".into(),
            )
        })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| {
                VeilError::Unauthenticated(
                    if header.get(..6).is_some_and(|b| b.eq_ignore_ascii_case("basic ")) {
                        "Veil takes a token, not a user name and password: send 'authorization: Bearer <JWT>' (JDBC: token=<JWT> in the URL; ADBC: the adbc.flight.sql.authorization_header option; get a development token with `veil token --user NAME`)"
                    } else {
                        "the authorization header must be 'Bearer <JWT>'"
                    }
                    .into(),
                )
            })?;
        let verifier = self.verifier();
        let claims = verifier.verify(token.trim())?;
        let snapshot = self.state.current().await?;
        if snapshot.disabled.contains(&claims.identity) {
            return Err(VeilError::PermissionDenied(
                "this user is disabled in Veil's directory; ask a user administrator".into(),
            ));
        }
        let source = ClaimSource::Token {
            issuer: claims.identity.issuer.clone(),
        };
        let admitted = verifier.trust().admit(source, claims.asserted);
        let merged = merge_with_directory(
            &snapshot,
            claims.identity,
            admitted,
            &self.fingerprint_key,
            client,
        );
        if !merged.ignored.is_empty() {
            // Counts only: the values are the caller's to see (explain), and
            // a log is no place for them.
            tracing::debug!(
                issuer = %merged.principal.identity.issuer,
                groups = merged.ignored.groups.len(),
                attributes = merged.ignored.attributes.len(),
                "ignored token claims the issuer is not trusted for"
            );
        }
        Ok(Authenticated {
            principal: Arc::new(merged.principal),
            snapshot,
        })
    }
}

/// A verified caller and the state they were verified at. The request's
/// scope is built from both, so one call reads the state once and is
/// decided at one version.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub principal: Arc<Principal>,
    pub snapshot: Arc<Snapshot>,
}

/// A principal, where each of its groups and attribute values came from,
/// and what its token asserted that was not believed.
#[derive(Debug, Clone)]
pub struct MergedPrincipal {
    /// Built from trusted claims and the directory only, so its fingerprint
    /// (and the tickets and caches keyed by it) never depends on an ignored
    /// claim.
    pub principal: Principal,
    pub sources: ClaimSources,
    /// The trust of the claims' issuer.
    pub trust: IssuerTrust,
    /// Claims the issuer isn't trusted for, as asserted.
    pub ignored: AssertedClaims,
}

/// A principal from admitted claims plus Veil's directory: the directory's
/// groups and attribute values are added, permissions come from grants.
pub fn merge_with_directory(
    snapshot: &Snapshot,
    identity: Identity,
    claims: AdmittedClaims,
    fingerprint_key: &SecretKey,
    client: ClientInfo,
) -> MergedPrincipal {
    let mut sources = ClaimSources::default();
    sources.add(&claims.source, &claims.groups, &claims.attributes);
    let AdmittedClaims {
        trust,
        mut groups,
        mut attributes,
        ignored,
        ..
    } = claims;
    if let Some(u) = snapshot.users.get(&identity) {
        sources.add(&ClaimSource::Directory, &u.groups, &u.attributes);
        groups.extend(u.groups.iter().cloned());
        for (k, vs) in &u.attributes {
            attributes
                .entry(k.clone())
                .or_default()
                .extend(vs.iter().cloned());
        }
    }
    let permissions: BTreeSet<_> = snapshot
        .grants
        .get(&identity)
        .map(|g| g.keys().copied().collect())
        .unwrap_or_default();
    MergedPrincipal {
        principal: crate::auth::identity::principal(
            identity,
            groups,
            attributes,
            permissions,
            fingerprint_key,
            client,
        ),
        sources,
        trust,
        ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthConfig;
    use crate::model::identity::{Attributes, UserRecord};
    use crate::secrets::{KeyPurpose, MasterKey};

    fn trust(issuers: &str) -> crate::auth::claim_trust::ClaimTrust {
        let cfg: AuthConfig = toml::from_str(&format!(
            "audience = \"veil\"\n\
             [[keys]]\nissuer = \"dev\"\nalgorithm = \"HS256\"\nsecret_file = \"s\"\n\
             [[keys]]\nissuer = \"idp\"\nalgorithm = \"HS256\"\nsecret_file = \"t\"\n{issuers}"
        ))
        .unwrap();
        crate::auth::claim_trust::ClaimTrust::from_config(&cfg).unwrap()
    }

    /// alice of `dev` is an analyst in CA in the directory.
    fn directory() -> Snapshot {
        let mut s = Snapshot::default();
        let mut attributes = Attributes::new();
        attributes.insert("state".into(), BTreeSet::from(["CA".to_string()]));
        s.users.insert(
            Identity::new("dev", "alice"),
            UserRecord {
                groups: BTreeSet::from(["analysts".to_string()]),
                attributes,
            },
        );
        s
    }

    fn claims(groups: &[&str], attrs: &[(&str, &str)]) -> AssertedClaims {
        let mut a = AssertedClaims {
            groups: groups.iter().map(|g| g.to_string()).collect(),
            attributes: Attributes::new(),
        };
        for (k, v) in attrs {
            a.attributes
                .entry(k.to_string())
                .or_default()
                .insert(v.to_string());
        }
        a
    }

    fn merge(
        trust: &crate::auth::claim_trust::ClaimTrust,
        issuer: &str,
        asserted: AssertedClaims,
    ) -> MergedPrincipal {
        let key = MasterKey::from_bytes([7; 32]).derive(KeyPurpose::Fingerprint);
        let source = ClaimSource::Token {
            issuer: issuer.into(),
        };
        merge_with_directory(
            &directory(),
            Identity::new(issuer, "alice"),
            trust.admit(source, asserted),
            &key,
            ClientInfo::default(),
        )
    }

    #[test]
    fn untrusted_claims_change_neither_the_principal_nor_its_fingerprint() {
        let t = trust("");
        let bare = merge(&t, "dev", AssertedClaims::default());
        let claimed = merge(&t, "dev", claims(&["privileged"], &[("state", "NY")]));
        assert_eq!(claimed.principal.groups, bare.principal.groups);
        assert_eq!(claimed.principal.attributes, bare.principal.attributes);
        assert_eq!(claimed.principal.fingerprint, bare.principal.fingerprint);
        assert!(
            claimed.principal.in_group("analysts"),
            "the directory still counts"
        );
        assert!(!claimed.principal.in_group("privileged"));
        assert_eq!(claimed.ignored, claims(&["privileged"], &[("state", "NY")]));
    }

    #[test]
    fn sources_name_the_directory_and_the_trusted_issuer() {
        let t = trust(
            "[[issuers]]\nissuer = \"dev\"\ntrust_claims = \"groups_and_attributes\"\n\
             [[issuers]]\nissuer = \"idp\"\ntrust_claims = \"groups\"\ngroup_prefix = \"idp:\"\n",
        );
        let dev = ClaimSource::Token {
            issuer: "dev".into(),
        };
        let m = merge(
            &t,
            "dev",
            claims(&["analysts", "privileged"], &[("state", "NY")]),
        );
        assert_eq!(
            m.sources.groups["analysts"],
            BTreeSet::from([ClaimSource::Directory, dev.clone()])
        );
        assert_eq!(
            m.sources.groups["privileged"],
            BTreeSet::from([dev.clone()])
        );
        assert_eq!(
            m.sources.attributes["state"]["CA"],
            BTreeSet::from([ClaimSource::Directory])
        );
        assert_eq!(m.sources.attributes["state"]["NY"], BTreeSet::from([dev]));
        assert!(m.ignored.is_empty());
        // Trusted claims do count in the fingerprint.
        assert_ne!(
            m.principal.fingerprint,
            merge(&t, "dev", AssertedClaims::default())
                .principal
                .fingerprint
        );

        // Another issuer: prefixed groups, its attributes ignored, and
        // alice of `idp` is not alice of `dev` (no directory entry).
        let m = merge(&t, "idp", claims(&["analysts"], &[("state", "NY")]));
        assert_eq!(
            m.principal.groups,
            BTreeSet::from(["idp:analysts".to_string()])
        );
        assert!(m.principal.attributes.is_empty());
        assert_eq!(m.ignored.attributes.len(), 1);
        assert_eq!(m.trust.group_prefix, "idp:");
    }
}
