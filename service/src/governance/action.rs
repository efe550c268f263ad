//! The administrative use cases as types: [`Action`] names one, parsed
//! once from the wire name; [`Request`] carries its typed input; its
//! [`Requirement`] says who may call it, and [`Target`] what that
//! requirement is checked against. [`Outcome`] is the typed answer.
//!
//! Every match here is exhaustive: an action added without a name, a
//! description, a requirement or a target does not compile, and the table
//! test at the bottom checks that each requirement gets the target it
//! needs.

use veil_proto::{
    AccelerateRequest, DecideAccessRequest, DecideTagProposalRequest, DeletePolicyRequest,
    DeleteUserRequest, DiscoverRequest, DpBudgetRequest, ExplainRequest, ListAccessRequestsRequest,
    ListPoliciesRequest, PermissionRequest, ProfileKAnonymityRequest, PutUserRequest,
    RefreshRequest, RegisterDatasetRequest, RequestAccessRequest, RequestUnmaskRequest,
    RevokeAccessRequest, SetColumnTagsRequest, SetDescriptionRequest, SetExpertsRequest,
    SetUserDisabledRequest, UnmaskResultRequest, UserEntry, WhoAmI, actions,
};

use crate::model::audit::AuditEvent;
use crate::model::identity::Permission;
use crate::model::policy::Policy;
use crate::model::request::AccessRequest;

/// One administrative use case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    WhoAmI,
    Describe,
    Search,
    RegisterDataset,
    DropDataset,
    SetColumnTags,
    SetDescription,
    SetExperts,
    Accelerate,
    Refresh,
    Discover,
    DecideTagProposal,
    SetUserDisabled,
    GrantPermission,
    RevokePermission,
    PutUser,
    DeleteUser,
    ListUsers,
    Reload,
    AuditTail,
    CreatePolicy,
    UpdatePolicy,
    DeletePolicy,
    ListPolicies,
    Explain,
    ProfileKAnonymity,
    RequestUnmask,
    ApproveUnmask,
    DenyUnmask,
    ListUnmaskRequests,
    UnmaskResult,
    RequestAccess,
    ApproveAccess,
    DenyAccess,
    ListAccessRequests,
    RevokeAccess,
    DpBudget,
}

/// Who may call an action. The runner checks every kind before the
/// action's handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Any authenticated user.
    Anyone,
    /// A permission.
    Permission(Permission),
    /// `CREATE_DATA_SOURCE`, registering into a schema granted to the
    /// caller (their `veil.schemas` attribute; governors register
    /// anywhere), files under a configured root that no dataset serves yet
    /// (governors may register those again), under a free name.
    Registrar,
    /// An owner of the dataset named in the request, or a governor.
    OwnerOrGovernance,
    /// Decided by the policy's scope: local policies, the dataset's owners
    /// or `GOVERNANCE`; global ones, `GOVERNANCE`; restricted global ones
    /// (restricted to the author), `CREATE_DATA_SOURCE`.
    PolicyAuthor,
    /// An approver the dataset's on-request subscription policies name
    /// (its owners when they name none), never the requester.
    Approver,
    /// Someone the masking policy exempts (who reads the column unmasked),
    /// never the requester.
    UnmaskApprover,
}

impl Requirement {
    /// The permission checked before the request is even decoded.
    pub fn permission(self) -> Option<Permission> {
        match self {
            Requirement::Permission(p) => Some(p),
            Requirement::Registrar => Some(Permission::CreateDataSource),
            Requirement::Anyone
            | Requirement::OwnerOrGovernance
            | Requirement::PolicyAuthor
            | Requirement::Approver
            | Requirement::UnmaskApprover => None,
        }
    }
}

impl Action {
    /// Every action, in the order `ListActions` shows them.
    pub const ALL: &'static [Action] = &[
        Action::WhoAmI,
        Action::Describe,
        Action::Search,
        Action::RegisterDataset,
        Action::DropDataset,
        Action::SetColumnTags,
        Action::SetDescription,
        Action::SetExperts,
        Action::Accelerate,
        Action::Refresh,
        Action::Discover,
        Action::DecideTagProposal,
        Action::SetUserDisabled,
        Action::GrantPermission,
        Action::RevokePermission,
        Action::PutUser,
        Action::DeleteUser,
        Action::ListUsers,
        Action::Reload,
        Action::AuditTail,
        Action::CreatePolicy,
        Action::UpdatePolicy,
        Action::DeletePolicy,
        Action::ListPolicies,
        Action::Explain,
        Action::ProfileKAnonymity,
        Action::RequestUnmask,
        Action::ApproveUnmask,
        Action::DenyUnmask,
        Action::ListUnmaskRequests,
        Action::UnmaskResult,
        Action::RequestAccess,
        Action::ApproveAccess,
        Action::DenyAccess,
        Action::ListAccessRequests,
        Action::RevokeAccess,
        Action::DpBudget,
    ];

    /// The wire name (`veil.*`).
    pub fn name(self) -> &'static str {
        match self {
            Action::WhoAmI => actions::WHOAMI,
            Action::Describe => actions::DESCRIBE,
            Action::Search => actions::SEARCH,
            Action::RegisterDataset => actions::REGISTER_DATASET,
            Action::DropDataset => actions::DROP_DATASET,
            Action::SetColumnTags => actions::SET_COLUMN_TAGS,
            Action::SetDescription => actions::SET_DESCRIPTION,
            Action::SetExperts => actions::SET_EXPERTS,
            Action::Accelerate => actions::ACCELERATE,
            Action::Refresh => actions::REFRESH,
            Action::Discover => actions::DISCOVER,
            Action::DecideTagProposal => actions::DECIDE_TAG_PROPOSAL,
            Action::SetUserDisabled => actions::SET_USER_DISABLED,
            Action::GrantPermission => actions::GRANT_PERMISSION,
            Action::RevokePermission => actions::REVOKE_PERMISSION,
            Action::PutUser => actions::PUT_USER,
            Action::DeleteUser => actions::DELETE_USER,
            Action::ListUsers => actions::LIST_USERS,
            Action::Reload => actions::RELOAD,
            Action::AuditTail => actions::AUDIT_TAIL,
            Action::CreatePolicy => actions::CREATE_POLICY,
            Action::UpdatePolicy => actions::UPDATE_POLICY,
            Action::DeletePolicy => actions::DELETE_POLICY,
            Action::ListPolicies => actions::LIST_POLICIES,
            Action::Explain => actions::EXPLAIN,
            Action::ProfileKAnonymity => actions::PROFILE_K_ANONYMITY,
            Action::RequestUnmask => actions::REQUEST_UNMASK,
            Action::ApproveUnmask => actions::APPROVE_UNMASK,
            Action::DenyUnmask => actions::DENY_UNMASK,
            Action::ListUnmaskRequests => actions::LIST_UNMASK_REQUESTS,
            Action::UnmaskResult => actions::UNMASK_RESULT,
            Action::RequestAccess => actions::REQUEST_ACCESS,
            Action::ApproveAccess => actions::APPROVE_ACCESS,
            Action::DenyAccess => actions::DENY_ACCESS,
            Action::ListAccessRequests => actions::LIST_ACCESS_REQUESTS,
            Action::RevokeAccess => actions::REVOKE_ACCESS,
            Action::DpBudget => actions::DP_BUDGET,
        }
    }

    /// The action a wire name names, if any.
    pub fn parse(name: &str) -> Option<Action> {
        Action::ALL.iter().copied().find(|a| a.name() == name)
    }

    /// The audit `action` of a call (`admin.describe`).
    pub fn audit_name(self) -> String {
        format!("admin.{}", self.name().trim_start_matches("veil."))
    }

    /// Who may call it.
    pub fn requirement(self) -> Requirement {
        use Requirement::*;
        match self {
            Action::WhoAmI | Action::Describe | Action::Search => Anyone,
            Action::RegisterDataset => Registrar,
            Action::DropDataset
            | Action::SetColumnTags
            | Action::SetDescription
            | Action::SetExperts
            | Action::Accelerate
            | Action::Refresh
            | Action::Discover
            | Action::DecideTagProposal
            | Action::Explain
            | Action::ProfileKAnonymity => OwnerOrGovernance,
            Action::SetUserDisabled
            | Action::GrantPermission
            | Action::RevokePermission
            | Action::PutUser
            | Action::DeleteUser
            | Action::ListUsers => Permission(crate::model::identity::Permission::UserAdmin),
            Action::Reload => Permission(crate::model::identity::Permission::Governance),
            Action::AuditTail => Permission(crate::model::identity::Permission::Audit),
            Action::CreatePolicy | Action::UpdatePolicy | Action::DeletePolicy => PolicyAuthor,
            Action::ListPolicies => Anyone,
            Action::RequestUnmask
            | Action::ListUnmaskRequests
            | Action::UnmaskResult
            | Action::RequestAccess
            | Action::ListAccessRequests
            | Action::DpBudget => Anyone,
            Action::ApproveUnmask | Action::DenyUnmask => UnmaskApprover,
            Action::ApproveAccess | Action::DenyAccess | Action::RevokeAccess => Approver,
        }
    }

    /// What it does (`ListActions`).
    pub fn description(self) -> &'static str {
        match self {
            Action::WhoAmI => "Your identity as Veil sees it: groups, attributes, permissions.",
            Action::Describe => "A dataset's dictionary as you see it (masks included).",
            Action::Search => {
                "Search the datasets you can see by name, description, tag and column."
            }
            Action::RegisterDataset => {
                "Register files under a configured root, or a database table, view or query, as a dataset; you become its owner."
            }
            Action::DropDataset => "Drop a runtime-registered dataset (the files stay).",
            Action::SetColumnTags => {
                "Set a column's tags; tags a global policy targets need GOVERNANCE."
            }
            Action::SetDescription => "Set a dataset's or column's description.",
            Action::SetExperts => {
                "Name the people to ask about a dataset (its experts); being one grants nothing."
            }
            Action::Accelerate => {
                "Keep a local copy of a database dataset and serve reads from it while fresh (or stop)."
            }
            Action::Refresh => "Refresh an accelerated dataset's local copy now.",
            Action::Discover => {
                "Sample a dataset and propose column tags (e-mail, SSN, phone, card, IP, birth date, name, postal code) with a confidence; never returns values."
            }
            Action::DecideTagProposal => {
                "Accept a proposed tag (policies on it apply from the next request) or reject it (not proposed again)."
            }
            Action::SetUserDisabled => "Disable or re-enable a user.",
            Action::GrantPermission => "Grant a permission to a user.",
            Action::RevokePermission => "Revoke a runtime-granted permission.",
            Action::PutUser => {
                "Create or replace a user's directory entry (groups and attributes)."
            }
            Action::DeleteUser => "Delete a runtime directory entry.",
            Action::ListUsers => {
                "The directory: users, groups, attributes, permissions, disabled flags."
            }
            Action::Reload => {
                "Re-read the config file (like SIGHUP); in-flight reads keep their policies."
            }
            Action::AuditTail => "The most recent audit events, as JSON.",
            Action::CreatePolicy => {
                "Create a policy (JSON, like a [[policies]] entry); effective from the next request."
            }
            Action::UpdatePolicy => {
                "Replace a runtime policy, optionally only at an expected version."
            }
            Action::DeletePolicy => "Delete a runtime policy.",
            Action::ListPolicies => {
                "Policies you govern, that apply to datasets you own, or (for data owners) global ones, as JSON."
            }
            Action::Explain => {
                "What a user gets from a dataset: subscription, policies and the step that matched, schema, masks, row filters."
            }
            Action::ProfileKAnonymity => {
                "Profile columns for k-anonymization: distinct values (the cutoff), the data's k and a suggested k."
            }
            Action::RequestUnmask => {
                "Ask to see the originals of values a reversible or format-preserving mask produced, with a reason."
            }
            Action::ApproveUnmask => {
                "Approve a pending unmask request (someone the masking policy exempts; never the requester)."
            }
            Action::DenyUnmask => "Deny a pending unmask request.",
            Action::ListUnmaskRequests => "Unmask requests you may decide, and your own, as JSON.",
            Action::UnmaskResult => {
                "The originals of your approved unmask request (audited as a release)."
            }
            Action::RequestAccess => {
                "Ask to read a dataset that is open on request, with a reason."
            }
            Action::ApproveAccess => "Approve a pending access request.",
            Action::DenyAccess => "Deny a pending access request.",
            Action::ListAccessRequests => "Access requests you may decide, and your own, as JSON.",
            Action::RevokeAccess => {
                "Withdraw an approved access request; the user's next read is refused."
            }
            Action::DpBudget => {
                "Differential privacy budgets this period: yours and each dataset's (owners, governors and auditors: every user's), as JSON."
            }
        }
    }
}

/// A policy to write, parsed and validated from its JSON.
#[derive(Debug, Clone)]
pub struct PolicyWrite {
    pub policy: Policy,
    /// Update only at this version (`None`: any).
    pub expected_version: Option<u64>,
}

/// A use case's typed input.
#[derive(Debug, Clone)]
pub enum Request {
    WhoAmI,
    Describe { dataset: String },
    Search { query: String, limit: u32 },
    RegisterDataset(RegisterDatasetRequest),
    DropDataset { dataset: String },
    SetColumnTags(SetColumnTagsRequest),
    SetDescription(SetDescriptionRequest),
    SetExperts(SetExpertsRequest),
    Accelerate(AccelerateRequest),
    Refresh(RefreshRequest),
    Discover(DiscoverRequest),
    DecideTagProposal(DecideTagProposalRequest),
    SetUserDisabled(SetUserDisabledRequest),
    GrantPermission(PermissionRequest),
    RevokePermission(PermissionRequest),
    PutUser(PutUserRequest),
    DeleteUser(DeleteUserRequest),
    ListUsers,
    Reload,
    AuditTail { limit: u32 },
    CreatePolicy(PolicyWrite),
    UpdatePolicy(PolicyWrite),
    DeletePolicy(DeletePolicyRequest),
    ListPolicies(ListPoliciesRequest),
    Explain(ExplainRequest),
    ProfileKAnonymity(ProfileKAnonymityRequest),
    RequestUnmask(RequestUnmaskRequest),
    ApproveUnmask(DecideAccessRequest),
    DenyUnmask(DecideAccessRequest),
    ListUnmaskRequests(ListAccessRequestsRequest),
    UnmaskResult(UnmaskResultRequest),
    RequestAccess(RequestAccessRequest),
    ApproveAccess(DecideAccessRequest),
    DenyAccess(DecideAccessRequest),
    ListAccessRequests(ListAccessRequestsRequest),
    RevokeAccess(RevokeAccessRequest),
    DpBudget(DpBudgetRequest),
}

/// What a requirement is checked against.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// Nothing in the request: the caller alone decides.
    Caller,
    /// A dataset by name (ownership).
    Dataset(&'a str),
    /// A dataset to register (into its name's schema).
    NewDataset(&'a RegisterDatasetRequest),
    /// A policy to create or update.
    PolicyWrite { policy: &'a Policy, update: bool },
    /// A policy to delete, by name or id.
    PolicyName(&'a str),
    /// An access request to decide, by id.
    AccessRequest(&'a str),
    /// A dataset whose access requests the caller approves.
    ApproverOf(&'a str),
    /// An unmask request to decide, by id.
    UnmaskRequest(&'a str),
}

impl Request {
    pub fn action(&self) -> Action {
        match self {
            Request::WhoAmI => Action::WhoAmI,
            Request::Describe { .. } => Action::Describe,
            Request::Search { .. } => Action::Search,
            Request::RegisterDataset(_) => Action::RegisterDataset,
            Request::DropDataset { .. } => Action::DropDataset,
            Request::SetColumnTags(_) => Action::SetColumnTags,
            Request::SetDescription(_) => Action::SetDescription,
            Request::SetExperts(_) => Action::SetExperts,
            Request::Accelerate(_) => Action::Accelerate,
            Request::Refresh(_) => Action::Refresh,
            Request::Discover(_) => Action::Discover,
            Request::DecideTagProposal(_) => Action::DecideTagProposal,
            Request::SetUserDisabled(_) => Action::SetUserDisabled,
            Request::GrantPermission(_) => Action::GrantPermission,
            Request::RevokePermission(_) => Action::RevokePermission,
            Request::PutUser(_) => Action::PutUser,
            Request::DeleteUser(_) => Action::DeleteUser,
            Request::ListUsers => Action::ListUsers,
            Request::Reload => Action::Reload,
            Request::AuditTail { .. } => Action::AuditTail,
            Request::CreatePolicy(_) => Action::CreatePolicy,
            Request::UpdatePolicy(_) => Action::UpdatePolicy,
            Request::DeletePolicy(_) => Action::DeletePolicy,
            Request::ListPolicies(_) => Action::ListPolicies,
            Request::Explain(_) => Action::Explain,
            Request::ProfileKAnonymity(_) => Action::ProfileKAnonymity,
            Request::RequestUnmask(_) => Action::RequestUnmask,
            Request::ApproveUnmask(_) => Action::ApproveUnmask,
            Request::DenyUnmask(_) => Action::DenyUnmask,
            Request::ListUnmaskRequests(_) => Action::ListUnmaskRequests,
            Request::UnmaskResult(_) => Action::UnmaskResult,
            Request::RequestAccess(_) => Action::RequestAccess,
            Request::ApproveAccess(_) => Action::ApproveAccess,
            Request::DenyAccess(_) => Action::DenyAccess,
            Request::ListAccessRequests(_) => Action::ListAccessRequests,
            Request::RevokeAccess(_) => Action::RevokeAccess,
            Request::DpBudget(_) => Action::DpBudget,
        }
    }

    /// What the action's requirement is checked against.
    pub fn target(&self) -> Target<'_> {
        match self {
            Request::WhoAmI
            | Request::Describe { .. }
            | Request::Search { .. }
            | Request::SetUserDisabled(_)
            | Request::GrantPermission(_)
            | Request::RevokePermission(_)
            | Request::PutUser(_)
            | Request::DeleteUser(_)
            | Request::ListUsers
            | Request::Reload
            | Request::AuditTail { .. }
            | Request::ListPolicies(_)
            | Request::RequestUnmask(_)
            | Request::ListUnmaskRequests(_)
            | Request::UnmaskResult(_)
            | Request::RequestAccess(_)
            | Request::ListAccessRequests(_)
            | Request::DpBudget(_) => Target::Caller,
            Request::RegisterDataset(r) => Target::NewDataset(r),
            Request::DropDataset { dataset } => Target::Dataset(dataset),
            Request::SetColumnTags(r) => Target::Dataset(&r.dataset),
            Request::SetDescription(r) => Target::Dataset(&r.dataset),
            Request::SetExperts(r) => Target::Dataset(&r.dataset),
            Request::Accelerate(r) => Target::Dataset(&r.dataset),
            Request::Refresh(r) => Target::Dataset(&r.dataset),
            Request::Discover(r) => Target::Dataset(&r.dataset),
            Request::DecideTagProposal(r) => Target::Dataset(&r.dataset),
            Request::Explain(r) => Target::Dataset(&r.dataset),
            Request::ProfileKAnonymity(r) => Target::Dataset(&r.dataset),
            Request::CreatePolicy(w) => Target::PolicyWrite {
                policy: &w.policy,
                update: false,
            },
            Request::UpdatePolicy(w) => Target::PolicyWrite {
                policy: &w.policy,
                update: true,
            },
            Request::DeletePolicy(r) => Target::PolicyName(&r.name),
            Request::ApproveUnmask(r) | Request::DenyUnmask(r) => {
                Target::UnmaskRequest(&r.request_id)
            }
            Request::ApproveAccess(r) | Request::DenyAccess(r) => {
                Target::AccessRequest(&r.request_id)
            }
            Request::RevokeAccess(r) => Target::ApproverOf(&r.dataset),
        }
    }

    /// Fill the audit event with what the request alone says (names and
    /// ids, cut to size), so refusals are recorded with them too.
    pub fn annotate(&self, event: &mut AuditEvent, default_issuer: &str) {
        let name = |s: &str| Some(s.chars().take(256).collect::<String>());
        // A user the request names, as the handler will resolve it.
        let user = |u: &Option<veil_proto::UserRef>| -> String {
            match u {
                Some(u) => crate::model::identity::Identity::new(
                    if u.issuer.is_empty() {
                        default_issuer.to_string()
                    } else {
                        u.issuer.chars().take(256).collect()
                    },
                    u.subject.chars().take(256).collect::<String>(),
                )
                .to_string(),
                None => "(none)".into(),
            }
        };
        let id = |s: &str| s.chars().take(64).collect::<String>();
        let column = |s: &str| vec![s.chars().take(256).collect::<String>()];
        match self {
            Request::WhoAmI
            | Request::Search { .. }
            | Request::ListUsers
            | Request::Reload
            | Request::AuditTail { .. }
            | Request::ListUnmaskRequests(_)
            | Request::ListAccessRequests(_) => {}
            Request::SetUserDisabled(r) => {
                event.message = format!("user {} disabled={}", user(&r.user), r.disabled);
            }
            Request::GrantPermission(r) | Request::RevokePermission(r) => {
                event.message = format!(
                    "{} {}",
                    user(&r.user),
                    r.permission.chars().take(64).collect::<String>()
                );
            }
            Request::PutUser(r) => event.message = format!("user {}", user(&r.user)),
            Request::DeleteUser(r) => event.message = format!("user {}", user(&r.user)),
            Request::Describe { dataset } | Request::DropDataset { dataset } => {
                event.dataset = name(dataset);
            }
            Request::RegisterDataset(r) => event.dataset = name(&r.name),
            Request::SetColumnTags(r) => {
                event.dataset = name(&r.dataset);
                event.columns = column(&r.column);
            }
            Request::SetDescription(r) => event.dataset = name(&r.dataset),
            Request::SetExperts(r) => event.dataset = name(&r.dataset),
            Request::Accelerate(r) => event.dataset = name(&r.dataset),
            Request::Refresh(r) => event.dataset = name(&r.dataset),
            Request::Discover(r) => event.dataset = name(&r.dataset),
            Request::DecideTagProposal(r) => {
                event.dataset = name(&r.dataset);
                event.columns = column(&r.column);
            }
            Request::CreatePolicy(w) | Request::UpdatePolicy(w) => {
                event.message = format!(
                    "policy {}",
                    w.policy.spec.name.chars().take(200).collect::<String>()
                );
                event.dataset = w.policy.spec.dataset.clone();
            }
            Request::DeletePolicy(r) => {
                event.message = format!("policy {}", r.name.chars().take(200).collect::<String>());
            }
            Request::ListPolicies(r) => {
                if !r.dataset.is_empty() {
                    event.dataset = name(&r.dataset);
                }
            }
            Request::Explain(r) => {
                event.dataset = name(&r.dataset);
                event.message = format!("explain for {}", user(&r.user));
            }
            Request::ProfileKAnonymity(r) => event.dataset = name(&r.dataset),
            Request::RequestUnmask(r) => {
                event.dataset = name(&r.dataset);
                event.columns = column(&r.column);
            }
            Request::ApproveUnmask(r) | Request::DenyUnmask(r) => {
                event.message = format!("unmask request {}", id(&r.request_id));
            }
            Request::UnmaskResult(r) => {
                event.message = format!("unmask release {}", id(&r.request_id));
            }
            Request::RequestAccess(r) => event.dataset = name(&r.dataset),
            Request::ApproveAccess(r) | Request::DenyAccess(r) => {
                event.message = format!("access request {}", id(&r.request_id));
            }
            Request::RevokeAccess(r) => {
                event.dataset = name(&r.dataset);
                event.message = format!("revoke access of {}", user(&r.user));
            }
            Request::DpBudget(r) => {
                if !r.dataset.is_empty() {
                    event.dataset = name(&r.dataset);
                }
            }
        }
    }
}

/// A use case's typed answer.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A sentence saying what was done.
    Done(String),
    WhoAmI(WhoAmI),
    SearchHits(Vec<veil_proto::SearchHit>),
    Description(veil_proto::DatasetDescription),
    Users(Vec<UserEntry>),
    /// Access or unmask requests.
    Requests(Vec<AccessRequest>),
    AuditEvents(Vec<AuditEvent>),
    /// JSON documents (policies, profiles, discovery reports, releases).
    Documents(Vec<serde_json::Value>),
    /// One JSON document meant to be read by people (explain).
    Report(serde_json::Value),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::rules::PolicySpecExt;

    /// A request of each action, with the least content that names its
    /// target.
    fn sample(a: Action) -> Request {
        let policy = || {
            let spec: crate::model::policy::PolicySpec = serde_json::from_str(
                r#"{"name": "p", "dataset": "a.b", "subscription": {"anyone": true}}"#,
            )
            .expect("a policy spec");
            PolicyWrite {
                policy: Policy {
                    id: String::new(),
                    version: 0,
                    origin: crate::model::Origin::Runtime,
                    rule: spec.validate().expect("a valid policy"),
                    spec,
                },
                expected_version: None,
            }
        };
        match a {
            Action::WhoAmI => Request::WhoAmI,
            Action::Describe => Request::Describe {
                dataset: "a.b".into(),
            },
            Action::Search => Request::Search {
                query: String::new(),
                limit: 0,
            },
            Action::RegisterDataset => Request::RegisterDataset(Default::default()),
            Action::DropDataset => Request::DropDataset {
                dataset: "a.b".into(),
            },
            Action::SetColumnTags => Request::SetColumnTags(Default::default()),
            Action::SetDescription => Request::SetDescription(Default::default()),
            Action::SetExperts => Request::SetExperts(Default::default()),
            Action::Accelerate => Request::Accelerate(Default::default()),
            Action::Refresh => Request::Refresh(Default::default()),
            Action::Discover => Request::Discover(Default::default()),
            Action::DecideTagProposal => Request::DecideTagProposal(Default::default()),
            Action::SetUserDisabled => Request::SetUserDisabled(Default::default()),
            Action::GrantPermission => Request::GrantPermission(Default::default()),
            Action::RevokePermission => Request::RevokePermission(Default::default()),
            Action::PutUser => Request::PutUser(Default::default()),
            Action::DeleteUser => Request::DeleteUser(Default::default()),
            Action::ListUsers => Request::ListUsers,
            Action::Reload => Request::Reload,
            Action::AuditTail => Request::AuditTail { limit: 0 },
            Action::CreatePolicy => Request::CreatePolicy(policy()),
            Action::UpdatePolicy => Request::UpdatePolicy(policy()),
            Action::DeletePolicy => Request::DeletePolicy(Default::default()),
            Action::ListPolicies => Request::ListPolicies(Default::default()),
            Action::Explain => Request::Explain(Default::default()),
            Action::ProfileKAnonymity => Request::ProfileKAnonymity(Default::default()),
            Action::RequestUnmask => Request::RequestUnmask(Default::default()),
            Action::ApproveUnmask => Request::ApproveUnmask(Default::default()),
            Action::DenyUnmask => Request::DenyUnmask(Default::default()),
            Action::ListUnmaskRequests => Request::ListUnmaskRequests(Default::default()),
            Action::UnmaskResult => Request::UnmaskResult(Default::default()),
            Action::RequestAccess => Request::RequestAccess(Default::default()),
            Action::ApproveAccess => Request::ApproveAccess(Default::default()),
            Action::DenyAccess => Request::DenyAccess(Default::default()),
            Action::ListAccessRequests => Request::ListAccessRequests(Default::default()),
            Action::RevokeAccess => Request::RevokeAccess(Default::default()),
            Action::DpBudget => Request::DpBudget(Default::default()),
        }
    }

    /// The table: every action has a unique wire name that parses back to
    /// it, a description, and a requirement whose target its request
    /// names. An action added to the enum but not here fails to compile
    /// (the matches are exhaustive); one whose requirement needs a target
    /// its request doesn't carry fails this test.
    #[test]
    fn every_action_has_a_requirement_its_request_can_be_checked_against() {
        let mut names = std::collections::BTreeSet::new();
        for &a in Action::ALL {
            assert!(names.insert(a.name()), "{a:?}: duplicate name");
            assert_eq!(Action::parse(a.name()), Some(a));
            assert!(a.name().starts_with("veil."));
            assert!(!a.description().is_empty());
            let request = sample(a);
            assert_eq!(
                request.action(),
                a,
                "the sample request is another action's"
            );
            let fits = matches!(
                (a.requirement(), request.target()),
                (
                    Requirement::Anyone | Requirement::Permission(_),
                    Target::Caller
                ) | (Requirement::Registrar, Target::NewDataset(_))
                    | (Requirement::OwnerOrGovernance, Target::Dataset(_))
                    | (
                        Requirement::PolicyAuthor,
                        Target::PolicyWrite { .. } | Target::PolicyName(_)
                    )
                    | (
                        Requirement::Approver,
                        Target::AccessRequest(_) | Target::ApproverOf(_)
                    )
                    | (Requirement::UnmaskApprover, Target::UnmaskRequest(_))
            );
            assert!(
                fits,
                "{a:?}: requirement {:?} can't be checked against {:?}",
                a.requirement(),
                request.target()
            );
        }
        // Every action the wire contract names is offered, and no other.
        let wire = [
            actions::WHOAMI,
            actions::DESCRIBE,
            actions::SEARCH,
            actions::REGISTER_DATASET,
            actions::DROP_DATASET,
            actions::SET_COLUMN_TAGS,
            actions::SET_DESCRIPTION,
            actions::SET_USER_DISABLED,
            actions::GRANT_PERMISSION,
            actions::REVOKE_PERMISSION,
            actions::AUDIT_TAIL,
            actions::PUT_USER,
            actions::DELETE_USER,
            actions::LIST_USERS,
            actions::RELOAD,
            actions::CREATE_POLICY,
            actions::UPDATE_POLICY,
            actions::DELETE_POLICY,
            actions::LIST_POLICIES,
            actions::EXPLAIN,
            actions::PROFILE_K_ANONYMITY,
            actions::REQUEST_UNMASK,
            actions::APPROVE_UNMASK,
            actions::DENY_UNMASK,
            actions::LIST_UNMASK_REQUESTS,
            actions::UNMASK_RESULT,
            actions::REQUEST_ACCESS,
            actions::APPROVE_ACCESS,
            actions::DENY_ACCESS,
            actions::LIST_ACCESS_REQUESTS,
            actions::REVOKE_ACCESS,
            actions::SET_EXPERTS,
            actions::ACCELERATE,
            actions::REFRESH,
            actions::DISCOVER,
            actions::DECIDE_TAG_PROPOSAL,
            actions::DP_BUDGET,
        ];
        assert_eq!(
            names,
            wire.into_iter().collect::<std::collections::BTreeSet<_>>()
        );
        assert_eq!(Action::parse("veil.nothing"), None);
    }

    /// The requirements of the actions that change who may do what are
    /// pinned: weakening one is a visible change to this test.
    #[test]
    fn sensitive_requirements_are_pinned() {
        use crate::model::identity::Permission as P;
        let expect = [
            (Action::Reload, Requirement::Permission(P::Governance)),
            (Action::AuditTail, Requirement::Permission(P::Audit)),
            (
                Action::GrantPermission,
                Requirement::Permission(P::UserAdmin),
            ),
            (Action::PutUser, Requirement::Permission(P::UserAdmin)),
            (Action::ListUsers, Requirement::Permission(P::UserAdmin)),
            (Action::RegisterDataset, Requirement::Registrar),
            (Action::CreatePolicy, Requirement::PolicyAuthor),
            (Action::DeletePolicy, Requirement::PolicyAuthor),
            (Action::Explain, Requirement::OwnerOrGovernance),
            (Action::ApproveAccess, Requirement::Approver),
            (Action::ApproveUnmask, Requirement::UnmaskApprover),
        ];
        for (a, r) in expect {
            assert_eq!(a.requirement(), r, "{a:?}");
        }
    }
}
