//! How many rows a filter gathers before passing them on.
//!
//! DataFusion's `FilterExec` copies the rows that pass into batches of the
//! session's `batch_size` (65,536 rows in Veil), unless a filtered batch is
//! at least half that already. A kept copy is read in blocks of about
//! 2 MiB (a few thousand rows of a wide table), so behind a row policy
//! every surviving row was copied a second time just to regroup it. With
//! [`FILTER_BATCH_ROWS`] a filtered block of more than half that passes as
//! it is, and only sparse results are gathered (into batches of that many
//! rows, big enough for a Flight message).

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;

/// Rows a filter gathers its output into (DataFusion's own default).
pub const FILTER_BATCH_ROWS: usize = 8192;

/// Sets every `FilterExec`'s batch size to at most [`FILTER_BATCH_ROWS`].
#[derive(Debug, Default)]
pub struct FilterBatches;

impl PhysicalOptimizerRule for FilterBatches {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(filter) = node.downcast_ref::<FilterExec>() else {
                return Ok(Transformed::no(node));
            };
            if filter.batch_size() <= FILTER_BATCH_ROWS {
                return Ok(Transformed::no(node));
            }
            let smaller = filter.with_batch_size(FILTER_BATCH_ROWS)?;
            Ok(Transformed::yes(Arc::new(smaller) as Arc<dyn ExecutionPlan>))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "veil_filter_batches"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use futures::TryStreamExt;

    fn filters(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<usize>) {
        if let Some(f) = plan.downcast_ref::<FilterExec>() {
            out.push(f.batch_size());
        }
        for child in plan.children() {
            filters(child, out);
        }
    }

    #[tokio::test]
    async fn a_filter_passes_dense_blocks_on_without_regrouping_them() {
        let state = SessionStateBuilder::new()
            .with_config(
                SessionConfig::new()
                    .with_batch_size(65_536)
                    .with_target_partitions(1),
            )
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(FilterBatches))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        // Ten blocks of 5,000 rows, as a kept copy yields them.
        let blocks: Vec<RecordBatch> = (0..10)
            .map(|b| {
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![Arc::new(Int64Array::from_iter_values(
                        b * 5000..(b + 1) * 5000,
                    ))],
                )
                .unwrap()
            })
            .collect();
        let table = MemTable::try_new(Arc::clone(&schema), vec![blocks]).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        // Nine rows in ten pass: each block goes on alone, not regrouped
        // into 65,536-row batches.
        let dense = ctx.sql("SELECT v FROM t WHERE v % 10 <> 0").await.unwrap();
        let plan = dense.create_physical_plan().await.unwrap();
        let mut sizes = Vec::new();
        filters(&plan, &mut sizes);
        assert_eq!(sizes, vec![FILTER_BATCH_ROWS]);
        let batches: Vec<RecordBatch> =
            datafusion::physical_plan::execute_stream(plan, ctx.task_ctx())
                .unwrap()
                .try_collect()
                .await
                .unwrap();
        assert_eq!(
            batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
            45_000
        );
        assert!(
            batches.iter().all(|b| b.num_rows() == 4500),
            "{:?}",
            batches
                .iter()
                .map(RecordBatch::num_rows)
                .collect::<Vec<_>>()
        );
        // One row in a hundred: gathered into batches again.
        let sparse = ctx.sql("SELECT v FROM t WHERE v % 100 = 0").await.unwrap();
        let batches = sparse.collect().await.unwrap();
        assert_eq!(
            batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
            500
        );
        assert!(batches.len() <= 2, "{} batches", batches.len());
    }
}
