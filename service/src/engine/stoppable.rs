//! A query's plan made stoppable from inside its operators' polls.
//!
//! DataFusion runs an operator's work inside one `poll` of its stream, on
//! whichever task polls it: the query's driver, or a task an operator
//! spawned (a repartition, the merge of several partitions). Dropping the
//! driver drops those tasks, but a poll in progress runs to its end. So
//! [`stoppable`] puts a [`StopScopeExec`] above every operator of the plan:
//! while any operator is polled, on any task, the query's [`Stop`] flag is
//! its thread's ([`crate::sql::stop::within`]), and every bounded function
//! it calls checks it. Once the flag is set, the next call fails and the
//! poll returns, and a scope polled again ends its stream with the stop's
//! error.
//!
//! The scopes keep their input's properties, so adding them recomputes
//! nothing.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::Result;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr, PlanProperties,
};
use futures::{Stream, StreamExt};

use crate::sql::stop::{self, Stop};

/// `plan` with a [`StopScopeExec`] of `stop` above each of its operators.
pub(super) fn stoppable(
    plan: Arc<dyn ExecutionPlan>,
    stop: &Arc<Stop>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
    let plan = if children.is_empty() {
        plan
    } else {
        let scoped = children
            .into_iter()
            .map(|c| stoppable(c, stop))
            .collect::<Result<Vec<_>>>()?;
        plan.replace_children(
            scoped,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep),
        )?
    };
    Ok(Arc::new(StopScopeExec {
        input: plan,
        stop: Arc::clone(stop),
    }))
}

/// Polls its input as work that `stop` stops; otherwise its input.
#[derive(Debug)]
pub(super) struct StopScopeExec {
    input: Arc<dyn ExecutionPlan>,
    stop: Arc<Stop>,
}

impl DisplayAs for StopScopeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StopScopeExec")
    }
}

impl ExecutionPlan for StopScopeExec {
    fn name(&self) -> &str {
        "StopScopeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(Self {
                input,
                stop: Arc::clone(&self.stop),
            })),
            _ => Err(datafusion::common::DataFusionError::Internal(
                "StopScopeExec takes one child".into(),
            )),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if self.stop.is_set() {
            return Err(self.stop.error());
        }
        let input = stop::within(&self.stop, || self.input.execute(partition, context))?;
        Ok(Box::pin(Scoped {
            input,
            stop: Arc::clone(&self.stop),
            ended: false,
        }))
    }
}

/// A stream polled as work that `stop` stops.
struct Scoped {
    input: SendableRecordBatchStream,
    stop: Arc<Stop>,
    ended: bool,
}

impl Stream for Scoped {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if self.stop.is_set() {
            self.ended = true;
            return Poll::Ready(Some(Err(self.stop.error())));
        }
        let this = &mut *self;
        stop::within(&this.stop, || this.input.poll_next_unpin(cx))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.input.size_hint()
    }
}

impl RecordBatchStream for Scoped {
    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }
}
