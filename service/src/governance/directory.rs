//! The directory and the service: who the caller is, users' entries,
//! grants and disabled flags, reloading the config, the audit tail.
//! What the config file declares is read-only here; the refusal says so.

use std::collections::BTreeSet;

use veil_proto::{
    AttributeValues, DeleteUserRequest, PermissionRequest, PutUserRequest, SetUserDisabledRequest,
    UserEntry, WhoAmI,
};

use super::{Call, Governance, Outcome};
use crate::error::{Result, VeilError};
use crate::model::Origin;
use crate::model::identity::{Identity, Permission, Principal, UserRecord};
use crate::model::snapshot::Snapshot;

/// The most audit events one tail returns.
const MAX_AUDIT_TAIL: u32 = 10_000;

pub(super) fn whoami(p: &Principal) -> Outcome {
    Outcome::WhoAmI(WhoAmI {
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
    })
}

impl Governance {
    pub(super) async fn set_user_disabled(
        &self,
        call: &mut Call<'_>,
        req: SetUserDisabledRequest,
    ) -> Result<Outcome> {
        let who = self.user(req.user)?;
        if req.disabled && who == call.principal.identity {
            return Err(VeilError::InvalidArgument(
                "you cannot disable yourself: nobody could undo it through you; ask another user administrator".into(),
            ));
        }
        self.engine
            .state()
            .store()
            .set_user_disabled(&who, req.disabled)
            .await?;
        Ok(Outcome::Done(format!(
            "{} {}",
            who,
            if req.disabled { "disabled" } else { "enabled" }
        )))
    }

    /// The permission a request names, and the origin of the user's grant
    /// of it, if any.
    fn held(
        &self,
        call: &Call<'_>,
        req: PermissionRequest,
    ) -> Result<(Identity, Permission, Option<Origin>)> {
        let who = self.user(req.user)?;
        let perm: Permission = req.permission.parse().map_err(VeilError::InvalidArgument)?;
        let held = call
            .scope
            .snapshot()
            .grants
            .get(&who)
            .and_then(|g| g.get(&perm))
            .copied();
        Ok((who, perm, held))
    }

    pub(super) async fn grant_permission(
        &self,
        call: &mut Call<'_>,
        req: PermissionRequest,
    ) -> Result<Outcome> {
        let (who, perm, held) = self.held(call, req)?;
        if let Some(origin) = held {
            return Ok(Outcome::Done(format!(
                "{who} already has {perm} ({}); nothing changed",
                match origin {
                    Origin::Config => "granted in the config file",
                    Origin::Runtime => "granted at run time",
                }
            )));
        }
        self.engine
            .state()
            .store()
            .grant(&who, perm, Origin::Runtime)
            .await?;
        Ok(Outcome::Done(format!("granted {perm} to {who}")))
    }

    pub(super) async fn revoke_permission(
        &self,
        call: &mut Call<'_>,
        req: PermissionRequest,
    ) -> Result<Outcome> {
        let (who, perm, held) = self.held(call, req)?;
        if who == call.principal.identity && perm == Permission::UserAdmin {
            return Err(VeilError::InvalidArgument(
                "you cannot revoke your own USER_ADMIN: nobody could undo it through you; ask another user administrator".into(),
            ));
        }
        match held {
            None => Ok(Outcome::Done(format!(
                "{who} does not have {perm}; nothing changed"
            ))),
            Some(Origin::Config) => Err(VeilError::FailedPrecondition(format!(
                "{perm} for {who} is granted in the config file; remove it there and reload"
            ))),
            Some(Origin::Runtime) => {
                self.engine.state().store().revoke(&who, perm).await?;
                Ok(Outcome::Done(format!("revoked {perm} from {who}")))
            }
        }
    }

    pub(super) async fn put_user(
        &self,
        call: &mut Call<'_>,
        req: PutUserRequest,
    ) -> Result<Outcome> {
        let who = self.user(req.user)?;
        if req.groups.iter().any(|g| g.trim().is_empty()) {
            return Err(VeilError::InvalidArgument("a group name is empty".into()));
        }
        if req
            .attributes
            .iter()
            .any(|a| a.key.trim().is_empty() || a.values.iter().any(|v| v.trim().is_empty()))
        {
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
        let snapshot = std::sync::Arc::clone(call.scope.snapshot());
        if snapshot.config_users.contains(&who) {
            return Err(declared_in_config(&format!("user {who}")));
        }
        self.engine
            .state()
            .store()
            .put_user(&who, &record, Origin::Runtime)
            .await?;
        Ok(Outcome::Done(format!("{who}: directory entry saved")))
    }

    pub(super) async fn delete_user(
        &self,
        call: &mut Call<'_>,
        req: DeleteUserRequest,
    ) -> Result<Outcome> {
        let who = self.user(req.user)?;
        let snapshot = std::sync::Arc::clone(call.scope.snapshot());
        if snapshot.config_users.contains(&who) {
            return Err(declared_in_config(&format!("user {who}")));
        }
        let deleted = self.engine.state().store().delete_user(&who).await?;
        // Grants and the disabled flag are kept apart from the entry (a
        // user can hold a grant without one): say which stay.
        let mut kept = Vec::new();
        if let Some(grants) = snapshot.grants.get(&who).filter(|g| !g.is_empty()) {
            let names: Vec<&str> = grants.keys().map(|p| p.as_str()).collect();
            kept.push(format!(
                "the grants {} stay (veil admin revoke removes them)",
                names.join(", ")
            ));
        }
        if snapshot.disabled.contains(&who) {
            kept.push("the user stays disabled (veil admin enable lifts it)".to_string());
        }
        let head = if deleted {
            format!("{who}: directory entry deleted (its groups and attributes)")
        } else {
            format!("{who} had no directory entry")
        };
        Ok(Outcome::Done(match kept.is_empty() {
            true if deleted => head,
            true => format!("{head} (grants and the disabled flag are separate: revoke or enable)"),
            false => format!("{head}; {}", kept.join("; ")),
        }))
    }

    pub(super) fn list_users(&self, call: &Call<'_>) -> Result<Outcome> {
        Ok(Outcome::Users(user_entries(call.scope.snapshot())))
    }

    pub(super) async fn reload(&self, call: &mut Call<'_>) -> Result<Outcome> {
        let report = self
            .reloader
            .reload(&format!("veil.reload by {}", call.principal.identity))
            .await?;
        Ok(Outcome::Done(report.summary()))
    }

    pub(super) async fn audit_tail(&self, limit: u32) -> Result<Outcome> {
        let limit = match limit {
            0 => 100,
            n => n.min(MAX_AUDIT_TAIL),
        } as usize;
        Ok(Outcome::AuditEvents(self.audit.tail(limit).await?))
    }
}

fn declared_in_config(what: &str) -> VeilError {
    VeilError::FailedPrecondition(format!(
        "{what} is declared in the config file ([[users]]); change it there and reload"
    ))
}

/// Everyone the directory knows: entries, grants and disabled flags.
fn user_entries(snapshot: &Snapshot) -> Vec<UserEntry> {
    let mut ids: BTreeSet<&Identity> = snapshot.users.keys().collect();
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
