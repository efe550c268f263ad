//! Sensitive data discovery as actions: `veil.discover` samples a dataset
//! and stores the tags it proposes; `veil.decide_tag_proposal` accepts one
//! (the column gets the tag under the same rules as any tag change, so the
//! global policies on that tag apply from the next request) or rejects it
//! (discovery won't propose it again). Owners and governors only; nothing
//! either returns or records holds a sampled value.

use serde_json::json;
use std::sync::Arc;

use veil_proto::{DecideTagProposalRequest, DiscoverRequest};

use super::{Admin, ack, refuse_builtin, retag_column};
use crate::audit::AuditEvent;
use crate::auth::identity::Principal;
use crate::catalog::discovery;
use crate::error::{Result, VeilError};
use crate::policy::model::tag_covers;
use crate::store::PutMode;
use crate::store::model::{DatasetRecord, ProposalStatus, TagProposal};

/// Rows sampled when the request names no number.
pub(super) const DEFAULT_SAMPLE_ROWS: u32 = 1000;
pub(super) const MAX_SAMPLE_ROWS: u32 = 100_000;
/// Proposals under this confidence (percent) are not made by default.
pub(super) const DEFAULT_MIN_CONFIDENCE: u32 = 50;

fn proposal_json(p: &TagProposal) -> serde_json::Value {
    json!({
        "column": p.column,
        "tag": p.tag,
        "kind": p.kind,
        "confidence": p.confidence,
        "evidence": p.evidence,
        "status": match p.status {
            ProposalStatus::Pending => "pending",
            ProposalStatus::Rejected => "rejected",
        },
    })
}

impl Admin {
    pub(super) async fn discover(
        &self,
        p: &Arc<Principal>,
        req: DiscoverRequest,
        event: &mut AuditEvent,
    ) -> Result<Vec<Vec<u8>>> {
        event.dataset = Some(req.dataset.chars().take(256).collect());
        let d = self.owned_dataset(p, &req.dataset, "discovery").await?;
        refuse_builtin(&d)?;
        let rows = match req.sample_rows {
            0 => DEFAULT_SAMPLE_ROWS,
            n if n > MAX_SAMPLE_ROWS => {
                return Err(VeilError::InvalidArgument(format!(
                    "sample_rows {n} is more than {MAX_SAMPLE_ROWS}; discovery needs a sample, not the data"
                )));
            }
            n => n,
        };
        let min_confidence = match req.min_confidence {
            0 => DEFAULT_MIN_CONFIDENCE,
            n @ 1..=100 => n,
            n => {
                return Err(VeilError::InvalidArgument(format!(
                    "min_confidence {n} is not a percentage (1 to 100)"
                )));
            }
        };
        // Recorded before any value is read.
        self.permitted(event).await?;
        let sample = discovery::sample_dataset(&d, rows as usize, self.engine.stores()).await?;
        let findings = discovery::classify(
            &sample,
            min_confidence as u8,
            chrono::Utc::now().date_naive(),
        );
        // Merge into the dataset as it is now: sampling took a while, and
        // someone may have changed its tags meanwhile.
        let snapshot = self.engine.state().current().await?;
        let mut current = snapshot
            .datasets
            .get(&d.name)
            .cloned()
            .ok_or_else(|| VeilError::dataset_not_found(&d.name))?;
        let outcome = merge(
            &mut current,
            &findings,
            p,
            chrono::Utc::now().timestamp_millis(),
        );
        if current != *snapshot.datasets.get(&d.name).expect("looked up above") {
            self.engine
                .state()
                .store()
                .put_dataset(&current, PutMode::Replace)
                .await?;
        }
        event.rows = Some(sample.rows as u64);
        event.columns = outcome.proposed.iter().map(|p| p.column.clone()).collect();
        event.message = format!(
            "sampled {} row(s), examined {} column(s): {} tag(s) proposed, {} already tagged, {} previously rejected",
            sample.rows,
            sample.columns.len(),
            outcome.proposed.len(),
            outcome.already_tagged.len(),
            outcome.rejected.len()
        );
        let body = json!({
            "dataset": current.name,
            "sampled_rows": sample.rows,
            "columns_examined": sample.columns.len(),
            "min_confidence": min_confidence,
            "proposals": outcome.proposed.iter().map(proposal_json).collect::<Vec<_>>(),
            "already_tagged": outcome.already_tagged.iter().map(|(c, t, k)| json!({"column": c, "tag": t, "kind": k})).collect::<Vec<_>>(),
            "previously_rejected": outcome.rejected.iter().map(|(c, t)| json!({"column": c, "tag": t})).collect::<Vec<_>>(),
            "skipped": sample.skipped.iter().map(|(c, why)| json!({"column": c, "reason": why})).collect::<Vec<_>>(),
            "decide_with": format!("veil discover {} --accept COLUMN=TAG (or --reject COLUMN=TAG)", current.name),
        });
        Ok(vec![serde_json::to_vec(&body).unwrap_or_default()])
    }

    pub(super) async fn decide_tag_proposal(
        &self,
        p: &Arc<Principal>,
        req: DecideTagProposalRequest,
        event: &mut AuditEvent,
    ) -> Result<Vec<Vec<u8>>> {
        event.dataset = Some(req.dataset.chars().take(256).collect());
        event.columns = vec![req.column.chars().take(256).collect()];
        let mut d = self
            .owned_dataset(p, &req.dataset, "deciding tag proposals")
            .await?;
        refuse_builtin(&d)?;
        let Some(i) = d.tag_proposals.iter().position(|x| {
            x.column == req.column
                && x.tag.eq_ignore_ascii_case(&req.tag)
                && x.status == ProposalStatus::Pending
        }) else {
            return Err(VeilError::NotFound(format!(
                "no pending proposal of tag '{}' for column '{}' of {}: `veil discover {}` lists the current ones",
                req.tag.chars().take(128).collect::<String>(),
                req.column.chars().take(128).collect::<String>(),
                d.name,
                d.name
            )));
        };
        let proposal = d.tag_proposals[i].clone();
        let message = if req.accept {
            let tag = match req.tag_as.trim() {
                "" => proposal.tag.clone(),
                t => t.to_string(),
            };
            let column = d
                .column(&proposal.column)
                .ok_or_else(|| {
                    VeilError::FailedPrecondition(format!(
                        "column '{}' is no longer in {}'s dictionary; run discovery again",
                        proposal.column, d.name
                    ))
                })?
                .clone();
            let mut tags = column.tags.clone();
            if !tags.iter().any(|t| t.eq_ignore_ascii_case(&tag)) {
                tags.push(tag.clone());
            }
            let snapshot = self.engine.state().current().await?;
            retag_column(p, &mut d, &proposal.column, tags, &snapshot)?;
            d.tag_proposals.remove(i);
            format!(
                "accepted: {} tagged {tag} (proposed as {}, {}% confident); policies on {tag} apply from the next request",
                proposal.column, proposal.kind, proposal.confidence
            )
        } else {
            let rejected = &mut d.tag_proposals[i];
            rejected.status = ProposalStatus::Rejected;
            rejected.decided_by = Some(p.identity.clone());
            format!(
                "rejected: {} will not be proposed for {} again",
                proposal.tag, proposal.column
            )
        };
        event.message = message.clone();
        self.permitted(event).await?;
        self.engine
            .state()
            .store()
            .put_dataset(&d, PutMode::Replace)
            .await?;
        Ok(ack(message))
    }
}

/// What a discovery run changed.
#[derive(Debug, Default)]
struct Merged {
    proposed: Vec<TagProposal>,
    /// (column, tag, kind) found and already on the column.
    already_tagged: Vec<(String, String, String)>,
    /// (column, tag) found and rejected before.
    rejected: Vec<(String, String)>,
}

/// Replace the pending proposals with this run's findings, except where
/// the column already carries the tag (or a narrower one) or an owner
/// rejected it before; rejected proposals stay on record.
fn merge(
    d: &mut DatasetRecord,
    findings: &[discovery::Finding],
    by: &Principal,
    now_ms: i64,
) -> Merged {
    let mut out = Merged::default();
    d.tag_proposals
        .retain(|x| x.status == ProposalStatus::Rejected);
    for f in findings {
        let tag = f.kind.tag();
        let Some(col) = d.column(&f.column) else {
            continue;
        };
        if col.tags.iter().any(|t| tag_covers(tag, t)) {
            out.already_tagged.push((
                f.column.clone(),
                tag.to_string(),
                f.kind.as_str().to_string(),
            ));
            continue;
        }
        if d.tag_proposals
            .iter()
            .any(|x| x.column == f.column && x.tag.eq_ignore_ascii_case(tag))
        {
            out.rejected.push((f.column.clone(), tag.to_string()));
            continue;
        }
        out.proposed.push(TagProposal {
            column: f.column.clone(),
            tag: tag.to_string(),
            kind: f.kind.as_str().to_string(),
            confidence: f.confidence,
            evidence: f.evidence.clone(),
            status: ProposalStatus::Pending,
            proposed_by: by.identity.clone(),
            proposed_ms: now_ms,
            decided_by: None,
        });
    }
    d.tag_proposals.extend(out.proposed.iter().cloned());
    out
}
