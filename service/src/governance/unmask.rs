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

use veil_proto::{ListAccessRequestsRequest, RequestUnmaskRequest, UnmaskResultRequest};

use super::requests::MAX_REASON;
use super::{Call, Governance, Outcome};
use crate::engine::{ColumnLookup, RequestScope};
use crate::error::{Result, VeilError};
use crate::model::dataset::DatasetRecord;
use crate::model::policy::MaskSpec;
use crate::model::request::{AccessRequest, RequestStatus, UnmaskDetails};
use crate::policy::masks::format_preserving::FormatPreserving;
use crate::policy::masks::reversible::{SivTokens, TOKEN_PREFIX, Unmaskable};
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

impl Governance {
    /// Which of `values` the principal reads in `column` of `dataset`
    /// (through their own secure view: masks and row policies applied).
    /// The values enter the plan as typed literals, never as SQL text.
    async fn values_in_view(
        &self,
        scope: &Arc<RequestScope>,
        dataset: &str,
        column: &str,
        values: &[String],
    ) -> Result<std::collections::BTreeSet<String>> {
        use datafusion::arrow::array::AsArray;
        use futures::TryStreamExt;
        let lookup = ColumnLookup {
            dataset: dataset.to_string(),
            column: column.to_string(),
            values: values.to_vec(),
        };
        let planned = self.engine.plan_lookup(scope, &lookup).await?;
        let mut stream = planned.execute()?;
        let mut seen = std::collections::BTreeSet::new();
        while let Some(batch) = stream
            .try_next()
            .await
            .map_err(crate::error::query::from_datafusion)?
        {
            let text = datafusion::arrow::compute::cast(
                batch.column(0),
                &datafusion::arrow::datatypes::DataType::Utf8,
            )
            .map_err(crate::error::query::from_arrow)?;
            seen.extend(text.as_string::<i32>().iter().flatten().map(str::to_string));
        }
        Ok(seen)
    }

    pub(super) async fn request_unmask(
        &self,
        call: &mut Call<'_>,
        req: RequestUnmaskRequest,
    ) -> Result<Outcome> {
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
        let (d, policy, readable) = self.engine.lookup_visible(call.scope, &req.dataset)?;
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
        let snapshot = std::sync::Arc::clone(call.scope.snapshot());
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
            .values_in_view(call.scope, &d.name, &req.column, &req.values)
            .await?;
        if let Some(i) = req.values.iter().position(|v| !seen.contains(v)) {
            return Err(VeilError::InvalidArgument(format!(
                "value {} is not among the values of {}.{} you read; ask only for values you were served",
                i + 1,
                d.name,
                req.column
            )));
        }
        let details = UnmaskDetails {
            column: req.column.clone(),
            policy: policy_name,
            policy_label: applied.policy.clone(),
            values: req.values.clone(),
        };
        let request = self.file_request(call, &d, reason, Some(details)).await?;
        call.event.message = format!("unmask request {}", request.id);
        call.event.policies = vec![applied.policy.clone()];
        Ok(Outcome::Requests(vec![self.as_seen(call.scope, request)?]))
    }

    /// An unmask request as `scope`'s principal may see it: the masking
    /// policy's name and version only for whoever may list that policy or
    /// decide the request. A requester who may do neither sees neither (a
    /// policy's name can say what it protects, or whom it exempts).
    fn as_seen(&self, scope: &Arc<RequestScope>, mut r: AccessRequest) -> Result<AccessRequest> {
        let decides = self.may_decide_unmask(scope, &r)?;
        let snapshot = scope.snapshot();
        if let Some(u) = r.unmask.as_mut() {
            let id = u.policy_label.split('@').next().unwrap_or_default();
            let listed = snapshot
                .policies
                .iter()
                .find(|x| x.id == id)
                .is_some_and(|pol| self.may_list(scope.principal(), pol, snapshot));
            if !decides && !listed {
                u.policy.clear();
                u.policy_label.clear();
            }
        }
        Ok(r)
    }

    pub(super) async fn list_unmask_requests(
        &self,
        call: &mut Call<'_>,
        req: ListAccessRequestsRequest,
    ) -> Result<Outcome> {
        let p = call.principal;
        let store = self.engine.state().store();
        let mut out = Vec::new();
        for r in store.access_requests().await? {
            if r.unmask.is_none()
                || !(req.all || r.status == RequestStatus::Pending)
                || !(req.dataset.is_empty() || r.dataset.eq_ignore_ascii_case(&req.dataset))
            {
                continue;
            }
            if r.requester == p.identity || self.may_decide_unmask(call.scope, &r)? {
                out.push(self.as_seen(call.scope, r)?);
            }
        }
        Ok(Outcome::Requests(out))
    }

    pub(super) async fn unmask_result(
        &self,
        call: &mut Call<'_>,
        req: UnmaskResultRequest,
    ) -> Result<Outcome> {
        let p = call.principal;
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
        let Some(u) = r.unmask.as_ref() else {
            return Err(VeilError::Internal(
                "an unmask request without its details".into(),
            ));
        };
        call.event.dataset = Some(r.dataset.clone());
        call.event.columns = vec![u.column.clone()];
        if r.status != RequestStatus::Approved {
            return Err(VeilError::FailedPrecondition(format!(
                "unmask request {} is {}: only an approved request releases values",
                r.id,
                r.status.as_str()
            )));
        }
        // Still allowed to read the dataset, it is still the same one, and
        // the column is still masked for them by the same policy version.
        let (d, effective, readable) = self.engine.lookup_visible(call.scope, &r.dataset)?;
        if !readable || d.id != r.dataset_id {
            return Err(VeilError::dataset_not_found(&r.dataset));
        }
        let changed = || {
            VeilError::FailedPrecondition(format!(
                "the policies on {}.{} changed since this request was made (the masking policy it was made under no longer masks it reversibly for you, or another mask now applies); ask for the values again",
                r.dataset, u.column
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
            .values_in_view(call.scope, &d.name, &u.column, &u.values)
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
        call.event.message = format!("unmask release {} ({} values)", r.id, values.len());
        Ok(Outcome::Documents(vec![json!({
            "request": r.id,
            "dataset": r.dataset,
            "column": u.column,
            "values": values,
        })]))
    }
}
