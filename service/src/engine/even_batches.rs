//! A read a row policy filters leaves Veil in batches of one size.
//!
//! Behind a row policy, the rows that survive come in batches as the
//! source's row groups and a kept copy's blocks cut them: a batch of 58,000
//! rows where the file's batches hold 65,536 tells the caller that 7,536
//! rows there are hidden from them, and where. Regrouped into batches of
//! one fixed size ([`piece_rows`] of the session's batch size; the last
//! one shorter), the stream's shape depends on the rows the caller may see
//! and nothing else.

use std::sync::Arc;

use datafusion::arrow::compute::BatchCoalescer;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

/// The rows of a batch of a read regrouped from `batch_size`: a quarter of
/// it (16,384 rows by default), about a kept copy's block, so each of a
/// read's endpoints holds little while it regroups (every row is copied
/// once either way).
pub(super) fn piece_rows(batch_size: usize) -> usize {
    (batch_size / 4).max(1)
}

/// `input`'s rows, in order, in batches of exactly `rows` rows but the last.
pub(super) fn even(input: SendableRecordBatchStream, rows: usize) -> SendableRecordBatchStream {
    let schema = input.schema();
    let coalescer = BatchCoalescer::new(Arc::clone(&schema), rows.max(1));
    let batches = futures::stream::try_unfold(
        (input, coalescer, false),
        |(mut input, mut coalescer, mut ended)| async move {
            loop {
                if let Some(batch) = coalescer.next_completed_batch() {
                    return Ok(Some((batch, (input, coalescer, ended))));
                }
                if ended {
                    return Ok(None);
                }
                match input.next().await {
                    Some(batch) => coalescer.push_batch(batch?)?,
                    None => {
                        coalescer.finish_buffered_batch()?;
                        ended = true;
                    }
                }
            }
        },
    );
    Box::pin(RecordBatchStreamAdapter::new(schema, batches))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use futures::TryStreamExt;

    #[tokio::test]
    async fn batches_are_regrouped_to_one_size_in_order() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let mut next = 0i64;
        let batches: Vec<_> = [3usize, 0, 7, 1, 10, 2]
            .into_iter()
            .map(|n| {
                let values: Vec<i64> = (next..next + n as i64).collect();
                next += n as i64;
                Ok(RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![Arc::new(Int64Array::from(values))],
                )
                .unwrap())
            })
            .collect();
        let input: SendableRecordBatchStream = Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&schema),
            futures::stream::iter(batches),
        ));
        let out: Vec<RecordBatch> = even(input, 5).try_collect().await.unwrap();
        assert_eq!(
            out.iter().map(RecordBatch::num_rows).collect::<Vec<_>>(),
            [5, 5, 5, 5, 3]
        );
        let values: Vec<i64> = out
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(values, (0..23).collect::<Vec<_>>());
    }
}
