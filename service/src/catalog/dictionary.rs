//! Deriving a dataset's data dictionary from its files at registration.

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::prelude::SessionContext;
use object_store::ObjectStoreExt;
use std::collections::BTreeMap;

use super::files::{list_files, partition_keys};
use super::object_stores::ObjectStores;
use crate::config::ColumnConfig;
use crate::error::{Result, VeilError};
use crate::model::dataset::{ColumnRecord, SourceSpec};

/// Types Veil serves: view types become their plain forms.
pub fn plain_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        other => other.clone(),
    }
}

/// How much of a JSON file's start is read for its first record's key
/// order (a longer first record keeps the inferred order).
const JSON_HEAD_BYTES: u64 = 1024 * 1024;

/// The keys of the first record of newline-delimited JSON, in the order
/// it writes them; empty if the first record is not a whole object here.
fn json_key_order(head: &[u8]) -> Vec<String> {
    struct Keys;
    impl<'de> serde::de::Visitor<'de> for Keys {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<serde::de::IgnoredAny>()?;
                keys.push(key);
            }
            Ok(keys)
        }
    }
    let Some(line) = head
        .split(|b| *b == b'\n')
        .find(|l| !l.iter().all(u8::is_ascii_whitespace))
    else {
        return Vec::new();
    };
    serde::Deserializer::deserialize_map(&mut serde_json::Deserializer::from_slice(line), Keys)
        .unwrap_or_default()
}

/// Read the files' schema and build dictionary columns, applying the
/// descriptions and tags given for named columns.
pub async fn derive_columns(
    source: &SourceSpec,
    overrides: &BTreeMap<String, ColumnConfig>,
    stores: &ObjectStores,
) -> Result<Vec<ColumnRecord>> {
    let listing = list_files(stores, source).await?;
    let files = &listing.files;
    if files.is_empty() {
        return Err(VeilError::InvalidArgument(format!(
            "no {} files found at the dataset location",
            source.format.as_str()
        )));
    }
    let ctx = SessionContext::new();
    let state = ctx.state();
    stores.register_with(state.runtime_env())?;
    let store = &listing.store;
    let mut metas = Vec::with_capacity(files.len());
    for f in files {
        metas.push(store.head(&f.object).await.map_err(|e| {
            tracing::warn!(error = %e, "reading a data file failed");
            VeilError::FailedPrecondition("cannot read a data file of the dataset".into())
        })?);
    }
    let format: Box<dyn FileFormat> = match source.format {
        crate::model::dataset::FileFormatKind::Parquet => Box::new(ParquetFormat::default()),
        crate::model::dataset::FileFormatKind::Csv => {
            Box::new(CsvFormat::default().with_has_header(true))
        }
        crate::model::dataset::FileFormatKind::Json => Box::new(JsonFormat::default()),
    };
    let schema = format
        .infer_schema(&state, store, &metas)
        .await
        .map_err(|e| {
            VeilError::InvalidArgument(format!(
                "cannot read the schema of the dataset's files: {e}"
            ))
        })?;
    let mut fields: Vec<(Field, bool)> = schema
        .fields()
        .iter()
        .map(|f| {
            (
                f.as_ref().clone().with_data_type(plain_type(f.data_type())),
                false,
            )
        })
        .collect();
    if source.format == crate::model::dataset::FileFormatKind::Json {
        // Inference lists a JSON file's keys alphabetically; the columns
        // come in the order the first record writes them.
        let first = &files[0].object;
        let end = metas[0].size.min(JSON_HEAD_BYTES);
        if let Ok(head) = store.get_range(first, 0..end).await {
            let order = json_key_order(&head);
            fields.sort_by_key(|(f, _)| {
                order
                    .iter()
                    .position(|k| k == f.name())
                    .unwrap_or(usize::MAX)
            });
        }
    }
    for key in partition_keys(files)? {
        if fields.iter().any(|(f, _)| f.name() == &key) {
            return Err(VeilError::InvalidArgument(format!(
                "partition folder key '{key}' is also a column in the files"
            )));
        }
        fields.push((Field::new(key, DataType::Utf8, false), true));
    }
    for name in overrides.keys() {
        if !fields.iter().any(|(f, _)| f.name() == name) {
            return Err(VeilError::InvalidArgument(format!(
                "column '{name}' is described in the config but the files have no such column"
            )));
        }
    }
    Ok(fields
        .into_iter()
        .map(|(f, partition)| {
            let declared = overrides.get(f.name());
            let o = declared.cloned().unwrap_or_default();
            ColumnRecord {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
                nullable: f.is_nullable(),
                description: o.description,
                tags: o.tags,
                partition,
                from_config: declared.is_some(),
            }
        })
        .collect())
}

/// Dictionary columns for a database relation, from what the database
/// says of it, with the descriptions and tags given for named columns
/// (a given description replaces the database's comment). Also each
/// column's database type, by name.
pub fn database_columns(
    dataset: &str,
    found: &super::database::Discovered,
    overrides: &BTreeMap<String, ColumnConfig>,
) -> Result<(Vec<ColumnRecord>, BTreeMap<String, String>)> {
    if found.columns.is_empty() {
        return Err(VeilError::InvalidArgument(format!(
            "dataset {dataset}: the relation has no columns"
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for c in &found.columns {
        if !seen.insert(c.name.as_str()) {
            return Err(VeilError::InvalidArgument(format!(
                "dataset {dataset}: column name '{}' appears twice; give the query's columns distinct names",
                c.name
            )));
        }
    }
    for name in overrides.keys() {
        if !found.columns.iter().any(|c| &c.name == name) {
            return Err(VeilError::InvalidArgument(format!(
                "column '{name}' is described in the config but the relation has no such column"
            )));
        }
    }
    let columns = found
        .columns
        .iter()
        .map(|c| {
            let declared = overrides.get(&c.name);
            let o = declared.cloned().unwrap_or_default();
            ColumnRecord {
                name: c.name.clone(),
                data_type: c.data_type.to_string(),
                nullable: c.nullable,
                description: if o.description.is_empty() {
                    c.description.clone()
                } else {
                    o.description
                },
                tags: o.tags,
                partition: false,
                from_config: declared.is_some(),
            }
        })
        .collect();
    let types = found
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.database_type.clone()))
        .collect();
    Ok((columns, types))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::dataset::FileFormatKind;

    #[test]
    fn a_json_records_keys_in_the_order_written() {
        let head = b"\n  \n{\"visit_id\": 1, \"phone\": {\"a\": [1, 2]}, \"ward\": \"b\", \"cost\": 2.5}\n{\"z\": 1}";
        assert_eq!(json_key_order(head), ["visit_id", "phone", "ward", "cost"]);
        // A first record cut short, or not an object: no order.
        assert!(json_key_order(b"{\"visit_id\": 1, \"pho").is_empty());
        assert!(json_key_order(b"[1, 2]\n").is_empty());
        assert!(json_key_order(b"").is_empty());
    }

    #[tokio::test]
    async fn json_columns_come_in_the_files_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("visits.json");
        std::fs::write(
            &path,
            "{\"visit_id\": 1, \"phone\": \"x\", \"ward\": \"b\", \"cost\": 2.5}\n{\"visit_id\": 2, \"extra\": true, \"cost\": 1.0}\n",
        )
        .unwrap();
        let source = SourceSpec {
            format: FileFormatKind::Json,
            location: path.canonicalize().unwrap().display().to_string(),
            hive_partitioned: false,
            database: None,
        };
        let columns = derive_columns(&source, &BTreeMap::new(), &ObjectStores::local_only())
            .await
            .unwrap();
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        // Keys the first record lacks come after its own.
        assert_eq!(names, ["visit_id", "phone", "ward", "cost", "extra"]);
    }
}
