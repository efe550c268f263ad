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

use veil_proto::{
    DecideAccessRequest, ListAccessRequestsRequest, RequestAccessRequest, RevokeAccessRequest,
};

use super::authorize::is_approver;
use super::{Call, Governance, Grant, Outcome};
use crate::error::{Result, VeilError};
use crate::model::dataset::DatasetRecord;
use crate::model::request::{AccessDecision, AccessRequest, RequestStatus, UnmaskDetails};
use crate::policy::effective::{Access, access};

/// The longest reason or note.
pub(super) const MAX_REASON: usize = 2000;

impl Governance {
    /// File a new pending request by the caller on `d` (an unmask request
    /// when `unmask` says what to unmask).
    pub(super) async fn file_request(
        &self,
        call: &Call<'_>,
        d: &DatasetRecord,
        reason: &str,
        unmask: Option<UnmaskDetails>,
    ) -> Result<AccessRequest> {
        let request = AccessRequest {
            id: uuid::Uuid::new_v4().to_string(),
            dataset_id: d.id.clone(),
            dataset: d.name.clone(),
            requester: call.principal.identity.clone(),
            reason: reason.to_string(),
            status: RequestStatus::Pending,
            decided_by: None,
            decision_note: String::new(),
            created_ms: chrono::Utc::now().timestamp_millis(),
            decided_ms: None,
            unmask,
        };
        self.engine
            .state()
            .store()
            .create_access_request(&request)
            .await?;
        Ok(request)
    }

    pub(super) async fn request_access(
        &self,
        call: &mut Call<'_>,
        req: RequestAccessRequest,
    ) -> Result<Outcome> {
        let p = call.principal;
        let reason = req.reason.trim();
        if reason.is_empty() || reason.len() > MAX_REASON {
            return Err(VeilError::InvalidArgument(format!(
                "say why you need the data (a reason of 1 to {MAX_REASON} characters)"
            )));
        }
        let snapshot = std::sync::Arc::clone(call.scope.snapshot());
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
        let request = self.file_request(call, d, reason, None).await?;
        call.event.message = format!("access request {}", request.id);
        Ok(Outcome::Requests(vec![request]))
    }

    /// Approve or deny the access or unmask request the runner checked
    /// the caller may decide (its grant names it).
    pub(super) async fn decide(
        &self,
        call: &mut Call<'_>,
        req: DecideAccessRequest,
        approve: bool,
    ) -> Result<Outcome> {
        let id = match &call.grant {
            Grant::AccessRequest(r) | Grant::UnmaskRequest(r) => r.id.clone(),
            _ => return Err(call.grant_mismatch("a request to decide")),
        };
        self.decide_pending(call, &id, approve, &req.note).await
    }

    /// Record an approval or denial of a pending request (access or
    /// unmask), once the caller's right to decide it was checked.
    pub(super) async fn decide_pending(
        &self,
        call: &mut Call<'_>,
        id: &str,
        approve: bool,
        note: &str,
    ) -> Result<Outcome> {
        let decision = AccessDecision {
            to: if approve {
                RequestStatus::Approved
            } else {
                RequestStatus::Denied
            },
            by: call.principal.identity.clone(),
            note: note.chars().take(MAX_REASON).collect(),
            at_ms: chrono::Utc::now().timestamp_millis(),
        };
        let done = self
            .engine
            .state()
            .store()
            .decide_access_request(id, RequestStatus::Pending, &decision)
            .await?;
        Ok(Outcome::Requests(vec![done]))
    }

    pub(super) async fn list_access_requests(
        &self,
        call: &mut Call<'_>,
        req: ListAccessRequestsRequest,
    ) -> Result<Outcome> {
        let p = call.principal;
        let store = self.engine.state().store();
        let snapshot = std::sync::Arc::clone(call.scope.snapshot());
        let issuer = self.engine.default_issuer();
        let requests = store.access_requests().await?;
        Ok(Outcome::Requests(
            requests
                .into_iter()
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
                .collect(),
        ))
    }

    pub(super) async fn revoke_access(
        &self,
        call: &mut Call<'_>,
        req: RevokeAccessRequest,
    ) -> Result<Outcome> {
        let Grant::ApproverOf(d) = &call.grant else {
            return Err(call.grant_mismatch("a dataset the caller approves for"));
        };
        let d = d.clone();
        let who = self.user(req.user)?;
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
            by: call.principal.identity.clone(),
            note: req.note.chars().take(MAX_REASON).collect(),
            at_ms: chrono::Utc::now().timestamp_millis(),
        };
        let done = store
            .decide_access_request(&r.id, RequestStatus::Approved, &decision)
            .await?;
        Ok(Outcome::Requests(vec![done]))
    }
}
