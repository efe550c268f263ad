//! A read a row policy filters leaves Veil in batches of one size.
//!
//! Behind a row policy, the rows that survive come in batches as the
//! source's row groups and a kept copy's blocks cut them: a batch of 58,000
//! rows where the file's batches hold 65,536 tells the caller that 7,536
//! rows there are hidden from them, and where. Regrouped into batches of
//! one fixed size ([`piece_rows`] of the session's batch size; the last
//! one shorter), the stream's shape depends on the rows the caller may see
//! and nothing else.

use std::collections::VecDeque;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::BatchCoalescer;
use datafusion::arrow::error::ArrowError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

/// The rows of a batch of a read regrouped from `batch_size`: a quarter of
/// it (16,384 rows by default), so each of a read's endpoints holds little
/// while it regroups. A kept copy of the caller's rows is written in
/// blocks of this size, and its reads send them without a copy.
pub(super) fn piece_rows(batch_size: usize) -> usize {
    (batch_size / 4).max(1)
}

/// `input`'s rows, in order, in batches of exactly `rows` rows but the last.
/// Only rows that complete a batch begun in an earlier input batch are
/// copied; whole batches within one input batch go on as slices of it (a
/// kept copy's blocks, written at this size, are not copied at all).
pub(super) fn even(input: SendableRecordBatchStream, rows: usize) -> SendableRecordBatchStream {
    let schema = input.schema();
    let rows = rows.max(1);
    let state = Regrouping {
        input,
        coalescer: BatchCoalescer::new(Arc::clone(&schema), rows),
        ready: VecDeque::new(),
        ended: false,
    };
    let batches = futures::stream::try_unfold(state, move |mut s| async move {
        loop {
            // Slices queued come before anything the coalescer holds.
            if let Some(batch) = s.ready.pop_front() {
                return Ok(Some((batch, s)));
            }
            if let Some(batch) = s.coalescer.next_completed_batch() {
                return Ok(Some((batch, s)));
            }
            if s.ended {
                return Ok(None);
            }
            match s.input.next().await {
                Some(batch) => s.take(batch?, rows)?,
                None => {
                    s.coalescer.finish_buffered_batch()?;
                    s.ended = true;
                }
            }
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, batches))
}

struct Regrouping {
    input: SendableRecordBatchStream,
    /// Rows of a batch begun and not complete (copied into it).
    coalescer: BatchCoalescer,
    /// Batches complete, in order.
    ready: VecDeque<RecordBatch>,
    ended: bool,
}

impl Regrouping {
    fn take(&mut self, mut batch: RecordBatch, rows: usize) -> Result<(), ArrowError> {
        let begun = self.coalescer.get_buffered_rows();
        if begun > 0 {
            let head = (rows - begun).min(batch.num_rows());
            self.coalescer.push_batch(batch.slice(0, head))?;
            batch = batch.slice(head, batch.num_rows() - head);
            while let Some(done) = self.coalescer.next_completed_batch() {
                self.ready.push_back(done);
            }
        }
        let whole = batch.num_rows() / rows * rows;
        for at in (0..whole).step_by(rows) {
            self.ready.push_back(batch.slice(at, rows));
        }
        if batch.num_rows() > whole {
            self.coalescer
                .push_batch(batch.slice(whole, batch.num_rows() - whole))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use futures::TryStreamExt;

    /// Batches of `sizes` rows numbering the rows 0, 1, ...
    fn numbered(sizes: &[usize]) -> Vec<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let mut next = 0i64;
        sizes
            .iter()
            .map(|&n| {
                let values: Vec<i64> = (next..next + n as i64).collect();
                next += n as i64;
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![Arc::new(Int64Array::from(values))],
                )
                .unwrap()
            })
            .collect()
    }

    /// `batches` regrouped by [`even`] into batches of `rows`.
    async fn regrouped(batches: Vec<RecordBatch>, rows: usize) -> Vec<RecordBatch> {
        let schema = batches[0].schema();
        let input: SendableRecordBatchStream = Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(batches.into_iter().map(Ok)),
        ));
        even(input, rows).try_collect().await.unwrap()
    }

    /// The rows' numbers, in order.
    fn numbers(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    fn sizes(batches: &[RecordBatch]) -> Vec<usize> {
        batches.iter().map(RecordBatch::num_rows).collect()
    }

    #[tokio::test]
    async fn batches_are_regrouped_to_one_size_in_order() {
        let out = regrouped(numbered(&[3, 0, 7, 1, 10, 2]), 5).await;
        assert_eq!(sizes(&out), [5, 5, 5, 5, 3]);
        assert_eq!(numbers(&out), (0..23).collect::<Vec<_>>());
    }

    /// Whole batches within an input batch go on as slices of it (its
    /// buffers, not copied); only rows completing a batch begun earlier
    /// are copied; the order holds.
    #[tokio::test]
    async fn whole_batches_are_slices_not_copies() {
        let batches = numbered(&[5, 3, 17, 5, 4, 1, 0, 6]);
        let values_at = |b: &RecordBatch| b.column(0).to_data().buffers()[0].as_ptr() as usize;
        // Where each input batch's values lie.
        let spans: Vec<std::ops::Range<usize>> = batches
            .iter()
            .map(|b| values_at(b)..values_at(b) + b.num_rows() * 8)
            .collect();
        // Held to the end, so no copy's allocation can reuse their memory.
        let held = batches.clone();
        let out = regrouped(batches, 5).await;
        assert_eq!(sizes(&out), [5, 5, 5, 5, 5, 5, 5, 5, 1]);
        // Which input batch each output's values are in (None: copied).
        let from: Vec<Option<usize>> = out
            .iter()
            .map(|b| spans.iter().position(|s| s.contains(&values_at(b))))
            .collect();
        let (copied, input) = (None, Some);
        assert_eq!(
            from,
            [
                input(0),
                copied,
                input(2),
                input(2),
                input(2),
                input(3),
                copied,
                input(7),
                copied
            ]
        );
        assert_eq!(numbers(&out), (0..41).collect::<Vec<_>>());
        drop(held);
    }
}
