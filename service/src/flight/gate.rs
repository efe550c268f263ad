//! A read's messages, held back until its start is on record.
//!
//! Audit before data: nothing of a read leaves Veil before the audit event
//! of its start is durable. Waiting for that commit before running the
//! plan would add the commit's time to every read's first batch; instead
//! the plan runs while the event commits (a kept copy opens, its first
//! block is read), and its first messages wait here, at most [`HELD`] of
//! them, until the commit is done. If the commit fails the read ends with
//! that error and the held messages are dropped unsent.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};
use tonic::Status;

use super::status::to_status;
use crate::error::Result;

/// Most messages computed ahead of the start's commit (the schema and the
/// first batch).
pub const HELD: usize = 2;

/// `inner`'s messages, none before `recorded` resolves.
pub struct Gated<T> {
    recorded: Option<BoxFuture<'static, Result<()>>>,
    inner: Option<BoxStream<'static, std::result::Result<T, Status>>>,
    held: VecDeque<std::result::Result<T, Status>>,
}

impl<T> Gated<T> {
    pub fn new(
        recorded: BoxFuture<'static, Result<()>>,
        inner: BoxStream<'static, std::result::Result<T, Status>>,
    ) -> Self {
        Self {
            recorded: Some(recorded),
            inner: Some(inner),
            held: VecDeque::with_capacity(HELD),
        }
    }
}

impl<T> std::fmt::Debug for Gated<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gated")
            .field("recorded", &self.recorded.is_none())
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

// Held messages are moved, never pinned.
impl<T> Unpin for Gated<T> {}

impl<T> Stream for Gated<T> {
    type Item = std::result::Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(recorded) = &mut this.recorded {
            // Work ahead while the start commits.
            while this.held.len() < HELD {
                let Some(inner) = &mut this.inner else { break };
                match inner.poll_next_unpin(cx) {
                    Poll::Ready(Some(item)) => {
                        let failed = item.is_err();
                        this.held.push_back(item);
                        if failed {
                            this.inner = None;
                        }
                    }
                    Poll::Ready(None) => this.inner = None,
                    Poll::Pending => break,
                }
            }
            match recorded.poll_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => this.recorded = None,
                Poll::Ready(Err(e)) => {
                    this.recorded = None;
                    this.inner = None;
                    this.held.clear();
                    return Poll::Ready(Some(Err(to_status(&e))));
                }
            }
        }
        if let Some(item) = this.held.pop_front() {
            return Poll::Ready(Some(item));
        }
        match &mut this.inner {
            Some(inner) => {
                let next = inner.poll_next_unpin(cx);
                if matches!(next, Poll::Ready(None)) {
                    this.inner = None;
                }
                next
            }
            None => Poll::Ready(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::VeilError;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::oneshot;

    /// A stream of `n` numbers counting how many were taken from it.
    fn counted(
        n: usize,
    ) -> (
        Arc<AtomicUsize>,
        BoxStream<'static, std::result::Result<usize, Status>>,
    ) {
        let taken = Arc::new(AtomicUsize::new(0));
        let t = Arc::clone(&taken);
        let stream = futures::stream::iter(0..n)
            .map(move |i| {
                t.fetch_add(1, Ordering::SeqCst);
                Ok(i)
            })
            .boxed();
        (taken, stream)
    }

    #[tokio::test]
    async fn nothing_leaves_before_the_start_is_recorded() {
        let (commit, committed) = oneshot::channel::<Result<()>>();
        let (taken, inner) = counted(10);
        let mut gated = Gated::new(
            async move {
                committed
                    .await
                    .unwrap_or(Err(VeilError::Internal("gone".into())))
            }
            .boxed(),
            inner,
        );
        // Polled while the start commits: work goes ahead, nothing leaves.
        for _ in 0..3 {
            assert!(futures::poll!(gated.next()).is_pending());
        }
        assert_eq!(
            taken.load(Ordering::SeqCst),
            HELD,
            "at most HELD computed ahead"
        );
        commit.send(Ok(())).unwrap();
        let all: Vec<usize> = gated.map(|r| r.unwrap()).collect().await;
        assert_eq!(all, (0..10).collect::<Vec<_>>(), "in order, none lost");
    }

    #[tokio::test]
    async fn a_failed_record_ends_the_read_with_its_error_and_sends_nothing() {
        let (taken, inner) = counted(10);
        let gated = Gated::new(
            async {
                Err(VeilError::Unavailable(
                    "the audit log cannot be written".into(),
                ))
            }
            .boxed(),
            inner,
        );
        let out: Vec<_> = gated.collect().await;
        assert_eq!(out.len(), 1);
        let status = out[0].as_ref().unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(taken.load(Ordering::SeqCst) <= HELD);
    }

    #[tokio::test]
    async fn an_error_or_end_computed_ahead_still_waits_for_the_record() {
        let inner = futures::stream::iter(vec![
            Ok(1),
            Err(Status::internal("the source failed")),
            Ok(2),
        ])
        .boxed();
        let (commit, committed) = oneshot::channel::<Result<()>>();
        let mut gated = Gated::new(async move { committed.await.unwrap() }.boxed(), inner);
        assert!(futures::poll!(gated.next()).is_pending());
        commit.send(Ok(())).unwrap();
        assert_eq!(gated.next().await.unwrap().unwrap(), 1);
        assert_eq!(
            gated.next().await.unwrap().unwrap_err().code(),
            tonic::Code::Internal
        );
        assert!(gated.next().await.is_none(), "nothing after the error");

        let empty = futures::stream::iter(Vec::<std::result::Result<u8, Status>>::new()).boxed();
        let (commit, committed) = oneshot::channel::<Result<()>>();
        let mut gated = Gated::new(async move { committed.await.unwrap() }.boxed(), empty);
        assert!(futures::poll!(gated.next()).is_pending());
        commit.send(Ok(())).unwrap();
        assert!(gated.next().await.is_none());
    }
}
