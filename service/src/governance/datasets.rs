//! Datasets as their owners and readers manage them: describe, search,
//! register, drop, tags, descriptions, experts. Edits re-apply on the
//! fresh record when someone changed it meanwhile (compare and swap),
//! never overwriting their change.

use std::collections::BTreeMap;

use veil_proto::{
    AccelerateRequest, ColumnDescription, DatasetDescription, RefreshRequest,
    RegisterDatasetRequest, SearchHit, SetColumnTagsRequest, SetDescriptionRequest,
    SetExpertsRequest,
};

use super::{Call, Governance, Grant, Outcome, denied};
use crate::catalog::{NewDataset, NewSource, build_dataset};
use crate::engine::RequestScope;
use crate::error::{Result, VeilError};
use crate::model::Origin;
use crate::model::audit::AuditEvent;
use crate::model::dataset::{Acceleration, DatasetRecord};
use crate::model::identity::{Identity, Permission, Principal};
use crate::model::snapshot::Snapshot;
use crate::model::source_kind::SourceKind;
use crate::policy::rules::{duration_text, tag_covers};
use crate::store::PutMode;
use std::sync::Arc;

/// The directory attribute listing the schemas a user may register
/// datasets into (besides governors, who register anywhere).
pub const SCHEMAS_ATTRIBUTE: &str = "veil.schemas";

/// Reads and re-applications of an edit before giving up.
const EDIT_ATTEMPTS: usize = 5;

/// The most experts a dataset names.
const MAX_EXPERTS: usize = 32;

/// The most search hits returned.
const MAX_SEARCH_HITS: u32 = 1000;

/// The request's own checks for a registration: the name is valid and in
/// a schema granted to the caller (governors register anywhere; other
/// `CREATE_DATA_SOURCE` holders only into the schemas their `veil.schemas`
/// attribute grants), the location an absolute server path or a remote
/// URL. The answer depends on the request and the caller alone, never on
/// which datasets exist: otherwise registering a name would tell whether a
/// hidden dataset holds it.
fn check_registration_request(p: &Principal, r: &RegisterDatasetRequest) -> Result<()> {
    crate::catalog::validate_dataset_name(&r.name)?;
    check_schema_grant(p, &r.name)?;
    if !r.connection.is_empty() {
        if !r.format.is_empty() || !r.location.is_empty() || r.hive_partitioned {
            return Err(VeilError::InvalidArgument(
                "a dataset reads files (format, location) or a database (connection, table or query), not both".into(),
            ));
        }
        // A query can read any table the connection's user can, around
        // the datasets (and policies) registered on them: governors only.
        if !r.query.is_empty() && !p.has(Permission::Governance) {
            return Err(VeilError::PermissionDenied(
                "only governors may register a dataset defined by a query (it can read any table of the connection); register a table or a view, or ask a governor".into(),
            ));
        }
        return Ok(());
    }
    if !r.table.is_empty() || !r.query.is_empty() {
        return Err(VeilError::InvalidArgument(
            "a table or a query needs the connection it lives on (--connection NAME)".into(),
        ));
    }
    if !crate::model::dataset::is_remote(&r.location)
        && !std::path::Path::new(&r.location).is_absolute()
    {
        return Err(VeilError::InvalidArgument(
            "the location must be an absolute path on the server (or s3://bucket/key)".into(),
        ));
    }
    Ok(())
}

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

impl Governance {
    pub(super) async fn search(
        &self,
        call: &mut Call<'_>,
        query: &str,
        limit: u32,
    ) -> Result<Outcome> {
        let limit = match limit {
            0 => 50,
            n => n.min(MAX_SEARCH_HITS),
        } as usize;
        let visible = self.engine.visible_datasets(call.scope);
        let hits = crate::catalog::search::search(
            visible.iter().map(|(d, readable)| (d, *readable)),
            query,
            limit,
        );
        // The words searched for are not recorded: someone may search for
        // a value (an SSN) they hold.
        call.event.rows = Some(hits.len() as u64);
        call.event.message = format!(
            "{} word(s) searched, {} dataset(s) found",
            query.split_whitespace().count(),
            hits.len()
        );
        Ok(Outcome::SearchHits(
            hits.into_iter()
                .map(|h| SearchHit {
                    name: h.dataset.name.clone(),
                    description: h.dataset.description.clone(),
                    access: if h.readable { "read" } else { "request" }.into(),
                    matches: h.matches,
                    owners: subjects(&h.dataset.owners),
                    tags: h.dataset.tags.clone(),
                    experts: subjects(&h.dataset.experts),
                })
                .collect(),
        ))
    }

    pub(super) async fn describe(&self, call: &mut Call<'_>, dataset: &str) -> Result<Outcome> {
        let (d, policy, readable) = self.engine.lookup_visible(call.scope, dataset)?;
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
                mask: policy.reader_mask_label(&c.name),
            })
            .collect();
        Ok(Outcome::Description(DatasetDescription {
            name: d.name.clone(),
            description: d.description.clone(),
            owners: subjects(&d.owners),
            tags: d.tags.clone(),
            columns,
            format: SourceKind::of(&d).label().into(),
            rows_filtered: policy.rows_filtered(),
            access: if readable { "read" } else { "request" }.into(),
            experts: subjects(&d.experts),
        }))
    }

    /// May `p` register this dataset (the `Registrar` requirement)? The
    /// request's own checks, then: the location lies under a configured
    /// root; no dataset holds the name (reported only inside a schema the
    /// caller may register into, whose names everyone it is granted to
    /// shares); and, unless the caller governs, no dataset already serves
    /// these files. Returns the confined location.
    pub(super) fn check_registration(
        &self,
        scope: &RequestScope,
        r: &RegisterDatasetRequest,
    ) -> Result<NewSource> {
        let p = scope.principal();
        check_registration_request(p, r)?;
        let source = if r.connection.is_empty() {
            NewSource::Files {
                format: r.format.clone(),
                location: self.roots.get().confine_location(&r.location)?,
                hive_partitioned: r.hive_partitioned,
            }
        } else {
            // The connection must exist (its name is the config's, not a
            // dataset's: saying it doesn't reveals nothing).
            self.engine.databases().get(&r.connection)?;
            NewSource::database(
                &r.connection,
                Some(r.table.as_str()),
                Some(r.query.as_str()),
                Some(r.partition_column.as_str()),
            )?
        };
        let location = source.location();
        if let (Some(acc), NewSource::Files { location, .. }) = (self.engine.accelerator(), &source)
            && (std::path::Path::new(location).starts_with(acc.dir())
                || acc.dir().starts_with(location))
        {
            return Err(VeilError::PermissionDenied(
                "these files are Veil's own (accelerated copies); they can't back a dataset".into(),
            ));
        }
        let snapshot = scope.snapshot();
        if let Some(other) = snapshot
            .datasets
            .keys()
            .find(|n| n.eq_ignore_ascii_case(&r.name))
        {
            return Err(VeilError::AlreadyExists(if *other == r.name {
                format!("dataset '{other}' already exists; choose another name")
            } else {
                format!(
                    "dataset '{}' already exists (names are case-insensitive: '{other}'); choose another name",
                    r.name
                )
            }));
        }
        // Registering files another dataset already serves would make the
        // caller their owner, with none of that dataset's policies. That
        // holds for the caller's own datasets too: a new record has none
        // of the old one's tags, so it would shed the global policies those
        // tags bring. The same answer whichever dataset (visible to the
        // caller or not) the files back, and it names none.
        let shared = snapshot
            .datasets
            .values()
            .any(|d| locations_overlap(&d.source.location, &location));
        if shared && !p.has(Permission::Governance) {
            return Err(VeilError::PermissionDenied(
                "these files (or files under or above them, or this table) already back a dataset; registering them again would bypass its tags and the policies they bring. A governor may register them".into(),
            ));
        }
        Ok(source)
    }

    pub(super) async fn register_dataset(
        &self,
        call: &mut Call<'_>,
        req: RegisterDatasetRequest,
    ) -> Result<Outcome> {
        let Grant::Registration { source } = &call.grant else {
            return Err(call.grant_mismatch("a checked registration"));
        };
        let record = build_dataset(
            NewDataset {
                name: req.name.clone(),
                source: source.clone(),
                description: req.description.clone(),
                owners: vec![call.principal.identity.clone()],
                experts: vec![],
                tags: vec![],
                columns: BTreeMap::new(),
                origin: Origin::Runtime,
                event_time: None,
            },
            self.engine.stores(),
            self.engine.databases(),
        )
        .await?;
        // A dataset registered meanwhile under the same name makes this
        // fail (`PutMode::Create`), never replaces it.
        self.engine
            .state()
            .store()
            .put_dataset(&record, PutMode::Create)
            .await?;
        Ok(Outcome::Done(format!(
            "registered {} with {} columns; only its owners can read it until a subscription policy opens it",
            record.name,
            record.columns.len()
        )))
    }

    pub(super) async fn drop_dataset(&self, call: &mut Call<'_>) -> Result<Outcome> {
        let d = call.owned()?.clone();
        refuse_builtin(&d)?;
        if d.origin == Origin::Config {
            return Err(VeilError::FailedPrecondition(format!(
                "dataset {} is declared in the config file; remove it there and reload",
                d.name
            )));
        }
        // Dropping and re-registering would shed the tags a governor's
        // global policies act on.
        let snapshot = std::sync::Arc::clone(call.scope.snapshot());
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
        if tagged && !call.principal.has(Permission::Governance) {
            return Err(denied(
                "dropping a dataset whose tags global policies target",
                "GOVERNANCE",
            ));
        }
        self.engine.state().store().drop_dataset(&d.name).await?;
        Ok(Outcome::Done(format!("dropped {}", d.name)))
    }

    pub(super) async fn set_column_tags(
        &self,
        call: &mut Call<'_>,
        req: SetColumnTagsRequest,
    ) -> Result<Outcome> {
        let p = call.principal;
        let issuer = self.engine.default_issuer().to_string();
        let summary = self
            .edit_dataset(call, &req.dataset, |d, snapshot, _| {
                retag_column(p, d, &req.column, req.tags.clone(), snapshot, &issuer)
            })
            .await?;
        Ok(Outcome::Done(summary))
    }

    pub(super) async fn set_description(
        &self,
        call: &mut Call<'_>,
        req: SetDescriptionRequest,
    ) -> Result<Outcome> {
        self.edit_dataset(call, &req.dataset, |d, _, _| {
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
        Ok(Outcome::Done("description updated".into()))
    }

    pub(super) async fn set_experts(
        &self,
        call: &mut Call<'_>,
        req: SetExpertsRequest,
    ) -> Result<Outcome> {
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
                    "an expert's subject has control characters or is over 256 bytes".into(),
                ));
            }
            if !experts.contains(&who) {
                experts.push(who);
            }
        }
        let summary = self
            .edit_dataset(call, &req.dataset, |d, _, event| {
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
        Ok(Outcome::Done(summary))
    }

    /// Turn a database dataset's acceleration on (or change it), or off.
    pub(super) async fn accelerate(
        &self,
        call: &mut Call<'_>,
        req: AccelerateRequest,
    ) -> Result<Outcome> {
        let setting = (!req.off).then(|| Acceleration {
            refresh_secs: req.refresh_secs,
            max_staleness_secs: req.max_staleness_secs,
            incremental_column: (!req.incremental_column.is_empty())
                .then(|| req.incremental_column.clone()),
        });
        let summary = self
            .edit_dataset(call, &req.dataset, |d, _, event| {
                if d.origin == Origin::Config {
                    return Err(VeilError::FailedPrecondition(format!(
                        "dataset {} is declared in the config file ([[datasets]]); set its acceleration there (accelerate = {{ ... }}) and reload",
                        d.name
                    )));
                }
                if let Some(a) = &setting {
                    crate::catalog::check_acceleration(&d.name, a, &d.columns)?;
                }
                let name = d.name.clone();
                let Some(db) = d.source.database.as_mut() else {
                    return Err(VeilError::FailedPrecondition(format!(
                        "{name} reads files; only database datasets are accelerated"
                    )));
                };
                db.acceleration = setting.clone();
                let summary = match &setting {
                    None => format!("{name} is no longer accelerated: reads go to the database"),
                    Some(a) => format!(
                        "{name} is accelerated: a local copy, {}, served while at most {} old{}",
                        if a.refresh_secs == 0 {
                            "refreshed on demand".to_string()
                        } else {
                            format!("refreshed every {}", duration_text(a.refresh_secs as i64))
                        },
                        duration_text(a.max_staleness_secs as i64),
                        a.incremental_column
                            .as_ref()
                            .map(|c| format!(", incrementally by {c}"))
                            .unwrap_or_default()
                    ),
                };
                event.message = summary.clone();
                Ok(summary)
            })
            .await?;
        Ok(Outcome::Done(summary))
    }

    /// Refresh an accelerated dataset's copy on this node now.
    pub(super) async fn refresh(
        &self,
        call: &mut Call<'_>,
        req: RefreshRequest,
    ) -> Result<Outcome> {
        let d = call.owned()?.clone();
        let Some(acc) = self.engine.accelerator() else {
            return Err(VeilError::FailedPrecondition(
                "this Veil node keeps no accelerated copies".into(),
            ));
        };
        let _ = req;
        // The copy holds every row: its count is the dataset's, which a
        // reader some row policy or differential privacy binds may not learn.
        let count_rows = self.may_count_rows(call, &d);
        let done = acc.refresh(&d, "on demand", count_rows).await?;
        call.event.message = done.clone();
        Ok(Outcome::Done(done))
    }

    /// Change dataset `name`'s record with `edit` and store it, unless
    /// someone changed the record since it was read: then `edit` runs again
    /// on the fresh record (a few times) instead of overwriting their
    /// change. `edit` gets the record, the state it was read in and the
    /// audit event. Each attempt re-checks ownership (the runner checked it
    /// once; it may have changed since); built-in datasets are refused.
    pub(super) async fn edit_dataset<T>(
        &self,
        call: &mut Call<'_>,
        name: &str,
        mut edit: impl FnMut(&mut DatasetRecord, &Snapshot, &mut AuditEvent) -> Result<T>,
    ) -> Result<T> {
        for attempt in 0..EDIT_ATTEMPTS {
            // The first attempt edits the record as the request found it; a
            // retry reads the state again, since someone changed it.
            let scope = match attempt {
                0 => Arc::clone(call.scope),
                _ => self.engine.scope(call.principal).await?,
            };
            let read = self.owned_dataset(&scope, name, call.action.name())?;
            refuse_builtin(&read)?;
            let mut edited = read.clone();
            let out = edit(&mut edited, scope.snapshot(), &mut call.event)?;
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
}

fn subjects(ids: &[Identity]) -> Vec<String> {
    ids.iter().map(|o| o.subject.clone()).collect()
}

/// Give a column new tags under the rules every tag change follows (an
/// edit, or an accepted discovery proposal): tags declared in the config
/// change there; adding or removing a tag a global policy targets switches
/// that policy on or off for the column, so it needs GOVERNANCE. Returns a
/// summary.
pub(super) fn retag_column(
    p: &Principal,
    d: &mut DatasetRecord,
    column: &str,
    tags: Vec<String>,
    snapshot: &Snapshot,
    issuer: &str,
) -> Result<String> {
    let before = d.clone();
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
    let summary = if col.tags.is_empty() {
        format!("tags of {column} cleared")
    } else {
        format!("{column} tagged {}", col.tags.join(", "))
    };
    // A policy the new tags bring onto the dataset must pass the same
    // check as if the editor had written it there: else an owner could
    // write a policy restricted to herself that applies nowhere, then tag
    // a column to switch it on over a column a governor masks for her.
    for pol in snapshot.policies.iter().filter(|pol| {
        crate::policy::effective::applies_to(pol, d, issuer)
            && !crate::policy::effective::applies_to(pol, &before, issuer)
    }) {
        super::policies::author_may_test(p, pol, &[&*d], &snapshot.policies, issuer)?;
    }
    Ok(summary)
}

/// Veil's own datasets have built-in dictionaries: they can be governed by
/// policies, not edited or dropped.
pub(super) fn refuse_builtin(d: &DatasetRecord) -> Result<()> {
    if SourceKind::of(d).is_builtin() {
        return Err(VeilError::FailedPrecondition(format!(
            "{} is Veil's own audit trail: its dictionary is built in and it can't be dropped; govern it with policies",
            d.name
        )));
    }
    Ok(())
}

fn config_column(dataset: &str, column: &str) -> VeilError {
    VeilError::FailedPrecondition(format!(
        "column {column} of {dataset} is described in the config file (columns.{column}); change it there and reload"
    ))
}

/// Tags that some global (tag-driven) policy targets.
pub(super) fn global_policy_tags(snapshot: &Snapshot) -> Vec<String> {
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
