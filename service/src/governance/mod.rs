//! The governance layer: every administrative use case (describe, search,
//! register, tag, policies, access and unmask requests, discovery, the
//! directory) as a function over a typed [`Request`] returning a typed
//! [`Outcome`], knowing nothing of the protocol that carried it. Flight's
//! `DoAction` is one adapter over it (`flight::actions`); another protocol
//! adds a decoder, not a copy of the rules.
//!
//! [`Governance::run`] is the one way in. It checks the action's
//! [`Requirement`], whatever its kind (a permission, ownership, policy
//! authorship, approval rights), records the `permitted` audit event, and
//! only then calls the handler; the outcome is recorded after. No handler
//! can skip either: a handler is reached only through the runner, and what
//! the requirement established (the owned dataset, the request to decide)
//! is handed to it as a [`Grant`].

pub mod action;
mod authorize;
mod datasets;
mod directory;
mod discovery;
mod policies;
mod privacy;
mod requests;
mod unmask;

use std::sync::Arc;

pub use action::{Action, Outcome, PolicyWrite, Request, Requirement, Target};
pub use datasets::SCHEMAS_ATTRIBUTE;
pub use policies::parse_write;

use crate::audit::{AuditEventExt, AuditLog};
use crate::auth::authenticator::Authenticator;
use crate::catalog::roots::SharedRoots;
use crate::engine::{Engine, RequestScope};
use crate::error::{Result, VeilError};
use crate::model::audit::AuditEvent;
use crate::model::dataset::DatasetRecord;
use crate::model::identity::{Identity, Principal};
use crate::model::policy::Policy;
use crate::model::request::AccessRequest;
use crate::provisioning::reload::Reloader;

/// The use cases and what they need.
#[derive(Debug)]
pub struct Governance {
    engine: Arc<Engine>,
    audit: AuditLog,
    roots: Arc<SharedRoots>,
    reloader: Arc<Reloader>,
    /// Explain weighs hypothetical token claims as the authenticator would.
    auth: Arc<Authenticator>,
}

/// What an action's requirement established, handed to its handler.
#[derive(Debug, Clone)]
pub(crate) enum Grant {
    /// The requirement needed nothing from the request.
    Caller,
    /// A registration the caller may make, at this confined location.
    Registration { source: crate::catalog::NewSource },
    /// The dataset the caller owns or governs.
    Owned(DatasetRecord),
    /// The caller may write this policy (and, for an update, the one it
    /// replaces).
    PolicyAuthor,
    /// The one policy of that name or id the caller may delete.
    Deletable(Policy),
    /// An access request the caller may decide.
    AccessRequest(AccessRequest),
    /// A dataset whose access requests the caller approves.
    ApproverOf(DatasetRecord),
    /// An unmask request the caller may decide.
    UnmaskRequest(AccessRequest),
}

/// One call of an action: who, the audit event being built, and what the
/// requirement granted.
#[derive(Debug)]
pub struct Call<'a> {
    pub action: Action,
    /// The request's scope: its state (read once) and the caller.
    pub scope: &'a Arc<RequestScope>,
    pub principal: &'a Arc<Principal>,
    pub event: AuditEvent,
    grant: Grant,
}

impl Call<'_> {
    /// What the runner's check left for a handler that needs it; asking
    /// for another kind is a bug, never a reason to skip the check.
    fn grant_mismatch(&self, wanted: &str) -> VeilError {
        VeilError::Internal(format!(
            "the action's handler needs {wanted}, which its requirement did not establish"
        ))
    }

    fn owned(&self) -> Result<&DatasetRecord> {
        match &self.grant {
            Grant::Owned(d) => Ok(d),
            _ => Err(self.grant_mismatch("an owned dataset")),
        }
    }
}

fn denied(action: &str, need: &str) -> VeilError {
    VeilError::PermissionDenied(format!(
        "{action} needs {need}; ask an administrator to grant it"
    ))
}

impl Governance {
    pub fn new(
        engine: Arc<Engine>,
        audit: AuditLog,
        roots: Arc<SharedRoots>,
        reloader: Arc<Reloader>,
        auth: Arc<Authenticator>,
    ) -> Self {
        Self {
            engine,
            audit,
            roots,
            reloader,
            auth,
        }
    }

    /// Run `action` for `p`: check its requirement (the permission before
    /// `decode` reads the request, the rest against the decoded request),
    /// record the permitted attempt, perform it, record the outcome. Every
    /// refusal and failure is recorded too. `decode` turns the protocol's
    /// body into the typed request; its errors are the caller's.
    pub async fn run(
        &self,
        scope: &Arc<RequestScope>,
        action: Action,
        decode: impl FnOnce() -> Result<Request>,
    ) -> Result<Outcome> {
        let p = scope.principal();
        let mut call = Call {
            action,
            scope,
            principal: p,
            event: AuditEvent::new(&action.audit_name(), Some(p)),
            grant: Grant::Caller,
        };
        match self.checked_run(&mut call, action, decode).await {
            Ok(out) => {
                let mut done = call.event;
                done.event_id = uuid::Uuid::new_v4().to_string();
                done.status = "ok".into();
                self.audit.record(done).await?;
                Ok(out)
            }
            Err(e) => Err(self.fail(call.event, e).await),
        }
    }

    /// Record a call of an action Veil doesn't offer and refuse it.
    pub async fn refuse_unknown(&self, p: &Arc<Principal>, name: &str) -> VeilError {
        // The name is the caller's text: cut, and only printable.
        let shown: String = name
            .trim_start_matches("veil.")
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect();
        let event = AuditEvent::new(&format!("admin.{shown}"), Some(p));
        let e = VeilError::InvalidArgument(format!(
            "unknown action '{shown}': ListActions shows the available ones"
        ));
        self.fail(event, e).await
    }

    async fn checked_run(
        &self,
        call: &mut Call<'_>,
        action: Action,
        decode: impl FnOnce() -> Result<Request>,
    ) -> Result<Outcome> {
        let requirement = action.requirement();
        if let Some(perm) = requirement.permission()
            && !call.principal.has(perm)
        {
            return Err(denied(action.name(), perm.as_str()));
        }
        let request = decode()?;
        if request.action() != action {
            return Err(VeilError::Internal(format!(
                "{} was decoded as {}",
                action.name(),
                request.action().name()
            )));
        }
        request.annotate(&mut call.event, self.engine.default_issuer());
        call.grant = self
            .authorize(
                call.scope,
                action,
                requirement,
                request.target(),
                &mut call.event,
            )
            .await?;
        self.permitted(&call.event).await?;
        self.perform(call, request).await
    }

    /// Record the permitted attempt before it takes effect (status
    /// `permitted`); the outcome follows as a second event.
    async fn permitted(&self, event: &AuditEvent) -> Result<()> {
        let mut attempt = event.clone();
        attempt.status = "permitted".into();
        self.audit.record(attempt).await
    }

    async fn fail(&self, event: AuditEvent, e: VeilError) -> VeilError {
        match self.audit.record(event.failed(&e)).await {
            Ok(()) => e,
            Err(a) => a,
        }
    }

    /// The handler of each action.
    async fn perform(&self, call: &mut Call<'_>, request: Request) -> Result<Outcome> {
        match request {
            Request::WhoAmI => Ok(directory::whoami(call.principal)),
            Request::Describe { dataset } => self.describe(call, &dataset).await,
            Request::Search { query, limit } => self.search(call, &query, limit).await,
            Request::RegisterDataset(r) => self.register_dataset(call, r).await,
            Request::DropDataset { .. } => self.drop_dataset(call).await,
            Request::SetColumnTags(r) => self.set_column_tags(call, r).await,
            Request::SetDescription(r) => self.set_description(call, r).await,
            Request::SetExperts(r) => self.set_experts(call, r).await,
            Request::Accelerate(r) => self.accelerate(call, r).await,
            Request::Refresh(r) => self.refresh(call, r).await,
            Request::Discover(r) => self.discover(call, r).await,
            Request::DecideTagProposal(r) => self.decide_tag_proposal(call, r).await,
            Request::SetUserDisabled(r) => self.set_user_disabled(call, r).await,
            Request::GrantPermission(r) => self.grant_permission(call, r).await,
            Request::RevokePermission(r) => self.revoke_permission(call, r).await,
            Request::PutUser(r) => self.put_user(call, r).await,
            Request::DeleteUser(r) => self.delete_user(call, r).await,
            Request::ListUsers => self.list_users(call),
            Request::Reload => self.reload(call).await,
            Request::AuditTail { limit } => self.audit_tail(limit).await,
            Request::CreatePolicy(w) => self.write_policy(call, w, true).await,
            Request::UpdatePolicy(w) => self.write_policy(call, w, false).await,
            Request::DeletePolicy(r) => self.delete_policy(call, r).await,
            Request::ListPolicies(r) => self.list_policies(call, r).await,
            Request::Explain(r) => self.explain(call, r).await,
            Request::ProfileKAnonymity(r) => self.profile_k_anonymity(call, r).await,
            Request::RequestUnmask(r) => self.request_unmask(call, r).await,
            Request::ApproveUnmask(r) => self.decide(call, r, true).await,
            Request::DenyUnmask(r) => self.decide(call, r, false).await,
            Request::ListUnmaskRequests(r) => self.list_unmask_requests(call, r).await,
            Request::UnmaskResult(r) => self.unmask_result(call, r).await,
            Request::RequestAccess(r) => self.request_access(call, r).await,
            Request::ApproveAccess(r) => self.decide(call, r, true).await,
            Request::DenyAccess(r) => self.decide(call, r, false).await,
            Request::ListAccessRequests(r) => self.list_access_requests(call, r).await,
            Request::RevokeAccess(r) => self.revoke_access(call, r).await,
            Request::DpBudget(r) => self.dp_budget(call, r).await,
        }
    }

    /// The user a request names: `issuer` defaults to Veil's default
    /// issuer; subjects and issuers are taken exactly as tokens carry them.
    fn user(&self, u: Option<veil_proto::UserRef>) -> Result<Identity> {
        let u = u.ok_or_else(|| VeilError::InvalidArgument("the request needs a user".into()))?;
        if u.subject.trim().is_empty() {
            return Err(VeilError::InvalidArgument(
                "the user's subject is empty".into(),
            ));
        }
        if u.subject.trim() != u.subject || u.issuer.trim() != u.issuer {
            return Err(VeilError::InvalidArgument(
                "the user's subject or issuer has leading or trailing spaces; tokens never do"
                    .into(),
            ));
        }
        let issuer = if u.issuer.is_empty() {
            self.engine.default_issuer().to_string()
        } else {
            u.issuer
        };
        Ok(Identity::new(issuer, u.subject))
    }
}
