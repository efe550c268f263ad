//! `SourceTable`: the raw files of one dataset as a DataFusion table.
//!
//! It is only ever reachable inside a secure view, below the policy barrier:
//! it is never registered in a session catalog under any name. Its schema is
//! the data dictionary, not the files' schema, so columns that appear later
//! in the files (schema drift) are not read until they are in the dictionary.

use async_trait::async_trait;
use datafusion::arrow::datatypes::{FieldRef, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::ParquetAccessPlan;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use std::collections::HashMap;
use std::sync::Arc;

use veil_proto::ScanPart;

use super::files::{Listing, SourceFile, list_files};
use super::object_stores::ObjectStores;
use crate::error::{Result, VeilError};
use crate::model::dataset::{DatasetRecord, FileFormatKind};
use crate::policy::effective::dictionary_field;
use datafusion::execution::object_store::ObjectStoreUrl;
use object_store::path::Path as ObjectPath;

#[derive(Debug)]
pub struct SourceTable {
    format: FileFormatKind,
    file_schema: SchemaRef,
    partition_fields: Vec<FieldRef>,
    table_schema: SchemaRef,
    listing: Listing,
    part: Option<ScanPart>,
    copies: Option<CopiedFiles>,
}

/// Kept copies standing in for a dataset's files (`engine::kept_masks`):
/// parquet files on the local disk with each file's rows, in the same order
/// and row groups, and stored masked columns after the file's own.
#[derive(Debug, Clone)]
pub struct CopiedFiles {
    /// The stored columns each copy adds after the file's own.
    pub fields: Vec<FieldRef>,
    /// A source file's path (as tickets name it) → its copy's local path
    /// and size.
    pub copies: HashMap<String, (ObjectPath, u64)>,
}

impl SourceTable {
    /// Resolve the dataset's files now; `part` restricts the scan to the
    /// files and row groups one endpoint serves.
    pub async fn open(
        dataset: &DatasetRecord,
        part: Option<ScanPart>,
        stores: &ObjectStores,
    ) -> Result<Self> {
        let listing = list_files(stores, &dataset.source).await?;
        Self::from_listing(dataset, part, listing).await
    }

    /// Like [`SourceTable::open`], over files already listed (a request
    /// lists a dataset's files once, for its plan and its layout).
    pub async fn from_listing(
        dataset: &DatasetRecord,
        part: Option<ScanPart>,
        listing: Listing,
    ) -> Result<Self> {
        let mut file_fields = Vec::new();
        let mut partition_fields: Vec<FieldRef> = Vec::new();
        for c in &dataset.columns {
            let f = dictionary_field(&c.name, &c.data_type, c.nullable)?;
            if c.partition {
                partition_fields.push(Arc::new(f));
            } else {
                file_fields.push(f);
            }
        }
        let file_schema = Arc::new(Schema::new(file_fields));
        let mut all: Vec<FieldRef> = file_schema.fields().iter().cloned().collect();
        all.extend(partition_fields.iter().cloned());
        let table_schema = Arc::new(Schema::new(all));
        if dataset.source.format == FileFormatKind::Csv {
            let expected: Vec<&str> = file_schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            for f in &listing.files {
                check_csv_header(&listing, f, &expected).await?;
            }
        }
        Ok(Self {
            format: dataset.source.format,
            file_schema,
            partition_fields,
            table_schema,
            listing,
            part,
            copies: None,
        })
    }

    /// The columns the files hold (partition columns come from folders).
    pub fn file_schema(&self) -> &SchemaRef {
        &self.file_schema
    }

    /// Read `copies` instead of the files: the same rows, with the copies'
    /// stored columns added to the schema (after the files' own columns).
    /// Every file this table reads must have a copy.
    pub fn with_copies(mut self, copies: CopiedFiles) -> Self {
        let mut all: Vec<FieldRef> = self.file_schema.fields().iter().cloned().collect();
        all.extend(copies.fields.iter().cloned());
        all.extend(self.partition_fields.iter().cloned());
        self.table_schema = Arc::new(Schema::new(all));
        self.copies = Some(copies);
        self
    }

    /// How the scanned files are read: copies are always parquet.
    fn file_format(&self) -> Arc<dyn FileFormat> {
        match self.format {
            _ if self.copies.is_some() => Self::parquet(),
            FileFormatKind::Parquet => Self::parquet(),
            FileFormatKind::Csv => Arc::new(CsvFormat::default().with_has_header(true)),
            FileFormatKind::Json => Arc::new(JsonFormat::default()),
        }
    }

    fn parquet() -> Arc<dyn FileFormat> {
        let mut opts = datafusion::config::TableParquetOptions::default();
        // Plain Utf8 all the way: view types would double the bytes
        // sent to clients (notes/performance.md).
        opts.global.schema_force_view_types = false;
        Arc::new(ParquetFormat::default().with_options(opts))
    }

    /// The partitioned files this scan reads, restricted to the part.
    fn partitioned_files(&self) -> Result<Vec<PartitionedFile>> {
        let to_pf = |f: &SourceFile| -> Result<PartitionedFile> {
            let values =
                self.partition_fields
                    .iter()
                    .map(|field| {
                        let raw = f
                            .partition_values
                            .iter()
                            .find(|(k, _)| k == field.name())
                            .map(|(_, v)| v.clone())
                            .ok_or_else(|| {
                                VeilError::FailedPrecondition(format!(
                                    "a file of the dataset lacks the partition folder '{}='",
                                    field.name()
                                ))
                            })?;
                        ScalarValue::Utf8(Some(raw))
                        .cast_to(field.data_type())
                        .map_err(|_| VeilError::FailedPrecondition(format!(
                            "a partition folder value of '{}' does not fit its dictionary type",
                            field.name()
                        )))
                    })
                    .collect::<Result<Vec<_>>>()?;
            let (object, size) = match &self.copies {
                None => (&f.object, f.size),
                Some(c) => c.copies.get(&f.path).map(|(o, s)| (o, *s)).ok_or_else(|| {
                    VeilError::internal("kept copies", "a file has no copy".to_string())
                })?,
            };
            Ok(PartitionedFile::new(object.to_string(), size).with_partition_values(values))
        };
        let Some(part) = &self.part else {
            return self.listing.files.iter().map(to_pf).collect();
        };
        let by_path: HashMap<&str, &SourceFile> = self
            .listing
            .files
            .iter()
            .map(|f| (f.path.as_str(), f))
            .collect();
        let changed = || {
            VeilError::NotFound(
                "the dataset's files changed since this ticket was issued; call GetFlightInfo again".into(),
            )
        };
        part.files
            .iter()
            .map(|slice| {
                let f = by_path.get(slice.path.as_str()).ok_or_else(changed)?;
                let pf = to_pf(f)?;
                if slice.is_whole_file() {
                    return Ok(pf);
                }
                if self.format != FileFormatKind::Parquet
                    || slice.row_group_start >= slice.row_group_end
                    || slice.row_group_end > slice.row_group_count
                {
                    return Err(changed());
                }
                let mut plan = ParquetAccessPlan::new_none(slice.row_group_count as usize);
                for rg in slice.row_group_start..slice.row_group_end {
                    plan.scan(rg as usize);
                }
                Ok(pf.with_extension(plan))
            })
            .collect()
    }
}

/// CSV columns are positional: a file whose header is not exactly the
/// dictionary's columns would put values under the wrong names.
/// A CSV header line's fields: quoted ones may hold commas and doubled
/// quotes; nothing is trimmed (the reader that derived the dictionary
/// doesn't trim either).
fn csv_header_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (_, c) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// CSV files whose header was found to match a dictionary, by (location,
/// size, modification time, dictionary): a file that changes gets a new
/// key, so it is checked again. Only matches are kept, and only for files
/// whose store reports a modification time.
type CheckedHeaders = moka::sync::Cache<(String, u64, i64, u64), ()>;

fn checked_headers() -> &'static CheckedHeaders {
    static CHECKED: std::sync::LazyLock<CheckedHeaders> =
        std::sync::LazyLock::new(|| moka::sync::Cache::builder().max_capacity(100_000).build());
    &CHECKED
}

async fn check_csv_header(listing: &Listing, file: &SourceFile, expected: &[&str]) -> Result<()> {
    use std::hash::{Hash, Hasher};
    let key = file.modified_ms.map(|modified| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        expected.hash(&mut h);
        (
            format!("{}{}", listing.url.as_str(), file.path),
            file.size,
            modified,
            h.finish(),
        )
    });
    if let Some(k) = &key
        && checked_headers().contains_key(k)
    {
        return Ok(());
    }
    read_csv_header(listing, file, expected).await?;
    if let Some(k) = key {
        checked_headers().insert(k, ());
    }
    Ok(())
}

async fn read_csv_header(listing: &Listing, file: &SourceFile, expected: &[&str]) -> Result<()> {
    use object_store::ObjectStoreExt;
    const MAX_HEADER: u64 = 64 * 1024;
    let head = listing
        .store
        .get_range(&file.object, 0..file.size.min(MAX_HEADER))
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "reading a CSV header failed");
            VeilError::FailedPrecondition(
                "the dataset's files are not readable right now; ask its owner to check the location".into(),
            )
        })?;
    let text = String::from_utf8_lossy(&head);
    let line = match text.find('\n') {
        Some(end) => &text[..end],
        None if file.size <= MAX_HEADER => &text[..],
        None => {
            return Err(VeilError::FailedPrecondition(
                "a CSV file's header line is longer than 64 KiB".into(),
            ));
        }
    };
    let line = line.trim_end_matches(['\r', '\n']);
    let matches = |line: &str| {
        csv_header_fields(line)
            .iter()
            .map(String::as_str)
            .eq(expected.iter().copied())
    };
    // A UTF-8 byte order mark (what spreadsheets write) may or may not
    // have become part of the first name when the dictionary was derived.
    if !matches(line) && !line.strip_prefix('\u{feff}').is_some_and(matches) {
        return Err(VeilError::FailedPrecondition(
            "a CSV file's header differs from the dataset's data dictionary (columns added, removed or reordered); the dataset's owner must re-register it".into(),
        ));
    }
    Ok(())
}

#[async_trait]
impl TableProvider for SourceTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.table_schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Only policy row filters ever reach this provider (user predicates stay
    /// above the barrier). They are used for pruning and re-checked above.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::common::Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let files = self
            .partitioned_files()
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        if files.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(self.table_schema.project(p)?),
                None => Arc::clone(&self.table_schema),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        // Deterministic grouping: file i goes to group i mod n.
        let n = state.config().target_partitions().max(1).min(files.len());
        let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); n];
        for (i, f) in files.into_iter().enumerate() {
            groups[i % n].push(f);
        }
        let format = self.file_format();
        let (url, file_schema) = match &self.copies {
            None => (self.listing.url.clone(), Arc::clone(&self.file_schema)),
            Some(c) => {
                let mut fields: Vec<FieldRef> = self.file_schema.fields().iter().cloned().collect();
                fields.extend(c.fields.iter().cloned());
                (
                    ObjectStoreUrl::local_filesystem(),
                    Arc::new(Schema::new(fields)),
                )
            }
        };
        let source = format.file_source(
            TableSchema::builder(file_schema)
                .with_table_partition_cols(self.partition_fields.clone())
                .build(),
        );
        let config = FileScanConfigBuilder::new(url, source)
            .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        format.create_physical_plan(state, config).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_headers_are_split_like_csv() {
        assert_eq!(csv_header_fields("a ,b"), ["a ", "b"]);
        assert_eq!(csv_header_fields(r#""x, y",z"#), ["x, y", "z"]);
        assert_eq!(
            csv_header_fields(r#""say ""hi""",,c"#),
            [r#"say "hi""#, "", "c"]
        );
    }
}
