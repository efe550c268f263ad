//! Where queries execute: threads of their own, never the ones that serve
//! the Flight port.
//!
//! DataFusion runs an operator's work inside one `poll` of its stream, and
//! some operators do a great deal of it per poll: a nested-loop join whose
//! filter rarely matches loops over every pair of rows before it returns
//! anything. Polled on the server's own runtime, such a query held its
//! worker threads for minutes: other users' requests, new connections and
//! the query's own cancellation all waited. So every query is driven on
//! the **query runtime** (`veil-query` threads, `engine.query_threads`),
//! and the Flight side only receives its batches through a channel:
//!
//! * a long poll holds one query thread, which the operating system
//!   shares with every other thread; the Flight port keeps answering;
//! * a user's queries compute at most `engine.queries_per_user` at a time
//!   ([`Turns`]): a query takes a turn to compute its next batch and gives
//!   it back before the batch is sent, so a reader that is slow to take
//!   its batches holds no turn, and one user's heavy queries leave the
//!   query threads to everyone else;
//! * the driver yields after each batch, so queries take turns on the
//!   threads too;
//! * a reader waits for a query's batches at most `engine.query_timeout_secs`
//!   in all (time its client takes to read them doesn't count); then the
//!   read ends with `RESOURCE_EXHAUSTED`, measured by the reader's own
//!   timer, so even a poll that runs on can't hold it;
//! * when the read ends or its reader goes away (its stream is dropped)
//!   the driver is aborted and the query's stop flag set: a poll in
//!   progress, on the driver or on a task an operator spawned, ends at its
//!   next bounded function call ([`super::stoppable`]) instead of running
//!   on with its user's turn.
//!
//! Rust can't interrupt a poll from outside, so a poll that computes for
//! long without calling any function (a join comparing columns over many
//! pairs of rows) still runs to its end on its query thread, while
//! everything else is served.
//!
//! The runtime lives as long as the process, so connections its tasks
//! open (object stores, databases) outlive any one query.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{FutureExt, StreamExt};
use std::panic::AssertUnwindSafe;
use tokio::runtime::Runtime;
use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument;

use crate::error::{Result, VeilError};
use crate::sql::planner_pool::UserSemaphores;
use crate::sql::stop::{Stop, Work};

/// Query threads when the config doesn't say: four per core, at least
/// eight, so a few long polls leave threads for everyone else.
pub fn default_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 4).max(8)
}

/// A query thread's stack: a poll recurses through every operator of the
/// plan (and its stop scope), and plans may nest deeply (`sql::limits`).
/// Reserved, not committed: only the pages a poll touches are resident.
const QUERY_STACK_BYTES: usize = 16 * 1024 * 1024;

static THREADS: AtomicUsize = AtomicUsize::new(0);
static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();

/// Set the number of query threads (0: the default). Takes effect only
/// before the first query runs.
pub fn configure(threads: usize) {
    THREADS.store(threads, Ordering::Relaxed);
}

fn runtime() -> Result<&'static Runtime> {
    RUNTIME
        .get_or_init(|| {
            let threads = match THREADS.load(Ordering::Relaxed) {
                0 => default_threads(),
                n => n,
            };
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("veil-query")
                .thread_stack_size(QUERY_STACK_BYTES)
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the query threads: {e}"))
        })
        .as_ref()
        .map_err(|e| VeilError::Unavailable(e.clone()))
}

/// Hand the pages every query thread's heap holds free back to the
/// kernel, and those of the calling thread and of mimalloc's arenas
/// ([`crate::memory::return_freed_pages`]). Each thread's heap keeps the
/// pages it freed, and those other threads freed into it, until that
/// thread collects them, and an idle thread never does, so each collects
/// its own ([`on_each_thread`]): the query threads, and the workers of the
/// runtime this is called from (the node's serving runtime, whose workers
/// run the kept copies' builds: without this, what a build allocated there
/// stayed resident until the next reads). For the node's idle purge, on a
/// blocking thread (never a worker of either runtime): it holds idle
/// workers up to [`MEETING`], and returns within two seconds.
pub fn return_freed_pages() {
    let serving = tokio::runtime::Handle::try_current().ok();
    return_freed_pages_reaching(serving.as_ref());
}

/// [`return_freed_pages`], with `serving`'s workers as the calling
/// runtime's; returns the threads reached besides the calling one.
fn return_freed_pages_reaching(
    serving: Option<&tokio::runtime::Handle>,
) -> Vec<std::thread::ThreadId> {
    crate::memory::return_freed_pages();
    let mut reached = Vec::new();
    if let Some(Ok(rt)) = RUNTIME.get() {
        reached.extend(on_each_thread(
            rt.handle(),
            crate::memory::return_freed_pages,
        ));
    }
    if let Some(serving) = serving
        && serving.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
    {
        reached.extend(on_each_thread(serving, crate::memory::return_freed_pages));
    }
    reached
}

/// How long [`on_each_thread`] holds a thread waiting for the others: a
/// busy one may not come.
const MEETING: Duration = Duration::from_millis(100);

/// Run `work` once on each of `rt`'s worker threads that is free: one task
/// per worker, each held until all have started (at most [`MEETING`]) so
/// that no two share a thread. Waits at most a second for them; returns
/// the threads that ran it.
fn on_each_thread(rt: &tokio::runtime::Handle, work: fn()) -> Vec<std::thread::ThreadId> {
    use std::sync::{Condvar, Mutex, PoisonError};
    let threads = rt.metrics().num_workers();
    let arrived = Arc::new((Mutex::new(0usize), Condvar::new()));
    let (done, ran) = std::sync::mpsc::channel();
    for _ in 0..threads {
        let arrived = Arc::clone(&arrived);
        let done = done.clone();
        rt.spawn(async move {
            let (count, all_here) = &*arrived;
            let deadline = Instant::now() + MEETING;
            let mut n = count.lock().unwrap_or_else(PoisonError::into_inner);
            *n += 1;
            all_here.notify_all();
            while *n < threads {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                n = all_here
                    .wait_timeout(n, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            drop(n);
            work();
            let _ = done.send(std::thread::current().id());
        });
    }
    drop(done);
    let until = Instant::now() + Duration::from_secs(1);
    let mut on = Vec::new();
    while on.len() < threads {
        match ran.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(thread) => on.push(thread),
            Err(_) => break,
        }
    }
    on
}

/// Each user's turns to compute ([`execute`]).
#[derive(Debug)]
pub struct Turns(UserSemaphores);

impl Turns {
    pub fn new(per_user: usize) -> Self {
        Self(UserSemaphores::new(per_user))
    }
}

/// How one query executes: whose turns it takes, and for how long it may
/// compute (`None`: unbounded).
#[derive(Debug, Clone)]
pub struct Bounds {
    pub turns: Arc<Semaphore>,
    pub limit: Option<Duration>,
}

impl Bounds {
    pub fn new(turns: &Turns, user: &str, limit_secs: u64) -> Self {
        Self {
            turns: turns.0.of(user),
            limit: (limit_secs > 0).then(|| Duration::from_secs(limit_secs)),
        }
    }
}

/// The error of a read that waited longer than it may for its batches.
fn out_of_time(limit: Duration) -> DataFusionError {
    DataFusionError::External(Box::new(VeilError::ResourceExhausted(format!(
        "the query took longer than Veil allows ({} s, engine.query_timeout_secs, counting the wait for your other queries to finish their batches): ask for less (a filter, fewer rows, cheaper expressions or joins)",
        limit.as_secs()
    ))))
}

/// Execute `plan` on the query runtime under `bounds`; its batches arrive
/// through the returned stream, and dropping that stream stops it. `keep`
/// is held until the query ends (the kept copies it reads).
pub fn execute(
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
    bounds: Bounds,
    keep: impl Send + 'static,
) -> Result<SendableRecordBatchStream> {
    let rt = runtime()?;
    let schema = plan.schema();
    let stop = Stop::new(Work::Query);
    let plan = super::stoppable::stoppable(plan, &stop)
        .map_err(|e| VeilError::internal("making a query stoppable", e))?;
    // One batch waits for the reader ([`drive`]).
    let (tx, rx) = mpsc::channel::<DfResult<RecordBatch>>(1);
    let turns = bounds.turns;
    let run = async move {
        let _keep = keep;
        // Operators may start tasks as they execute: on these threads.
        let ran = AssertUnwindSafe(async {
            match datafusion::physical_plan::execute_stream(plan, task) {
                Ok(stream) => drive(stream, &tx, turns).await,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                }
            }
        })
        .catch_unwind()
        .await;
        // A panic must end the read with an error, never look like its end.
        if ran.is_err() {
            tracing::error!("a panic occurred while executing a query");
            let _ = tx
                .send(Err(DataFusionError::External(Box::new(
                    VeilError::Internal(
                        "the query failed unexpectedly; the error was logged".into(),
                    ),
                ))))
                .await;
        }
    };
    let driver = rt.spawn(run.instrument(tracing::Span::current()));
    let batches = Batches {
        rx,
        driver: driver.abort_handle(),
        stop,
        limit: bounds.limit,
        waited: Duration::ZERO,
        waiting: None,
        done: false,
    };
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
}

/// Poll `stream`, one turn per batch, and hand each batch to `tx` until it
/// ends, fails or its reader leaves.
async fn drive(
    mut stream: SendableRecordBatchStream,
    tx: &mpsc::Sender<DfResult<RecordBatch>>,
    turns: Arc<Semaphore>,
) {
    loop {
        // The next batch is computed once the reader has taken the last
        // one: at most one batch waits for it besides the one it sends
        // (each can be megabytes, times every endpoint being read).
        let Ok(slot) = tx.reserve().await else { return };
        let Ok(turn) = Arc::clone(&turns).acquire_owned().await else {
            return;
        };
        let next = stream.next().await;
        drop(turn);
        let Some(item) = next else { return };
        let failed = item.is_err();
        slot.send(item);
        if failed {
            return;
        }
        // Others' queries get their turn between batches.
        tokio::task::yield_now().await;
    }
}

/// A driven query's batches, as its reader takes them. The reader's own
/// timer measures how long it waited for them (a computing thread can't
/// be interrupted, the reader can stop waiting); dropping this stops the
/// query.
struct Batches {
    rx: mpsc::Receiver<DfResult<RecordBatch>>,
    driver: tokio::task::AbortHandle,
    /// The query's stop flag, set with the driver's abort.
    stop: Arc<Stop>,
    limit: Option<Duration>,
    /// Time waited for batches before the current wait.
    waited: Duration,
    /// The current wait: since when, and the timer of the time left.
    waiting: Option<(Instant, Pin<Box<tokio::time::Sleep>>)>,
    done: bool,
}

impl futures::Stream for Batches {
    type Item = DfResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = this.rx.poll_recv(cx) {
            if let Some((since, _)) = this.waiting.take() {
                this.waited += since.elapsed();
            }
            this.done = item.is_none();
            return Poll::Ready(item);
        }
        let Some(limit) = this.limit else {
            return Poll::Pending;
        };
        let waited = this.waited;
        let (_, timer) = this.waiting.get_or_insert_with(|| {
            let now = Instant::now();
            let left = limit.saturating_sub(waited);
            (now, Box::pin(tokio::time::sleep_until((now + left).into())))
        });
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.done = true;
                this.stop.set();
                this.driver.abort();
                Poll::Ready(Some(Err(out_of_time(limit))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        self.stop.set();
        self.driver.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
    use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU64;

    /// One partition whose stream is given.
    struct Given(SchemaRef, Mutex<Option<SendableRecordBatchStream>>);

    impl std::fmt::Debug for Given {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Given")
        }
    }

    impl PartitionStream for Given {
        fn schema(&self) -> &SchemaRef {
            &self.0
        }

        fn execute(&self, _: Arc<TaskContext>) -> SendableRecordBatchStream {
            self.1.lock().unwrap().take().expect("executed once")
        }
    }

    fn bounds(limit: Option<Duration>) -> Bounds {
        Bounds {
            turns: Arc::new(Semaphore::new(4)),
            limit,
        }
    }

    /// `plan` executing under `bounds`, as a read's stream.
    fn start(plan: Arc<dyn ExecutionPlan>, bounds: Bounds) -> SendableRecordBatchStream {
        execute(plan, Arc::new(TaskContext::default()), bounds, ()).unwrap()
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]))
    }

    /// A plan of `n` one-row batches, `before(i)` called as batch `i` is
    /// computed (in the poll that makes it).
    fn plan_of(n: usize, before: impl Fn(usize) + Send + 'static) -> Arc<dyn ExecutionPlan> {
        let schema = schema();
        let s = Arc::clone(&schema);
        let stream = futures::stream::iter(0..n).map(move |i| {
            before(i);
            RecordBatch::try_new(
                Arc::clone(&s),
                vec![Arc::new(Int64Array::from(vec![i as i64]))],
            )
            .map_err(Into::into)
        });
        let given: SendableRecordBatchStream =
            Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&schema), stream));
        let partition = Arc::new(Given(Arc::clone(&schema), Mutex::new(Some(given))));
        let plan = StreamingTableExec::try_new(schema, vec![partition], None, vec![], false, None)
            .unwrap();
        Arc::new(plan)
    }

    /// A plan of `n` batches, each taking `each` of a thread's time to
    /// compute (a blocking sleep: the poll does not return meanwhile),
    /// counting how many were computed.
    fn slow_plan(n: usize, each: Duration) -> (Arc<AtomicU64>, Arc<dyn ExecutionPlan>) {
        let computed = Arc::new(AtomicU64::new(0));
        let c = Arc::clone(&computed);
        let plan = plan_of(n, move |_| {
            std::thread::sleep(each);
            c.fetch_add(1, Ordering::SeqCst);
        });
        (computed, plan)
    }

    /// A plan of `partitions` partitions whose one batch each computes,
    /// inside one poll, until its query is stopped (at most 60 s): how many
    /// started, and how many saw the stop.
    fn spinning_plan(
        partitions: usize,
    ) -> (Arc<AtomicU64>, Arc<AtomicU64>, Arc<dyn ExecutionPlan>) {
        let (started, stopped) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let schema = schema();
        let parts = (0..partitions)
            .map(|_| {
                let (started, stopped) = (Arc::clone(&started), Arc::clone(&stopped));
                let s = Arc::clone(&schema);
                let stream = futures::stream::iter(0..1).map(move |i: i64| {
                    started.fetch_add(1, Ordering::SeqCst);
                    let since = Instant::now();
                    while since.elapsed() < Duration::from_secs(60) {
                        if crate::sql::stop::stopped() {
                            stopped.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    RecordBatch::try_new(Arc::clone(&s), vec![Arc::new(Int64Array::from(vec![i]))])
                        .map_err(Into::into)
                });
                let given: SendableRecordBatchStream =
                    Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&schema), stream));
                Arc::new(Given(Arc::clone(&schema), Mutex::new(Some(given)))) as _
            })
            .collect();
        let plan = StreamingTableExec::try_new(schema, parts, None, vec![], false, None).unwrap();
        (started, stopped, Arc::new(plan))
    }

    /// Waits (at most 10 s) until `n` reaches `at_least`.
    async fn reaches(n: &AtomicU64, at_least: u64) -> u64 {
        for _ in 0..1000 {
            if n.load(Ordering::SeqCst) >= at_least {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        n.load(Ordering::SeqCst)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_reader_going_away_stops_the_polls_in_progress() {
        // One partition polled by the driver, and two polled by tasks the
        // plan's merge spawned.
        for partitions in [1, 2] {
            let (started, stopped, plan) = spinning_plan(partitions);
            let turns = Turns::new(2);
            let bounds = Bounds::new(&turns, "mallory", 0);
            let mut stream = start(plan, bounds.clone());
            let _ = futures::poll!(stream.next());
            assert_eq!(
                reaches(&started, partitions as u64).await,
                partitions as u64
            );
            assert_eq!(
                stopped.load(Ordering::SeqCst),
                0,
                "nothing stops on its own"
            );
            drop(stream);
            assert_eq!(
                reaches(&stopped, partitions as u64).await,
                partitions as u64,
                "every poll in progress stopped"
            );
            // The user's turn is back.
            let turn = tokio::time::timeout(Duration::from_secs(10), bounds.turns.acquire_many(2));
            assert!(turn.await.is_ok(), "the stopped query gave its turn back");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn running_out_of_time_stops_the_poll_in_progress() {
        let (started, stopped, plan) = spinning_plan(2);
        let items: Vec<_> = start(plan, bounds(Some(Duration::from_millis(300))))
            .collect()
            .await;
        assert_eq!(started.load(Ordering::SeqCst), 2);
        assert_eq!(items.len(), 1);
        assert!(items[0].is_err());
        assert_eq!(reaches(&stopped, 2).await, 2, "both polls stopped");
    }

    #[test]
    fn freed_pages_are_collected_on_every_query_thread() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .build()
            .unwrap();
        // Each worker has computed (and so holds a heap of its own).
        let allocated: Vec<_> = (0..16)
            .map(|i| rt.spawn(async move { vec![i as u8; 1 << 20].len() }))
            .collect();
        for a in allocated {
            assert_eq!(rt.block_on(a).unwrap(), 1 << 20);
        }
        let mut on = on_each_thread(rt.handle(), crate::memory::return_freed_pages);
        on.sort_by_key(|t| format!("{t:?}"));
        on.dedup();
        assert_eq!(on.len(), 4, "once on each worker: {on:?}");
        // A worker that is busy is left out, and the rest still collect.
        let (busy, release) = std::sync::mpsc::channel::<()>();
        rt.spawn(async move {
            let _ = release.recv_timeout(Duration::from_secs(10));
        });
        std::thread::sleep(Duration::from_millis(50));
        let on = on_each_thread(rt.handle(), || {});
        assert!((3..=4).contains(&on.len()), "{on:?}");
        drop(busy);
    }

    #[test]
    fn the_idle_purge_reaches_the_calling_runtimes_workers() {
        // The serving runtime's workers run kept copies' builds: the purge,
        // called on one of its blocking threads, collects on each of them.
        let serving = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(3)
            .build()
            .unwrap();
        let workers = on_each_thread(serving.handle(), || {});
        assert_eq!(workers.len(), 3);
        let reached = serving
            .block_on(serving.spawn_blocking(|| {
                let here = tokio::runtime::Handle::current();
                (
                    return_freed_pages_reaching(Some(&here)),
                    std::thread::current().id(),
                )
            }))
            .unwrap();
        for w in &workers {
            assert!(reached.0.contains(w), "{w:?} not reached: {:?}", reached.0);
        }
        assert!(!reached.0.contains(&reached.1), "not the calling thread");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_long_poll_does_not_hold_the_callers_thread() {
        let (computed, plan) = slow_plan(3, Duration::from_millis(300));
        let mut stream = start(plan, bounds(None));
        // The caller's only thread keeps running while the batches compute.
        let ticks = Arc::new(AtomicU64::new(0));
        let t = Arc::clone(&ticks);
        let ticker = tokio::spawn(async move {
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                t.fetch_add(1, Ordering::SeqCst);
            }
        });
        let mut rows = Vec::new();
        while let Some(b) = stream.next().await {
            let b = b.unwrap();
            rows.push(
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .value(0),
            );
        }
        ticker.await.unwrap();
        assert_eq!(rows, vec![0, 1, 2], "every batch, in order");
        assert_eq!(ticks.load(Ordering::SeqCst), 20);
        assert_eq!(computed.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_reader_stops_the_query() {
        let (computed, plan) = slow_plan(1000, Duration::from_millis(20));
        let mut stream = start(plan, bounds(None));
        stream.next().await.unwrap().unwrap();
        drop(stream);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after_drop = computed.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            computed.load(Ordering::SeqCst),
            after_drop,
            "nothing computed once the driver stopped"
        );
        assert!(
            after_drop < 10,
            "stopped within a batch or two: {after_drop}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_users_queries_take_turns_and_a_slow_reader_holds_none() {
        let turns = Turns::new(1);
        let bounds = Bounds::new(&turns, "mallory", 0);
        // A reader that takes nothing after its first batch...
        let (_, idle) = slow_plan(100, Duration::from_millis(1));
        let mut idle = start(idle, bounds.clone());
        idle.next().await.unwrap().unwrap();
        // ... leaves the user's one turn to their other query.
        let (_, other) = slow_plan(5, Duration::from_millis(1));
        let other = start(other, bounds.clone());
        let rows = tokio::time::timeout(Duration::from_secs(30), other.collect::<Vec<_>>())
            .await
            .expect("the other query runs");
        assert_eq!(rows.len(), 5);
        // While one computes, the user's next waits for the turn.
        let held = Arc::clone(&bounds.turns).acquire_owned().await.unwrap();
        let (computed, waiting) = slow_plan(5, Duration::from_millis(1));
        let waiting = start(waiting, bounds);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(computed.load(Ordering::SeqCst), 0, "no turn, no work");
        drop(held);
        assert_eq!(waiting.collect::<Vec<_>>().await.len(), 5);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn computing_past_the_limit_ends_the_read_with_resource_exhausted() {
        let (_, plan) = slow_plan(1000, Duration::from_millis(50));
        let stream = start(plan, bounds(Some(Duration::from_millis(400))));
        let items: Vec<_> = stream.collect().await;
        let (ok, failed): (Vec<_>, Vec<_>) = items.into_iter().partition(|r| r.is_ok());
        assert!(ok.len() < 20, "{} batches", ok.len());
        assert_eq!(failed.len(), 1, "one error, then the end");
        let e =
            crate::error::query::from_datafusion(failed.into_iter().next().unwrap().unwrap_err());
        assert!(matches!(e, VeilError::ResourceExhausted(_)), "{e:?}");
        assert!(e.to_string().contains("engine.query_timeout_secs"), "{e}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_limit_ends_a_read_even_while_one_poll_runs_on() {
        // One batch whose computation takes far longer than the limit.
        let (_, plan) = slow_plan(1, Duration::from_secs(5));
        let started = Instant::now();
        let items: Vec<_> = start(plan, bounds(Some(Duration::from_millis(200))))
            .collect()
            .await;
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "answered before the poll ended: {:?}",
            started.elapsed()
        );
        assert_eq!(items.len(), 1);
        let e =
            crate::error::query::from_datafusion(items.into_iter().next().unwrap().unwrap_err());
        assert!(matches!(e, VeilError::ResourceExhausted(_)), "{e:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panic_ends_the_read_with_an_error_not_its_end() {
        let plan = plan_of(3, |i| assert!(i < 1, "a bug in an operator"));
        let mut items: Vec<_> = start(plan, bounds(None)).collect().await;
        assert_eq!(items.len(), 2, "the first batch, then the error");
        let e = crate::error::query::from_datafusion(items.pop().unwrap().unwrap_err());
        assert!(items[0].is_ok());
        assert!(matches!(e, VeilError::Internal(_)), "{e:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn time_spent_waiting_for_the_reader_does_not_count() {
        let (_, plan) = slow_plan(6, Duration::from_millis(10));
        let mut stream = start(plan, bounds(Some(Duration::from_millis(300))));
        let mut n = 0;
        while let Some(b) = stream.next().await {
            b.unwrap();
            n += 1;
            // A slow reader: far longer than the limit in total.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(n, 6);
    }
}
