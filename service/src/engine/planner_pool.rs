//! Where planning runs: a small runtime whose threads have large stacks.
//!
//! Parsing and planning recurse over the user's SQL. Request limits
//! ([`super::limits`]) bound the depth; running on big stacks makes sure a
//! request that passes them can't exhaust a server worker's stack. Stack
//! memory is reserved, not committed, so large stacks cost nothing unused.

use futures::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use crate::error::{Result, VeilError};

const PLANNER_STACK_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug)]
pub struct PlannerPool {
    runtime: Option<tokio::runtime::Runtime>,
}

impl PlannerPool {
    pub fn new(threads: usize) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_stack_size(PLANNER_STACK_BYTES)
            .thread_name("veil-planner")
            .enable_all()
            .build()
            .map_err(|e| VeilError::internal("cannot start the planner threads", e))?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    /// Run `work` on a planner thread. A panic inside becomes an error.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| VeilError::Unavailable("Veil is shutting down".into()))?;
        match runtime.spawn(AssertUnwindSafe(work).catch_unwind()).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => {
                tracing::error!("a panic occurred while planning a query");
                Err(VeilError::Internal(
                    "planning failed unexpectedly; the error was logged".into(),
                ))
            }
        }
    }
}

impl Drop for PlannerPool {
    fn drop(&mut self) {
        // Dropping a runtime from async code would panic; let it wind down.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
