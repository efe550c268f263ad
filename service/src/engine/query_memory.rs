//! Each query's own memory limit, inside the node's.
//!
//! The node has one pool (`engine.memory_limit_mb`) shared by every query.
//! Alone, it lets one query take all of it, so the next user's join fails
//! instead of the query that grew. [`QueryPool`] gives each query its own
//! limit (`engine.query_memory_limit_mb`) and forwards every reservation to
//! the node's pool, so both hold: a query past its own limit fails with
//! `RESOURCE_EXHAUSTED`, and only that query.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

#[derive(Debug)]
pub struct QueryPool {
    limit: usize,
    used: AtomicUsize,
    node: Arc<dyn MemoryPool>,
}

impl QueryPool {
    pub fn new(limit: usize, node: Arc<dyn MemoryPool>) -> Self {
        Self {
            limit,
            used: AtomicUsize::new(0),
            node,
        }
    }
}

impl std::fmt::Display for QueryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "query pool: {} of {} bytes reserved",
            self.used.load(Ordering::Relaxed),
            self.limit
        )
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "veil-query"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.node.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.node.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::Relaxed);
        self.node.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.used.fetch_sub(shrink, Ordering::Relaxed);
        self.node.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let before = self.used.fetch_add(additional, Ordering::Relaxed);
        if before.saturating_add(additional) > self.limit {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the query needs more than its memory limit of {} MiB (engine.query_memory_limit_mb)",
                self.limit / (1024 * 1024)
            )));
        }
        if let Err(e) = self.node.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(e);
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    #[test]
    fn a_query_is_held_to_its_own_limit_and_the_nodes() {
        let node: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1000));
        let a: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(600, Arc::clone(&node)));
        let b: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(600, Arc::clone(&node)));
        let ra = MemoryConsumer::new("a").register(&a);
        let rb = MemoryConsumer::new("b").register(&b);
        ra.try_grow(500).unwrap();
        // Past its own limit: refused, the node untouched.
        assert!(ra.try_grow(200).is_err());
        assert_eq!(node.reserved(), 500);
        // Another query: its own 600, but only 500 left on the node.
        rb.try_grow(500).unwrap();
        assert!(rb.try_grow(50).is_err());
        ra.free();
        rb.try_grow(50).unwrap();
        assert_eq!(a.reserved(), 0);
        assert_eq!(node.reserved(), 550);
    }
}
