//! Unmask requests: the way back from a reversible or format-preserving
//! mask (Immuta's "unmask values").
//!
//! 1. A user reading a column under such a mask asks to see the originals
//!    of some masked values, with a reason (`veil.request_unmask`).
//! 2. Someone the masking policy currently exempts, who reads the column
//!    unmasked, approves or denies (`veil.approve_unmask`,
//!    `veil.deny_unmask`). Never the requester.
//! 3. The requester alone fetches the originals (`veil.unmask_result`),
//!    decrypted at that moment, while they can still read the dataset.
//!
//! Requests, decisions and every release are audited (the release names
//! the request, dataset and column, never the values). Requests share the
//! access-request store (same lifecycle) but never grant access.

use serde_json::json;
use std::sync::Arc;

use veil_proto::{
    DecideAccessRequest, ListAccessRequestsRequest, RequestUnmaskRequest, UnmaskResultRequest,
};

use super::Admin;
use super::access::{MAX_REASON, request_json};
use crate::error::{Result, VeilError};
use crate::model::audit::AuditEvent;
use crate::model::dataset::DatasetRecord;
use crate::model::identity::Principal;
use crate::model::policy::MaskSpec;
use crate::model::request::{AccessRequest, RequestStatus, UnmaskDetails};
use crate::model::snapshot::Snapshot;
use crate::policy::effective::exempts;
use crate::policy::reversible::{FormatPreserving, SivTokens, TOKEN_PREFIX, Unmaskable};
use crate::secrets::KeyPurpose;

const MAX_VALUES: usize = 100;
const MAX_VALUE_LEN: usize = 4096;

/// Turns masked values of one column back into their originals.
struct Unmasker {
    siv: SivTokens,
    fpe: FormatPreserving,
}

impl Unmasker {
    fn new(master: &crate::secrets::MasterKey, d: &DatasetRecord, column: &str) -> Self {
        let id = d.id.as_str();
        Self {
            siv: SivTokens::new(
                &master.derive(KeyPurpose::Reversible {
                    dataset_id: id,
                    column,
                }),
                id,
                column,
            ),
            fpe: FormatPreserving::new(&master.derive(KeyPurpose::FormatPreserving {
                dataset_id: id,
                column,
            })),
        }
    }

    /// A reversible token opens with AES-SIV; anything else is taken as
    /// format-preserving.
    fn open(&self, masked: &str, allow_fpe: bool) -> std::result::Result<String, Unmaskable> {
        if masked.starts_with(TOKEN_PREFIX) {
            self.siv.decrypt(masked)
        } else if allow_fpe {
            self.fpe.decrypt(masked)
        } else {
            Err(Unmaskable::NotAToken)
        }
    }
}

impl Admin {
    /// Which of `values` the principal reads in `column` of `dataset`
    /// (through their own secure view: masks and row policies applied).
    async fn values_in_view(
        &self,
        p: &Arc<Principal>,
        dataset: &str,
        column: &str,
        values: &[String],
    ) -> Result<std::collections::BTreeSet<String>> {
        use datafusion::arrow::array::AsArray;
        use futures::TryStreamExt;
        let quote = |v: &str| format!("'{}'", v.replace('\'', "''"));
        let filter = format!(
            "\"{}\" IN ({})",
            column.replace('"', "\"\""),
            values
                .iter()
                .map(|v| quote(v))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let command = crate::engine::Command::Scan(veil_proto::ScanCommand {
            dataset: dataset.to_string(),
            columns: vec![column.to_string()],
            filter,
            limit: None,
        });
        let planned = self.engine.plan(p, &command, None, None).await?;
        let mut stream = planned.execute()?;
        let mut seen = std::collections::BTreeSet::new();
        while let Some(batch) = stream
            .try_next()
            .await
            .map_err(|e| VeilError::internal("reading the values to unmask", e))?
        {
            let text = datafusion::arrow::compute::cast(
                batch.column(0),
                &datafusion::arrow::datatypes::DataType::Utf8,
            )
            .map_err(|e| VeilError::internal("reading the values to unmask", e))?;
            seen.extend(text.as_string::<i32>().iter().flatten().map(str::to_string));
        }
        Ok(seen)
    }

    pub(super) async fn request_unmask(
        &self,
        p: &Arc<Principal>,
        req: RequestUnmaskRequest,
        event: &mut AuditEvent,
    ) -> Result<Vec<Vec<u8>>> {
        event.dataset = Some(req.dataset.chars().take(256).collect());
        event.columns = vec![req.column.chars().take(256).collect()];
        let reason = req.reason.trim();
        if reason.is_empty() || reason.len() > MAX_REASON {
            return Err(VeilError::InvalidArgument(format!(
                "say why you need the originals (a reason of 1 to {MAX_REASON} characters)"
            )));
        }
        if req.values.is_empty() || req.values.len() > MAX_VALUES {
            return Err(VeilError::InvalidArgument(format!(
                "name from 1 to {MAX_VALUES} masked values to unmask"
            )));
        }
        if req
            .values
            .iter()
            .any(|v| v.is_empty() || v.len() > MAX_VALUE_LEN)
        {
            return Err(VeilError::InvalidArgument(format!(
                "a masked value is 1 to {MAX_VALUE_LEN} bytes"
            )));
        }
        let (d, policy, readable) = self.engine.lookup_visible(p, &req.dataset).await?;
        if !readable {
            return Err(VeilError::dataset_not_found(&req.dataset));
        }
        // The reversible mask the requester reads the column under.
        let Some(applied) = policy.masks.get(&req.column).and_then(|m| {
            m.candidates
                .iter()
                .find(|c| c.mask.reversible() && !c.policy.contains('+'))
        }) else {
            return Err(VeilError::FailedPrecondition(format!(
                "column '{}' of {} is not under a reversible or format-preserving mask for you; there is nothing to unmask",
                req.column, d.name
            )));
        };
        let snapshot = self.engine.state().current().await?;
        let Some(policy_name) = snapshot
            .policies
            .iter()
            .find(|x| x.label() == applied.policy)
            .map(|x| x.spec.name.clone())
        else {
            return Err(VeilError::Unavailable(
                "the policies changed while the request was made; try again".into(),
            ));
        };
        let fpe = applied.mask == MaskSpec::FormatPreserving
            || policy.masks[&req.column]
                .candidates
                .iter()
                .any(|c| c.mask == MaskSpec::FormatPreserving);
        // Refuse what could never be released, before anyone is asked:
        // values the mask could not have made, and values the requester
        // doesn't read (rows their row policies hide, made-up strings).
        let unmasker = Unmasker::new(self.engine.master(), &d, &req.column);
        for (i, v) in req.values.iter().enumerate() {
            if let Err(e) = unmasker.open(v, fpe) {
                return Err(VeilError::InvalidArgument(format!(
                    "value {} can't be unmasked: {e}",
                    i + 1
                )));
            }
        }
        let seen = self
            .values_in_view(p, &d.name, &req.column, &req.values)
            .await?;
        if let Some(i) = req.values.iter().position(|v| !seen.contains(v)) {
            return Err(VeilError::InvalidArgument(format!(
                "value {} is not among the values of {}.{} you read; ask only for values you were served",
                i + 1,
                d.name,
                req.column
            )));
        }
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
            unmask: Some(UnmaskDetails {
                column: req.column.clone(),
                policy: policy_name,
                policy_label: applied.policy.clone(),
                values: req.values.clone(),
            }),
        };
        event.message = format!("unmask request {}", request.id);
        event.policies = vec![applied.policy.clone()];
        self.permitted(event).await?;
        self.engine
            .state()
            .store()
            .create_access_request(&request)
            .await?;
        Ok(vec![request_json(&request)])
    }

    /// May `p` decide unmask request `r` on `d`: exempt from its policy,
    /// reading the dataset with the column unmasked?
    async fn may_decide_unmask(
        &self,
        p: &Arc<Principal>,
        r: &AccessRequest,
        snapshot: &Snapshot,
    ) -> Result<bool> {
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
        let Ok((d, effective, readable)) = self.engine.lookup_visible(p, &r.dataset).await else {
            return Ok(false);
        };
        Ok(readable && d.id == r.dataset_id && !effective.masked_columns().contains(&u.column))
    }

    pub(super) async fn decide_unmask(
        &self,
        p: &Arc<Principal>,
        req: DecideAccessRequest,
        approve: bool,
        event: &mut AuditEvent,
    ) -> Result<Vec<Vec<u8>>> {
        event.message = format!(
            "unmask request {}",
            req.request_id.chars().take(64).collect::<String>()
        );
        let store = self.engine.state().store();
        let requests = store.access_requests().await?;
        let snapshot = self.engine.state().current().await?;
        let not_found = || {
            VeilError::NotFound(format!(
                "no unmask request {} that you may decide",
                req.request_id.chars().take(64).collect::<String>()
            ))
        };
        let Some(r) = requests
            .iter()
            .find(|r| r.id == req.request_id && r.unmask.is_some())
        else {
            return Err(not_found());
        };
        let u = r.unmask.as_ref().expect("an unmask request");
        event.dataset = Some(r.dataset.clone());
        event.columns = vec![u.column.clone()];
        if r.requester == p.identity {
            return Err(VeilError::PermissionDenied(
                "you cannot decide your own unmask request; someone the masking policy exempts must"
                    .into(),
            ));
        }
        if !self.may_decide_unmask(p, r, &snapshot).await? {
            // Those who can read the dataset learn why; others see nothing.
            return match self.engine.lookup_visible(p, &r.dataset).await {
                Ok((_, _, true)) => Err(VeilError::PermissionDenied(format!(
                    "only someone policy '{}' exempts, who reads {}.{} unmasked, may decide this request",
                    u.policy, r.dataset, u.column
                ))),
                _ => Err(not_found()),
            };
        }
        self.decide_pending(p, &r.id, approve, &req.note, event)
            .await
    }

    pub(super) async fn list_unmask_requests(
        &self,
        p: &Arc<Principal>,
        req: ListAccessRequestsRequest,
        event: &mut AuditEvent,
    ) -> Result<Vec<Vec<u8>>> {
        let store = self.engine.state().store();
        let snapshot = self.engine.state().current().await?;
        self.permitted(event).await?;
        let mut out = Vec::new();
        for r in store.access_requests().await? {
            if r.unmask.is_none()
                || !(req.all || r.status == RequestStatus::Pending)
                || !(req.dataset.is_empty() || r.dataset.eq_ignore_ascii_case(&req.dataset))
            {
                continue;
            }
            if r.requester == p.identity || self.may_decide_unmask(p, &r, &snapshot).await? {
                out.push(request_json(&r));
            }
        }
        Ok(out)
    }

    pub(super) async fn unmask_result(
        &self,
        p: &Arc<Principal>,
        req: UnmaskResultRequest,
        event: &mut AuditEvent,
    ) -> Result<Vec<Vec<u8>>> {
        event.message = format!(
            "unmask release {}",
            req.request_id.chars().take(64).collect::<String>()
        );
        let requests = self.engine.state().store().access_requests().await?;
        // Only the requester's own requests exist for them.
        let Some(r) = requests
            .iter()
            .find(|r| r.id == req.request_id && r.unmask.is_some() && r.requester == p.identity)
        else {
            return Err(VeilError::NotFound(format!(
                "no unmask request {} of yours",
                req.request_id.chars().take(64).collect::<String>()
            )));
        };
        let u = r.unmask.as_ref().expect("an unmask request");
        event.dataset = Some(r.dataset.clone());
        event.columns = vec![u.column.clone()];
        if r.status != RequestStatus::Approved {
            return Err(VeilError::FailedPrecondition(format!(
                "unmask request {} is {}: only an approved request releases values",
                r.id,
                r.status.as_str()
            )));
        }
        // Still allowed to read the dataset, it is still the same one, and
        // the column is still masked for them by the same policy version.
        let (d, effective, readable) = self.engine.lookup_visible(p, &r.dataset).await?;
        if !readable || d.id != r.dataset_id {
            return Err(VeilError::dataset_not_found(&r.dataset));
        }
        let changed = || {
            VeilError::FailedPrecondition(format!(
                "the policies on {}.{} changed since this request was made ('{}' no longer masks it reversibly for you, or another mask now applies); ask for the values again",
                r.dataset, u.column, u.policy
            ))
        };
        let candidates = effective
            .masks
            .get(&u.column)
            .map(|m| m.candidates.as_slice())
            .unwrap_or_default();
        let Some(applied) = candidates
            .iter()
            .find(|c| c.mask.reversible() && c.policy == u.policy_label)
        else {
            return Err(changed());
        };
        // No stricter mask may have come to apply on top of it.
        if candidates
            .iter()
            .any(|c| c.mask.restrictiveness() > applied.mask.restrictiveness())
            || effective
                .kanon
                .iter()
                .any(|g| g.columns.contains(&u.column))
        {
            return Err(changed());
        }
        let fpe = candidates
            .iter()
            .any(|c| c.mask == MaskSpec::FormatPreserving);
        let seen = self
            .values_in_view(p, &d.name, &u.column, &u.values)
            .await?;
        let unmasker = Unmasker::new(self.engine.master(), &d, &u.column);
        let values: Vec<_> = u
            .values
            .iter()
            .map(|m| match unmasker.open(m, fpe) {
                Ok(_) if !seen.contains(m) => {
                    json!({"masked": m, "error": "no longer among the values you read"})
                }
                Ok(v) => json!({"masked": m, "value": v}),
                Err(e) => json!({"masked": m, "error": e.to_string()}),
            })
            .collect();
        event.message = format!("unmask release {} ({} values)", r.id, values.len());
        self.permitted(event).await?;
        Ok(vec![
            serde_json::to_vec(&json!({
                "request": r.id,
                "dataset": r.dataset,
                "column": u.column,
                "values": values,
            }))
            .unwrap_or_default(),
        ])
    }
}
