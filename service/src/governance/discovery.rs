//! Sensitive data discovery as actions: `veil.discover` samples a dataset
//! and stores the tags it proposes; `veil.decide_tag_proposal` accepts one
//! (the column gets the tag under the same rules as any tag change, so the
//! global policies on that tag apply from the next request) or rejects it
//! (discovery won't propose it again). Owners and governors only; nothing
//! either returns or records holds a sampled value.

use serde_json::json;

use veil_proto::{DecideTagProposalRequest, DiscoverRequest};

use super::datasets::{global_policy_tags, refuse_builtin, retag_column};
use super::{Call, Governance, Outcome, denied};
use crate::catalog::discovery;
use crate::error::{Result, VeilError};
use crate::model::dataset::DatasetRecord;
use crate::model::identity::{Permission, Principal};
use crate::model::request::{ProposalStatus, TagProposal};
use crate::policy::rules::tag_covers;

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
            ProposalStatus::Accepted => "accepted",
        },
    })
}

impl Governance {
    pub(super) async fn discover(
        &self,
        call: &mut Call<'_>,
        req: DiscoverRequest,
    ) -> Result<Outcome> {
        let p = call.principal;
        let d = call.owned()?.clone();
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
        // What the caller may learn of the raw values: discovery's
        // evidence is computed from them (shares, spans, kinds), so a column
        // they read masked is not examined, and a dataset a row policy
        // filters for them is not sampled (a sample reads any row).
        let masked =
            self.raw_reads_masked(call, &d, "discovery samples any row", "run discovery on it")?;
        // The runner recorded the attempt before any value is read.
        let mut sample = discovery::sample::sample_dataset(
            &d,
            rows as usize,
            self.engine.stores(),
            self.engine.databases(),
        )
        .await?;
        let (examined, unseen): (Vec<_>, Vec<_>) = std::mem::take(&mut sample.columns)
            .into_iter()
            .partition(|c| masked(&c.name).is_none());
        sample.columns = examined;
        for c in unseen {
            let how = masked(&c.name).unwrap_or_default();
            sample.skipped.push((
                c.name,
                format!("{how}; discovery examines only columns you read unmasked (a governor can run it on every column)"),
            ));
        }
        let findings = discovery::classify(
            &sample,
            min_confidence as u8,
            chrono::Utc::now().date_naive(),
        );
        // Merge into the dataset as it is now: sampling took a while, and
        // someone may have changed its tags meanwhile.
        let now = chrono::Utc::now().timestamp_millis();
        let (outcome, current) = self
            .edit_dataset(call, &d.name, |current, _, _| {
                let outcome = merge(current, &findings, p, now);
                Ok((outcome, current.clone()))
            })
            .await?;
        call.event.rows = Some(sample.rows as u64);
        call.event.columns = outcome.proposed.iter().map(|p| p.column.clone()).collect();
        call.event.message = format!(
            "sampled {} row(s), examined {} column(s): {} tag(s) proposed, {} already tagged, {} previously rejected, {} on config-declared columns",
            sample.rows,
            sample.columns.len(),
            outcome.proposed.len(),
            outcome.already_tagged.len(),
            outcome.rejected.len(),
            outcome.in_config.len()
        );
        let global = global_policy_tags(call.scope.snapshot());
        let needs_governance = |tag: &str| global.iter().any(|g| tag_covers(g, tag));
        let body = json!({
            "dataset": current.name,
            "sampled_rows": sample.rows,
            "sample_note": sample.note,
            "columns_examined": sample.columns.len(),
            "min_confidence": min_confidence,
            "proposals": outcome.proposed.iter().map(|x| {
                let mut v = proposal_json(x);
                v["needs_governance"] = json!(needs_governance(&x.tag));
                v
            }).collect::<Vec<_>>(),
            "already_tagged": outcome.already_tagged.iter().map(|(c, t, k)| json!({"column": c, "tag": t, "kind": k})).collect::<Vec<_>>(),
            "previously_rejected": outcome.rejected.iter().map(|x| json!({
                "column": x.column,
                "tag": x.tag,
                "rejected_by": x.decided_by.as_ref().map(|i| i.to_string()),
            })).collect::<Vec<_>>(),
            "config_columns": outcome.in_config.iter().map(|f| json!({
                "column": f.column,
                "tag": f.kind.tag(),
                "kind": f.kind.as_str(),
                "confidence": f.confidence,
                "evidence": f.evidence,
                "note": "the column is described in the config file: add the tag there and reload",
            })).collect::<Vec<_>>(),
            "skipped": sample.skipped.iter().map(|(c, why)| json!({"column": c, "reason": why})).collect::<Vec<_>>(),
            "decide_with": format!("veil discover {} --accept COLUMN=TAG (or --reject COLUMN=TAG)", current.name),
        });
        Ok(Outcome::Documents(vec![body]))
    }

    pub(super) async fn decide_tag_proposal(
        &self,
        call: &mut Call<'_>,
        req: DecideTagProposalRequest,
    ) -> Result<Outcome> {
        let p = call.principal;
        let issuer = self.engine.default_issuer().to_string();
        let message = self
            .edit_dataset(call, &req.dataset, |d, snapshot, event| {
                let message = decide(p, d, &req, snapshot, &issuer)?;
                event.message = message.clone();
                Ok(message)
            })
            .await?;
        Ok(Outcome::Done(message))
    }
}

/// Accept or reject a proposal on `d`. Accepting a pending or a rejected
/// proposal tags the column; rejecting a pending one keeps it on record.
/// Either way, a tag a global policy targets needs GOVERNANCE: rejecting it
/// would keep discovery from bringing that policy's column to a governor.
/// Deciding again what was already decided the same way changes nothing
/// and succeeds, so a list of decisions can be retried.
fn decide(
    p: &Principal,
    d: &mut DatasetRecord,
    req: &DecideTagProposalRequest,
    snapshot: &crate::model::snapshot::Snapshot,
    issuer: &str,
) -> Result<String> {
    let chosen = match req.tag_as.trim() {
        "" => req.tag.clone(),
        t => t.to_string(),
    };
    let same = |x: &TagProposal| x.column == req.column && x.tag.eq_ignore_ascii_case(&req.tag);
    let carried = d
        .column(&req.column)
        .is_some_and(|c| c.tags.iter().any(|t| t.eq_ignore_ascii_case(&chosen)));
    let found = d.tag_proposals.iter().position(|x| {
        same(x)
            && match x.status {
                ProposalStatus::Pending => true,
                ProposalStatus::Rejected => req.accept,
                // Accepted as another tag: accepting it again tags the
                // column, unless it carries that tag already.
                ProposalStatus::Accepted => req.accept && !carried,
            }
    });
    let Some(i) = found else {
        // Already decided this way?
        let rejected = d
            .tag_proposals
            .iter()
            .any(|x| same(x) && x.status == ProposalStatus::Rejected);
        return match (req.accept, carried, rejected) {
            (true, true, _) => Ok(format!(
                "already accepted: {} is tagged {chosen}; nothing changed",
                req.column
            )),
            (false, _, true) => Ok(format!(
                "already rejected: {} for {}; nothing changed",
                req.tag, req.column
            )),
            _ => Err(VeilError::NotFound(format!(
                "no {}proposal of tag '{}' for column '{}' of {}: `veil discover {}` lists the current ones",
                if req.accept { "" } else { "pending " },
                req.tag.chars().take(128).collect::<String>(),
                req.column.chars().take(128).collect::<String>(),
                d.name,
                d.name
            ))),
        };
    };
    let proposal = d.tag_proposals[i].clone();
    if !req.accept {
        let global = global_policy_tags(snapshot);
        if global.iter().any(|g| tag_covers(g, &proposal.tag)) && !p.has(Permission::Governance) {
            return Err(denied(
                "rejecting a tag that global policies target",
                "GOVERNANCE",
            ));
        }
        let rejected = &mut d.tag_proposals[i];
        rejected.status = ProposalStatus::Rejected;
        rejected.decided_by = Some(p.identity.clone());
        return Ok(format!(
            "rejected: {} will not be proposed for {} again (accepting it later still works)",
            proposal.tag, proposal.column
        ));
    }
    let tag = match req.tag_as.trim() {
        "" => proposal.tag.clone(),
        t => t.to_string(),
    };
    let column = d.column(&proposal.column).ok_or_else(|| {
        VeilError::FailedPrecondition(format!(
            "column '{}' is no longer in {}'s dictionary; run discovery again",
            proposal.column, d.name
        ))
    })?;
    let mut tags = column.tags.clone();
    if !tags.iter().any(|t| t.eq_ignore_ascii_case(&tag)) {
        tags.push(tag.clone());
    }
    retag_column(p, d, &proposal.column, tags, snapshot, issuer)?;
    if tag.eq_ignore_ascii_case(&proposal.tag) {
        d.tag_proposals.remove(i);
    } else {
        // Kept on record: the column doesn't carry the proposed tag, and
        // discovery would otherwise propose it again.
        let accepted = &mut d.tag_proposals[i];
        accepted.status = ProposalStatus::Accepted;
        accepted.accepted_as = Some(tag.clone());
        accepted.decided_by = Some(p.identity.clone());
    }
    Ok(format!(
        "accepted: {} tagged {tag} (proposed as {}, {}% confident); policies on {tag} apply from the next request",
        proposal.column, proposal.kind, proposal.confidence
    ))
}

/// What a discovery run changed.
#[derive(Debug, Default, Clone)]
struct Merged {
    proposed: Vec<TagProposal>,
    /// (column, tag, kind) found and already on the column (or a broader or
    /// narrower form of it).
    already_tagged: Vec<(String, String, String)>,
    /// Found, and rejected before.
    rejected: Vec<TagProposal>,
    /// Found on columns the config file describes (tagged there).
    in_config: Vec<discovery::Finding>,
}

/// Replace the pending proposals with this run's findings, except where
/// the column already carries the tag (or a broader or narrower one), an
/// owner rejected it before, or the config file describes the column;
/// rejected proposals stay on record.
fn merge(
    d: &mut DatasetRecord,
    findings: &[discovery::Finding],
    by: &Principal,
    now_ms: i64,
) -> Merged {
    let mut out = Merged::default();
    d.tag_proposals
        .retain(|x| x.status != ProposalStatus::Pending);
    for f in findings {
        let tag = f.kind.tag();
        let Some(col) = d.column(&f.column) else {
            continue;
        };
        if col
            .tags
            .iter()
            .any(|t| tag_covers(tag, t) || tag_covers(t, tag))
        {
            out.already_tagged.push((
                f.column.clone(),
                tag.to_string(),
                f.kind.as_str().to_string(),
            ));
            continue;
        }
        if col.from_config {
            out.in_config.push(f.clone());
            continue;
        }
        if let Some(r) = d
            .tag_proposals
            .iter()
            .find(|x| x.column == f.column && x.tag.eq_ignore_ascii_case(tag))
        {
            match (&r.status, &r.accepted_as) {
                // Accepted as another tag: the column carries that one.
                (ProposalStatus::Accepted, Some(as_tag)) => out.already_tagged.push((
                    f.column.clone(),
                    as_tag.clone(),
                    f.kind.as_str().to_string(),
                )),
                _ => out.rejected.push(r.clone()),
            }
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
            accepted_as: None,
        });
    }
    d.tag_proposals.extend(out.proposed.iter().cloned());
    out
}
