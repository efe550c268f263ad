//! Row encoding shared by the backends: both store records as JSON bodies
//! next to a few key columns, so decoding a row and deciding what a config
//! reload changes are the same code whichever database holds the rows.

use std::collections::HashMap;
use std::str::FromStr;

use crate::error::{Result, VeilError};
use crate::model::Origin;
use crate::model::audit::{AuditEvent, ChainHead, StoredAuditRow};
use crate::model::dataset::DatasetRecord;
use crate::model::identity::{Identity, Permission, UserRecord};
use crate::model::policy::{Policy, PolicySpec};
use crate::model::request::{AccessDecision, AccessRequest, RequestStatus};
use crate::model::snapshot::Snapshot;
use crate::policy::rules::PolicySpecExt;
use crate::secrets::decode_hex_32;
use crate::store::PolicyPut;

pub(crate) fn origin_str(o: Origin) -> &'static str {
    match o {
        Origin::Config => "config",
        Origin::Runtime => "runtime",
    }
}

pub(crate) fn parse_origin(s: &str) -> Origin {
    if s == "config" {
        Origin::Config
    } else {
        Origin::Runtime
    }
}

pub(crate) fn encode<T: serde::Serialize>(what: &str, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| VeilError::internal(&format!("encode {what}"), e))
}

/// A compare-and-swap replaces a record with another version of itself.
pub(crate) fn check_same_dataset(expected: &DatasetRecord, new: &DatasetRecord) -> Result<()> {
    if expected.name != new.name || expected.id != new.id {
        return Err(VeilError::Internal(
            "a dataset's name and id cannot change on replace".into(),
        ));
    }
    Ok(())
}

pub(crate) fn decode_dataset(body: &str) -> Result<DatasetRecord> {
    serde_json::from_str(body).map_err(|e| corrupt("dataset", e))
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> VeilError {
    VeilError::internal(&format!("corrupt {what} record in the store"), e)
}

/// Adds stored rows to a snapshot being assembled.
#[derive(Debug, Default)]
pub(crate) struct SnapshotBuilder {
    snap: Snapshot,
}

impl SnapshotBuilder {
    pub(crate) fn new(version: u64) -> Self {
        Self {
            snap: Snapshot {
                version,
                ..Default::default()
            },
        }
    }

    pub(crate) fn dataset(&mut self, body: &str) -> Result<()> {
        let d: DatasetRecord = serde_json::from_str(body).map_err(|e| corrupt("dataset", e))?;
        self.snap.datasets.insert(d.name.clone(), d);
        Ok(())
    }

    /// A stored policy that no longer validates is a bug; skipping it would
    /// silently drop enforcement, so it fails the whole snapshot.
    pub(crate) fn policy(
        &mut self,
        id: String,
        origin: &str,
        version: i64,
        body: &str,
    ) -> Result<()> {
        let spec: PolicySpec = serde_json::from_str(body).map_err(|e| corrupt("policy", e))?;
        let rule = spec.validate()?;
        self.snap.policies.push(Policy {
            id,
            version: version as u64,
            origin: parse_origin(origin),
            spec,
            rule,
        });
        Ok(())
    }

    pub(crate) fn user(
        &mut self,
        issuer: String,
        subject: String,
        origin: &str,
        body: &str,
    ) -> Result<()> {
        let u: UserRecord = serde_json::from_str(body).map_err(|e| corrupt("user", e))?;
        let id = Identity::new(issuer, subject);
        if parse_origin(origin) == Origin::Config {
            self.snap.config_users.insert(id.clone());
        }
        self.snap.users.insert(id, u);
        Ok(())
    }

    pub(crate) fn disabled(&mut self, issuer: String, subject: String) {
        self.snap.disabled.insert(Identity::new(issuer, subject));
    }

    pub(crate) fn grant(
        &mut self,
        issuer: String,
        subject: String,
        permission: &str,
        origin: &str,
    ) -> Result<()> {
        let perm = Permission::from_str(permission).map_err(|e| corrupt("grant", e))?;
        self.snap
            .grants
            .entry(Identity::new(issuer, subject))
            .or_default()
            .insert(perm, parse_origin(origin));
        Ok(())
    }

    /// An access request row; approved ones admit their requester.
    pub(crate) fn access_request(&mut self, body: &str) -> Result<()> {
        let r = decode_request(body)?;
        // Approved unmask requests release values, not datasets.
        if r.status == RequestStatus::Approved && r.unmask.is_none() {
            self.snap
                .approvals
                .entry(r.dataset_id)
                .or_default()
                .insert(r.requester);
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Snapshot {
        self.snap
            .policies
            .sort_by(|a, b| (&a.spec.name, &a.id).cmp(&(&b.spec.name, &b.id)));
        self.snap
    }
}

/// A stored policy row, as a config reload sees it.
#[derive(Debug, Clone)]
pub(crate) struct StoredPolicy {
    pub(crate) id: String,
    /// [`PolicySpec::namespace`]: a name is unique within it.
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) version: i64,
    pub(crate) body: String,
    pub(crate) origin: String,
}

/// One write a config reload makes to the policies table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PolicyWrite {
    Insert {
        id: String,
        namespace: String,
        name: String,
        body: String,
    },
    Update {
        id: String,
        version: i64,
        body: String,
    },
    Delete {
        id: String,
    },
}

/// What replacing the config-declared policies with `specs` writes.
/// Unchanged policies keep their id and version, so tickets and caches keyed
/// by them survive a no-op reload; runtime policies are never touched, and a
/// config policy may not take a runtime policy's name.
pub(crate) fn plan_config_policies(
    existing: Vec<StoredPolicy>,
    specs: &[PolicySpec],
) -> Result<Vec<PolicyWrite>> {
    let mut by_name: HashMap<(String, String), StoredPolicy> = existing
        .into_iter()
        .map(|p| ((p.namespace.clone(), p.name.clone()), p))
        .collect();
    let mut writes = Vec::new();
    for spec in specs {
        let body = encode("policy", spec)?;
        match by_name.remove(&(spec.namespace(), spec.name.clone())) {
            Some(old) if old.origin != "config" => {
                return Err(VeilError::AlreadyExists(format!(
                    "policy '{}' is declared in the config file but a runtime policy has that name; rename one",
                    spec.name
                )));
            }
            Some(old) if old.body == body => {}
            Some(old) => writes.push(PolicyWrite::Update {
                id: old.id,
                version: old.version + 1,
                body,
            }),
            None => writes.push(PolicyWrite::Insert {
                id: uuid::Uuid::new_v4().to_string(),
                namespace: spec.namespace(),
                name: spec.name.clone(),
                body,
            }),
        }
    }
    let mut gone: Vec<StoredPolicy> = by_name
        .into_values()
        .filter(|p| p.origin == "config")
        .collect();
    gone.sort_by(|a, b| a.name.cmp(&b.name));
    writes.extend(gone.into_iter().map(|p| PolicyWrite::Delete { id: p.id }));
    Ok(writes)
}

/// The namespace of each stored policy row written before policy names were
/// scoped (the migration adds the column empty): `(id, namespace)` pairs.
pub(crate) fn policy_namespaces(rows: &[(String, String)]) -> Result<Vec<(String, String)>> {
    rows.iter()
        .map(|(id, body)| {
            let spec: PolicySpec = serde_json::from_str(body).map_err(|e| corrupt("policy", e))?;
            Ok((id.clone(), spec.namespace()))
        })
        .collect()
}

/// What creating or updating a runtime policy writes (`None`: the stored
/// body is the same, nothing to write).
pub(crate) fn plan_runtime_put(
    existing: Option<StoredPolicy>,
    spec: &PolicySpec,
    mode: PolicyPut,
) -> Result<Option<PolicyWrite>> {
    spec.validate()?;
    let body = encode("policy", spec)?;
    match (existing, mode) {
        (Some(old), PolicyPut::Create) => Err(VeilError::AlreadyExists(format!(
            "a policy named '{}' already exists ({}); update it instead, or choose another name",
            spec.name,
            if old.origin == "config" {
                "declared in the config file"
            } else {
                "created at run time"
            }
        ))),
        (None, PolicyPut::Create) => Ok(Some(PolicyWrite::Insert {
            id: uuid::Uuid::new_v4().to_string(),
            namespace: spec.namespace(),
            name: spec.name.clone(),
            body,
        })),
        (None, PolicyPut::Update { .. }) => Err(VeilError::NotFound(format!(
            "no policy named '{}'; create it instead",
            spec.name
        ))),
        (Some(old), PolicyPut::Update { .. }) if old.origin == "config" => {
            Err(config_policy(&spec.name))
        }
        (Some(old), PolicyPut::Update { expected_version }) => {
            check_expected(&old, expected_version)?;
            if old.body == body {
                return Ok(None);
            }
            Ok(Some(PolicyWrite::Update {
                id: old.id,
                version: old.version + 1,
                body,
            }))
        }
    }
}

/// The id of the runtime policy a delete removes.
pub(crate) fn plan_runtime_delete(
    existing: Option<StoredPolicy>,
    name: &str,
    expected_version: Option<u64>,
) -> Result<String> {
    let Some(old) = existing else {
        return Err(VeilError::NotFound(format!("no policy named '{name}'")));
    };
    if old.origin == "config" {
        return Err(config_policy(name));
    }
    check_expected(&old, expected_version)?;
    Ok(old.id)
}

fn config_policy(name: &str) -> VeilError {
    VeilError::FailedPrecondition(format!(
        "policy '{name}' is declared in the config file ([[policies]]); change it there and reload"
    ))
}

fn check_expected(old: &StoredPolicy, expected: Option<u64>) -> Result<()> {
    match expected {
        Some(v) if v as i64 != old.version => Err(VeilError::FailedPrecondition(format!(
            "policy '{}' is at version {}, not {v}: someone changed it since you read it; list it again and retry",
            old.name, old.version
        ))),
        _ => Ok(()),
    }
}

pub(crate) fn decode_request(body: &str) -> Result<AccessRequest> {
    serde_json::from_str(body).map_err(|e| corrupt("access request", e))
}

/// Refuse a second open request (pending or approved) for one dataset.
pub(crate) fn check_no_open_request(existing: &[AccessRequest], new: &AccessRequest) -> Result<()> {
    if new.unmask.is_some() {
        // Several unmask requests may be open at once.
        return Ok(());
    }
    match existing.iter().find(|r| {
        r.unmask.is_none()
            && r.dataset_id == new.dataset_id
            && r.requester == new.requester
            && matches!(r.status, RequestStatus::Pending | RequestStatus::Approved)
    }) {
        Some(r) => Err(VeilError::AlreadyExists(format!(
            "you already have a {} request ({}) for {}",
            r.status.as_str(),
            r.id,
            r.dataset
        ))),
        None => Ok(()),
    }
}

/// The request after a decision, if it is still in `from`.
pub(crate) fn apply_decision(
    body: &str,
    from: RequestStatus,
    d: &AccessDecision,
) -> Result<AccessRequest> {
    let mut r = decode_request(body)?;
    if r.status != from {
        return Err(VeilError::FailedPrecondition(format!(
            "request {} is {}, not {}: nothing changed",
            r.id,
            r.status.as_str(),
            from.as_str()
        )));
    }
    r.status = d.to;
    r.decided_by = Some(d.by.clone());
    r.decision_note = d.note.clone();
    r.decided_ms = Some(d.at_ms);
    Ok(r)
}

/// The answer to a master-key check against the fingerprint a store holds.
pub(crate) fn compare_key_fingerprint(stored: &str, ours: &str) -> Result<()> {
    if subtle::ConstantTimeEq::ct_eq(stored.as_bytes(), ours.as_bytes()).into() {
        Ok(())
    } else {
        Err(VeilError::FailedPrecondition(
            "this node's master key differs from the one the shared store was first used with: \
             every node sharing a store must use the same master key file (server.master_key_file), \
             or tickets and hash masks would differ between nodes"
                .into(),
        ))
    }
}

/// A stored audit event; events from before the chain take their row
/// position as sequence number.
pub(crate) fn decode_event(position: i64, body: &str) -> Result<AuditEvent> {
    let mut e: AuditEvent = serde_json::from_str(body).map_err(|e| corrupt("audit event", e))?;
    e.seq.get_or_insert(position as u64);
    Ok(e)
}

/// A chain head from its stored columns (MACs in hex).
pub(crate) fn head_from(
    node_id: String,
    seq: i64,
    mac: &str,
    purged_through: i64,
    purged_mac: &str,
) -> Result<ChainHead> {
    let decode = |hex: &str| {
        decode_hex_32(hex).ok_or_else(|| {
            VeilError::FailedPrecondition(format!(
                "the audit chain head of node {node_id} holds an invalid MAC; run `veil audit verify`"
            ))
        })
    };
    Ok(ChainHead {
        seq: seq as u64,
        mac: decode(mac)?,
        purged_through: purged_through as u64,
        purged_mac: decode(purged_mac)?,
        node_id,
    })
}

/// `head` moved to the last of the rows just sealed after it.
pub(crate) fn moved_head(head: ChainHead, rows: &[StoredAuditRow]) -> ChainHead {
    match rows.last() {
        Some(last) => ChainHead {
            seq: last.seq,
            mac: last
                .mac
                .as_deref()
                .and_then(decode_hex_32)
                .expect("sealed rows carry a MAC"),
            ..head
        },
        None => head,
    }
}

/// `head` after purging through `through`, whose stored MAC is `mac`.
pub(crate) fn purged_head(head: ChainHead, through: u64, mac: Option<&str>) -> Result<ChainHead> {
    let mac = mac.and_then(decode_hex_32).ok_or_else(|| {
        VeilError::FailedPrecondition(format!(
            "audit event {through} of node {} is missing or has no valid MAC, so the purge would break verification; run `veil audit verify`",
            head.node_id
        ))
    })?;
    Ok(ChainHead {
        purged_through: through,
        purged_mac: mac,
        ..head
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, dataset: &str) -> PolicySpec {
        toml::from_str(&format!(
            "name = \"{name}\"\ndataset = \"{dataset}\"\nsubscription = {{ anyone = true }}"
        ))
        .unwrap()
    }

    fn stored(name: &str, origin: &str, body: String) -> StoredPolicy {
        StoredPolicy {
            id: format!("id-{name}"),
            namespace: serde_json::from_str::<PolicySpec>(&body)
                .map(|s| s.namespace())
                .unwrap_or_default(),
            name: name.into(),
            version: 3,
            body,
            origin: origin.into(),
        }
    }

    #[test]
    fn config_reload_plans_minimal_writes() {
        let keep = spec("keep", "a.b");
        let edit = spec("edit", "a.b");
        let mut old_edit = edit.clone();
        old_edit.columns = vec!["c".into()];
        let existing = vec![
            stored("keep", "config", encode("policy", &keep).unwrap()),
            stored("edit", "config", encode("policy", &old_edit).unwrap()),
            stored("gone", "config", "{}".into()),
            stored("mine", "runtime", "{}".into()),
        ];
        let writes =
            plan_config_policies(existing, &[keep, edit.clone(), spec("new", "a.b")]).unwrap();
        assert_eq!(writes.len(), 3, "{writes:?}");
        assert!(writes.contains(&PolicyWrite::Update {
            id: "id-edit".into(),
            version: 4,
            body: encode("policy", &edit).unwrap()
        }));
        assert!(writes.contains(&PolicyWrite::Delete {
            id: "id-gone".into()
        }));
        assert!(
            writes
                .iter()
                .any(|w| matches!(w, PolicyWrite::Insert { name, .. } if name == "new"))
        );
    }

    #[test]
    fn a_config_policy_cannot_take_a_runtime_policy_name_in_its_namespace() {
        let mine = || {
            vec![stored(
                "mine",
                "runtime",
                encode("policy", &spec("mine", "a.b")).unwrap(),
            )]
        };
        let e = plan_config_policies(mine(), &[spec("mine", "a.b")]).unwrap_err();
        assert!(matches!(e, VeilError::AlreadyExists(_)), "{e}");
        // Another dataset's policy of that name is another policy.
        let writes = plan_config_policies(mine(), &[spec("mine", "c.d")]).unwrap();
        assert!(
            matches!(&writes[..], [PolicyWrite::Insert { name, .. }] if name == "mine"),
            "{writes:?}"
        );
    }

    #[test]
    fn a_config_policy_moved_to_another_dataset_is_replaced() {
        let existing = vec![stored(
            "moved",
            "config",
            encode("policy", &spec("moved", "old.one")).unwrap(),
        )];
        let writes = plan_config_policies(existing, &[spec("moved", "a.b")]).unwrap();
        assert_eq!(writes.len(), 2, "{writes:?}");
        assert!(writes.contains(&PolicyWrite::Delete {
            id: "id-moved".into()
        }));
    }

    #[test]
    fn policy_names_are_scoped_by_dataset_restriction_or_global() {
        let local = spec("p", "Clinical.Trials");
        assert_eq!(local.namespace(), "dataset:clinical.trials");
        let global: PolicySpec =
            toml::from_str("name = \"p\"\ntags = [\"PII\"]\nmask = \"hash\"").unwrap();
        assert_eq!(global.namespace(), "global");
        let restricted = |to: &str| -> PolicySpec {
            toml::from_str(&format!(
                "name = \"p\"\ntags = [\"PII\"]\nmask = \"hash\"\nrestricted_to = {to}"
            ))
            .unwrap()
        };
        assert_eq!(
            restricted(r#"["b", "a"]"#).namespace(),
            restricted(r#"["a", "b", "a"]"#).namespace()
        );
        assert_ne!(
            restricted(r#"["a,b"]"#).namespace(),
            restricted(r#"["a", "b"]"#).namespace()
        );
        assert_ne!(restricted(r#"["a"]"#).namespace(), global.namespace());
    }

    #[test]
    fn key_check_values_compare_exactly() {
        assert!(compare_key_fingerprint("ab", "ab").is_ok());
        assert!(compare_key_fingerprint("ab", "ac").is_err());
        assert!(compare_key_fingerprint("ab", "abc").is_err());
    }
}
