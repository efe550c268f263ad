//! The catalog: datasets, their dictionaries, and where their files are.

pub mod dictionary;
pub mod discovery;
pub mod files;
pub mod object_stores;
pub mod profiling;
pub mod roots;
pub mod search;
pub mod source_table;
pub mod state;

use std::collections::BTreeMap;

use crate::config::ColumnConfig;
use crate::error::{Result, VeilError};
use crate::model::Origin;
use crate::model::dataset::{DatasetRecord, FileFormatKind, SourceSpec};
use crate::model::identity::Identity;

/// Everything needed to register a dataset.
#[derive(Debug, Clone)]
pub struct NewDataset {
    pub name: String,
    pub format: String,
    /// Confined to a root already: a canonical local path or a remote URL.
    pub location: String,
    pub hive_partitioned: bool,
    pub description: String,
    pub owners: Vec<Identity>,
    pub experts: Vec<Identity>,
    pub tags: Vec<String>,
    pub columns: BTreeMap<String, ColumnConfig>,
    pub origin: Origin,
    pub event_time: Option<String>,
}

/// `schema.name`, each part a plain identifier; `veil.*` is reserved.
pub fn validate_dataset_name(name: &str) -> Result<()> {
    let bad = || {
        VeilError::InvalidArgument(format!(
            "dataset name '{}' must be schema.name, each part letters, digits and underscores, starting with a letter",
            name.chars().take(128).collect::<String>()
        ))
    };
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() != 2 {
        return Err(bad());
    }
    for p in &parts {
        let mut chars = p.chars();
        let ok_first = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
        if !ok_first || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') || p.len() > 64 {
            return Err(bad());
        }
    }
    if parts[0].eq_ignore_ascii_case("veil") {
        return Err(VeilError::InvalidArgument(
            "dataset names under 'veil.' are reserved for Veil's own datasets".into(),
        ));
    }
    Ok(())
}

/// Build the record (dictionary included) for a new dataset. The location
/// must already be confined to a root by the caller.
pub async fn build_dataset(
    new: NewDataset,
    stores: &object_stores::ObjectStores,
) -> Result<DatasetRecord> {
    validate_dataset_name(&new.name)?;
    let format = FileFormatKind::parse(&new.format).ok_or_else(|| {
        VeilError::InvalidArgument(format!(
            "unknown format '{}': use parquet, csv or json",
            new.format
        ))
    })?;
    if new.hive_partitioned && std::path::Path::new(&new.location).is_file() {
        return Err(VeilError::InvalidArgument(
            "a hive-partitioned dataset's location must be a folder".into(),
        ));
    }
    let source = SourceSpec {
        format,
        location: new.location,
        hive_partitioned: new.hive_partitioned,
    };
    let columns = dictionary::derive_columns(&source, &new.columns, stores).await?;
    if let Some(t) = &new.event_time {
        let Some(c) = columns.iter().find(|c| &c.name == t) else {
            return Err(VeilError::InvalidArgument(format!(
                "event_time names column '{t}', which dataset {} does not have",
                new.name
            )));
        };
        if !(c.data_type.starts_with("Timestamp") || c.data_type.starts_with("Date")) {
            return Err(VeilError::InvalidArgument(format!(
                "event_time column '{t}' of {} is {}, not a date or timestamp",
                new.name, c.data_type
            )));
        }
    }
    Ok(DatasetRecord {
        id: uuid::Uuid::new_v4().to_string(),
        name: new.name,
        source,
        description: new.description,
        owners: new.owners,
        experts: new.experts,
        tags: new.tags,
        columns,
        origin: new.origin,
        event_time: new.event_time,
        tag_proposals: vec![],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_veil_is_reserved() {
        assert!(validate_dataset_name("clinical.trials").is_ok());
        for bad in [
            "trials",
            "a.b.c",
            "1a.b",
            "a.b-c",
            // Users can't register a dataset in Veil's own schema.
            crate::audit::dataset::AUDIT_DATASET,
            "VEIL.x",
            "a.",
            ".b",
            "a.b;drop",
        ] {
            assert!(validate_dataset_name(bad).is_err(), "{bad}");
        }
    }
}
