//! Policy administration: create, update, delete, list, explain.
//!
//! Who may write a policy depends on its scope (DESIGN "Words"):
//! * local (`dataset = ...`): the dataset's owners, or `GOVERNANCE`;
//! * global (`tags = [...]`): `GOVERNANCE`;
//! * restricted global (`tags` with `restricted_to = [you]`):
//!   `CREATE_DATA_SOURCE`, limited to the datasets the author owns.
//!
//! A policy's name is unique within its namespace
//! ([`PolicySpec::namespace`]: its dataset, its restriction, or the global
//! scope), and everyone who may write into a namespace can list every policy
//! in it. So creating, updating or deleting a policy never tells anyone of
//! a policy they can't see: a name taken on a hidden dataset, or by a
//! governor's global policy, is free in the author's own namespace. Update
//! keeps a policy's namespace (to move one, delete it and create it anew),
//! so nobody can take over a policy by rewriting its scope.

use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

use veil_proto::{
    DeletePolicyRequest, ExplainRequest, ListPoliciesRequest, PolicyWriteRequest,
    ProfileKAnonymityRequest,
};

use super::{Admin, ack, denied};
use crate::auth::authenticator::{MergedPrincipal, merge_with_directory};
use crate::auth::claim_trust::{AssertedClaims, ClaimSource};
use crate::error::{Result, VeilError};
use crate::model::Origin;
use crate::model::audit::AuditEvent;
use crate::model::dataset::DatasetRecord;
use crate::model::identity::{Attributes, ClientInfo, Permission, Principal};
use crate::model::policy::{Policy, PolicySpec};
use crate::model::snapshot::Snapshot;
use crate::policy::effective::{Access, access, applies_to, data_policy};
use crate::policy::rules::PolicySpecExt;
use crate::provisioning::sync::check_references;
use crate::secrets::{KeyPurpose, MasterKey};
use crate::store::PolicyPut;

/// Longest policy JSON accepted.
const MAX_POLICY_BYTES: usize = 64 * 1024;

fn parse_spec(json: &str) -> Result<PolicySpec> {
    if json.len() > MAX_POLICY_BYTES {
        return Err(VeilError::InvalidArgument(format!(
            "a policy is at most {MAX_POLICY_BYTES} bytes of JSON"
        )));
    }
    serde_json::from_str(json).map_err(|e| {
        VeilError::InvalidArgument(VeilError::detailed(
            "the policy is not valid (write it as a JSON object with the fields of a [[policies]] entry; see the README's Policies section)",
            e,
        ))
    })
}

fn validated(spec: &PolicySpec, origin: Origin) -> Result<Policy> {
    Ok(Policy {
        id: String::new(),
        version: 0,
        origin,
        rule: spec.validate()?,
        spec: spec.clone(),
    })
}

/// A policy as `veil.list_policies` shows it.
fn policy_json(p: &Policy) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "name": p.spec.name,
        "id": p.id,
        "version": p.version,
        "origin": match p.origin { Origin::Config => "config", Origin::Runtime => "runtime" },
        "scope": p.spec.scope(),
        "spec": p.spec,
    }))
    .unwrap_or_default()
}

/// A policy on a dataset the caller can't see answers like a missing
/// policy, so its name can't be used to learn the dataset's.
fn hide_dataset(e: VeilError, policy: &str, hint: &str) -> VeilError {
    match e {
        VeilError::NotFound(_) => VeilError::NotFound(format!("no policy named '{policy}'{hint}")),
        e => e,
    }
}

impl Admin {
    /// May `p` write a policy of this form?
    async fn authorize_policy(
        &self,
        p: &Arc<Principal>,
        spec: &PolicySpec,
        action: &str,
    ) -> Result<()> {
        if p.has(Permission::Governance) {
            return Ok(());
        }
        let issuer = self.engine.default_issuer();
        match (&spec.dataset, spec.restricted_to.is_empty()) {
            // Ownership (or "not found" for a dataset the caller can't see).
            (Some(name), _) => self.owned_dataset(p, name, action).await.map(|_| ()),
            (None, true) => Err(denied(
                &format!("{action} of a global policy (tags = [...])"),
                "GOVERNANCE; data owners write restricted global policies (restricted_to = [\"you\"]) over the datasets they own",
            )),
            (None, false) => {
                if !p.has(Permission::CreateDataSource) {
                    return Err(denied(
                        &format!("{action} of a restricted global policy"),
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

    pub(super) async fn write_policy(
        &self,
        p: &Arc<Principal>,
        req: PolicyWriteRequest,
        create: bool,
        event: &mut AuditEvent,
    ) -> Result<Vec<Vec<u8>>> {
        let action = if create { "creating" } else { "updating" };
        let spec = parse_spec(&req.spec_json)?;
        event.message = format!("policy {}", spec.name.chars().take(200).collect::<String>());
        event.dataset = spec.dataset.clone();
        let policy = validated(&spec, Origin::Runtime)?;
        self.authorize_policy(p, &spec, action).await?;
        let snapshot = self.engine.state().current().await?;
        if !create {
            let namespace = spec.namespace();
            let Some(old) = snapshot
                .policies
                .iter()
                .find(|x| x.spec.name == spec.name && x.spec.namespace() == namespace)
            else {
                return Err(VeilError::NotFound(format!(
                    "no policy named '{}'; create it instead",
                    spec.name
                )));
            };
            self.authorize_policy(p, &old.spec, action)
                .await
                .map_err(|e| hide_dataset(e, &spec.name, "; create it instead"))?;
        }
        let datasets: BTreeMap<&str, &DatasetRecord> = snapshot
            .datasets
            .iter()
            .map(|(n, d)| (n.as_str(), d))
            .collect();
        check_references(&policy, &datasets, self.engine.default_issuer())?;
        let cfg = self.engine.config();
        crate::catalog::profiling::check_cardinality(
            &self.engine.raw_session(),
            &policy,
            &datasets.values().copied().collect::<Vec<_>>(),
            self.engine.stores(),
            cfg.kanon_cardinality_cutoff,
            cfg.kanon_max_groups,
            self.engine.default_issuer(),
        )
        .await?;
        self.permitted(event).await?;
        let mode = if create {
            PolicyPut::Create
        } else {
            PolicyPut::Update {
                expected_version: (req.expected_version > 0).then_some(req.expected_version),
            }
        };
        let version = self.engine.state().store().put_policy(&spec, mode).await?;
        event.policies = vec![format!("{}@{version}", spec.name)];
        Ok(ack(format!(
            "{} {} policy '{}' (version {version}); it applies from the next request",
            if create { "created" } else { "saved" },
            spec.scope(),
            spec.name
        )))
    }

    pub(super) async fn delete_policy(
        &self,
        p: &Arc<Principal>,
        req: DeletePolicyRequest,
        event: &mut AuditEvent,
    ) -> Result<Vec<Vec<u8>>> {
        event.message = format!("policy {}", req.name.chars().take(200).collect::<String>());
        let snapshot = self.engine.state().current().await?;
        // Only policies the caller can list are candidates, so the answer
        // for a name used only where they can't look is "no policy".
        let candidates: Vec<&Policy> = snapshot
            .policies
            .iter()
            .filter(|x| x.spec.name == req.name || x.id == req.name)
            .filter(|x| self.may_list(p, x, &snapshot))
            .collect();
        let mut writable = Vec::new();
        let mut refusal = None;
        for x in &candidates {
            match self.authorize_policy(p, &x.spec, "deleting").await {
                Ok(()) => writable.push(*x),
                Err(e) => refusal = refusal.or(Some(e)),
            }
        }
        let old = match (&writable[..], refusal) {
            ([one], _) => *one,
            ([], Some(e)) => return Err(hide_dataset(e, &req.name, "")),
            ([], None) => {
                return Err(VeilError::NotFound(format!(
                    "no policy named '{}'",
                    req.name
                )));
            }
            (several, _) => {
                let mut which: Vec<String> = several
                    .iter()
                    .map(|x| match &x.spec.dataset {
                        Some(d) => format!("on {d}: id {}", x.id),
                        None => format!("{}: id {}", x.spec.scope(), x.id),
                    })
                    .collect();
                which.sort();
                return Err(VeilError::InvalidArgument(format!(
                    "{} policies you may delete are named '{}' ({}); delete one by its id",
                    several.len(),
                    req.name,
                    which.join("; ")
                )));
            }
        };
        event.dataset = old.spec.dataset.clone();
        self.permitted(event).await?;
        self.engine
            .state()
            .store()
            .delete_policy(
                &old.spec.namespace(),
                &old.spec.name,
                (req.expected_version > 0).then_some(req.expected_version),
            )
            .await?;
        Ok(ack(format!(
            "deleted {} policy '{}'; it stops applying from the next request",
            old.spec.scope(),
            old.spec.name
        )))
    }

    /// Does `veil.list_policies` show `pol` to `p`? Governors see every
    /// policy; others the ones that apply to datasets they own and the
    /// restricted ones naming them: every policy of every namespace they
    /// may write into, and nothing of the others. Data owners (and
    /// `CREATE_DATA_SOURCE` holders) also see every global policy: they are
    /// the rules a tag brings, and a tag change refused for touching one
    /// would otherwise tell of a policy they couldn't list.
    fn may_list(&self, p: &Principal, pol: &Policy, snapshot: &Snapshot) -> bool {
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

    /// Governors see every policy; others the ones on datasets they own and
    /// restricted ones naming them.
    pub(super) async fn list_policies(
        &self,
        p: &Arc<Principal>,
        req: ListPoliciesRequest,
        event: &mut AuditEvent,
    ) -> Result<Vec<Vec<u8>>> {
        let snapshot = self.engine.state().current().await?;
        let issuer = self.engine.default_issuer();
        let governor = p.has(Permission::Governance);
        let only: Option<&DatasetRecord> = if req.dataset.is_empty() {
            None
        } else {
            event.dataset = Some(req.dataset.chars().take(256).collect());
            Some(
                snapshot
                    .datasets
                    .values()
                    .find(|d| d.name.eq_ignore_ascii_case(&req.dataset))
                    .filter(|d| governor || d.is_owner(&p.identity))
                    .ok_or_else(|| VeilError::dataset_not_found(&req.dataset))?,
            )
        };
        let shown = |pol: &Policy| -> bool {
            match only {
                Some(d) => applies_to(pol, d, issuer),
                None => self.may_list(p, pol, &snapshot),
            }
        };
        self.permitted(event).await?;
        Ok(snapshot
            .policies
            .iter()
            .filter(|pol| shown(pol))
            .map(policy_json)
            .collect())
    }

    /// The raw data's profile for k-anonymizing some columns: distinct
    /// values (against the cutoff), its current k and a suggested k.
    pub(super) async fn profile_k_anonymity(
        &self,
        p: &Arc<Principal>,
        req: ProfileKAnonymityRequest,
        event: &mut AuditEvent,
    ) -> Result<Vec<Vec<u8>>> {
        event.dataset = Some(req.dataset.chars().take(256).collect());
        let d = self
            .owned_dataset(p, &req.dataset, "profiling for k-anonymization")
            .await?;
        if req.columns.is_empty() || req.columns.len() > 16 {
            return Err(VeilError::InvalidArgument(
                "name from 1 to 16 columns to profile together".into(),
            ));
        }
        for c in &req.columns {
            if d.column(c).is_none() {
                return Err(VeilError::InvalidArgument(format!(
                    "dataset '{}' has no column '{c}'",
                    d.name
                )));
            }
        }
        event.columns = req.columns.clone();
        self.permitted(event).await?;
        let cfg = self.engine.config();
        let profile = crate::catalog::profiling::profile_dataset(
            &self.engine.raw_session(),
            &d,
            &req.columns,
            self.engine.stores(),
            cfg.kanon_max_groups,
        )
        .await?;
        let cutoff = cfg.kanon_cardinality_cutoff;
        let columns: Vec<_> = req
            .columns
            .iter()
            .zip(&profile.distinct)
            .map(|(c, n)| json!({"name": c, "distinct": n, "eligible": *n <= cutoff}))
            .collect();
        let body = json!({
            "dataset": d.name,
            "rows": profile.rows,
            "columns": columns,
            "cardinality_cutoff": cutoff,
            "groups": profile.groups,
            "current_k": profile.current_k,
            "suggested_k": profile.suggested_k,
            "suppressed_at_suggested_k": profile.suppressed_at_suggested,
            "suggestion_rule": "the largest k from 2 to 10 that nulls at most 5% of rows (2 if none does)",
        });
        Ok(vec![serde_json::to_vec(&body).unwrap_or_default()])
    }

    /// What a user gets from a dataset, and why.
    pub(super) async fn explain(
        &self,
        p: &Arc<Principal>,
        req: ExplainRequest,
        event: &mut AuditEvent,
    ) -> Result<Vec<Vec<u8>>> {
        event.dataset = Some(req.dataset.chars().take(256).collect());
        let who = self.user(req.user)?;
        event.message = format!("explain for {who}");
        let d = self.owned_dataset(p, &req.dataset, "explain").await?;
        let snapshot = self.engine.state().current().await?;
        let mut asserted = AssertedClaims {
            groups: req.groups.iter().cloned().collect(),
            attributes: Attributes::new(),
        };
        for a in &req.attributes {
            asserted
                .attributes
                .entry(a.key.clone())
                .or_default()
                .extend(a.values.iter().cloned());
        }
        // The claims are what a token from the user's issuer would carry, so
        // they get that issuer's trust: explain answers what the user would
        // really get, and shows what would be ignored.
        let source = ClaimSource::Explain {
            issuer: who.issuer.clone(),
        };
        let admitted = self.auth.admit(source, asserted);
        // The fingerprint of an explained principal is never used.
        let key = MasterKey::from_bytes([0; 32]).derive(KeyPurpose::Fingerprint);
        let merged = merge_with_directory(
            &snapshot,
            who.clone(),
            admitted,
            &key,
            ClientInfo::default(),
        );
        self.permitted(event).await?;
        Ok(vec![explain_json(
            &snapshot,
            &d,
            &merged,
            self.engine.default_issuer(),
        )])
    }
}

/// Where each group and attribute value came from, the issuer's trust, and
/// the claims it would ignore.
fn add_claim_sources(out: &mut serde_json::Value, merged: &MergedPrincipal) {
    let labels = |s: &std::collections::BTreeSet<ClaimSource>| -> Vec<String> {
        s.iter().map(ToString::to_string).collect()
    };
    let sources = &merged.sources;
    out["sources"] = json!({
            "groups": sources
                .groups
                .iter()
                .map(|(g, s)| (g.clone(), json!(labels(s))))
                .collect::<serde_json::Map<_, _>>(),
            "attributes": sources
                .attributes
                .iter()
                .map(|(k, vs)| {
                    let values: serde_json::Map<_, _> =
                        vs.iter().map(|(v, s)| (v.clone(), json!(labels(s)))).collect();
                    (k.clone(), json!(values))
                })
                .collect::<serde_json::Map<_, _>>(),
    });
    out["token_trust"] = json!({
        "issuer": merged.principal.identity.issuer,
        "trust_claims": merged.trust.claims.as_str(),
        "group_prefix": merged.trust.group_prefix,
    });
    out["ignored_claims"] = json!({
        "groups": merged.ignored.groups,
        "attributes": merged.ignored.attributes,
    });
}

fn explain_json(
    snapshot: &Snapshot,
    d: &DatasetRecord,
    merged: &MergedPrincipal,
    issuer: &str,
) -> Vec<u8> {
    let who = &merged.principal;
    let mut subscription = Vec::new();
    let none = Default::default();
    let approved = snapshot.approvals.get(&d.id).unwrap_or(&none);
    let verdict = if snapshot.disabled.contains(&who.identity) {
        None
    } else {
        Some(access(
            who,
            d,
            &snapshot.policies,
            approved,
            issuer,
            Some(&mut subscription),
        ))
    };
    let decisions = |ds: &[crate::policy::effective::Decision]| -> Vec<serde_json::Value> {
        ds.iter()
            .map(|x| {
                json!({"policy": x.policy, "version": x.label, "scope": x.scope, "outcome": x.outcome})
            })
            .collect()
    };
    let mut out = json!({
        "user": {"issuer": who.identity.issuer, "subject": who.identity.subject},
        "groups": who.groups,
        "attributes": who.attributes,
        "dataset": d.name,
        "access": match verdict {
            None => "denied: the user is disabled",
            Some(Access::Read) => "read",
            Some(Access::Request) => "visible; readable after an approved access request",
            Some(Access::Hidden) => "hidden: the dataset does not exist for this user",
        },
        "subscription": decisions(&subscription),
    });
    add_claim_sources(&mut out, merged);
    // What the user would get once admitted (also shown for datasets they
    // can only request, so an approver knows what they would release).
    if matches!(verdict, Some(Access::Read | Access::Request)) {
        match data_policy(who, d, &snapshot.policies, issuer) {
            Ok(e) => {
                let schema = crate::policy::secure_view::output_schema(d, &e);
                out["policies"] = json!(decisions(&e.decisions));
                out["masks"] = json!(
                    e.masked_columns()
                        .into_iter()
                        .map(|c| {
                            let label = e.mask_label(&c);
                            (c, json!(label))
                        })
                        .collect::<serde_json::Map<_, _>>()
                );
                out["k_anonymity"] = json!(
                    e.kanon
                        .iter()
                        .map(|g| {
                            let name = snapshot
                                .policies
                                .iter()
                                .find(|p| p.label() == g.policy)
                                .map(|p| p.spec.name.as_str())
                                .unwrap_or_default();
                            json!({"policy": name, "version": g.policy, "columns": g.columns, "k": g.k})
                        })
                        .collect::<Vec<_>>()
                );
                out["row_filters"] = json!(
                    e.row_rules
                        .iter()
                        .map(|r| {
                            let name = snapshot
                                .policies
                                .iter()
                                .find(|p| p.label() == r.policy)
                                .map(|p| p.spec.name.as_str())
                                .unwrap_or_default();
                            json!({"policy": name, "version": r.policy, "rule": r.description})
                        })
                        .collect::<Vec<_>>()
                );
                out["schema"] = match schema {
                    Ok(s) => json!(s
                        .fields()
                        .iter()
                        .map(|f| json!({"name": f.name(), "type": f.data_type().to_string(), "nullable": f.is_nullable()}))
                        .collect::<Vec<_>>()),
                    Err(e) => json!(format!("no data: {}", e.client_message())),
                };
            }
            Err(e) => {
                out["error"] = json!(format!(
                    "no data is served to this user: {}",
                    e.client_message()
                ));
            }
        }
    }
    serde_json::to_vec_pretty(&out).unwrap_or_default()
}
