//! Veil's Flight actions (`DoAction`): describe, whoami and administration.
//! Each action states the permission it needs; every call, allowed or not,
//! is audited before it takes effect. Policy authoring and explain live in
//! [`policies`], access requests in [`access`].

mod access;
mod discovery;
mod policies;
mod unmask;

use arrow_flight::{Action, ActionType};
use prost::Message;
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::Status;

use veil_proto::{
    ActionAck, AttributeValues, AuditTailRequest, ColumnDescription, DatasetDescription,
    DecideAccessRequest, DeleteUserRequest, DescribeRequest, DropDatasetRequest, ExplainRequest,
    ListUsersRequest, PermissionRequest, PolicyWriteRequest, PutUserRequest,
    RegisterDatasetRequest, ReloadRequest, SearchHit, SearchRequest, SetColumnTagsRequest,
    SetDescriptionRequest, SetExpertsRequest, SetUserDisabledRequest, UserEntry, UserRef, WhoAmI,
    actions,
};

use super::status::to_status;
use crate::audit::{AuditEventExt, AuditLog};
use crate::auth::authenticator::Authenticator;
use crate::catalog::roots::SharedRoots;
use crate::catalog::{NewDataset, build_dataset};
use crate::engine::Engine;
use crate::error::{Result, VeilError};
use crate::model::Origin;
use crate::model::audit::AuditEvent;
use crate::model::identity::{Identity, Permission, Principal, UserRecord};
use crate::policy::rules::tag_covers;
use crate::provisioning::reload::Reloader;
use crate::store::PutMode;

/// Who may call an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Any authenticated user.
    Anyone,
    /// A permission.
    Permission(Permission),
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

/// Every action, its requirement and what it does (also `ListActions`).
pub const ACTIONS: &[(&str, Requirement, &str)] = &[
    (
        actions::WHOAMI,
        Requirement::Anyone,
        "Your identity as Veil sees it: groups, attributes, permissions.",
    ),
    (
        actions::DESCRIBE,
        Requirement::Anyone,
        "A dataset's dictionary as you see it (masks included).",
    ),
    (
        actions::SEARCH,
        Requirement::Anyone,
        "Search the datasets you can see by name, description, tag and column.",
    ),
    (
        actions::REGISTER_DATASET,
        Requirement::Permission(Permission::CreateDataSource),
        "Register files under a configured root as a dataset; you become its owner.",
    ),
    (
        actions::DROP_DATASET,
        Requirement::OwnerOrGovernance,
        "Drop a runtime-registered dataset (the files stay).",
    ),
    (
        actions::SET_COLUMN_TAGS,
        Requirement::OwnerOrGovernance,
        "Set a column's tags; tags a global policy targets need GOVERNANCE.",
    ),
    (
        actions::SET_DESCRIPTION,
        Requirement::OwnerOrGovernance,
        "Set a dataset's or column's description.",
    ),
    (
        actions::SET_EXPERTS,
        Requirement::OwnerOrGovernance,
        "Name the people to ask about a dataset (its experts); being one grants nothing.",
    ),
    (
        actions::DISCOVER,
        Requirement::OwnerOrGovernance,
        "Sample a dataset and propose column tags (e-mail, SSN, phone, card, IP, birth date, name, postal code) with a confidence; never returns values.",
    ),
    (
        actions::DECIDE_TAG_PROPOSAL,
        Requirement::OwnerOrGovernance,
        "Accept a proposed tag (policies on it apply from the next request) or reject it (not proposed again).",
    ),
    (
        actions::SET_USER_DISABLED,
        Requirement::Permission(Permission::UserAdmin),
        "Disable or re-enable a user.",
    ),
    (
        actions::GRANT_PERMISSION,
        Requirement::Permission(Permission::UserAdmin),
        "Grant a permission to a user.",
    ),
    (
        actions::REVOKE_PERMISSION,
        Requirement::Permission(Permission::UserAdmin),
        "Revoke a runtime-granted permission.",
    ),
    (
        actions::PUT_USER,
        Requirement::Permission(Permission::UserAdmin),
        "Create or replace a user's directory entry (groups and attributes).",
    ),
    (
        actions::DELETE_USER,
        Requirement::Permission(Permission::UserAdmin),
        "Delete a runtime directory entry.",
    ),
    (
        actions::LIST_USERS,
        Requirement::Permission(Permission::UserAdmin),
        "The directory: users, groups, attributes, permissions, disabled flags.",
    ),
    (
        actions::RELOAD,
        Requirement::Permission(Permission::Governance),
        "Re-read the config file (like SIGHUP); in-flight reads keep their policies.",
    ),
    (
        actions::AUDIT_TAIL,
        Requirement::Permission(Permission::Audit),
        "The most recent audit events, as JSON.",
    ),
    (
        actions::CREATE_POLICY,
        Requirement::PolicyAuthor,
        "Create a policy (JSON, like a [[policies]] entry); effective from the next request.",
    ),
    (
        actions::UPDATE_POLICY,
        Requirement::PolicyAuthor,
        "Replace a runtime policy, optionally only at an expected version.",
    ),
    (
        actions::DELETE_POLICY,
        Requirement::PolicyAuthor,
        "Delete a runtime policy.",
    ),
    (
        actions::LIST_POLICIES,
        Requirement::Anyone,
        "Policies you govern, that apply to datasets you own, or (for data owners) global ones, as JSON.",
    ),
    (
        actions::EXPLAIN,
        Requirement::OwnerOrGovernance,
        "What a user gets from a dataset: subscription, policies and the step that matched, schema, masks, row filters.",
    ),
    (
        actions::PROFILE_K_ANONYMITY,
        Requirement::OwnerOrGovernance,
        "Profile columns for k-anonymization: distinct values (the cutoff), the data's k and a suggested k.",
    ),
    (
        actions::REQUEST_UNMASK,
        Requirement::Anyone,
        "Ask to see the originals of values a reversible or format-preserving mask produced, with a reason.",
    ),
    (
        actions::APPROVE_UNMASK,
        Requirement::UnmaskApprover,
        "Approve a pending unmask request (someone the masking policy exempts; never the requester).",
    ),
    (
        actions::DENY_UNMASK,
        Requirement::UnmaskApprover,
        "Deny a pending unmask request.",
    ),
    (
        actions::LIST_UNMASK_REQUESTS,
        Requirement::Anyone,
        "Unmask requests you may decide, and your own, as JSON.",
    ),
    (
        actions::UNMASK_RESULT,
        Requirement::Anyone,
        "The originals of your approved unmask request (audited as a release).",
    ),
    (
        actions::REQUEST_ACCESS,
        Requirement::Anyone,
        "Ask to read a dataset that is open on request, with a reason.",
    ),
    (
        actions::APPROVE_ACCESS,
        Requirement::Approver,
        "Approve a pending access request.",
    ),
    (
        actions::DENY_ACCESS,
        Requirement::Approver,
        "Deny a pending access request.",
    ),
    (
        actions::LIST_ACCESS_REQUESTS,
        Requirement::Anyone,
        "Access requests you may decide, and your own, as JSON.",
    ),
    (
        actions::REVOKE_ACCESS,
        Requirement::Approver,
        "Withdraw an approved access request; the user's next read is refused.",
    ),
];

#[derive(Debug)]
pub struct Admin {
    engine: Arc<Engine>,
    audit: AuditLog,
    roots: Arc<SharedRoots>,
    reloader: Arc<Reloader>,
    /// Explain weighs hypothetical token claims as the authenticator would.
    auth: Arc<Authenticator>,
}

fn decode<T: Message + Default>(body: &[u8]) -> Result<T> {
    T::decode(body).map_err(|_| {
        VeilError::InvalidArgument("the action body is not a valid message for this action".into())
    })
}

fn ack(message: impl Into<String>) -> Vec<Vec<u8>> {
    vec![
        ActionAck {
            message: message.into(),
        }
        .encode_to_vec(),
    ]
}

fn denied(action: &str, need: &str) -> VeilError {
    VeilError::PermissionDenied(format!(
        "{action} needs {need}; ask an administrator to grant it"
    ))
}

impl Admin {
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

    pub fn catalog() -> Vec<ActionType> {
        ACTIONS
            .iter()
            .map(|(name, _, what)| ActionType {
                r#type: name.to_string(),
                description: what.to_string(),
            })
            .collect()
    }

    fn user(&self, u: Option<UserRef>) -> Result<Identity> {
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

    /// Run an action: check, audit, perform. Returns result bodies.
    pub async fn run(
        &self,
        p: &Arc<Principal>,
        action: &Action,
    ) -> std::result::Result<Vec<Vec<u8>>, Status> {
        let name = action.r#type.as_str();
        let mut event = AuditEvent::new(
            &format!("admin.{}", name.trim_start_matches("veil.")),
            Some(p),
        );
        let Some((_, requirement, _)) = ACTIONS.iter().find(|(n, _, _)| *n == name) else {
            let e = VeilError::InvalidArgument(format!(
                "unknown action '{}': ListActions shows the available ones",
                name.chars().take(64).collect::<String>()
            ));
            return Err(self.fail(event, e).await);
        };
        // The table above is the one place permissions are decided;
        // ownership is checked where the dataset is looked up.
        if let Requirement::Permission(perm) = requirement
            && !p.has(*perm)
        {
            return Err(self.fail(event, denied(name, perm.as_str())).await);
        }
        match self.dispatch(p, name, &action.body, &mut event).await {
            // The attempt was recorded as `permitted` before it took effect;
            // this records that it did.
            Ok(out) => {
                let mut done = event;
                done.event_id = uuid::Uuid::new_v4().to_string();
                done.status = "ok".into();
                self.audit.record(done).await.map_err(|e| to_status(&e))?;
                Ok(out)
            }
            Err(e) => Err(self.fail(event, e).await),
        }
    }

    async fn fail(&self, event: AuditEvent, e: VeilError) -> Status {
        match self.audit.record(event.failed(&e)).await {
            Ok(()) => to_status(&e),
            Err(a) => to_status(&a),
        }
    }

    /// Record the permitted attempt before it takes effect (status
    /// `permitted`); the outcome follows as a second event.
    async fn permitted(&self, event: &AuditEvent) -> Result<()> {
        let mut attempt = event.clone();
        attempt.status = "permitted".into();
        self.audit.record(attempt).await
    }

    async fn dispatch(
        &self,
        p: &Arc<Principal>,
        name: &str,
        body: &[u8],
        event: &mut AuditEvent,
    ) -> Result<Vec<Vec<u8>>> {
        match name {
            actions::WHOAMI => {
                self.permitted(event).await?;
                Ok(vec![whoami(p).encode_to_vec()])
            }
            actions::SEARCH => {
                let req: SearchRequest = decode(body)?;
                let limit = match req.limit {
                    0 => 50,
                    n => n.min(1000),
                } as usize;
                let visible = self.engine.visible_datasets(p).await?;
                let hits = crate::catalog::search::search(
                    visible.iter().map(|(d, readable)| (d, *readable)),
                    &req.query,
                    limit,
                );
                // The words searched for are not recorded: someone may
                // search for a value (an SSN) they hold.
                event.rows = Some(hits.len() as u64);
                event.message = format!(
                    "{} word(s) searched, {} dataset(s) found",
                    req.query.split_whitespace().count(),
                    hits.len()
                );
                self.permitted(event).await?;
                Ok(hits
                    .into_iter()
                    .map(|h| {
                        SearchHit {
                            name: h.dataset.name.clone(),
                            description: h.dataset.description.clone(),
                            access: if h.readable { "read" } else { "request" }.into(),
                            matches: h.matches,
                            owners: h.dataset.owners.iter().map(|o| o.subject.clone()).collect(),
                            tags: h.dataset.tags.clone(),
                            experts: h
                                .dataset
                                .experts
                                .iter()
                                .map(|o| o.subject.clone())
                                .collect(),
                        }
                        .encode_to_vec()
                    })
                    .collect())
            }
            actions::DESCRIBE => {
                let req: DescribeRequest = decode(body)?;
                event.dataset = Some(req.dataset.chars().take(256).collect());
                let (d, policy, readable) = self.engine.lookup_visible(p, &req.dataset).await?;
                let schema = crate::policy::secure_view::output_schema(&d, &policy)?;
                let columns = d
                    .columns
                    .iter()
                    .map(|c| ColumnDescription {
                        name: c.name.clone(),
                        data_type: schema
                            .field_with_name(&c.name)
                            .map(|f| f.data_type().to_string())
                            .unwrap_or_default(),
                        description: c.description.clone(),
                        tags: c.tags.clone(),
                        mask: policy.mask_label(&c.name),
                    })
                    .collect();
                self.permitted(event).await?;
                Ok(vec![
                    DatasetDescription {
                        name: d.name.clone(),
                        description: d.description.clone(),
                        owners: d.owners.iter().map(|o| o.subject.clone()).collect(),
                        tags: d.tags.clone(),
                        columns,
                        format: if crate::audit::dataset::is_audit(&d) {
                            "veil audit trail".into()
                        } else {
                            d.source.format.as_str().to_string()
                        },
                        rows_filtered: policy.rows_filtered(),
                        access: if readable { "read" } else { "request" }.into(),
                        experts: d.experts.iter().map(|o| o.subject.clone()).collect(),
                    }
                    .encode_to_vec(),
                ])
            }
            actions::REGISTER_DATASET => {
                let req: RegisterDatasetRequest = decode(body)?;
                event.dataset = Some(req.name.chars().take(256).collect());
                // Everything up to the name check depends only on the
                // request and the caller, never on which datasets exist.
                crate::catalog::validate_dataset_name(&req.name)?;
                check_schema_grant(p, &req.name)?;
                if !crate::model::dataset::is_remote(&req.location)
                    && !std::path::Path::new(&req.location).is_absolute()
                {
                    return Err(VeilError::InvalidArgument(
                        "the location must be an absolute path on the server (or s3://bucket/key)"
                            .into(),
                    ));
                }
                let location = self.roots.get().confine_location(&req.location)?;
                // Registering files another dataset already serves would make
                // the caller their owner, with none of that dataset's policies.
                let snapshot = self.engine.state().current().await?;
                // That holds for the caller's own datasets too: a new record
                // has none of the old one's tags, so it would shed the
                // global policies those tags bring.
                //
                // A taken name is reported only inside a schema the caller
                // may register into (see `check_schema_grant`): its names
                // are shared by everyone it is granted to.
                if let Some(other) = snapshot
                    .datasets
                    .keys()
                    .find(|n| n.eq_ignore_ascii_case(&req.name))
                {
                    return Err(VeilError::AlreadyExists(if *other == req.name {
                        format!("dataset '{other}' already exists; choose another name")
                    } else {
                        format!(
                            "dataset '{}' already exists (names are case-insensitive: '{other}'); choose another name",
                            req.name
                        )
                    }));
                }
                // The same answer whichever dataset (visible to the caller or
                // not) the files back, and it names none.
                let shared = snapshot
                    .datasets
                    .values()
                    .any(|d| locations_overlap(&d.source.location, &location));
                if shared && !p.has(Permission::Governance) {
                    return Err(VeilError::PermissionDenied(
                        "these files (or files under or above them) already back a dataset; registering them again would bypass its tags and the policies they bring. A governor may register them".into(),
                    ));
                }
                let record = build_dataset(
                    NewDataset {
                        name: req.name.clone(),
                        format: req.format.clone(),
                        location: location.clone(),
                        hive_partitioned: req.hive_partitioned,
                        description: req.description.clone(),
                        owners: vec![p.identity.clone()],
                        experts: vec![],
                        tags: vec![],
                        columns: BTreeMap::new(),
                        origin: Origin::Runtime,
                        event_time: None,
                    },
                    self.engine.stores(),
                )
                .await?;
                self.permitted(event).await?;
                self.engine
                    .state()
                    .store()
                    .put_dataset(&record, PutMode::Create)
                    .await?;
                Ok(ack(format!(
                    "registered {} with {} columns; only its owners can read it until a subscription policy opens it",
                    record.name,
                    record.columns.len()
                )))
            }
            actions::DROP_DATASET => {
                let req: DropDatasetRequest = decode(body)?;
                event.dataset = Some(req.name.chars().take(256).collect());
                let d = self.owned_dataset(p, &req.name, name).await?;
                refuse_builtin(&d)?;
                if d.origin == Origin::Config {
                    return Err(VeilError::FailedPrecondition(format!(
                        "dataset {} is declared in the config file; remove it there and reload",
                        d.name
                    )));
                }
                // Dropping and re-registering would shed the tags a
                // governor's global policies act on.
                let snapshot = self.engine.state().current().await?;
                // A policy naming it would then name nothing, and the config
                // holding such a policy would no longer load.
                if let Some(pol) = snapshot
                    .policies
                    .iter()
                    .find(|pol| pol.spec.dataset.as_deref() == Some(d.name.as_str()))
                {
                    return Err(VeilError::FailedPrecondition(format!(
                        "policy '{}' applies to {}; remove that policy first",
                        pol.spec.name, d.name
                    )));
                }
                let global = global_policy_tags(&snapshot);
                let tagged = d
                    .tags
                    .iter()
                    .chain(d.columns.iter().flat_map(|c| c.tags.iter()))
                    .any(|t| global.iter().any(|g| tag_covers(g, t)));
                if tagged && !p.has(Permission::Governance) {
                    return Err(denied(
                        "dropping a dataset whose tags global policies target",
                        "GOVERNANCE",
                    ));
                }
                self.permitted(event).await?;
                self.engine.state().store().drop_dataset(&d.name).await?;
                Ok(ack(format!("dropped {}", d.name)))
            }
            actions::SET_COLUMN_TAGS => {
                let req: SetColumnTagsRequest = decode(body)?;
                event.dataset = Some(req.dataset.chars().take(256).collect());
                event.columns = vec![req.column.clone()];
                let summary = self
                    .edit_dataset(p, &req.dataset, name, event, false, |d, snapshot, _| {
                        retag_column(p, d, &req.column, req.tags.clone(), snapshot)
                    })
                    .await?;
                Ok(ack(summary))
            }
            actions::SET_DESCRIPTION => {
                let req: SetDescriptionRequest = decode(body)?;
                event.dataset = Some(req.dataset.chars().take(256).collect());
                self.edit_dataset(p, &req.dataset, name, event, false, |d, _, _| {
                    if req.column.is_empty() {
                        if d.origin == Origin::Config {
                            return Err(VeilError::FailedPrecondition(format!(
                                "dataset {} is declared in the config file ([[datasets]]); change its description there and reload",
                                d.name
                            )));
                        }
                        d.description = req.description.clone();
                        return Ok(());
                    }
                    let dataset = d.name.clone();
                    let col = d
                        .columns
                        .iter_mut()
                        .find(|c| c.name == req.column)
                        .ok_or_else(|| {
                            VeilError::InvalidArgument(format!(
                                "dataset {dataset} has no column '{}'",
                                req.column
                            ))
                        })?;
                    if col.from_config {
                        return Err(config_column(&dataset, &req.column));
                    }
                    col.description = req.description.clone();
                    Ok(())
                })
                .await?;
                Ok(ack("description updated"))
            }
            actions::SET_EXPERTS => {
                let req: SetExpertsRequest = decode(body)?;
                event.dataset = Some(req.dataset.chars().take(256).collect());
                if req.experts.len() > MAX_EXPERTS {
                    return Err(VeilError::InvalidArgument(format!(
                        "name at most {MAX_EXPERTS} experts"
                    )));
                }
                let mut experts: Vec<Identity> = Vec::new();
                for u in req.experts {
                    let who = self.user(Some(u))?;
                    if who.subject.chars().any(char::is_control) || who.subject.len() > 256 {
                        return Err(VeilError::InvalidArgument(
                            "an expert's subject has control characters or is over 256 bytes"
                                .into(),
                        ));
                    }
                    if !experts.contains(&who) {
                        experts.push(who);
                    }
                }
                let summary = self
                    .edit_dataset(p, &req.dataset, name, event, false, |d, _, event| {
                        if d.origin == Origin::Config {
                            return Err(VeilError::FailedPrecondition(format!(
                                "dataset {} is declared in the config file ([[datasets]]); name its experts there (experts = [...]) and reload",
                                d.name
                            )));
                        }
                        d.experts = experts.clone();
                        let summary = if d.experts.is_empty() {
                            format!("experts of {} cleared", d.name)
                        } else {
                            format!(
                                "experts of {}: {}",
                                d.name,
                                d.experts
                                    .iter()
                                    .map(|e| e.to_string())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        };
                        event.message = summary.clone();
                        Ok(summary)
                    })
                    .await?;
                Ok(ack(summary))
            }
            actions::DISCOVER => self.discover(p, decode(body)?, event).await,
            actions::DECIDE_TAG_PROPOSAL => self.decide_tag_proposal(p, decode(body)?, event).await,
            actions::SET_USER_DISABLED => {
                let req: SetUserDisabledRequest = decode(body)?;
                let who = self.user(req.user)?;
                if req.disabled && who == p.identity {
                    return Err(VeilError::InvalidArgument(
                        "you cannot disable yourself: nobody could undo it through you; ask another user administrator".into(),
                    ));
                }
                event.message = format!("user {} disabled={}", who, req.disabled);
                self.permitted(event).await?;
                self.engine
                    .state()
                    .store()
                    .set_user_disabled(&who, req.disabled)
                    .await?;
                Ok(ack(format!(
                    "{} {}",
                    who,
                    if req.disabled { "disabled" } else { "enabled" }
                )))
            }
            actions::GRANT_PERMISSION | actions::REVOKE_PERMISSION => {
                let req: PermissionRequest = decode(body)?;
                let who = self.user(req.user)?;
                let perm: Permission =
                    req.permission.parse().map_err(VeilError::InvalidArgument)?;
                event.message = format!("{} {perm}", who);
                let store = self.engine.state().store();
                let snapshot = self.engine.state().current().await?;
                let held = snapshot
                    .grants
                    .get(&who)
                    .and_then(|g| g.get(&perm))
                    .copied();
                if name == actions::GRANT_PERMISSION {
                    if let Some(origin) = held {
                        return Ok(ack(format!(
                            "{who} already has {perm} ({}); nothing changed",
                            match origin {
                                Origin::Config => "granted in the config file",
                                Origin::Runtime => "granted at run time",
                            }
                        )));
                    }
                    self.permitted(event).await?;
                    store.grant(&who, perm, Origin::Runtime).await?;
                    return Ok(ack(format!("granted {perm} to {who}")));
                }
                if who == p.identity && perm == Permission::UserAdmin {
                    return Err(VeilError::InvalidArgument(
                        "you cannot revoke your own USER_ADMIN: nobody could undo it through you; ask another user administrator".into(),
                    ));
                }
                match held {
                    None => Ok(ack(format!("{who} does not have {perm}; nothing changed"))),
                    Some(Origin::Config) => Err(VeilError::FailedPrecondition(format!(
                        "{perm} for {who} is granted in the config file; remove it there and reload"
                    ))),
                    Some(Origin::Runtime) => {
                        self.permitted(event).await?;
                        store.revoke(&who, perm).await?;
                        Ok(ack(format!("revoked {perm} from {who}")))
                    }
                }
            }
            actions::PUT_USER => {
                let req: PutUserRequest = decode(body)?;
                let who = self.user(req.user)?;
                if req.groups.iter().any(|g| g.trim().is_empty()) {
                    return Err(VeilError::InvalidArgument("a group name is empty".into()));
                }
                if req.attributes.iter().any(|a| {
                    a.key.trim().is_empty() || a.values.iter().any(|v| v.trim().is_empty())
                }) {
                    return Err(VeilError::InvalidArgument(
                        "an attribute key or value is empty".into(),
                    ));
                }
                let record = UserRecord {
                    groups: req
                        .groups
                        .iter()
                        .map(|g| g.trim().to_string())
                        .filter(|g| !g.is_empty())
                        .collect(),
                    attributes: req
                        .attributes
                        .into_iter()
                        .filter(|a| !a.key.trim().is_empty())
                        .map(|a| {
                            (
                                a.key.trim().to_string(),
                                a.values.iter().map(|v| v.trim().to_string()).collect(),
                            )
                        })
                        .collect(),
                };
                event.message = format!("user {who}");
                let snapshot = self.engine.state().current().await?;
                if config_user(&snapshot, &who) {
                    return Err(declared_in_config(&format!("user {who}")));
                }
                self.permitted(event).await?;
                self.engine
                    .state()
                    .store()
                    .put_user(&who, &record, Origin::Runtime)
                    .await?;
                Ok(ack(format!("{who}: directory entry saved")))
            }
            actions::DELETE_USER => {
                let req: DeleteUserRequest = decode(body)?;
                let who = self.user(req.user)?;
                event.message = format!("user {who}");
                let snapshot = self.engine.state().current().await?;
                if config_user(&snapshot, &who) {
                    return Err(declared_in_config(&format!("user {who}")));
                }
                self.permitted(event).await?;
                if self.engine.state().store().delete_user(&who).await? {
                    Ok(ack(format!("{who}: directory entry deleted")))
                } else {
                    Ok(ack(format!(
                        "{who} had no directory entry (grants and the disabled flag are separate: revoke or enable)"
                    )))
                }
            }
            actions::LIST_USERS => {
                let _: ListUsersRequest = decode(body)?;
                self.permitted(event).await?;
                let snapshot = self.engine.state().current().await?;
                Ok(user_entries(&snapshot)
                    .into_iter()
                    .map(|u| u.encode_to_vec())
                    .collect())
            }
            actions::RELOAD => {
                let _: ReloadRequest = decode(body)?;
                self.permitted(event).await?;
                let report = self
                    .reloader
                    .reload(&format!("veil.reload by {}", p.identity))
                    .await?;
                Ok(ack(report.summary()))
            }
            actions::AUDIT_TAIL => {
                let req: AuditTailRequest = decode(body)?;
                self.permitted(event).await?;
                let limit = if req.limit == 0 {
                    100
                } else {
                    req.limit.min(10_000)
                } as usize;
                let events = self.audit.tail(limit).await?;
                Ok(events
                    .iter()
                    .map(|e| serde_json::to_vec(e).unwrap_or_default())
                    .collect())
            }
            actions::CREATE_POLICY | actions::UPDATE_POLICY => {
                let req: PolicyWriteRequest = decode(body)?;
                self.write_policy(p, req, name == actions::CREATE_POLICY, event)
                    .await
            }
            actions::DELETE_POLICY => self.delete_policy(p, decode(body)?, event).await,
            actions::LIST_POLICIES => self.list_policies(p, decode(body)?, event).await,
            actions::EXPLAIN => {
                self.explain(p, decode::<ExplainRequest>(body)?, event)
                    .await
            }
            actions::PROFILE_K_ANONYMITY => self.profile_k_anonymity(p, decode(body)?, event).await,
            actions::REQUEST_UNMASK => self.request_unmask(p, decode(body)?, event).await,
            actions::APPROVE_UNMASK | actions::DENY_UNMASK => {
                let req: DecideAccessRequest = decode(body)?;
                self.decide_unmask(p, req, name == actions::APPROVE_UNMASK, event)
                    .await
            }
            actions::LIST_UNMASK_REQUESTS => {
                self.list_unmask_requests(p, decode(body)?, event).await
            }
            actions::UNMASK_RESULT => self.unmask_result(p, decode(body)?, event).await,
            actions::REQUEST_ACCESS => self.request_access(p, decode(body)?, event).await,
            actions::APPROVE_ACCESS | actions::DENY_ACCESS => {
                let req: DecideAccessRequest = decode(body)?;
                self.decide_access(p, req, name == actions::APPROVE_ACCESS, event)
                    .await
            }
            actions::LIST_ACCESS_REQUESTS => {
                self.list_access_requests(p, decode(body)?, event).await
            }
            actions::REVOKE_ACCESS => self.revoke_access(p, decode(body)?, event).await,
            _ => Err(VeilError::InvalidArgument("unknown action".into())),
        }
    }

    /// Change dataset `name`'s record with `edit` and store it, unless
    /// someone changed the record since it was read: then `edit` runs again
    /// on the fresh record (a few times) instead of overwriting their
    /// change. `edit` gets the record, the state it was read in and the
    /// audit event; the attempt is recorded (`permitted`) before the first
    /// write unless `recorded` says the caller did. Owners and governors
    /// only; built-in datasets are refused.
    async fn edit_dataset<T>(
        &self,
        p: &Arc<Principal>,
        name: &str,
        action: &str,
        event: &mut AuditEvent,
        recorded: bool,
        mut edit: impl FnMut(
            &mut crate::model::dataset::DatasetRecord,
            &crate::model::snapshot::Snapshot,
            &mut AuditEvent,
        ) -> Result<T>,
    ) -> Result<T> {
        let mut recorded = recorded;
        for _ in 0..EDIT_ATTEMPTS {
            let read = self.owned_dataset(p, name, action).await?;
            refuse_builtin(&read)?;
            let snapshot = self.engine.state().current().await?;
            let mut edited = read.clone();
            let out = edit(&mut edited, &snapshot, event)?;
            if !recorded {
                self.permitted(event).await?;
                recorded = true;
            }
            if edited == read
                || self
                    .engine
                    .state()
                    .store()
                    .replace_dataset_if(&read, &edited)
                    .await?
            {
                return Ok(out);
            }
            tracing::info!(dataset = %read.name, "dataset changed during an edit; re-applying it");
        }
        Err(VeilError::Unavailable(format!(
            "{name} kept changing while this edit was applied ({EDIT_ATTEMPTS} tries); nothing was changed, try again"
        )))
    }

    /// The dataset if the caller owns it or governs; hidden datasets answer
    /// exactly like missing ones.
    async fn owned_dataset(
        &self,
        p: &Arc<Principal>,
        name: &str,
        action: &str,
    ) -> Result<crate::model::dataset::DatasetRecord> {
        let snapshot = self.engine.state().current().await?;
        let d = snapshot
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
        match self.engine.lookup_visible(p, name).await {
            Ok(_) => Err(denied(action, "ownership of the dataset or GOVERNANCE")),
            Err(_) => Err(VeilError::dataset_not_found(name)),
        }
    }
}

/// The directory attribute listing the schemas a user may register
/// datasets into (besides governors, who register anywhere).
pub const SCHEMAS_ATTRIBUTE: &str = "veil.schemas";

/// May `p` register a dataset named `name` (already validated as
/// `schema.name`)? Governors may register anywhere; other
/// `CREATE_DATA_SOURCE` holders only into the schemas their
/// `veil.schemas` attribute grants them. The answer depends on the caller
/// alone, never on which datasets exist: otherwise registering a name
/// would tell whether a hidden dataset holds it.
fn check_schema_grant(p: &Principal, name: &str) -> Result<()> {
    if p.has(Permission::Governance) {
        return Ok(());
    }
    let schema = name.split_once('.').map(|(s, _)| s).unwrap_or(name);
    let granted = p.attributes.get(SCHEMAS_ATTRIBUTE);
    if granted.is_some_and(|g| g.iter().any(|s| s.trim().eq_ignore_ascii_case(schema))) {
        return Ok(());
    }
    let yours = granted
        .map(|g| g.iter().cloned().collect::<Vec<_>>().join(", "))
        .filter(|g| !g.is_empty())
        .unwrap_or_else(|| "none".into());
    Err(VeilError::PermissionDenied(format!(
        "you may register datasets only into the schemas granted to you (your {SCHEMAS_ATTRIBUTE} attribute: {yours}); ask a user administrator to add '{schema}' to it, or a governor to register the dataset"
    )))
}

/// Reads and re-applications of an edit before giving up.
const EDIT_ATTEMPTS: usize = 5;

/// The most experts a dataset names.
const MAX_EXPERTS: usize = 32;

/// Give a column new tags under the rules every tag change follows (an
/// edit, or an accepted discovery proposal): tags declared in the config
/// change there; adding or removing a tag a global policy targets switches
/// that policy on or off for the column, so it needs GOVERNANCE. Returns a
/// summary.
fn retag_column(
    p: &Principal,
    d: &mut crate::model::dataset::DatasetRecord,
    column: &str,
    tags: Vec<String>,
    snapshot: &crate::model::snapshot::Snapshot,
) -> Result<String> {
    let dataset = d.name.clone();
    let col = d
        .columns
        .iter_mut()
        .find(|c| c.name == column)
        .ok_or_else(|| {
            VeilError::InvalidArgument(format!("dataset {dataset} has no column '{column}'"))
        })?;
    if col.from_config {
        return Err(config_column(&dataset, column));
    }
    let global_tags = global_policy_tags(snapshot);
    let touches_global = col
        .tags
        .iter()
        .chain(tags.iter())
        .any(|t| global_tags.iter().any(|g| tag_covers(g, t)));
    if touches_global && !p.has(Permission::Governance) {
        return Err(denied(
            "changing tags that global policies target (`veil admin policies` lists them)",
            "GOVERNANCE",
        ));
    }
    if tags.iter().any(|t| t.trim().is_empty()) {
        return Err(VeilError::InvalidArgument(
            "a tag is empty (send no tags to clear them)".into(),
        ));
    }
    for t in &tags {
        // Tags already on the column stay whatever their form (the config
        // may have put them there).
        if !col.tags.iter().any(|old| old == t.trim()) {
            crate::policy::rules::check_tag(t.trim()).map_err(VeilError::InvalidArgument)?;
        }
    }
    col.tags = tags.iter().map(|t| t.trim().to_string()).collect();
    Ok(if col.tags.is_empty() {
        format!("tags of {column} cleared")
    } else {
        format!("{column} tagged {}", col.tags.join(", "))
    })
}

/// Veil's own datasets have built-in dictionaries: they can be governed by
/// policies, not edited or dropped.
fn refuse_builtin(d: &crate::model::dataset::DatasetRecord) -> Result<()> {
    if crate::audit::dataset::is_audit(d) {
        return Err(VeilError::FailedPrecondition(format!(
            "{} is Veil's own audit trail: its dictionary is built in and it can't be dropped; govern it with policies",
            d.name
        )));
    }
    Ok(())
}

fn whoami(p: &Principal) -> WhoAmI {
    WhoAmI {
        issuer: p.identity.issuer.clone(),
        subject: p.identity.subject.clone(),
        groups: p.groups.iter().cloned().collect(),
        attributes: p
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().cloned().collect::<Vec<_>>().join(",")))
            .collect(),
        permissions: p
            .permissions
            .iter()
            .map(|x| x.as_str().to_string())
            .collect(),
    }
}

fn config_column(dataset: &str, column: &str) -> VeilError {
    VeilError::FailedPrecondition(format!(
        "column {column} of {dataset} is described in the config file (columns.{column}); change it there and reload"
    ))
}

fn declared_in_config(what: &str) -> VeilError {
    VeilError::FailedPrecondition(format!(
        "{what} is declared in the config file ([[users]]); change it there and reload"
    ))
}

fn config_user(snapshot: &crate::model::snapshot::Snapshot, who: &Identity) -> bool {
    snapshot.config_users.contains(who)
}

/// Everyone the directory knows: entries, grants and disabled flags.
fn user_entries(snapshot: &crate::model::snapshot::Snapshot) -> Vec<UserEntry> {
    let mut ids: std::collections::BTreeSet<&Identity> = snapshot.users.keys().collect();
    ids.extend(snapshot.grants.keys());
    ids.extend(snapshot.disabled.iter());
    ids.into_iter()
        .map(|id| {
            let record = snapshot.users.get(id);
            UserEntry {
                issuer: id.issuer.clone(),
                subject: id.subject.clone(),
                groups: record
                    .map(|u| u.groups.iter().cloned().collect())
                    .unwrap_or_default(),
                attributes: record
                    .map(|u| {
                        u.attributes
                            .iter()
                            .map(|(k, v)| AttributeValues {
                                key: k.clone(),
                                values: v.iter().cloned().collect(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                permissions: snapshot
                    .grants
                    .get(id)
                    .map(|g| g.keys().map(|p| p.as_str().to_string()).collect())
                    .unwrap_or_default(),
                disabled: snapshot.disabled.contains(id),
                origin: match record {
                    None => String::new(),
                    Some(_) if snapshot.config_users.contains(id) => "config".into(),
                    Some(_) => "runtime".into(),
                },
            }
        })
        .collect()
}

/// Tags that some global (tag-driven) policy targets.
fn global_policy_tags(snapshot: &crate::model::snapshot::Snapshot) -> Vec<String> {
    snapshot
        .policies
        .iter()
        .filter(|pol| pol.is_unrestricted_global())
        .flat_map(|pol| {
            // The columns a row policy reads by tag count too: untagging
            // them would switch the filter off.
            let row_tags = pol
                .spec
                .row_filter
                .iter()
                .chain(pol.spec.chain.iter().filter_map(|b| b.row_filter.as_ref()))
                .filter_map(|r| r.column_tag.clone());
            pol.spec
                .tags
                .iter()
                .cloned()
                .chain(row_tags)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Whether two stored locations share files: equal, or one under the other.
fn locations_overlap(a: &str, b: &str) -> bool {
    let under = |x: &str, y: &str| x.starts_with(y) && x[y.len()..].starts_with('/');
    a == b || under(a, b) || under(b, a)
}
