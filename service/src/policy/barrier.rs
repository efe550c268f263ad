//! The policy barrier: the fence between a dataset's policy subtree (row
//! filters, masks) and whatever the user asks on top.
//!
//! Logically it is an extension node that keeps every user predicate above it
//! (the default `prevent_predicate_push_down_columns` is all columns) while
//! still letting projection pushdown prune columns below it. Physically it is
//! a pass-through that (a) keeps the default "no filter crosses me"
//! `gather_filters_for_pushdown`, so dynamic filters from joins and TopK stay
//! above too, and (b) strips every error raised below it of its text, so a
//! failure on a hidden row or raw value can't be read by the caller
//! (DESIGN invariants 1 and 2).

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchemaRef, DataFusionError, Result};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{
    Expr, Extension, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use futures::StreamExt;
use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use super::deal::RowDeal;
use crate::error::query::below_barrier;

/// The logical fence above one dataset's policy subtree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyBarrier {
    pub dataset: String,
    pub input: LogicalPlan,
    /// Columns a user's filter may be copied below the fence on (see
    /// [`super::pushdown`]): unmasked columns of a dataset whose rows no
    /// k-anonymization counts and no sample draws. Sorted; empty: none.
    pub pushable: Vec<String>,
    /// The user filters already copied below (so a second optimizer pass
    /// doesn't copy them again).
    pub copied: Vec<Expr>,
    /// This endpoint's share of the rows, dealt by position
    /// ([`super::deal`]): nothing is copied or cut below the fence then.
    pub deal: Option<RowDeal>,
}

impl PartialOrd for PolicyBarrier {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.dataset.partial_cmp(&other.dataset) {
            Some(Ordering::Equal) => match self.input.partial_cmp(&other.input) {
                Some(Ordering::Equal) => match self.pushable.partial_cmp(&other.pushable) {
                    Some(Ordering::Equal) => match self.copied.partial_cmp(&other.copied) {
                        Some(Ordering::Equal) => self.deal.partial_cmp(&other.deal),
                        o => o,
                    },
                    o => o,
                },
                o => o,
            },
            o => o,
        }
    }
}

impl PolicyBarrier {
    pub fn wrap(dataset: &str, input: LogicalPlan) -> LogicalPlan {
        Self::wrap_pushable(dataset, input, vec![])
    }

    /// [`Self::wrap`], letting safe user filters on `pushable` columns be
    /// copied below.
    pub fn wrap_pushable(
        dataset: &str,
        input: LogicalPlan,
        mut pushable: Vec<String>,
    ) -> LogicalPlan {
        pushable.sort();
        pushable.dedup();
        LogicalPlan::Extension(Extension {
            node: Arc::new(PolicyBarrier {
                dataset: dataset.to_string(),
                input,
                pushable,
                copied: vec![],
                deal: None,
            }),
        })
    }

    /// [`Self::wrap`] for an endpoint that reads `deal`'s share of the
    /// view's rows (no user filter is copied below: the rows dealt are the
    /// view's, whatever the user asks).
    pub fn wrap_dealt(dataset: &str, input: LogicalPlan, deal: RowDeal) -> LogicalPlan {
        LogicalPlan::Extension(Extension {
            node: Arc::new(PolicyBarrier {
                dataset: dataset.to_string(),
                input,
                pushable: vec![],
                copied: vec![],
                deal: Some(deal),
            }),
        })
    }

    /// Is this plan node a barrier?
    pub fn is_barrier(plan: &LogicalPlan) -> bool {
        matches!(plan, LogicalPlan::Extension(e) if e.node.as_any().is::<PolicyBarrier>())
    }
}

impl UserDefinedLogicalNodeCore for PolicyBarrier {
    fn name(&self) -> &str {
        "PolicyBarrier"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.input.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PolicyBarrier: dataset={}", self.dataset)
    }

    fn with_exprs_and_inputs(
        &self,
        exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        if !exprs.is_empty() || inputs.len() != 1 {
            return Err(DataFusionError::Internal(
                "PolicyBarrier takes one input and no expressions".into(),
            ));
        }
        Ok(Self {
            dataset: self.dataset.clone(),
            input: inputs.remove(0),
            pushable: self.pushable.clone(),
            copied: self.copied.clone(),
            deal: self.deal,
        })
    }

    /// Columns the parent needs are exactly the ones to keep below: the
    /// schema passes through unchanged, so projection pushdown still prunes.
    fn necessary_children_exprs(&self, output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        Some(vec![output_columns.to_vec()])
    }

    fn supports_limit_pushdown(&self) -> bool {
        // A limit is not a predicate: cutting rows early below the fence
        // reveals nothing a limit above wouldn't. (Not when rows are dealt:
        // cut below, the endpoint would deal other rows.)
        self.deal.is_none()
    }
}

/// Physical pass-through that sanitises errors from below.
#[derive(Debug)]
pub struct PolicyBarrierExec {
    dataset: String,
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
    deal: Option<RowDeal>,
}

impl PolicyBarrierExec {
    pub fn new(dataset: String, input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = Arc::clone(input.properties());
        Self {
            dataset,
            input,
            properties,
            deal: None,
        }
    }

    /// Pass on only `deal`'s share of the rows (one partition).
    pub fn dealt(mut self, deal: Option<RowDeal>) -> Self {
        self.deal = deal;
        self
    }
}

impl DisplayAs for PolicyBarrierExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PolicyBarrierExec: dataset={}", self.dataset)?;
        if self.deal.is_some() {
            write!(f, ", dealt")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for PolicyBarrierExec {
    fn name(&self) -> &str {
        "PolicyBarrierExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
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

    /// Rows pass through in order, but saying so would let DataFusion's
    /// sort pushdown move a user's `ORDER BY` (or a window's sort) below
    /// the fence, where it would order rows by values the masks and
    /// k-anonymization change (and fail the plan's sanity check). Sorts
    /// stay above, like every other user operation.
    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(
                "PolicyBarrierExec takes one child".into(),
            ));
        }
        Ok(Arc::new(
            PolicyBarrierExec::new(self.dataset.clone(), children.remove(0)).dealt(self.deal),
        ))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let dataset = self.dataset.clone();
        let input = Arc::clone(&self.input);
        if self.deal.is_some() && input.properties().partitioning.partition_count() != 1 {
            return Err(super::deal::several_partitions());
        }
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            input.execute(partition, context)
        })) {
            Ok(Ok(stream)) => Ok(guard(
                dataset,
                match self.deal {
                    Some(deal) => deal.stream(stream),
                    None => stream,
                },
            )),
            Ok(Err(e)) => Err(below_barrier(&dataset, &e)),
            Err(_) => Err(below_barrier(&dataset, &panicked())),
        }
    }
}

/// A panic below the fence (a malformed file can make a decoder panic)
/// becomes a sanitised error like any other, never a dropped stream.
fn panicked() -> DataFusionError {
    DataFusionError::Execution("a panic occurred while reading the source".into())
}

/// `stream` with every error it yields, at any point, replaced by the
/// barrier's error for `dataset` (its cause kept, its text dropped).
fn guard(dataset: String, stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
    let schema: SchemaRef = stream.schema();
    let guarded = std::panic::AssertUnwindSafe(stream)
        .catch_unwind()
        .map(move |r| match r {
            Ok(Ok(batch)) => Ok(batch),
            Ok(Err(e)) => Err(below_barrier(&dataset, &e)),
            Err(_) => Err(below_barrier(&dataset, &panicked())),
        });
    Box::pin(RecordBatchStreamAdapter::new(schema, guarded))
}

/// Lowers [`PolicyBarrier`] to [`PolicyBarrierExec`].
#[derive(Debug)]
struct BarrierPlanner;

#[async_trait]
impl ExtensionPlanner for BarrierPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn Session,
        _planning_ctx: &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(barrier) = node.as_any().downcast_ref::<PolicyBarrier>() else {
            return Ok(None);
        };
        let [input] = physical_inputs else {
            return Err(DataFusionError::Internal(
                "PolicyBarrier has one input".into(),
            ));
        };
        Ok(Some(Arc::new(
            PolicyBarrierExec::new(barrier.dataset.clone(), Arc::clone(input)).dealt(barrier.deal),
        )))
    }
}

/// The session's query planner: DataFusion's, plus the barrier and
/// k-anonymization.
#[derive(Debug, Default)]
pub struct VeilQueryPlanner;

#[async_trait]
impl QueryPlanner for VeilQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![
            Arc::new(BarrierPlanner),
            Arc::new(super::masks::kanon::KAnonymizePlanner),
        ])
        .create_physical_plan(logical_plan, session)
        .await
        .map_err(|e| optimizer_failure(e, session))
    }
}

/// A physical optimizer rule's failure is the engine's, never the query's:
/// its text renders the physical plan (policy conditions, file paths,
/// what lies below the fence), so it leaves as an internal error naming
/// only the rule.
fn optimizer_failure(e: DataFusionError, session: &dyn Session) -> DataFusionError {
    match e {
        DataFusionError::Context(rule, _)
            if session
                .physical_optimizers()
                .iter()
                .any(|r| r.name() == rule) =>
        {
            DataFusionError::Internal(format!(
                "the physical optimizer's rule {rule} failed on a query's plan"
            ))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::query::from_datafusion;
    use crate::error::query::tests::{check, table};
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;

    /// Every upstream error, arriving mid-stream after a batch was already
    /// served, ends the stream with the barrier's answer for its cause.
    #[tokio::test]
    async fn errors_that_arrive_mid_stream_translate_like_the_table() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        for row in table() {
            let batch = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(Int64Array::from(vec![1, 2]))],
            )
            .unwrap();
            let items = vec![Ok(batch), Err((row.error)())];
            let inner: SendableRecordBatchStream = Box::pin(RecordBatchStreamAdapter::new(
                Arc::clone(&schema) as SchemaRef,
                futures::stream::iter(items),
            ));
            let mut guarded = guard("sales.orders".into(), inner);
            let first = guarded
                .next()
                .await
                .expect("a first batch")
                .expect("served");
            assert_eq!(first.num_rows(), 2, "{}", row.name);
            let e = guarded.next().await.expect("then the error").unwrap_err();
            check(&row, &from_datafusion(e), row.below, "below");
        }
    }

    /// A panic below the fence, mid-stream, ends the stream with an error.
    #[tokio::test]
    async fn a_panic_mid_stream_is_an_error() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let items = futures::stream::iter([0, 1]).map(|i| {
            if i == 1 {
                panic!("decoder bug");
            }
            Ok(RecordBatch::new_empty(Arc::new(Schema::new(vec![
                Field::new("x", DataType::Int64, false),
            ]))))
        });
        let inner: SendableRecordBatchStream =
            Box::pin(RecordBatchStreamAdapter::new(schema as SchemaRef, items));
        let mut guarded = guard("d".into(), inner);
        assert!(guarded.next().await.unwrap().is_ok());
        let e = from_datafusion(guarded.next().await.unwrap().unwrap_err());
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    }
}
