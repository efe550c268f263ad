//! The runner's requirement checks: each kind of [`Requirement`] against
//! the [`Target`] its request names. What a check establishes (the owned
//! dataset, the request to decide) becomes the handler's [`Grant`].
//!
//! Whatever the caller may not see answers exactly like what doesn't
//! exist: a hidden dataset, a policy on one, a request they can't decide.

use std::sync::Arc;

use super::{Action, Governance, Grant, Requirement, Target, denied};
use crate::engine::RequestScope;
use crate::error::{Result, VeilError};
use crate::model::audit::AuditEvent;
use crate::model::dataset::DatasetRecord;
use crate::model::identity::{Permission, Principal};
use crate::model::policy::{PolicyRule, PolicySpec};
use crate::model::request::AccessRequest;
use crate::model::snapshot::Snapshot;
use crate::policy::effective::{applies_to, exempts};
use crate::policy::rules::ConditionExt;

impl Governance {
    pub(super) async fn authorize(
        &self,
        scope: &Arc<RequestScope>,
        action: Action,
        requirement: Requirement,
        target: Target<'_>,
        event: &mut AuditEvent,
    ) -> Result<Grant> {
        let p = scope.principal();
        match (requirement, target) {
            // The permission was checked before the request was decoded.
            (Requirement::Anyone | Requirement::Permission(_), Target::Caller) => Ok(Grant::Caller),
            (Requirement::Registrar, Target::NewDataset(r)) => Ok(Grant::Registration {
                source: self.check_registration(scope, r)?,
            }),
            (Requirement::OwnerOrGovernance, Target::Dataset(name)) => self
                .owned_dataset(scope, name, action.name())
                .map(Grant::Owned),
            (Requirement::PolicyAuthor, Target::PolicyWrite { policy, update }) => {
                let verb = if update { "updating" } else { "creating" };
                self.authorize_policy(scope, &policy.spec, verb)?;
                if update {
                    let snapshot = scope.snapshot();
                    let namespace = policy.spec.namespace();
                    let Some(old) = snapshot.policies.iter().find(|x| {
                        x.spec.name == policy.spec.name && x.spec.namespace() == namespace
                    }) else {
                        return Err(VeilError::NotFound(format!(
                            "no policy named '{}'; create it instead",
                            policy.spec.name
                        )));
                    };
                    // Rewriting a policy needs the right to write the old
                    // one too (its namespace is the same, its scope may not
                    // be).
                    self.authorize_policy(scope, &old.spec, verb)
                        .map_err(|e| hide_dataset(e, &policy.spec.name, "; create it instead"))?;
                }
                Ok(Grant::PolicyAuthor)
            }
            (Requirement::PolicyAuthor, Target::PolicyName(name)) => {
                let policy = self.deletable_policy(scope, name)?;
                event.dataset = policy.spec.dataset.clone();
                Ok(Grant::Deletable(policy))
            }
            (Requirement::Approver, Target::AccessRequest(id)) => {
                let (r, d) = self.decidable_access_request(scope, id).await?;
                event.dataset = Some(d.name.clone());
                Ok(Grant::AccessRequest(r))
            }
            (Requirement::Approver, Target::ApproverOf(name)) => {
                let snapshot = scope.snapshot();
                let issuer = self.engine.default_issuer();
                snapshot
                    .datasets
                    .values()
                    .find(|d| d.name.eq_ignore_ascii_case(name))
                    .filter(|d| is_approver(snapshot, d, p, issuer))
                    .cloned()
                    .map(Grant::ApproverOf)
                    .ok_or_else(|| VeilError::dataset_not_found(name))
            }
            (Requirement::UnmaskApprover, Target::UnmaskRequest(id)) => {
                let r = self.decidable_unmask_request(scope, id, event).await?;
                Ok(Grant::UnmaskRequest(r))
            }
            (requirement, target) => Err(VeilError::Internal(format!(
                "{}: requirement {requirement:?} can't be checked against {target:?}",
                action.name()
            ))),
        }
    }

    /// The dataset if the caller owns it or governs; hidden datasets answer
    /// exactly like missing ones.
    pub(super) fn owned_dataset(
        &self,
        scope: &Arc<RequestScope>,
        name: &str,
        action: &str,
    ) -> Result<DatasetRecord> {
        let p = scope.principal();
        let d = scope
            .snapshot()
            .datasets
            .values()
            .find(|d| d.name.eq_ignore_ascii_case(name));
        let Some(d) = d else {
            return Err(VeilError::dataset_not_found(name));
        };
        if d.is_owner(&p.identity) || p.has(Permission::Governance) {
            return Ok(d.clone());
        }
        // Not an owner: reveal nothing more than a reader could know.
        match scope.visible(name) {
            Some(_) => Err(denied(action, "ownership of the dataset or GOVERNANCE")),
            None => Err(VeilError::dataset_not_found(name)),
        }
    }

    /// May the caller write a policy of this form?
    pub(super) fn authorize_policy(
        &self,
        scope: &Arc<RequestScope>,
        spec: &PolicySpec,
        verb: &str,
    ) -> Result<()> {
        let p = scope.principal();
        if p.has(Permission::Governance) {
            return Ok(());
        }
        let issuer = self.engine.default_issuer();
        match (&spec.dataset, spec.restricted_to.is_empty()) {
            // Ownership (or "not found" for a dataset the caller can't see).
            (Some(name), _) => self.owned_dataset(scope, name, verb).map(|_| ()),
            (None, true) => Err(denied(
                &format!("{verb} of a global policy (tags = [...])"),
                "GOVERNANCE; data owners write restricted global policies (restricted_to = [\"you\"]) over the datasets they own",
            )),
            (None, false) => {
                if !p.has(Permission::CreateDataSource) {
                    return Err(denied(
                        &format!("{verb} of a restricted global policy"),
                        "CREATE_DATA_SOURCE",
                    ));
                }
                if spec
                    .restricted_to
                    .iter()
                    .any(|u| u.resolve(issuer) != p.identity)
                {
                    return Err(VeilError::PermissionDenied(format!(
                        "a restricted global policy you write applies to your own datasets only: set restricted_to = [\"{}\"]",
                        p.identity.subject
                    )));
                }
                Ok(())
            }
        }
    }

    /// The one policy named (or with id) `name` the caller may delete.
    /// Only policies the caller can list are candidates, so the answer for
    /// a name used only where they can't look is "no policy".
    fn deletable_policy(
        &self,
        scope: &Arc<RequestScope>,
        name: &str,
    ) -> Result<crate::model::policy::Policy> {
        let p = scope.principal();
        let snapshot = scope.snapshot();
        let candidates: Vec<&crate::model::policy::Policy> = snapshot
            .policies
            .iter()
            .filter(|x| x.spec.name == name || x.id == name)
            .filter(|x| self.may_list(p, x, snapshot))
            .collect();
        let mut writable = Vec::new();
        let mut refusal = None;
        for x in &candidates {
            match self.authorize_policy(scope, &x.spec, "deleting") {
                Ok(()) => writable.push(*x),
                Err(e) => refusal = refusal.or(Some(e)),
            }
        }
        match (&writable[..], refusal) {
            ([one], _) => Ok((*one).clone()),
            ([], Some(e)) => Err(hide_dataset(e, name, "")),
            ([], None) => Err(VeilError::NotFound(format!("no policy named '{name}'"))),
            (several, _) => {
                let mut which: Vec<String> = several
                    .iter()
                    .map(|x| match &x.spec.dataset {
                        Some(d) => format!("on {d}: id {}", x.id),
                        None => format!("{}: id {}", x.spec.scope(), x.id),
                    })
                    .collect();
                which.sort();
                Err(VeilError::InvalidArgument(format!(
                    "{} policies you may delete are named '{name}' ({}); delete one by its id",
                    several.len(),
                    which.join("; ")
                )))
            }
        }
    }

    /// Does `veil.list_policies` show `pol` to `p`? Governors see every
    /// policy; others the ones that apply to datasets they own and the
    /// restricted ones naming them: every policy of every namespace they
    /// may write into, and nothing of the others. Data owners (and
    /// `CREATE_DATA_SOURCE` holders) also see every global policy: they are
    /// the rules a tag brings, and a tag change refused for touching one
    /// would otherwise tell of a policy they couldn't list.
    pub(super) fn may_list(
        &self,
        p: &Principal,
        pol: &crate::model::policy::Policy,
        snapshot: &Snapshot,
    ) -> bool {
        let issuer = self.engine.default_issuer();
        let owner = || {
            p.has(Permission::CreateDataSource)
                || snapshot.datasets.values().any(|d| d.is_owner(&p.identity))
        };
        p.has(Permission::Governance)
            || (pol.is_unrestricted_global() && owner())
            || pol
                .spec
                .restricted_to
                .iter()
                .any(|u| u.resolve(issuer) == p.identity)
            || snapshot
                .datasets
                .values()
                .any(|d| d.is_owner(&p.identity) && applies_to(pol, d, issuer))
    }

    /// An access request the caller may decide, and its dataset. Requests
    /// for datasets the caller can't decide look like missing ones; their
    /// own request is refused with the reason.
    async fn decidable_access_request(
        &self,
        scope: &Arc<RequestScope>,
        id: &str,
    ) -> Result<(AccessRequest, DatasetRecord)> {
        let p = scope.principal();
        let requests = self.engine.state().store().access_requests().await?;
        let snapshot = scope.snapshot();
        let issuer = self.engine.default_issuer();
        let not_found =
            || VeilError::NotFound(format!("no access request {id} that you may decide"));
        let found = requests.iter().find(|r| r.id == id && r.unmask.is_none());
        let dataset = found.and_then(|r| snapshot.datasets.values().find(|d| d.id == r.dataset_id));
        let (Some(r), Some(d)) = (found, dataset) else {
            return Err(not_found());
        };
        if r.requester == p.identity {
            return Err(VeilError::PermissionDenied(
                "you cannot decide your own access request; an approver must".into(),
            ));
        }
        if !is_approver(snapshot, d, p, issuer) {
            return Err(not_found());
        }
        Ok((r.clone(), d.clone()))
    }

    /// An unmask request the caller may decide: someone its masking policy
    /// exempts, who reads the column unmasked, never the requester. Those
    /// who can read the dataset learn why they may not; others see nothing.
    async fn decidable_unmask_request(
        &self,
        scope: &Arc<RequestScope>,
        id: &str,
        event: &mut AuditEvent,
    ) -> Result<AccessRequest> {
        let p = scope.principal();
        let requests = self.engine.state().store().access_requests().await?;
        let not_found = || {
            VeilError::NotFound(format!(
                "no unmask request {} that you may decide",
                id.chars().take(64).collect::<String>()
            ))
        };
        let Some(r) = requests.iter().find(|r| r.id == id && r.unmask.is_some()) else {
            return Err(not_found());
        };
        let Some(u) = r.unmask.as_ref() else {
            return Err(not_found());
        };
        event.dataset = Some(r.dataset.clone());
        event.columns = vec![u.column.clone()];
        if r.requester == p.identity {
            return Err(VeilError::PermissionDenied(
                "you cannot decide your own unmask request; someone the masking policy exempts must"
                    .into(),
            ));
        }
        if !self.may_decide_unmask(scope, r)? {
            return match scope.visible(&r.dataset) {
                Some((_, true)) => Err(VeilError::PermissionDenied(format!(
                    "only someone policy '{}' exempts, who reads {}.{} unmasked, may decide this request",
                    u.policy, r.dataset, u.column
                ))),
                _ => Err(not_found()),
            };
        }
        Ok(r.clone())
    }

    /// May `p` decide unmask request `r`: exempt from its policy, reading
    /// the dataset with the column unmasked?
    pub(super) fn may_decide_unmask(
        &self,
        scope: &Arc<RequestScope>,
        r: &AccessRequest,
    ) -> Result<bool> {
        let (p, snapshot) = (scope.principal(), scope.snapshot());
        let Some(u) = &r.unmask else {
            return Ok(false);
        };
        // By id (the label is `id@version`): names are unique only within a
        // namespace, and another dataset's policy may share this one's.
        let id = u.policy_label.split('@').next().unwrap_or_default();
        let Some(policy) = snapshot.policies.iter().find(|x| x.id == id) else {
            return Ok(false);
        };
        if !exempts(policy, p, self.engine.default_issuer()) {
            return Ok(false);
        }
        let Ok((d, effective, readable)) = self.engine.lookup_visible(scope, &r.dataset) else {
            return Ok(false);
        };
        Ok(readable && d.id == r.dataset_id && !effective.masked_columns().contains(&u.column))
    }
}

/// May `p` decide requests for `d`? Approvers are named by each on-request
/// subscription policy on the dataset (its owners when a policy names
/// none); with several such policies an approver must be one for each.
pub(super) fn is_approver(
    snapshot: &Snapshot,
    d: &DatasetRecord,
    p: &Principal,
    issuer: &str,
) -> bool {
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

/// A policy on a dataset the caller can't see answers like a missing
/// policy, so its name can't be used to learn the dataset's.
fn hide_dataset(e: VeilError, policy: &str, hint: &str) -> VeilError {
    match e {
        VeilError::NotFound(_) => VeilError::NotFound(format!("no policy named '{policy}'{hint}")),
        e => e,
    }
}
