//! Policy administration: create, update, delete, list, explain, and
//! profiling for k-anonymization.
//!
//! Who may write a policy depends on its scope (DESIGN "Words"):
//! * local (`dataset = ...`): the dataset's owners, or `GOVERNANCE`;
//! * global (`tags = [...]`): `GOVERNANCE`;
//! * restricted global (`tags` with `restricted_to = [you]`):
//!   `CREATE_DATA_SOURCE`, limited to the datasets the author owns.
//!
//! The runner checks that (`authorize.rs`) before any handler here runs.
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

use veil_proto::{
    DeletePolicyRequest, ExplainRequest, ListPoliciesRequest, PolicyWriteRequest,
    ProfileKAnonymityRequest,
};

use super::{Call, Governance, Grant, Outcome, PolicyWrite};
use crate::auth::authenticator::{MergedPrincipal, merge_with_directory};
use crate::auth::claim_trust::{AssertedClaims, ClaimSource};
use crate::error::{Result, VeilError};
use crate::model::Origin;
use crate::model::dataset::DatasetRecord;
use crate::model::identity::{Attributes, ClientInfo, Permission};
use crate::model::policy::{Policy, PolicySpec};
use crate::model::snapshot::Snapshot;
use crate::policy::effective::{Access, access, applies_to, data_policy};
use crate::policy::rules::PolicySpecExt;
use crate::provisioning::sync::check_references;
use crate::secrets::KeyPurpose;
use crate::store::PolicyPut;

/// Longest policy JSON accepted.
const MAX_POLICY_BYTES: usize = 64 * 1024;

/// The most columns profiled together.
const MAX_PROFILED_COLUMNS: usize = 16;

/// A policy to write, from its JSON: parsed and validated, depending on
/// nothing but the request.
pub fn parse_write(req: &PolicyWriteRequest) -> Result<PolicyWrite> {
    if req.spec_json.len() > MAX_POLICY_BYTES {
        return Err(VeilError::InvalidArgument(format!(
            "a policy is at most {MAX_POLICY_BYTES} bytes of JSON"
        )));
    }
    let spec: PolicySpec = serde_json::from_str(&req.spec_json).map_err(|e| {
        VeilError::InvalidArgument(VeilError::detailed(
            "the policy is not valid (write it as a JSON object with the fields of a [[policies]] entry; see the README's Policies section)",
            e,
        ))
    })?;
    Ok(PolicyWrite {
        policy: Policy {
            id: String::new(),
            version: 0,
            origin: Origin::Runtime,
            rule: spec.validate()?,
            spec,
        },
        expected_version: (req.expected_version > 0).then_some(req.expected_version),
    })
}

/// A policy as `veil.list_policies` shows it.
fn policy_json(p: &Policy) -> serde_json::Value {
    json!({
        "name": p.spec.name,
        "id": p.id,
        "version": p.version,
        "origin": match p.origin { Origin::Config => "config", Origin::Runtime => "runtime" },
        "scope": p.spec.scope(),
        "spec": p.spec,
    })
}

impl Governance {
    pub(super) async fn write_policy(
        &self,
        call: &mut Call<'_>,
        write: PolicyWrite,
        create: bool,
    ) -> Result<Outcome> {
        if !matches!(call.grant, Grant::PolicyAuthor) {
            return Err(call.grant_mismatch("the right to write the policy"));
        }
        let PolicyWrite {
            policy,
            expected_version,
        } = write;
        let snapshot = std::sync::Arc::clone(call.scope.snapshot());
        let datasets: BTreeMap<&str, &DatasetRecord> = snapshot
            .datasets
            .iter()
            .map(|(n, d)| (n.as_str(), d))
            .collect();
        check_references(&policy, &datasets, self.engine.default_issuer())?;
        self.check_author_reads_what_it_tests(call.principal, &policy, &snapshot)?;
        let cfg = self.engine.config();
        crate::catalog::profiling::check_cardinality(
            &self.engine.raw_session(),
            &policy,
            &datasets.values().copied().collect::<Vec<_>>(),
            self.engine.stores(),
            self.engine.databases(),
            cfg.kanon_cardinality_cutoff,
            cfg.kanon_max_groups,
            self.engine.default_issuer(),
        )
        .await?;
        crate::catalog::profiling::check_privacy_unit(
            &self.engine.raw_session(),
            &policy,
            &datasets.values().copied().collect::<Vec<_>>(),
            self.engine.stores(),
            self.engine.databases(),
            self.engine.default_issuer(),
        )
        .await?;
        let spec = &policy.spec;
        let mode = if create {
            PolicyPut::Create
        } else {
            PolicyPut::Update { expected_version }
        };
        let version = self.engine.state().store().put_policy(spec, mode).await?;
        call.event.policies = vec![format!("{}@{version}", spec.name)];
        Ok(Outcome::Done(format!(
            "{} {} policy '{}' (version {version}); it applies from the next request",
            if create { "created" } else { "saved" },
            spec.scope(),
            spec.name
        )))
    }

    fn check_author_reads_what_it_tests(
        &self,
        author: &crate::model::identity::Principal,
        policy: &Policy,
        snapshot: &Snapshot,
    ) -> Result<()> {
        let issuer = self.engine.default_issuer();
        // A policy restricted to its author can reach every dataset they
        // own, by a tag they may set at any time: check them all now.
        let restricted = policy.spec.dataset.is_none() && !policy.spec.restricted_to.is_empty();
        let datasets: Vec<&DatasetRecord> = snapshot
            .datasets
            .values()
            .filter(|d| {
                applies_to(policy, d, issuer) || (restricted && d.is_owner(&author.identity))
            })
            .collect();
        author_may_test(author, policy, &datasets, &snapshot.policies, issuer)
    }

    pub(super) async fn delete_policy(
        &self,
        call: &mut Call<'_>,
        req: DeletePolicyRequest,
    ) -> Result<Outcome> {
        let Grant::Deletable(old) = &call.grant else {
            return Err(call.grant_mismatch("the policy to delete"));
        };
        self.engine
            .state()
            .store()
            .delete_policy(
                &old.spec.namespace(),
                &old.spec.name,
                (req.expected_version > 0).then_some(req.expected_version),
            )
            .await?;
        Ok(Outcome::Done(format!(
            "deleted {} policy '{}'; it stops applying from the next request",
            old.spec.scope(),
            old.spec.name
        )))
    }

    /// Governors see every policy; others the ones on datasets they own and
    /// restricted ones naming them.
    pub(super) async fn list_policies(
        &self,
        call: &mut Call<'_>,
        req: ListPoliciesRequest,
    ) -> Result<Outcome> {
        let p = call.principal;
        let snapshot = std::sync::Arc::clone(call.scope.snapshot());
        let issuer = self.engine.default_issuer();
        let governor = p.has(Permission::Governance);
        // A dataset named: its policies for whoever administers it; for a
        // reader who can see it, those of them the reader may list (a
        // dataset they can't see is not found, like a missing one).
        let only: Option<(&DatasetRecord, bool)> = if req.dataset.is_empty() {
            None
        } else {
            let d = snapshot
                .datasets
                .values()
                .find(|d| d.name.eq_ignore_ascii_case(&req.dataset))
                .filter(|d| {
                    governor || d.is_owner(&p.identity) || call.scope.visible(&d.name).is_some()
                })
                .ok_or_else(|| VeilError::dataset_not_found(&req.dataset))?;
            Some((d, governor || d.is_owner(&p.identity)))
        };
        let shown = |pol: &Policy| -> bool {
            match only {
                Some((d, administers)) => {
                    applies_to(pol, d, issuer) && (administers || self.may_list(p, pol, &snapshot))
                }
                None => self.may_list(p, pol, &snapshot),
            }
        };
        Ok(Outcome::Documents(
            snapshot
                .policies
                .iter()
                .filter(|pol| shown(pol))
                .map(policy_json)
                .collect(),
        ))
    }

    /// The raw data's profile for k-anonymizing some columns: distinct
    /// values (against the cutoff), its current k and a suggested k.
    pub(super) async fn profile_k_anonymity(
        &self,
        call: &mut Call<'_>,
        req: ProfileKAnonymityRequest,
    ) -> Result<Outcome> {
        let d = call.owned()?.clone();
        if req.columns.is_empty() || req.columns.len() > MAX_PROFILED_COLUMNS {
            return Err(VeilError::InvalidArgument(format!(
                "name from 1 to {MAX_PROFILED_COLUMNS} columns to profile together"
            )));
        }
        for (i, c) in req.columns.iter().enumerate() {
            if req.columns[..i].contains(c) {
                return Err(VeilError::InvalidArgument(format!(
                    "column '{c}' is named twice; name each column to profile once"
                )));
            }
            if d.column(c).is_none() {
                return Err(VeilError::InvalidArgument(format!(
                    "dataset '{}' has no column '{c}'",
                    d.name
                )));
            }
        }
        call.event.columns = req.columns.clone();
        self.check_profiler_reads_unmasked(call, &d, &req.columns)?;
        let cfg = self.engine.config();
        let profile = crate::catalog::profiling::profile_dataset(
            &self.engine.raw_session(),
            &d,
            &req.columns,
            self.engine.stores(),
            self.engine.databases(),
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
        Ok(Outcome::Documents(vec![json!({
            "dataset": d.name,
            "rows": profile.rows,
            "columns": columns,
            "cardinality_cutoff": cutoff,
            "groups": profile.groups,
            "current_k": profile.current_k,
            "suggested_k": profile.suggested_k,
            "suppressed_at_suggested_k": profile.suppressed_at_suggested,
            "suggestion_rule": "the largest k from 2 to 10 that nulls at most 5% of rows (2 if none does)",
        })]))
    }

    /// A profile counts the raw values of the columns it names (distinct
    /// values, the smallest group) over every row: an owner without
    /// `GOVERNANCE` may only profile columns they read unmasked, like the
    /// columns their policies may test (`author_may_test`), of a dataset
    /// whose rows no policy hides from them, or the counts would describe
    /// values and rows a governor hides from them.
    fn check_profiler_reads_unmasked(
        &self,
        call: &Call<'_>,
        d: &DatasetRecord,
        columns: &[String],
    ) -> Result<()> {
        let masked = self.raw_reads_masked(call, d, "a profile counts every row", "profile it")?;
        match columns.iter().find_map(|c| masked(c).map(|how| (c, how))) {
            None => Ok(()),
            Some((c, how)) => Err(VeilError::PermissionDenied(format!(
                "column '{c}' of {}: {how}; a profile counts raw values, so you may profile only columns you read unmasked; profile other columns, or ask a governor",
                d.name
            ))),
        }
    }

    /// For work that reads a dataset's raw values and shows the caller
    /// something computed from them (profiling, discovery): which columns
    /// the caller reads masked, as a function answering how (`None`:
    /// unmasked; governors read everything unmasked). Refused outright
    /// when a row policy hides rows from the caller, or the caller reads
    /// the dataset only through differential privacy (not even a count of
    /// rows is theirs), since such work reads every row (`reads_all` says
    /// so; `ask` is what a governor would do).
    pub(super) fn raw_reads_masked(
        &self,
        call: &Call<'_>,
        d: &DatasetRecord,
        reads_all: &str,
        ask: &str,
    ) -> Result<Box<dyn Fn(&str) -> Option<String> + Send + Sync>> {
        let who = call.principal;
        if who.has(Permission::Governance) {
            return Ok(Box::new(|_| None));
        }
        let snapshot = call.scope.snapshot();
        let view = data_policy(who, d, &snapshot.policies, self.engine.default_issuer())?;
        if let Some(rule) = view.row_rules.first() {
            return Err(VeilError::PermissionDenied(format!(
                "policy '{}' hides rows of {} from you, and {reads_all}; ask a governor to {ask}",
                policy_name(snapshot, &rule.policy),
                d.name
            )));
        }
        // Differential privacy: not even how many rows a sample found.
        if let Some(dp) = &view.dp {
            return Err(VeilError::PermissionDenied(format!(
                "you read {} only through differential privacy (policy '{}'), and {reads_all}; ask a governor to {ask}",
                d.name, dp.name
            )));
        }
        let masked: std::collections::HashSet<String> = view
            .masked_columns()
            .iter()
            .map(|c| c.to_string())
            .collect();
        let d = d.clone();
        Ok(Box::new(move |c: &str| {
            (view.dp.is_some() || masked.contains(c)).then(|| how_masked(&view, &d, c))
        }))
    }

    /// Whether the caller may learn how many rows `d` holds: a governor,
    /// or a reader no row policy filters (attribute matching, a where, a
    /// window, a sample) and who reads it beyond differential privacy.
    pub(super) fn may_count_rows(&self, call: &Call<'_>, d: &DatasetRecord) -> bool {
        let who = call.principal;
        who.has(Permission::Governance)
            || data_policy(
                who,
                d,
                &call.scope.snapshot().policies,
                self.engine.default_issuer(),
            )
            .is_ok_and(|view| view.row_rules.is_empty() && view.dp.is_none())
    }

    /// What a user gets from a dataset, and why.
    pub(super) async fn explain(
        &self,
        call: &mut Call<'_>,
        req: ExplainRequest,
    ) -> Result<Outcome> {
        let d = call.owned()?.clone();
        let who = self.user(req.user)?;
        let snapshot = std::sync::Arc::clone(call.scope.snapshot());
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
        // The principal's fingerprint is computed with the real key, as
        // for any principal, though an explained one's is never used.
        let key = self.engine.master().derive(KeyPurpose::Fingerprint);
        let merged = merge_with_directory(
            &snapshot,
            who.clone(),
            admitted,
            &key,
            ClientInfo::default(),
        );
        let mut report = explain_json(&snapshot, &d, &merged, self.engine.default_issuer());
        let caller = call.principal;
        if !caller.has(Permission::Governance) && !caller.has(Permission::UserAdmin) {
            only_what_the_policies_test(&mut report, &snapshot);
        }
        Ok(Outcome::Report(report))
    }
}

/// An owner who doesn't administer users sees, of the user's groups and
/// attributes, only those the policies in the answer test for: why the
/// policies decided as they did, not the user's whole directory entry
/// (found by an outside review: registering a dataset was enough to read
/// anyone's).
fn only_what_the_policies_test(report: &mut serde_json::Value, snapshot: &Snapshot) {
    // By label (`id@version`): names repeat across namespaces.
    let decided: std::collections::BTreeSet<&str> = ["subscription", "policies"]
        .iter()
        .filter_map(|list| report[*list].as_array())
        .flatten()
        .filter_map(|d| d["version"].as_str())
        .collect();
    let mut names = crate::model::policy::PrincipalNames::default();
    for p in snapshot
        .policies
        .iter()
        .filter(|p| decided.contains(p.label().as_str()))
    {
        p.spec.principal_names(&mut names);
    }
    if let Some(groups) = report["groups"].as_array_mut() {
        groups.retain(|g| g.as_str().is_some_and(|g| names.groups.contains(g)));
    }
    let keep_keys = |v: &mut serde_json::Value, keys: &std::collections::BTreeSet<String>| {
        if let Some(m) = v.as_object_mut() {
            m.retain(|k, _| keys.contains(k));
        }
    };
    keep_keys(&mut report["attributes"], &names.attributes);
    keep_keys(&mut report["sources"]["groups"], &names.groups);
    keep_keys(&mut report["sources"]["attributes"], &names.attributes);
    report["directory"] = json!(
        "only the groups and attributes these policies test for (the user's whole entry needs USER_ADMIN or GOVERNANCE)"
    );
}

/// The name of the policy with this label (`id@version`).
fn policy_name<'a>(snapshot: &'a Snapshot, label: &str) -> &'a str {
    snapshot
        .policies
        .iter()
        .find(|p| p.label() == label)
        .map(|p| p.spec.name.as_str())
        .unwrap_or_default()
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
) -> serde_json::Value {
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
                            let name = policy_name(snapshot, &g.policy);
                            json!({"policy": name, "version": g.policy, "columns": g.columns, "k": g.k})
                        })
                        .collect::<Vec<_>>()
                );
                // Aggregate-only access: what is answered, and at what cost.
                out["differential_privacy"] = match &e.dp {
                    None => serde_json::Value::Null,
                    Some(dp) => json!({
                        "policy": dp.name,
                        "version": dp.label,
                        "rule": dp.policy.describe(),
                        "privacy_unit": dp.policy.unit,
                        "epsilon": dp.policy.epsilon,
                        "delta": dp.policy.delta,
                        "mechanism": dp.policy.mechanism.as_str(),
                        "latency_tolerance_secs": dp.policy.tolerance_secs,
                        "groupable": dp.policy.groupable,
                    }),
                };
                out["row_filters"] = json!(
                    e.row_rules
                        .iter()
                        .map(|r| {
                            let name = policy_name(snapshot, &r.policy);
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
    out
}

/// How the caller, whose view of `d` is `view`, sees column `c`: masked
/// (by which mask), or only through differential privacy.
fn how_masked(
    view: &crate::policy::effective::EffectivePolicy,
    d: &DatasetRecord,
    c: &str,
) -> String {
    match &view.dp {
        Some(dp) => format!(
            "you read {} only through differential privacy (policy '{}')",
            d.name, dp.name
        ),
        None => format!("you see it masked ({})", view.reader_mask_label(c)),
    }
}

/// A policy's conditions read stored values, and its author sees which
/// rows and values they let through: testing a column the author reads
/// masked (under a governor's mask, say) would reveal its values a bit at
/// a time. So an author without `GOVERNANCE` may only write conditions,
/// row rules, k-anonymization and differential privacy over columns they
/// read unmasked, and mask a column they read masked only with `null` or a
/// constant (any other mask reads the stored value), on each of
/// `datasets` (their view without `policy`'s own earlier version; a
/// dataset they read only through differential privacy has no such
/// column). A dataset the policy's columns don't fit is skipped (the
/// policy can't apply there without failing closed). Governors write and
/// lift the masks themselves, so they are not held to it. Checked when a
/// policy is written and when a tag change makes one apply to a dataset.
pub(super) fn author_may_test(
    author: &crate::model::identity::Principal,
    policy: &Policy,
    datasets: &[&DatasetRecord],
    policies: &[Policy],
    issuer: &str,
) -> Result<()> {
    if author.has(Permission::Governance) {
        return Ok(());
    }
    let namespace = policy.spec.namespace();
    let others: Vec<Policy> = policies
        .iter()
        .filter(|p| !(p.spec.name == policy.spec.name && p.spec.namespace() == namespace))
        .cloned()
        .collect();
    for d in datasets {
        let Ok(read) = crate::policy::effective::columns_read(policy, d) else {
            continue;
        };
        let Ok(replaced) = crate::policy::effective::masks_replacing(policy, d) else {
            continue;
        };
        if read.is_empty() && replaced.is_empty() {
            continue;
        }
        let view = data_policy(author, d, &others, issuer)?;
        let masked = view.masked_columns();
        let refuse = |c: &str, what: &str| {
            let how = how_masked(&view, d, c);
            VeilError::PermissionDenied(format!(
                "policy '{}' {what} column '{c}' of {}, and {how}: {}; test another column, or ask a governor to write the policy",
                policy.spec.name,
                d.name,
                "a policy's conditions, row rules, k-anonymization and differential privacy may only read columns you read unmasked, and only null or a constant may mask a column you see masked, or the policy's effect would show you its values"
            ))
        };
        if let Some(c) = read
            .iter()
            .find(|c| view.dp.is_some() || masked.contains(*c))
        {
            return Err(refuse(c, "tests"));
        }
        if let Some((c, _)) = replaced
            .iter()
            .find(|(c, weak)| *weak && (view.dp.is_some() || masked.contains(c)))
        {
            return Err(refuse(c, "masks (with a mask that reads its value)"));
        }
    }
    Ok(())
}
