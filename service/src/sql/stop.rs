//! Stopping work from inside the call that does it.
//!
//! A plan's constant folding, and a query's operators, can compute for a
//! long time inside one call (one `poll` of a stream, one synchronous
//! simplification): Rust can't interrupt it from outside. So the work
//! that runs on a thread names its [`Stop`] flag while it runs
//! ([`within`]), and every bounded function ([`super::bounded`]) checks
//! the flag of the work it runs for ([`check`]) before computing: a plan
//! past its deadline, or a query whose reader went away or ran out of
//! time, ends at its next function call instead of running on.
//!
//! The flag is the thread's while [`within`] runs, then the one before it
//! again: planner threads set it for their whole plan, query threads for
//! each poll of a query's operators (`engine::execution`).

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use datafusion::common::DataFusionError;

use crate::error::VeilError;

/// What a [`Stop`] stops, for its error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    Planning,
    Query,
}

/// One piece of work's flag: once set, it stays set.
#[derive(Debug)]
pub struct Stop {
    flag: AtomicBool,
    work: Work,
}

impl Stop {
    pub fn new(work: Work) -> Arc<Self> {
        Arc::new(Self {
            flag: AtomicBool::new(false),
            work,
        })
    }

    pub fn set(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// The error the stopped work ends with.
    pub fn error(&self) -> DataFusionError {
        let why = match self.work {
            Work::Planning => {
                "planning stopped: the query took longer to plan than Veil allows (engine.plan_timeout_secs), or its client went away; simplify its constant expressions"
            }
            Work::Query => {
                "the query stopped: it took longer than Veil allows (engine.query_timeout_secs), or its client went away"
            }
        };
        DataFusionError::External(Box::new(VeilError::ResourceExhausted(why.into())))
    }
}

thread_local! {
    /// The flag of the work running on this thread now, if any.
    static CURRENT: RefCell<Option<Arc<Stop>>> = const { RefCell::new(None) };
}

/// Puts the previous flag back when dropped, even on a panic.
struct Restore(Option<Arc<Stop>>);

impl Drop for Restore {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// Run `f` as work that `stop` stops: [`stopped`] and [`check`] read its
/// flag until `f` returns.
pub fn within<R>(stop: &Arc<Stop>, f: impl FnOnce() -> R) -> R {
    let previous = CURRENT.with(|c| c.borrow_mut().replace(Arc::clone(stop)));
    let _restore = Restore(previous);
    f()
}

/// Has the work running on this thread been stopped? False outside any.
pub fn stopped() -> bool {
    CURRENT.with(|c| c.borrow().as_ref().is_some_and(|s| s.is_set()))
}

/// The stopped work's error, if the work running on this thread was
/// stopped.
pub fn check() -> datafusion::common::Result<()> {
    CURRENT.with(|c| match c.borrow().as_ref() {
        Some(s) if s.is_set() => Err(s.error()),
        _ => Ok(()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_is_the_threads_while_the_work_runs() {
        assert!(!stopped() && check().is_ok(), "no work, nothing stopped");
        let outer = Stop::new(Work::Planning);
        let inner = Stop::new(Work::Query);
        inner.set();
        within(&outer, || {
            assert!(!stopped());
            within(&inner, || {
                assert!(stopped());
                assert!(check().unwrap_err().to_string().contains("query_timeout"));
            });
            assert!(!stopped(), "the outer work's flag again");
            outer.set();
            assert!(check().unwrap_err().to_string().contains("plan_timeout"));
        });
        assert!(!stopped(), "none once the work returned");
        // Another thread never sees this one's flag.
        within(&inner, || {
            std::thread::spawn(|| assert!(!stopped())).join().unwrap();
        });
    }

    #[test]
    fn a_panic_puts_the_previous_flag_back() {
        let stop = Stop::new(Work::Query);
        stop.set();
        let panicked = std::panic::catch_unwind(|| within(&stop, || panic!("boom")));
        assert!(panicked.is_err());
        assert!(!stopped());
    }
}
