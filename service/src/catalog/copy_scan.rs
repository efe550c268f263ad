//! Reading kept copies (`engine::kept_masks`): Arrow IPC files on the local
//! disk, read one block at a time on a blocking thread, so a read holds one
//! block of each file it is reading and nothing more. A copy's blocks are
//! already Arrow: reading one is a copy from the page cache, not a decode.

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::common::{DataFusionError, ScalarValue, Statistics};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};
use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::VeilError;

/// One copy to read: its blocks (all, or a part's row groups) and the
/// partition values of the file it stands in for.
#[derive(Debug, Clone)]
pub struct CopyRead {
    pub path: PathBuf,
    pub blocks: Option<Range<usize>>,
    pub partition_values: Vec<ScalarValue>,
}

/// Scans kept copies: each partition reads its copies in order. The
/// table's columns are the copies' own, then the partition columns.
#[derive(Debug)]
pub struct CopyScanExec {
    groups: Vec<Vec<CopyRead>>,
    /// Columns of the table to produce, in order.
    projection: Vec<usize>,
    /// How many of the table's columns a copy holds (the rest are
    /// partition columns).
    copy_columns: usize,
    schema: SchemaRef,
    limit: Option<usize>,
    properties: Arc<PlanProperties>,
}

impl CopyScanExec {
    /// `table`: the copies' columns then the partition columns;
    /// `projection`: indices into it (`None`: all).
    pub fn new(
        groups: Vec<Vec<CopyRead>>,
        table: &SchemaRef,
        copy_columns: usize,
        projection: Option<&Vec<usize>>,
        limit: Option<usize>,
    ) -> datafusion::common::Result<Self> {
        let projection = projection
            .cloned()
            .unwrap_or_else(|| (0..table.fields().len()).collect());
        let schema = Arc::new(table.project(&projection)?);
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(groups.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            groups,
            projection,
            copy_columns,
            schema,
            limit,
            properties,
        })
    }
}

impl DisplayAs for CopyScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        write!(
            f,
            "KeptCopyScanExec: copies={}, projection=[{}]",
            self.groups.iter().map(Vec::len).sum::<usize>(),
            names.join(", ")
        )?;
        if let Some(l) = self.limit {
            write!(f, ", limit={l}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for CopyScanExec {
    fn name(&self) -> &str {
        "KeptCopyScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "KeptCopyScanExec has no children".into(),
            ))
        }
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_expr::PhysicalExpr>,
        ) -> datafusion::common::Result<
            datafusion::common::tree_node::TreeNodeRecursion,
        >,
    ) -> datafusion::common::Result<datafusion::common::tree_node::TreeNodeRecursion> {
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> datafusion::common::Result<SendableRecordBatchStream> {
        let reads = self.groups.get(partition).cloned().unwrap_or_default();
        let layout = Arc::new(Layout {
            projection: self.projection.clone(),
            copy_columns: self.copy_columns,
            schema: Arc::clone(&self.schema),
        });
        let batches = futures::stream::iter(reads)
            .map(move |read| read_copy(read, Arc::clone(&layout)))
            .flatten();
        let batches = match self.limit {
            None => batches.boxed(),
            Some(limit) => batches
                .scan(limit, |left, batch| {
                    let out = match batch {
                        Ok(_) if *left == 0 => None,
                        Ok(b) => {
                            let take = b.num_rows().min(*left);
                            *left -= take;
                            Some(Ok(b.slice(0, take)))
                        }
                        Err(e) => Some(Err(e)),
                    };
                    futures::future::ready(out)
                })
                .boxed(),
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            batches,
        )))
    }

    fn partition_statistics(
        &self,
        _partition: Option<usize>,
    ) -> datafusion::common::Result<Arc<Statistics>> {
        Ok(Arc::new(Statistics::new_unknown(&self.schema)))
    }
}

/// Where each output column comes from.
#[derive(Debug)]
struct Layout {
    projection: Vec<usize>,
    copy_columns: usize,
    schema: SchemaRef,
}

impl Layout {
    /// The copy's columns to decode, in output order.
    fn from_copy(&self) -> Vec<usize> {
        self.projection
            .iter()
            .copied()
            .filter(|p| *p < self.copy_columns)
            .collect()
    }

    /// The output batch: the decoded columns, with the partition values
    /// put where the projection names them.
    fn assemble(
        &self,
        decoded: RecordBatch,
        partition_values: &[ScalarValue],
    ) -> datafusion::common::Result<RecordBatch> {
        let rows = decoded.num_rows();
        let mut from_copy = decoded.columns().iter();
        let columns = self
            .projection
            .iter()
            .map(|p| match p.checked_sub(self.copy_columns) {
                None => from_copy.next().cloned().ok_or_else(|| {
                    DataFusionError::Internal("a kept copy block lacks a column".into())
                }),
                Some(i) => partition_values
                    .get(i)
                    .ok_or_else(|| {
                        DataFusionError::Internal("a kept copy lacks a partition value".into())
                    })?
                    .to_array_of_size(rows),
            })
            .collect::<datafusion::common::Result<Vec<ArrayRef>>>()?;
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }
}

fn failed(e: impl fmt::Display) -> DataFusionError {
    DataFusionError::External(Box::new(VeilError::internal("reading a kept copy", e)))
}

/// The batches of one copy, one block read at a time.
fn read_copy(
    read: CopyRead,
    layout: Arc<Layout>,
) -> futures::stream::BoxStream<'static, datafusion::common::Result<RecordBatch>> {
    struct Reading {
        reader: Option<FileReader<File>>,
        next: usize,
        end: usize,
    }
    let opened = {
        let (path, blocks, layout) = (read.path.clone(), read.blocks.clone(), Arc::clone(&layout));
        async move {
            tokio::task::spawn_blocking(move || {
                let file = File::open(&path).map_err(failed)?;
                let reader = FileReader::try_new(file, Some(layout.from_copy())).map_err(failed)?;
                let blocks = blocks.unwrap_or(0..reader.num_batches());
                if blocks.end > reader.num_batches() {
                    return Err(failed("a part names blocks past the copy's end"));
                }
                Ok(Reading {
                    reader: Some(reader),
                    next: blocks.start,
                    end: blocks.end,
                })
            })
            .await
            .map_err(failed)?
        }
    };
    let values = Arc::new(read.partition_values);
    futures::stream::once(opened)
        .map_ok(move |reading| {
            let (layout, values) = (Arc::clone(&layout), Arc::clone(&values));
            futures::stream::try_unfold(reading, move |mut reading| {
                let (layout, values) = (Arc::clone(&layout), Arc::clone(&values));
                async move {
                    if reading.next >= reading.end {
                        return Ok(None);
                    }
                    let mut reader = reading
                        .reader
                        .take()
                        .ok_or_else(|| failed("a kept copy's reader was lost"))?;
                    let index = reading.next;
                    let (reader, batch) = tokio::task::spawn_blocking(move || {
                        let batch = reader
                            .set_index(index)
                            .and_then(|()| reader.next().transpose())
                            .map_err(failed);
                        (reader, batch)
                    })
                    .await
                    .map_err(failed)?;
                    let batch = batch?.ok_or_else(|| failed("a kept copy ended early"))?;
                    reading.reader = Some(reader);
                    reading.next += 1;
                    Ok(Some((layout.assemble(batch, &values)?, reading)))
                }
            })
        })
        .try_flatten()
        .boxed()
}
