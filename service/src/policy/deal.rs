//! A read's rows dealt to its endpoints by position.
//!
//! Under a row policy, endpoints cut by files and row groups would show
//! where the hidden rows are: how the caller's rows fall into them counts
//! the rows hidden in each. Dealt instead, the caller's rows in the files'
//! order are cut into runs of a fixed number of rows, and endpoint `i` of
//! `n` takes runs `i`, `i + n`, `i + 2n`, ... A position counts only rows
//! the caller may see, so which rows an endpoint gets, how many, and in
//! what order depend on those rows alone.
//!
//! Where the rows are dealt: a kept copy holding only the caller's rows
//! deals its own blocks, skipping those no run of the endpoint touches
//! (`catalog::copy_scan`); otherwise the policy barrier deals the view's
//! rows, on one partition (`barrier`). Both count the same rows (the
//! view's, before any user expression), so endpoints of one read served
//! either way still split it exactly.

use datafusion::arrow::array::RecordBatch;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use std::ops::Range;

/// Which runs of the caller's rows one endpoint takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowDeal {
    index: u64,
    count: u64,
    rows: u64,
}

impl RowDeal {
    /// Endpoint `index` of `count`, runs of `rows` rows; `None` unless
    /// `index < count` and `rows > 0`.
    pub fn new(index: u64, count: u64, rows: u64) -> Option<Self> {
        (index < count && rows > 0).then_some(Self { index, count, rows })
    }

    /// As a ticket names it.
    pub fn from_proto(d: &veil_proto::Deal) -> Option<Self> {
        Self::new(u64::from(d.index), u64::from(d.count), d.rows)
    }

    /// The positions within `span` this endpoint takes, in order.
    pub fn runs(&self, span: Range<u64>) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        if span.start >= span.end {
            return out;
        }
        let first = span.start / self.rows;
        // The first run at or after `first` that is this endpoint's.
        let mut run = first + (self.index + self.count - first % self.count) % self.count;
        while let Some(start) = run.checked_mul(self.rows).filter(|s| *s < span.end) {
            let end = start.saturating_add(self.rows).min(span.end);
            out.push(start.max(span.start)..end);
            run = match run.checked_add(self.count) {
                Some(r) => r,
                None => break,
            };
        }
        out
    }

    /// `input`'s rows (all of one partition, in order) that this endpoint
    /// takes, in order.
    pub fn stream(self, input: SendableRecordBatchStream) -> SendableRecordBatchStream {
        let schema = input.schema();
        let dealt = input
            .scan(0u64, move |at, batch| {
                let out: Result<Vec<RecordBatch>> = batch.map(|b| {
                    let start = *at;
                    *at += b.num_rows() as u64;
                    self.runs(start..*at)
                        .into_iter()
                        .map(|r| b.slice((r.start - start) as usize, (r.end - r.start) as usize))
                        .collect()
                });
                futures::future::ready(Some(out))
            })
            .flat_map(|out| {
                futures::stream::iter(match out {
                    Ok(batches) => batches.into_iter().map(Ok).collect::<Vec<_>>(),
                    Err(e) => vec![Err(e)],
                })
            });
        Box::pin(RecordBatchStreamAdapter::new(schema, dealt))
    }
}

/// The error for a dealt read that would run on several partitions (its
/// positions would not be the files' order).
pub fn several_partitions() -> DataFusionError {
    DataFusionError::Internal("a read dealt to endpoints must run on one partition".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every position goes to exactly one endpoint, in runs of the
    /// deal's size, round-robin, whatever the spans it is asked about.
    #[test]
    fn runs_partition_the_positions_round_robin() {
        for count in 1..5u64 {
            for rows in [1u64, 3, 7] {
                let mut owner = vec![None; 100];
                for index in 0..count {
                    let deal = RowDeal::new(index, count, rows).unwrap();
                    // Asked span by span, cut at uneven places.
                    let mut at = 0u64;
                    for len in [0u64, 5, 1, 13, 2, 40, 39] {
                        for r in deal.runs(at..at + len) {
                            assert!(r.start >= at && r.end <= at + len && r.start < r.end);
                            for p in r {
                                assert_eq!(owner[p as usize], None, "position {p} dealt twice");
                                owner[p as usize] = Some(index);
                            }
                        }
                        at += len;
                    }
                }
                for (p, o) in owner.iter().enumerate() {
                    assert_eq!(*o, Some((p as u64 / rows) % count), "position {p}");
                }
            }
        }
    }

    #[test]
    fn bad_deals_are_refused() {
        assert!(RowDeal::new(2, 2, 10).is_none());
        assert!(RowDeal::new(0, 0, 10).is_none());
        assert!(RowDeal::new(0, 1, 0).is_none());
        let huge = RowDeal::new(1, 2, u64::MAX / 2).unwrap();
        assert_eq!(huge.runs(0..u64::MAX), vec![u64::MAX / 2..u64::MAX - 1]);
    }

    #[tokio::test]
    async fn a_stream_is_dealt_across_its_batches() {
        use datafusion::arrow::array::{AsArray, Int64Array};
        use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
        use futures::TryStreamExt;
        use std::sync::Arc;
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let mut next = 0i64;
        let batches: Vec<Result<RecordBatch>> = [4usize, 0, 9, 1, 6]
            .into_iter()
            .map(|n| {
                let values: Vec<i64> = (next..next + n as i64).collect();
                next += n as i64;
                Ok(RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![Arc::new(Int64Array::from(values))],
                )?)
            })
            .collect();
        let input: SendableRecordBatchStream = Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&schema),
            futures::stream::iter(batches),
        ));
        let out: Vec<RecordBatch> = RowDeal::new(1, 3, 3)
            .unwrap()
            .stream(input)
            .try_collect()
            .await
            .unwrap();
        let values: Vec<i64> = out
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        assert_eq!(values, [3, 4, 5, 12, 13, 14]);
        assert!(out.iter().all(|b| b.num_rows() > 0));
    }
}
