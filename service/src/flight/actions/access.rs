//! Access requests for *on request* datasets: request, approve, deny, list,
//! revoke.
//!
//! Approvers are named by each on-request subscription policy on the
//! dataset (`approvers = { groups = [...], users = [...] }`; the dataset's
//! owners when a policy names none); with several such policies an approver
//! must be one for each. Nobody approves their own request. An approval
//! moves the state version, so it applies from the requester's next call; a
//! revocation does too, and the requester's next `DoGet` is refused even on
//! a ticket issued before.

use std::sync::Arc;

use veil_proto::{
    DecideAccessRequest, ListAccessRequestsRequest, RequestAccessRequest, RevokeAccessRequest,
};

use super::Admin;
use crate::error::{Result, VeilError};
use crate::model::audit::AuditEvent;
use crate::model::dataset::DatasetRecord;
use crate::model::identity::Principal;
use crate::model::policy::PolicyRule;
use crate::model::request::{AccessDecision, AccessRequest, RequestStatus};
use crate::model::snapshot::Snapshot;
use crate::policy::effective::{Access, access, applies_to};
use crate::policy::rules::ConditionExt;

pub(super) const MAX_REASON: usize = 2000;

pub(super) fn request_json(r: &AccessRequest) -> Vec<u8> {
    serde_json::to_vec(r).unwrap_or_default()
}

/// May `p` decide requests for `d`?
fn is_approver(snapshot: &Snapshot, d: &DatasetRecord, p: &Principal, issuer: &str) -> bool {
    let mut any = false;
    for pol in &snapshot.policies {
        let PolicyRule::Subscription(s) = &pol.rule else {
            continue;
        };
        if !s.on_request || !applies_to(pol, d, issuer) {
            continue;
        }
        any = true;
        let ok = if s.approvers.is_empty() {
            d.is_owner(&p.identity)
        } else {
            s.approvers.matches(p, issuer)
        };
        if !ok {
            return false;
        }
    }
    any
}

impl Admin {
    pub(super) async fn request_access(
        &self,
        p: &Arc<Principal>,
        req: RequestAccessRequest,
        event: &mut AuditEvent,
    ) -> Result<Vec<Vec<u8>>> {
        event.dataset = Some(req.dataset.chars().take(256).collect());
        let reason = req.reason.trim();
        if reason.is_empty() || reason.len() > MAX_REASON {
            return Err(VeilError::InvalidArgument(format!(
                "say why you need the data (a reason of 1 to {MAX_REASON} characters)"
            )));
        }
        let snapshot = self.engine.state().current().await?;
        let issuer = self.engine.default_issuer();
        let d = snapshot
            .datasets
            .values()
            .find(|d| d.name.eq_ignore_ascii_case(&req.dataset));
        let none = Default::default();
        let verdict = d.map(|d| {
            access(
                p,
                d,
                &snapshot.policies,
                snapshot.approvals.get(&d.id).unwrap_or(&none),
                issuer,
                None,
            )
        });
        let d = match (d, verdict) {
            (Some(d), Some(Access::Request)) => d,
            (Some(d), Some(Access::Read)) => {
                return Err(VeilError::FailedPrecondition(format!(
                    "you can already read {}; no request is needed",
                    d.name
                )));
            }
            // Hidden and missing datasets answer alike.
            _ => return Err(VeilError::dataset_not_found(&req.dataset)),
        };
        let request = AccessRequest {
            id: uuid::Uuid::new_v4().to_string(),
            dataset_id: d.id.clone(),
            dataset: d.name.clone(),
            requester: p.identity.clone(),
            reason: reason.to_string(),
            status: RequestStatus::Pending,
            decided_by: None,
            decision_note: String::new(),
            created_ms: chrono::Utc::now().timestamp_millis(),
            decided_ms: None,
            unmask: None,
        };
        event.message = format!("access request {}", request.id);
        self.permitted(event).await?;
        self.engine
            .state()
            .store()
            .create_access_request(&request)
            .await?;
        Ok(vec![request_json(&request)])
    }

    pub(super) async fn decide_access(
        &self,
        p: &Arc<Principal>,
        req: DecideAccessRequest,
        approve: bool,
        event: &mut AuditEvent,
    ) -> Result<Vec<Vec<u8>>> {
        event.message = format!(
            "access request {}",
            req.request_id.chars().take(64).collect::<String>()
        );
        let store = self.engine.state().store();
        let requests = store.access_requests().await?;
        let snapshot = self.engine.state().current().await?;
        let issuer = self.engine.default_issuer();
        let found = requests
            .iter()
            .find(|r| r.id == req.request_id && r.unmask.is_none());
        let dataset = found.and_then(|r| snapshot.datasets.values().find(|d| d.id == r.dataset_id));
        // Requests for datasets the caller can't decide look like missing ones.
        let (Some(r), Some(d)) = (found, dataset) else {
            return Err(VeilError::NotFound(format!(
                "no access request {} that you may decide",
                req.request_id
            )));
        };
        event.dataset = Some(d.name.clone());
        if r.requester == p.identity {
            return Err(VeilError::PermissionDenied(
                "you cannot decide your own access request; an approver must".into(),
            ));
        }
        if !is_approver(&snapshot, d, p, issuer) {
            return Err(VeilError::NotFound(format!(
                "no access request {} that you may decide",
                req.request_id
            )));
        }
        self.decide_pending(p, &r.id, approve, &req.note, event)
            .await
    }

    /// Record an approval or denial of a pending request (access or
    /// unmask), once the caller's right to decide it was checked.
    pub(super) async fn decide_pending(
        &self,
        p: &Arc<Principal>,
        id: &str,
        approve: bool,
        note: &str,
        event: &mut AuditEvent,
    ) -> Result<Vec<Vec<u8>>> {
        let decision = AccessDecision {
            to: if approve {
                RequestStatus::Approved
            } else {
                RequestStatus::Denied
            },
            by: p.identity.clone(),
            note: note.chars().take(MAX_REASON).collect(),
            at_ms: chrono::Utc::now().timestamp_millis(),
        };
        self.permitted(event).await?;
        let done = self
            .engine
            .state()
            .store()
            .decide_access_request(id, RequestStatus::Pending, &decision)
            .await?;
        Ok(vec![request_json(&done)])
    }

    pub(super) async fn list_access_requests(
        &self,
        p: &Arc<Principal>,
        req: ListAccessRequestsRequest,
        event: &mut AuditEvent,
    ) -> Result<Vec<Vec<u8>>> {
        let store = self.engine.state().store();
        let snapshot = self.engine.state().current().await?;
        let issuer = self.engine.default_issuer();
        self.permitted(event).await?;
        let requests = store.access_requests().await?;
        Ok(requests
            .iter()
            .filter(|r| r.unmask.is_none())
            .filter(|r| req.all || r.status == RequestStatus::Pending)
            .filter(|r| req.dataset.is_empty() || r.dataset.eq_ignore_ascii_case(&req.dataset))
            .filter(|r| {
                r.requester == p.identity
                    || snapshot
                        .datasets
                        .values()
                        .find(|d| d.id == r.dataset_id)
                        .is_some_and(|d| is_approver(&snapshot, d, p, issuer))
            })
            .map(request_json)
            .collect())
    }

    pub(super) async fn revoke_access(
        &self,
        p: &Arc<Principal>,
        req: RevokeAccessRequest,
        event: &mut AuditEvent,
    ) -> Result<Vec<Vec<u8>>> {
        event.dataset = Some(req.dataset.chars().take(256).collect());
        let who = self.user(req.user)?;
        event.message = format!("revoke access of {who}");
        let snapshot = self.engine.state().current().await?;
        let issuer = self.engine.default_issuer();
        let d = snapshot
            .datasets
            .values()
            .find(|d| d.name.eq_ignore_ascii_case(&req.dataset))
            .filter(|d| is_approver(&snapshot, d, p, issuer))
            .ok_or_else(|| VeilError::dataset_not_found(&req.dataset))?;
        let store = self.engine.state().store();
        let requests = store.access_requests().await?;
        let Some(r) = requests.iter().find(|r| {
            r.unmask.is_none()
                && r.dataset_id == d.id
                && r.requester == who
                && r.status == RequestStatus::Approved
        }) else {
            return Err(VeilError::NotFound(format!(
                "{who} has no approved access to {}",
                d.name
            )));
        };
        let decision = AccessDecision {
            to: RequestStatus::Revoked,
            by: p.identity.clone(),
            note: req.note.chars().take(MAX_REASON).collect(),
            at_ms: chrono::Utc::now().timestamp_millis(),
        };
        self.permitted(event).await?;
        let done = store
            .decide_access_request(&r.id, RequestStatus::Approved, &decision)
            .await?;
        Ok(vec![request_json(&done)])
    }
}
