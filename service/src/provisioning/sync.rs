//! Bringing the store in line with the config file, at start and on reload.
//!
//! Config-declared policies, users, grants and datasets are replaced; runtime
//! ones are never touched. Everything is validated (policies parsed, users'
//! permissions known, dataset locations confined and their files read)
//! before the first write, so a bad config file changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::catalog::database::Databases;
use crate::catalog::object_stores::ObjectStores;
use crate::catalog::roots::LocationRoots;
use crate::catalog::{NewDataset, NewSource, build_dataset};
use crate::config::{Config, DatasetConfig};
use crate::error::{Result, VeilError};
use crate::model::Origin;
use crate::model::dataset::DatasetRecord;
use crate::model::identity::{Identity, Permission, UserRecord};
use crate::model::policy::PolicySpec;
use crate::policy::rules::PolicySpecExt;
use crate::store::{PutMode, Store};

/// What a sync changed, for logs and the reload answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub datasets_added: Vec<String>,
    pub datasets_updated: Vec<String>,
    pub datasets_dropped: Vec<String>,
    pub policies_added: Vec<String>,
    pub policies_changed: Vec<String>,
    pub policies_removed: Vec<String>,
    pub users_added: Vec<String>,
    pub users_changed: Vec<String>,
    pub users_removed: Vec<String>,
    pub policies: usize,
    pub users: usize,
}

enum DatasetWrite {
    Create(DatasetRecord),
    Replace(DatasetRecord),
    Drop(String),
}

/// A local policy must name a dataset that exists and columns in its
/// dictionary: a typo would otherwise leave the policy applying to nothing
/// while the dataset it was meant for goes unprotected. Every dataset a
/// policy applies to must be able to enforce it (mask types, conditions).
pub fn check_references(
    p: &crate::model::policy::Policy,
    datasets: &BTreeMap<&str, &DatasetRecord>,
    default_issuer: &str,
) -> Result<()> {
    if let Some(name) = &p.spec.dataset
        && !datasets.contains_key(name.as_str())
    {
        let hint = datasets
            .keys()
            .find(|k| k.eq_ignore_ascii_case(name))
            .map(|k| format!(" (did you mean '{k}'? names are exact)"))
            .unwrap_or_default();
        return Err(VeilError::FailedPrecondition(format!(
            "policy '{}' applies to dataset '{name}', which is neither declared in the config nor registered{hint}",
            p.spec.name
        )));
    }
    for d in datasets.values() {
        if crate::policy::effective::applies_to(p, d, default_issuer) {
            crate::policy::effective::check_policy_on(p, d)?;
        }
    }
    Ok(())
}

/// How long a start or a reload waits for the databases to describe their
/// tables again (all at once): a database that is down delays it this long.
const COMMENTS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// A database dataset's table comment and column comments, read from its
/// database now; `None` for files, or when the database can't say (logged:
/// the reload keeps the descriptions stored).
async fn database_comments(
    d: &DatasetRecord,
    databases: &Databases,
) -> Option<(String, BTreeMap<String, String>)> {
    let source = d.source.database.as_ref()?;
    let found = match databases.get(&source.connection) {
        Ok(db) => tokio::time::timeout(COMMENTS_TIMEOUT, db.discover(&source.relation))
            .await
            .unwrap_or_else(|_| {
                Err(VeilError::Unavailable(format!(
                    "no answer within {} s",
                    COMMENTS_TIMEOUT.as_secs()
                )))
            }),
        Err(e) => Err(e),
    };
    match found {
        Ok(found) => Some((
            found.description,
            found
                .columns
                .into_iter()
                .map(|c| (c.name, c.description))
                .collect(),
        )),
        Err(e) => {
            tracing::warn!(dataset = %d.name, error = %e.audit_message(), "the database's comments could not be read again; the stored descriptions stay");
            None
        }
    }
}

/// Where a declared dataset's rows come from: files (`format` and
/// `location`, confined to a root) or a database (`connection` and a
/// `table` or a `query`), never both.
fn config_source(cfg: &Config, roots: &LocationRoots, d: &DatasetConfig) -> Result<NewSource> {
    match (&d.connection, &d.format, &d.location) {
        (None, Some(format), Some(location)) => {
            if d.table.is_some() || d.query.is_some() {
                return Err(VeilError::FailedPrecondition(
                    "table and query need a connection".into(),
                ));
            }
            Ok(NewSource::Files {
                format: format.clone(),
                location: roots.confine_location(&cfg.resolve_location(location))?,
                hive_partitioned: d.hive_partitioned,
            })
        }
        (Some(connection), None, None) => {
            if d.hive_partitioned {
                return Err(VeilError::FailedPrecondition(
                    "hive_partitioned is for files, not a database".into(),
                ));
            }
            NewSource::database(
                connection,
                d.table.as_deref(),
                d.query.as_deref(),
                d.partition_column.as_deref(),
            )
            .map(|s| s.accelerated(d.accelerate.clone()))
        }
        (Some(_), _, _) => Err(VeilError::FailedPrecondition(
            "a dataset reads files (format, location) or a database (connection, table or query), not both".into(),
        )),
        _ => Err(VeilError::FailedPrecondition(
            "declare format and location (files), or connection and table or query (a database)".into(),
        )),
    }
}

pub async fn sync_config(
    store: &Arc<dyn Store>,
    cfg: &Config,
    roots: &LocationRoots,
    stores: &ObjectStores,
    databases: &Databases,
) -> Result<SyncReport> {
    let issuer = cfg.auth.default_issuer();

    // 1. Validate and build everything.
    let mut names = BTreeSet::new();
    for p in &cfg.policies {
        p.validate()?;
        if !names.insert(&p.name) {
            return Err(VeilError::FailedPrecondition(format!(
                "two policies in the config are named '{}'",
                p.name
            )));
        }
    }
    let mut users = Vec::new();
    let mut grants = Vec::new();
    for u in &cfg.users {
        let id = Identity::new(
            u.issuer.clone().unwrap_or_else(|| issuer.clone()),
            u.name.clone(),
        );
        let record = UserRecord {
            groups: u.groups.iter().cloned().collect(),
            attributes: u
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
                .collect(),
        };
        for perm in &u.permissions {
            let perm: Permission = perm.parse().map_err(|e: String| {
                VeilError::FailedPrecondition(format!("user {}: {e}", u.name))
            })?;
            grants.push((id.clone(), perm));
        }
        users.push((id, record));
    }
    let snapshot = store.snapshot().await?;
    let mut writes = Vec::new();
    let declared: BTreeSet<&str> = cfg.datasets.iter().map(|d| d.name.as_str()).collect();
    // Names are looked up case-insensitively, so they must differ by more
    // than case (one could otherwise shadow another).
    let mut folded: BTreeMap<String, &str> = BTreeMap::new();
    for name in declared.iter().copied().chain(
        snapshot
            .datasets
            .values()
            .filter(|d| d.origin == Origin::Runtime)
            .map(|d| d.name.as_str()),
    ) {
        if let Some(other) = folded.insert(name.to_ascii_lowercase(), name)
            && other != name
        {
            return Err(VeilError::FailedPrecondition(format!(
                "datasets '{other}' and '{name}' differ only by case; names are case-insensitive, rename one"
            )));
        }
    }
    // The comments of the database datasets the config declares and the
    // store holds, read from their databases at once.
    let comments: BTreeMap<&str, (String, BTreeMap<String, String>)> = futures::future::join_all(
        cfg.datasets
            .iter()
            .filter_map(|d| snapshot.datasets.get(&d.name))
            .filter(|e| e.source.database.is_some())
            .map(|e| async move { (e.name.as_str(), database_comments(e, databases).await) }),
    )
    .await
    .into_iter()
    .filter_map(|(name, found)| Some((name, found?)))
    .collect();
    for d in &cfg.datasets {
        let in_dataset = |e: VeilError| {
            VeilError::FailedPrecondition(format!("dataset {}: {}", d.name, e.message()))
        };
        let source = config_source(cfg, roots, d).map_err(in_dataset)?;
        let owners: Vec<Identity> = d.owners.iter().map(|o| o.resolve(&issuer)).collect();
        let experts: Vec<Identity> = d.experts.iter().map(|o| o.resolve(&issuer)).collect();
        match snapshot.datasets.get(&d.name) {
            None => {
                let record = build_dataset(
                    NewDataset {
                        name: d.name.clone(),
                        source: source.clone(),
                        description: d.description.clone(),
                        owners,
                        experts,
                        tags: d.tags.clone(),
                        columns: d.columns.clone(),
                        origin: Origin::Config,
                        event_time: d.event_time.clone(),
                    },
                    stores,
                    databases,
                )
                .await
                .map_err(in_dataset)?;
                writes.push(DatasetWrite::Create(record));
            }
            Some(existing) => {
                // The stored dictionary stays: new columns in the files are
                // not served until someone adds them (schema drift).
                let mut updated = existing.clone();
                updated.description = d.description.clone();
                updated.owners = owners;
                updated.experts = experts;
                updated.tags = d.tags.clone();
                updated.origin = Origin::Config;
                match &source {
                    NewSource::Files {
                        location,
                        hive_partitioned,
                        ..
                    } if existing.source.database.is_none() => {
                        updated.source.location = location.clone();
                        updated.source.hive_partitioned = *hive_partitioned;
                    }
                    NewSource::Database {
                        partition_column,
                        acceleration,
                        ..
                    } if source.location() == existing.source.location => {
                        if let Some(a) = acceleration {
                            crate::catalog::check_acceleration(&d.name, a, &existing.columns)
                                .map_err(in_dataset)?;
                        }
                        if let Some(db) = updated.source.database.as_mut() {
                            db.partition_column = partition_column.clone();
                            db.acceleration = acceleration.clone();
                        }
                    }
                    // A dataset moved between files and a database, or to
                    // another relation: its dictionary can't be kept.
                    _ => {
                        return Err(VeilError::FailedPrecondition(format!(
                            "dataset {}: its source changed kind or relation in the config; declare it under a new name (or drop it and reload, then declare it again)",
                            d.name
                        )));
                    }
                }
                // Where the config gives no description, a database
                // dataset's is the database's comment, as at registration
                // (read again: the table's comments may have changed; kept
                // as stored when the database can't be reached now).
                let comments = comments.get(existing.name.as_str());
                let comment = |column: Option<&str>| match (comments, column) {
                    (Some((table, _)), None) => Some(table.clone()),
                    (Some((_, columns)), Some(c)) => {
                        Some(columns.get(c).cloned().unwrap_or_default())
                    }
                    (None, None) => Some(existing.description.clone())
                        .filter(|_| existing.source.database.is_some()),
                    (None, Some(c)) => existing
                        .column(c)
                        .filter(|_| existing.source.database.is_some())
                        .map(|c| c.description.clone()),
                };
                if d.description.is_empty() {
                    updated.description = comment(None).unwrap_or_default();
                }
                // Columns the config stopped describing lose what it said.
                for col in updated.columns.iter_mut() {
                    if col.from_config && !d.columns.contains_key(&col.name) {
                        col.from_config = false;
                        col.description = comment(Some(&col.name)).unwrap_or_default();
                        col.tags.clear();
                    }
                }
                for (name, c) in &d.columns {
                    let described = comment(Some(name));
                    let col = updated.columns.iter_mut().find(|x| &x.name == name).ok_or_else(|| {
                        VeilError::FailedPrecondition(format!(
                            "dataset {}: column '{name}' is described in the config but is not in the data dictionary",
                            d.name
                        ))
                    })?;
                    col.description = match c.description.is_empty() {
                        true => described.unwrap_or_default(),
                        false => c.description.clone(),
                    };
                    col.tags = c.tags.clone();
                    col.from_config = true;
                }
                if &updated != existing {
                    writes.push(DatasetWrite::Replace(updated));
                }
            }
        }
    }
    for d in snapshot.datasets.values() {
        if d.origin == Origin::Config && !declared.contains(d.name.as_str()) {
            writes.push(DatasetWrite::Drop(d.name.clone()));
        }
    }
    // What the store will hold, and Veil's own datasets, for checking what
    // policies refer to.
    let builtin = crate::audit::dataset::audit_dataset();
    let mut after: BTreeMap<&str, &DatasetRecord> = snapshot
        .datasets
        .iter()
        .map(|(n, d)| (n.as_str(), d))
        .chain([(builtin.name.as_str(), &builtin)])
        .collect();
    for w in &writes {
        match w {
            DatasetWrite::Create(d) | DatasetWrite::Replace(d) => {
                after.insert(d.name.as_str(), d);
            }
            DatasetWrite::Drop(name) => {
                after.remove(name.as_str());
            }
        }
    }
    for spec in &cfg.policies {
        let policy = crate::model::policy::Policy {
            id: String::new(),
            version: 0,
            origin: Origin::Config,
            rule: spec.validate()?,
            spec: spec.clone(),
        };
        check_references(&policy, &after, &issuer)?;
        // Config sync runs before the engine exists (and on reload,
        // without it): a plain session.
        crate::catalog::profiling::check_cardinality(
            &datafusion::prelude::SessionContext::new(),
            &policy,
            &after.values().copied().collect::<Vec<_>>(),
            stores,
            databases,
            cfg.engine.kanon_cardinality_cutoff,
            cfg.engine.kanon_max_groups,
            &issuer,
        )
        .await?;
        crate::catalog::profiling::check_privacy_unit(
            &datafusion::prelude::SessionContext::new(),
            &policy,
            &after.values().copied().collect::<Vec<_>>(),
            stores,
            databases,
            &issuer,
        )
        .await?;
    }
    for p in snapshot
        .policies
        .iter()
        .filter(|p| p.origin == Origin::Runtime)
    {
        check_references(p, &after, &issuer).map_err(|e| {
            VeilError::FailedPrecondition(format!(
                "this config would break runtime policy '{}': {}",
                p.spec.name,
                e.message()
            ))
        })?;
    }

    // What changes, by name, for the report.
    let mut report = SyncReport {
        policies: cfg.policies.len(),
        users: users.len(),
        ..Default::default()
    };
    let old_policies: BTreeMap<&str, &PolicySpec> = snapshot
        .policies
        .iter()
        .filter(|p| p.origin == Origin::Config)
        .map(|p| (p.spec.name.as_str(), &p.spec))
        .collect();
    for p in &cfg.policies {
        match old_policies.get(p.name.as_str()) {
            None => report.policies_added.push(p.name.clone()),
            Some(old) if *old != p => report.policies_changed.push(p.name.clone()),
            Some(_) => {}
        }
    }
    report.policies_removed = old_policies
        .keys()
        .filter(|n| !cfg.policies.iter().any(|p| p.name == **n))
        .map(|n| n.to_string())
        .collect();
    let old_grants = |id: &Identity| -> BTreeSet<Permission> {
        snapshot
            .grants
            .get(id)
            .map(|g| {
                g.iter()
                    .filter(|(_, o)| **o == Origin::Config)
                    .map(|(p, _)| *p)
                    .collect()
            })
            .unwrap_or_default()
    };
    for (id, record) in &users {
        let new_grants: BTreeSet<Permission> = grants
            .iter()
            .filter(|(g, _)| g == id)
            .map(|(_, p)| *p)
            .collect();
        if !snapshot.config_users.contains(id) {
            report.users_added.push(id.subject.clone());
        } else if snapshot.users.get(id) != Some(record) || old_grants(id) != new_grants {
            report.users_changed.push(id.subject.clone());
        }
    }
    report.users_removed = snapshot
        .config_users
        .iter()
        .filter(|id| !users.iter().any(|(u, _)| u == *id))
        .map(|id| id.subject.clone())
        .collect();

    // 2. Apply.
    store.replace_config_policies(&cfg.policies).await?;
    store.replace_config_directory(&users, &grants).await?;
    for w in writes {
        match w {
            DatasetWrite::Create(record) => {
                match store.put_dataset(&record, PutMode::Create).await {
                    Ok(()) => {
                        tracing::info!(dataset = %record.name, columns = record.columns.len(), "registered dataset from the config");
                        report.datasets_added.push(record.name);
                    }
                    // Another node sharing the store registered it first.
                    Err(VeilError::AlreadyExists(_)) => {
                        tracing::info!(dataset = %record.name, "dataset registered by another node meanwhile");
                    }
                    Err(e) => return Err(e),
                }
            }
            DatasetWrite::Replace(record) => {
                store.put_dataset(&record, PutMode::Replace).await?;
                report.datasets_updated.push(record.name);
            }
            DatasetWrite::Drop(name) => {
                tracing::info!(dataset = %name, "dataset removed from the config; dropping it");
                store.drop_dataset(&name).await?;
                report.datasets_dropped.push(name);
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::snapshot::Snapshot;
    use crate::store::sqlite::SqliteStore;

    fn config(dir: &std::path::Path, extra: &str) -> Config {
        let text = format!(
            "roots = [\"data\"]\n[auth]\naudience = \"veil\"\n[[auth.keys]]\nissuer = \"i\"\nalgorithm = \"HS256\"\nsecret_file = \"s\"\n{extra}"
        );
        std::fs::write(dir.join("veil.toml"), text).unwrap();
        Config::load(&dir.join("veil.toml")).unwrap()
    }

    fn roots(cfg: &Config) -> LocationRoots {
        LocationRoots::from_config(cfg).unwrap()
    }

    /// `cfg` applied to `store`, local files only, no databases.
    async fn sync(store: &Arc<dyn Store>, cfg: &Config) -> Result<SyncReport> {
        sync_config(
            store,
            cfg,
            &roots(cfg),
            &ObjectStores::local_only(),
            &Databases::none(),
        )
        .await
    }

    const EVENTS: &str =
        "[[datasets]]\nname = \"ops.events\"\nformat = \"json\"\nlocation = \"data/events\"\n";

    #[tokio::test]
    async fn config_datasets_keep_their_dictionary_and_go_when_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data/events")).unwrap();
        std::fs::write(
            dir.path().join("data/events/a.json"),
            "{\"id\": 1, \"kind\": \"x\"}\n",
        )
        .unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let cfg = config(dir.path(), EVENTS);
        sync(&store, &cfg).await.unwrap();
        let names = |s: &Snapshot| -> Vec<String> {
            s.datasets["ops.events"]
                .columns
                .iter()
                .map(|c| c.name.clone())
                .collect()
        };
        assert_eq!(names(&store.snapshot().await.unwrap()), ["id", "kind"]);
        // A file with a new field appears; a restart does not serve it.
        std::fs::write(
            dir.path().join("data/events/b.json"),
            "{\"id\": 2, \"kind\": \"y\", \"secret\": \"s\"}\n",
        )
        .unwrap();
        sync(&store, &cfg).await.unwrap();
        assert_eq!(names(&store.snapshot().await.unwrap()), ["id", "kind"]);
        // Policies must name real datasets and columns (a typo would protect
        // nothing), and a refused config changes nothing.
        for (policy, needle) in [
            (
                "[[policies]]\nname = \"r\"\ndataset = \"ops.Events\"\nrow_filter = { column = \"kind\", attribute = \"k\" }\n",
                "did you mean 'ops.events'",
            ),
            (
                "[[policies]]\nname = \"r\"\ndataset = \"ops.events\"\nrow_filter = { column = \"kid\", attribute = \"k\" }\n",
                "column 'kid'",
            ),
        ] {
            let cfg = config(dir.path(), &format!("{EVENTS}{policy}"));
            let v = store.version().await.unwrap();
            let e = sync(&store, &cfg).await.unwrap_err();
            assert!(e.message().contains(needle), "{e}");
            assert_eq!(store.version().await.unwrap(), v, "nothing changed");
        }
        // Removed from the config: dropped.
        let cfg = config(dir.path(), "");
        sync(&store, &cfg).await.unwrap();
        assert!(store.snapshot().await.unwrap().datasets.is_empty());
    }

    /// A differential privacy policy in the config has its privacy unit
    /// checked like one written at run time: under 90% distinct in a
    /// sample, the config is refused with the measured share, unless the
    /// policy says `force`.
    #[tokio::test]
    async fn a_config_dp_policy_needs_a_distinct_privacy_unit() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data/events")).unwrap();
        let rows: String = (0..100)
            .map(|i| format!("{{\"id\": {i}, \"kind\": \"k{}\"}}\n", i % 3))
            .collect();
        std::fs::write(dir.path().join("data/events/a.json"), rows).unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let policy = |unit: &str, force: &str| {
            format!(
                "{EVENTS}[[policies]]\nname = \"dp\"\ndataset = \"ops.events\"\n[policies.differential_privacy]\nprivacy_unit = \"{unit}\"\nepsilon = 1.0\nlatency_tolerance = \"1h\"\n{force}"
            )
        };
        let e = sync(&store, &config(dir.path(), &policy("kind", "")))
            .await
            .unwrap_err();
        assert!(
            e.message().contains("3.0% distinct") && e.message().contains("force"),
            "{e}"
        );
        sync(
            &store,
            &config(dir.path(), &policy("kind", "force = true\n")),
        )
        .await
        .unwrap();
        sync(&store, &config(dir.path(), &policy("id", "")))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn invalid_configs_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let p = "[[policies]]\nname = \"p\"\ndataset = \"a.b\"\nsubscription = { anyone = true }\n";
        for (extra, needle) in [
            (format!("{p}{p}"), "two policies"),
            (
                p.to_string(),
                "neither declared in the config nor registered",
            ),
            (
                "[[datasets]]\nname = \"ops.x\"\nformat = \"csv\"\nlocation = \"/etc/passwd\"\n"
                    .to_string(),
                "outside",
            ),
            (
                "[[users]]\nname = \"u\"\npermissions = [\"ROOT\"]\n".to_string(),
                "unknown permission",
            ),
            (
                "[[policies]]\nname = \"q\"\nmask = \"hash\"\n".to_string(),
                "either `dataset`",
            ),
        ] {
            let cfg = config(dir.path(), &extra);
            let e = sync(&store, &cfg).await.unwrap_err();
            assert!(e.message().contains(needle), "{needle}: {e}");
        }
    }
}
