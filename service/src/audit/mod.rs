//! The audit sink: every read, denial and admin action becomes an
//! [`AuditEvent`] appended to the store *before* the action takes effect or
//! data leaves (DESIGN invariant 6). If the append fails, the action fails
//! with `Unavailable`: Veil never serves what it could not record.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::auth::identity::Principal;
use crate::error::{Result, VeilError};
use crate::secrets::encode_hex;
use crate::store::Store;

/// One audited action.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Assigned by the store on append.
    #[serde(default)]
    pub seq: Option<u64>,
    pub event_id: String,
    pub time_ms: i64,
    pub node_id: String,
    /// `auth.failure`, `list`, `plan`, `read.start`, `read.end`, `describe`,
    /// `admin.<action>`, ...
    pub action: String,
    pub issuer: String,
    pub subject: String,
    /// First 16 hex characters of the caller's identity fingerprint.
    pub identity_fingerprint: String,
    pub client_address: String,
    pub user_agent: String,
    /// Purpose or project acted under (empty until projects exist).
    pub purpose: String,
    pub dataset: Option<String>,
    pub columns: Vec<String>,
    /// `policy-id@version` of every policy applied.
    pub policies: Vec<String>,
    pub masked_columns: Vec<String>,
    pub rows_filtered: bool,
    pub rows: Option<u64>,
    pub bytes: Option<u64>,
    pub duration_ms: Option<u64>,
    /// `ok` or the error kind (`not_found`, `permission_denied`, ...).
    pub status: String,
    /// Sanitized message: never literal values, never secrets.
    pub message: String,
    /// Digest of the request with literals removed.
    pub query_fingerprint: String,
}

impl AuditEvent {
    /// An event for `action` by `principal` (or an anonymous caller).
    pub fn new(action: &str, principal: Option<&Principal>) -> Self {
        let mut e = AuditEvent {
            event_id: uuid::Uuid::new_v4().to_string(),
            time_ms: chrono::Utc::now().timestamp_millis(),
            action: action.to_string(),
            status: "ok".to_string(),
            ..Default::default()
        };
        if let Some(p) = principal {
            e.issuer = p.identity.issuer.clone();
            e.subject = p.identity.subject.clone();
            e.identity_fingerprint = encode_hex(&p.fingerprint[..8]);
            e.client_address = p.client.address.clone();
            e.user_agent = p.client.user_agent.clone();
        }
        e
    }

    pub fn dataset(mut self, name: &str) -> Self {
        self.dataset = Some(name.to_string());
        self
    }

    /// The same action, failed. A fresh event id: the attempt itself may
    /// already be recorded.
    pub fn failed(mut self, err: &VeilError) -> Self {
        self.event_id = uuid::Uuid::new_v4().to_string();
        self.status = err.kind().to_string();
        self.message = err.message();
        self
    }
}

/// Appends events to the store, failing closed.
#[derive(Debug, Clone)]
pub struct AuditLog {
    store: Arc<dyn Store>,
    node_id: String,
}

impl AuditLog {
    pub fn new(store: Arc<dyn Store>, node_id: impl Into<String>) -> Self {
        Self {
            store,
            node_id: node_id.into(),
        }
    }

    /// Record durably, or fail with `Unavailable`.
    pub async fn record(&self, mut event: AuditEvent) -> Result<()> {
        event.node_id = self.node_id.clone();
        self.store.append_audit(std::slice::from_ref(&event)).await.map_err(|e| {
            tracing::error!(error = %e, action = %event.action, "audit append failed; refusing the action");
            VeilError::Unavailable(
                "the audit log cannot be written, so Veil is not serving this request; retry later or ask an administrator to check the store".into(),
            )
        })
    }

    pub async fn tail(&self, limit: usize) -> Result<Vec<AuditEvent>> {
        self.store.tail_audit(limit).await
    }
}

/// A digest of a request's shape. Literals are replaced before hashing, so
/// two queries differing only in constants share a fingerprint, and no
/// value appears in the audit.
pub fn query_fingerprint(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut shape = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                // quoted literal or identifier: drop its contents
                for d in chars.by_ref() {
                    if d == c {
                        break;
                    }
                }
                shape.push('?');
            }
            c if c.is_ascii_digit() => {
                while chars
                    .peek()
                    .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '.')
                {
                    chars.next();
                }
                shape.push('?');
            }
            c if c.is_whitespace() => {
                if !shape.ends_with(' ') {
                    shape.push(' ');
                }
            }
            c => shape.push(c.to_ascii_lowercase()),
        }
    }
    encode_hex(&Sha256::digest(shape.trim().as_bytes())[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_ignore_literals_and_spacing() {
        assert_eq!(
            query_fingerprint("SELECT * FROM t WHERE ssn = '123-45-6789' AND age > 30"),
            query_fingerprint("select *  from t where ssn = 'x' and age > 99")
        );
        assert_ne!(
            query_fingerprint("SELECT a FROM t"),
            query_fingerprint("SELECT b FROM t")
        );
    }
}
