//! Turning a bearer token into a [`Principal`]: verify the token, then merge
//! its claims with Veil's directory (groups, attributes, permissions,
//! disabled users). Transport-agnostic; the Flight layer calls it from a
//! tower layer so no handler can skip it.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use super::identity::{Attributes, ClientInfo, Identity, Principal};
use super::jwt::TokenVerifier;
use crate::audit::{AuditEvent, AuditLog};
use crate::catalog::state::StateCache;
use crate::error::{Result, VeilError};
use crate::secrets::SecretKey;
use crate::store::model::Snapshot;

#[derive(Debug)]
pub struct Authenticator {
    /// Replaced whole on reload (key rotation); a call uses the one it read.
    verifier: RwLock<Arc<TokenVerifier>>,
    state: Arc<StateCache>,
    fingerprint_key: SecretKey,
    audit: AuditLog,
}

impl Authenticator {
    pub fn new(
        verifier: TokenVerifier,
        state: Arc<StateCache>,
        fingerprint_key: SecretKey,
        audit: AuditLog,
    ) -> Self {
        Self {
            verifier: RwLock::new(Arc::new(verifier)),
            state,
            fingerprint_key,
            audit,
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

    fn verifier(&self) -> Arc<TokenVerifier> {
        Arc::clone(
            &self
                .verifier
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Authenticate the value of an `authorization` header. Failures are
    /// audited (and if that fails, the answer is `Unavailable`).
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        client: ClientInfo,
    ) -> Result<Principal> {
        match self.resolve(authorization, client.clone()).await {
            Ok(p) => Ok(p),
            Err(e) => {
                let mut event = AuditEvent::new("auth.failure", None).failed(&e);
                event.client_address = client.address;
                event.user_agent = client.user_agent;
                self.audit.record(event).await?;
                Err(e)
            }
        }
    }

    async fn resolve(&self, authorization: Option<&str>, client: ClientInfo) -> Result<Principal> {
        let header = authorization.ok_or_else(|| {
            VeilError::Unauthenticated(
                "no credentials: send 'authorization: Bearer <JWT>' (get a development token with `veil token --user NAME`)".into(),
            )
        })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| {
                VeilError::Unauthenticated("the authorization header must be 'Bearer <JWT>'".into())
            })?;
        let claims = self.verifier().verify(token.trim())?;
        let snapshot = self.state.current().await?;
        if snapshot.disabled.contains(&claims.identity) {
            return Err(VeilError::PermissionDenied(
                "this user is disabled in Veil's directory; ask a user administrator".into(),
            ));
        }
        Ok(merge_with_directory(
            &snapshot,
            claims.identity,
            claims.groups,
            claims.attributes,
            &self.fingerprint_key,
            client,
        ))
    }
}

/// A principal from token claims plus Veil's directory: the directory's
/// groups and attribute values are added, permissions come from grants.
pub fn merge_with_directory(
    snapshot: &Snapshot,
    identity: Identity,
    mut groups: BTreeSet<String>,
    mut attributes: Attributes,
    fingerprint_key: &SecretKey,
    client: ClientInfo,
) -> Principal {
    if let Some(u) = snapshot.users.get(&identity) {
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
    Principal::new(
        identity,
        groups,
        attributes,
        permissions,
        fingerprint_key,
        client,
    )
}
