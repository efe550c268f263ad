//! `SourceTable`: the raw files of one dataset as a DataFusion table.
//!
//! It is only ever reachable inside a secure view, below the policy barrier:
//! it is never registered in a session catalog under any name. Its schema is
//! the data dictionary, not the files' schema, so columns that appear later
//! in the files (schema drift) are not read until they are in the dictionary.

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef};
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

use super::copy_scan::{CopyRead, CopyScanExec, Pick};
use super::files::{Listing, SourceFile, list_files};
use super::object_stores::ObjectStores;
use crate::error::{Result, VeilError};
use crate::model::dataset::{DatasetRecord, FileFormatKind};
use crate::policy::deal::RowDeal;
use crate::policy::effective::dictionary_field;
use std::ops::Range;

#[derive(Debug)]
pub struct SourceTable {
    format: FileFormatKind,
    file_schema: SchemaRef,
    partition_fields: Vec<FieldRef>,
    table_schema: SchemaRef,
    listing: Listing,
    part: Option<ScanPart>,
    copies: Option<CopiedFiles>,
    /// Only this endpoint's share of the copies' rows (they hold only
    /// the caller's).
    deal: Option<RowDeal>,
}

/// Kept copies standing in for a dataset's files (`engine::kept_masks`):
/// Arrow IPC files on the local disk with each file's rows in the same
/// order, and stored masked columns (if any) after the file's own.
#[derive(Debug, Clone)]
pub struct CopiedFiles {
    /// The stored columns each copy adds after the file's own.
    pub fields: Vec<FieldRef>,
    /// A source file's path (as tickets name it) → its copy.
    pub copies: HashMap<String, CopiedFile>,
}

/// One file's kept copy.
#[derive(Debug, Clone)]
pub struct CopiedFile {
    pub path: std::path::PathBuf,
    /// For a parquet source: where each of its row groups starts among
    /// the copy's blocks, and, last, the copy's block count (so row
    /// groups `a..b` are blocks `row_groups[a]..row_groups[b]`). Empty
    /// for other formats, whose parts are whole files, and for a copy of
    /// the rows a row predicate keeps (its reads are one stream or dealt,
    /// never cut by row groups; its blocks hold a fixed number of rows).
    pub row_groups: Vec<usize>,
    /// The row each block starts at, then the copy's rows: a dealt read
    /// ([`RowDeal`]) skips the blocks none of its runs touch.
    pub block_starts: Arc<[u64]>,
}

impl CopiedFiles {
    /// The rows the copies hold, all together.
    pub fn rows(&self) -> u64 {
        self.copies
            .values()
            .map(|c| c.block_starts.last().copied().unwrap_or(0))
            .sum()
    }
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
            deal: None,
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

    /// Read only `deal`'s share of the copies' rows (every file's, in
    /// order), skipping the blocks none of its runs touch. Only over
    /// copies that hold nothing but the caller's rows: positions must
    /// count those alone.
    pub fn with_deal(mut self, deal: RowDeal) -> Self {
        self.deal = Some(deal);
        self
    }

    /// Read the text columns `columns` of parquet files as `Utf8View`
    /// instead of their dictionary type: a value is then a view into the
    /// decoded page, its bytes not copied per row. Only for a plan that
    /// reads them itself and never sends them (the exact aggregates of a
    /// differential privacy answer, `engine::dp`): clients get the
    /// dictionary's types. Kept copies and other formats are read as
    /// declared.
    pub fn with_text_views(mut self, columns: &[String]) -> Self {
        if self.format != FileFormatKind::Parquet || self.copies.is_some() || columns.is_empty() {
            return self;
        }
        // File columns only: a partition column's values come from folder
        // names, as declared.
        let file_fields: Vec<FieldRef> = self
            .file_schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 if columns.iter().any(|c| c == f.name()) => {
                    Arc::new(f.as_ref().clone().with_data_type(DataType::Utf8View))
                }
                _ => Arc::clone(f),
            })
            .collect();
        let mut all = file_fields.clone();
        all.extend(self.partition_fields.iter().cloned());
        self.file_schema = Arc::new(Schema::new(file_fields));
        self.table_schema = Arc::new(Schema::new(all));
        self
    }

    /// How the scanned files are read (copies are read by [`CopyScanExec`]).
    fn file_format(&self) -> Arc<dyn FileFormat> {
        match self.format {
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

    /// The files this scan reads, restricted to the part: each with its
    /// partition values and the row groups to read (`None`: all).
    fn selected(&self) -> Result<Vec<Selected<'_>>> {
        let Some(part) = &self.part else {
            return self
                .listing
                .files
                .iter()
                .map(|f| self.select(f, None))
                .collect();
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
                if slice.is_whole_file() {
                    return self.select(f, None);
                }
                if self.format != FileFormatKind::Parquet
                    || slice.row_group_start >= slice.row_group_end
                    || slice.row_group_end > slice.row_group_count
                {
                    return Err(changed());
                }
                self.select(
                    f,
                    Some(RowGroups {
                        range: slice.row_group_start as usize..slice.row_group_end as usize,
                        count: slice.row_group_count as usize,
                    }),
                )
            })
            .collect()
    }

    /// `f` with its partition values.
    fn select<'a>(&self, f: &'a SourceFile, row_groups: Option<RowGroups>) -> Result<Selected<'a>> {
        let values = self
            .partition_fields
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
                    .map_err(|_| {
                        VeilError::FailedPrecondition(format!(
                            "a partition folder value of '{}' does not fit its dictionary type",
                            field.name()
                        ))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Selected {
            file: f,
            values,
            row_groups,
        })
    }

    /// The source files to scan, as DataFusion's file scans take them.
    fn partitioned_files(selected: Vec<Selected<'_>>) -> Vec<PartitionedFile> {
        selected
            .into_iter()
            .map(|s| {
                let pf = PartitionedFile::new(s.file.object.to_string(), s.file.size)
                    .with_partition_values(s.values);
                match s.row_groups {
                    None => pf,
                    Some(g) => {
                        let mut plan = ParquetAccessPlan::new_none(g.count);
                        for rg in g.range {
                            plan.scan(rg);
                        }
                        pf.with_extension(plan)
                    }
                }
            })
            .collect()
    }

    /// The kept copies to read instead, with the blocks holding the
    /// selected row groups; with `deal`, the blocks and rows in them its
    /// runs take, counting the copies' rows in order.
    fn copy_reads(
        copies: &CopiedFiles,
        selected: Vec<Selected<'_>>,
        deal: Option<RowDeal>,
    ) -> Result<Vec<CopyRead>> {
        let mut at = 0u64;
        selected
            .into_iter()
            .map(|s| {
                let copy = copies.copies.get(&s.file.path).ok_or_else(|| {
                    VeilError::internal("kept copies", "a file has no copy".to_string())
                })?;
                let blocks = match s.row_groups {
                    None => None,
                    Some(g) => match (
                        copy.row_groups.get(g.range.start),
                        copy.row_groups.get(g.range.end),
                    ) {
                        (Some(a), Some(b)) if copy.row_groups.len() == g.count + 1 => Some(*a..*b),
                        // The ticket's row groups are those of an earlier
                        // version of the file: it changed since the read
                        // was planned.
                        _ => {
                            return Err(VeilError::FailedPrecondition(
                                "the dataset's files changed since this read was planned; plan it again (GetFlightInfo, or the client's read)".into(),
                            ));
                        }
                    },
                };
                let picks = match deal {
                    None => None,
                    Some(_) if blocks.is_some() => {
                        return Err(VeilError::internal(
                            "kept copies",
                            "a dealt read of row groups".to_string(),
                        ));
                    }
                    Some(deal) => Some(picks(deal, &copy.block_starts, &mut at)),
                };
                Ok(CopyRead {
                    path: copy.path.clone(),
                    blocks,
                    picks,
                    partition_values: s.values,
                })
            })
            .collect()
    }
}

/// The blocks of a copy whose blocks start at rows `starts` (then its
/// rows) that `deal` takes rows of, and which; `at`: the rows of the
/// copies before it, moved past it.
fn picks(deal: RowDeal, starts: &[u64], at: &mut u64) -> Vec<Pick> {
    let base = *at;
    *at += starts.last().copied().unwrap_or(0);
    starts
        .windows(2)
        .enumerate()
        .filter_map(|(block, w)| {
            let keep: Vec<Range<usize>> = deal
                .runs(base + w[0]..base + w[1])
                .into_iter()
                .map(|r| (r.start - base - w[0]) as usize..(r.end - base - w[0]) as usize)
                .collect();
            (!keep.is_empty()).then(|| Pick {
                block,
                rows: (w[1] - w[0]) as usize,
                keep,
            })
        })
        .collect()
}

/// One file a scan reads.
struct Selected<'a> {
    file: &'a SourceFile,
    /// Its partition columns' values.
    values: Vec<ScalarValue>,
    /// The row groups of a parquet file a part reads (`None`: all).
    row_groups: Option<RowGroups>,
}

struct RowGroups {
    range: std::ops::Range<usize>,
    /// The file's row groups in all.
    count: usize,
}

/// Deterministic grouping into at most `partitions` groups: file i goes
/// to group i mod n.
fn grouped<T>(files: Vec<T>, partitions: usize) -> Vec<Vec<T>> {
    let n = partitions.max(1).min(files.len());
    let mut groups: Vec<Vec<T>> = (0..n).map(|_| Vec::new()).collect();
    for (i, f) in files.into_iter().enumerate() {
        groups[i % n].push(f);
    }
    groups
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
        let selected = self
            .selected()
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        if selected.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(self.table_schema.project(p)?),
                None => Arc::clone(&self.table_schema),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let partitions = state.config().target_partitions();
        if let Some(copies) = &self.copies {
            let reads = Self::copy_reads(copies, selected, self.deal)
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let copy_columns = self.file_schema.fields().len() + copies.fields.len();
            // Dealt: one partition, the copies in order.
            let partitions = match self.deal {
                Some(_) => 1,
                None => partitions,
            };
            return Ok(Arc::new(CopyScanExec::new(
                grouped(reads, partitions),
                &self.table_schema,
                copy_columns,
                projection,
                limit,
            )?));
        }
        if self.deal.is_some() {
            return Err(DataFusionError::Internal(
                "only kept copies of the caller's rows deal them".into(),
            ));
        }
        let groups = grouped(Self::partitioned_files(selected), partitions);
        let format = self.file_format();
        let source = format.file_source(
            TableSchema::builder(Arc::clone(&self.file_schema))
                .with_table_partition_cols(self.partition_fields.clone())
                .build(),
        );
        let config = FileScanConfigBuilder::new(self.listing.url.clone(), source)
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
