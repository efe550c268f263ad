//! Group commit: one task per node, on a thread of its own, appends audit
//! events.
//!
//! Every caller of [`WriterHandle::append`] queues its event with a
//! one-shot reply and waits. The writer takes the first queued event plus
//! everything else already queued (up to [`MAX_GROUP`]), appends them in
//! one store transaction (one commit, one fsync or WAL flush for the whole
//! group), and only then answers each caller. So an event is durable before
//! its caller proceeds (a read's first batch waits for its start event),
//! while under load one commit carries many events: throughput grows with
//! concurrency instead of being bounded by fsyncs per second. If the
//! append fails, every caller of that group gets the error (and serves
//! nothing).
//!
//! Events nothing waits on (a read's end, recorded after its last batch)
//! are appended with [`Durability::WithNext`]: a group of only those is
//! committed without its own flush, and is on disk with the next durable
//! group (appends are ordered) or within [`SYNC_WITHIN`], whichever comes
//! first. So a client's next request doesn't wait behind the flush of its
//! previous read's end.
//!
//! The writer also owns the node's chain head as last committed and writes
//! head checkpoints: every `interval` while events arrive, and once more
//! on shutdown.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc, oneshot, watch};

use super::chain::{AuditSealer, Checkpoint, CheckpointKind};
use super::checkpoint::CheckpointSink;
use crate::error::{Result, VeilError};
use crate::model::audit::{AuditEvent, ChainHead};
use crate::store::{AuditChainSealer, Durability, Store};

/// Most events one commit carries.
const MAX_GROUP: usize = 1024;
/// Longest an event appended without its own flush waits for one.
pub(super) const SYNC_WITHIN: Duration = Duration::from_secs(1);
/// Events waiting for the writer before callers wait to queue.
const QUEUE: usize = 16 * 1024;

struct Pending {
    event: AuditEvent,
    durability: Durability,
    done: oneshot::Sender<Result<()>>,
}

/// Queues events for the writer.
#[derive(Debug, Clone)]
pub(super) struct WriterHandle {
    queue: mpsc::Sender<Pending>,
    stop: Arc<watch::Sender<bool>>,
    /// Resolves when the writer has stopped.
    task: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pending({})", self.event.action)
    }
}

pub(super) fn spawn(
    store: Arc<dyn Store>,
    sealer: AuditSealer,
    checkpoints: CheckpointSink,
    interval: Duration,
) -> WriterHandle {
    let (queue, rx) = mpsc::channel(QUEUE);
    let (stop, stopped) = watch::channel(false);
    let writer = Writer {
        store,
        sealer: Arc::new(sealer),
        checkpoints,
        interval,
        head: None,
        checkpointed: None,
        unsynced: None,
    };
    // The writer has a thread of its own, with a runtime of its own: a
    // store that can append on the calling thread (SQLite) commits right
    // there, so a durable event costs one hand-off to this thread and one
    // back, instead of also going to the blocking pool and back (each
    // hand-off wakes a parked thread: on an idle virtual machine, tens to
    // hundreds of microseconds; benches/README.md, "Audit commits").
    let (finished, task) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("veil-audit-writer".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(writer.run(rx, stopped)),
                // Callers then see the queue closed: `UNAVAILABLE`.
                Err(e) => tracing::error!(error = %e, "the audit writer could not start"),
            }
            let _ = finished.send(());
        });
    if let Err(e) = thread {
        tracing::error!(error = %e, "the audit writer's thread could not start");
    }
    WriterHandle {
        queue,
        stop: Arc::new(stop),
        task: Arc::new(Mutex::new(Some(task))),
    }
}

impl WriterHandle {
    /// Queue `event` and wait until it is committed (or failed), on disk
    /// as `durability` says.
    pub(super) async fn append(&self, event: AuditEvent, durability: Durability) -> Result<()> {
        self.queued(event, durability).await?.await
    }

    /// Queue `event` and return once it is queued: the returned future
    /// resolves when its group is committed. Events are committed in the
    /// order they were queued.
    pub(super) async fn queued(
        &self,
        event: AuditEvent,
        durability: Durability,
    ) -> Result<impl Future<Output = Result<()>> + Send + 'static> {
        let (done, reply) = oneshot::channel();
        let stopped = || VeilError::Unavailable("the audit writer has stopped".into());
        self.queue
            .send(Pending {
                event,
                durability,
                done,
            })
            .await
            .map_err(|_| stopped())?;
        Ok(async move { reply.await.map_err(|_| stopped())? })
    }

    /// Commit what is queued, checkpoint, and stop.
    pub(super) async fn shutdown(&self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

struct Writer {
    store: Arc<dyn Store>,
    sealer: Arc<dyn AuditChainSealer>,
    checkpoints: CheckpointSink,
    interval: Duration,
    /// The head after our last commit.
    head: Option<ChainHead>,
    /// The sequence number last checkpointed.
    checkpointed: Option<u64>,
    /// When a group was committed without a flush that no flush has
    /// covered since.
    unsynced: Option<tokio::time::Instant>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Pending>, mut stop: watch::Receiver<bool>) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        let mut tick = tokio::time::interval(self.interval.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let sync_due = self.unsynced.map(|t| t + SYNC_WITHIN);
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                next = rx.recv() => match next {
                    Some(p) => group.push(p),
                    None => break,
                },
                _ = async {
                    match sync_due {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.sync().await;
                    continue;
                }
                _ = tick.tick() => {
                    self.checkpoint().await;
                    continue;
                }
            }
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(p) => group.push(p),
                    Err(_) => break,
                }
            }
            self.commit(&mut group).await;
            if self.interval.is_zero() {
                self.checkpoint().await;
            }
        }
        // Shutdown: refuse new events, commit those already queued.
        rx.close();
        while let Some(p) = rx.recv().await {
            group.push(p);
            if group.len() == MAX_GROUP {
                self.commit(&mut group).await;
            }
        }
        self.commit(&mut group).await;
        self.sync().await;
        self.checkpoint().await;
    }

    /// Flush what was committed without a flush.
    async fn sync(&mut self) {
        if self.unsynced.is_none() {
            return;
        }
        match self.store.sync_audit().await {
            Ok(()) => self.unsynced = None,
            Err(e) => {
                // Tried again at the next chance.
                tracing::error!(error = %e, "audit events could not be flushed to disk");
                self.unsynced = Some(tokio::time::Instant::now());
            }
        }
    }

    async fn commit(&mut self, group: &mut Vec<Pending>) {
        if group.is_empty() {
            return;
        }
        // A group is flushed if any of its events must be.
        let durability = match group.iter().any(|p| p.durability == Durability::Now) {
            true => Durability::Now,
            false => Durability::WithNext,
        };
        let (events, replies): (Vec<AuditEvent>, Vec<_>) =
            group.drain(..).map(|p| (p.event, p.done)).unzip();
        let outcome = match self
            .store
            .append_audit_blocking(&self.sealer, &events, durability)
        {
            Some(outcome) => outcome,
            None => {
                self.store
                    .append_audit(&self.sealer, &events, durability)
                    .await
            }
        };
        match &outcome {
            Ok(head) => {
                self.head = Some(head.clone());
                match durability {
                    Durability::Now => self.unsynced = None,
                    Durability::WithNext => {
                        self.unsynced.get_or_insert_with(tokio::time::Instant::now);
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events = events.len(), "audit group commit failed")
            }
        }
        for done in replies {
            let _ = done.send(outcome.as_ref().map(|_| ()).map_err(Clone::clone));
        }
    }

    /// Write a head checkpoint if the head moved since the last one; never
    /// of events not yet on disk (a checkpoint names a head the store must
    /// hold after any crash).
    async fn checkpoint(&mut self) {
        self.sync().await;
        if self.unsynced.is_some() {
            return;
        }
        let Some(head) = &self.head else { return };
        if self.checkpointed == Some(head.seq) {
            return;
        }
        let cp = Checkpoint::of(CheckpointKind::Head, &head.node_id, head.seq, &head.mac);
        match self.checkpoints.write(&cp).await {
            Ok(()) => self.checkpointed = Some(head.seq),
            // Serving goes on (every event is still in the chain); the next
            // tick tries again.
            Err(e) => tracing::error!(error = %e, "audit checkpoint not written"),
        }
    }
}
