//! Where planning runs, and for how long.
//!
//! Parsing and planning recurse over the user's SQL, and constant folding
//! runs the user's functions on constants, synchronously, inside the
//! planner. So each plan runs on a thread of its own with a large stack
//! (request limits in [`super::limits`] bound the depth; the stack is a
//! second line of defence, reserved rather than committed), under three
//! bounds, so that one request can't wedge everyone else's:
//!
//! * a **deadline** (`engine.plan_timeout_secs`): past it the caller gets
//!   `RESOURCE_EXHAUSTED`;
//! * **cancellation**: when the deadline passes or the caller goes away
//!   (its future is dropped), the plan's [`Stop`] flag is set; every
//!   bounded function ([`super::bounded`]) checks it between calls
//!   ([`super::stop`]), and the plan's own awaits stop at once;
//! * **concurrency**: at most `engine.plans_per_user` plans per user and
//!   `engine.max_planning` in all. A plan keeps its permits until its thread
//!   really ends, so a user whose plans time out can't pile up more threads
//!   still burning CPU.

use futures::FutureExt;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::stop::{self, Stop, Work};
use crate::error::{Result, VeilError};

const PLANNER_STACK_BYTES: usize = 64 * 1024 * 1024;

/// A plan's stop flag, and the wake-up of its awaits when it is set.
#[derive(Debug)]
struct Cancel {
    stop: Arc<Stop>,
    wake: Notify,
}

impl Cancel {
    fn new() -> Self {
        Self {
            stop: Stop::new(Work::Planning),
            wake: Notify::new(),
        }
    }

    fn set(&self) {
        self.stop.set();
        self.wake.notify_one();
    }
}

/// Cancels the plan when the caller stops waiting for it, however it stops.
struct CancelOnDrop(Arc<Cancel>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

#[derive(Debug)]
pub struct PlannerPool {
    timeout: Duration,
    total: Arc<Semaphore>,
    users: UserSemaphores,
}

/// One semaphore of `per_user` permits per user, made on first use;
/// idle users' are forgotten once many are held.
#[derive(Debug)]
pub struct UserSemaphores {
    per_user: usize,
    users: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl UserSemaphores {
    pub fn new(per_user: usize) -> Self {
        Self {
            per_user: per_user.max(1),
            users: Mutex::new(HashMap::new()),
        }
    }

    /// `user`'s semaphore.
    pub fn of(&self, user: &str) -> Arc<Semaphore> {
        let mut users = self
            .users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if users.len() > 4096 {
            // Forget idle users (nobody holds their semaphore).
            users.retain(|_, s| Arc::strong_count(s) > 1);
        }
        Arc::clone(
            users
                .entry(user.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_user))),
        )
    }
}

impl PlannerPool {
    pub fn new(timeout: Duration, per_user: usize, total: usize) -> Result<Self> {
        Ok(Self {
            timeout,
            total: Arc::new(Semaphore::new(total.max(1))),
            users: UserSemaphores::new(per_user),
        })
    }

    fn user_permits(&self, user: &str) -> Arc<Semaphore> {
        self.users.of(user)
    }

    /// How long planning may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn timed_out(&self) -> VeilError {
        VeilError::ResourceExhausted(format!(
            "the query could not be planned within {} s (engine.plan_timeout_secs); simplify it (large constant expressions are folded while planning), or wait for your other queries to finish",
            self.timeout.as_secs()
        ))
    }

    /// Run `work` (planning for `user`) on a planner thread, within the
    /// bounds above. A panic inside becomes an error.
    pub async fn run<T: Send + 'static>(
        &self,
        user: &str,
        work: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let acquire = async {
            let mine = self.user_permits(user).acquire_owned().await;
            let all = Arc::clone(&self.total).acquire_owned().await;
            match (mine, all) {
                (Ok(m), Ok(a)) => Ok((m, a)),
                _ => Err(VeilError::Unavailable("Veil is shutting down".into())),
            }
        };
        let permits: (OwnedSemaphorePermit, OwnedSemaphorePermit) =
            match tokio::time::timeout_at(deadline, acquire).await {
                Ok(p) => p?,
                Err(_) => return Err(self.timed_out()),
            };
        let cancel = Arc::new(Cancel::new());
        let guard = CancelOnDrop(Arc::clone(&cancel));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let handle = tokio::runtime::Handle::current();
        let spawned = std::thread::Builder::new()
            .name("veil-planner".into())
            .stack_size(PLANNER_STACK_BYTES)
            .spawn(move || {
                let _permits = permits;
                let stopped = async {
                    loop {
                        if cancel.stop.is_set() {
                            return;
                        }
                        cancel.wake.notified().await;
                    }
                };
                let result = stop::within(&cancel.stop, || {
                    handle.block_on(async {
                        tokio::select! {
                            r = AssertUnwindSafe(work).catch_unwind() => Some(r),
                            () = stopped => None,
                        }
                    })
                });
                let _ = tx.send(result);
            });
        if let Err(e) = spawned {
            return Err(VeilError::internal("cannot start a planner thread", e));
        }
        let outcome = tokio::time::timeout_at(deadline, rx).await;
        drop(guard);
        match outcome {
            Err(_) => Err(self.timed_out()),
            Ok(Ok(Some(Ok(result)))) => result,
            Ok(Ok(None)) => Err(self.timed_out()),
            Ok(Ok(Some(Err(_)))) | Ok(Err(_)) => {
                tracing::error!("a panic occurred while planning a query");
                Err(VeilError::Internal(
                    "planning failed unexpectedly; the error was logged".into(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::stop::stopped as cancelled;

    fn pool(per_user: usize) -> Arc<PlannerPool> {
        Arc::new(PlannerPool::new(Duration::from_millis(300), per_user, 8).unwrap())
    }

    /// A plan that never ends on its own (it spins until cancelled).
    async fn wedge() -> Result<()> {
        while !cancelled() {
            std::thread::yield_now();
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wedged_plan_times_out_and_is_cancelled() {
        let pool = pool(2);
        let e = pool.run("mallory", wedge()).await.unwrap_err();
        assert!(matches!(e, VeilError::ResourceExhausted(_)), "{e:?}");
        // The wedged thread saw the cancellation and gave its permit back.
        let mut freed = false;
        for _ in 0..200 {
            if pool.total.available_permits() == 8 {
                freed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(freed, "the cancelled plan's thread ended");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_user_cannot_take_every_planner() {
        let pool = pool(2);
        let mut wedged = Vec::new();
        for _ in 0..4 {
            let p = Arc::clone(&pool);
            wedged.push(tokio::spawn(async move { p.run("mallory", wedge()).await }));
        }
        // Everyone else still plans at once.
        for i in 0..4 {
            let got = pool
                .run(&format!("user{i}"), async { Ok(7) })
                .await
                .unwrap();
            assert_eq!(got, 7);
        }
        for w in wedged {
            assert!(w.await.unwrap().is_err());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_that_goes_away_cancels_its_plan() {
        let pool = Arc::new(PlannerPool::new(Duration::from_secs(60), 1, 8).unwrap());
        let p = Arc::clone(&pool);
        let task = tokio::spawn(async move { p.run("mallory", wedge()).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        task.abort();
        // With one plan per user, the next one only starts once the
        // abandoned one has stopped.
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            pool.run("mallory", async { Ok(1) }),
        )
        .await
        .expect("the abandoned plan was cancelled")
        .unwrap();
        assert_eq!(got, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_is_an_error() {
        // Printing a panic's backtrace can take longer than `pool`'s timeout.
        let pool = PlannerPool::new(Duration::from_secs(60), 1, 8).unwrap();
        let e = pool
            .run("u", async {
                if cancelled() {
                    return Ok(());
                }
                panic!("boom")
            })
            .await
            .unwrap_err();
        assert!(matches!(e, VeilError::Internal(_)));
    }
}
