//! `veil.audit`: the audit trail served through Veil itself.
//!
//! It is a built-in dataset, added to each node's view of the state
//! ([`add_builtins`]) rather than stored, with a built-in subscription
//! policy that admits holders of the `AUDIT` permission. Everything else is
//! the ordinary read path: the principal's secure view (so governors can add
//! masks or row filters to it like to any dataset), the guard, the barrier,
//! the read's own audit events. Its rows come from the store, page by page
//! in the order events were recorded ([`AuditTable`]).

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Int64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::Session;
use datafusion::common::DataFusionError;
use datafusion::datasource::TableProvider;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use std::sync::Arc;

use crate::model::Origin;
use crate::model::audit::AuditEvent;
use crate::model::dataset::{ColumnRecord, DatasetRecord, FileFormatKind, SourceSpec};
use crate::model::identity::Permission;
use crate::model::policy::{Policy, PolicySpec, SubscriptionSpec};
use crate::model::snapshot::Snapshot;
use crate::policy::rules::PolicySpecExt;
use crate::store::Store;

/// The dataset's name.
pub const AUDIT_DATASET: &str = "veil.audit";
use crate::model::source_kind::{
    AUDIT_TRAIL_ID as AUDIT_ID, AUDIT_TRAIL_LOCATION as AUDIT_LOCATION,
};
/// The built-in subscription policy.
const READERS_POLICY: &str = "veil.audit-readers";
/// Events read from the store per batch.
const PAGE: usize = 8192;

/// The columns: name, type, description.
fn columns() -> Vec<(&'static str, DataType, bool, &'static str)> {
    let text = DataType::Utf8;
    let time = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    vec![
        (
            "seq",
            DataType::Int64,
            false,
            "Sequence number in its node's chain (gap-free per node)",
        ),
        (
            "node_id",
            text.clone(),
            false,
            "The Veil node that recorded the event",
        ),
        ("time", time, false, "When the event happened (UTC)"),
        ("event_id", text.clone(), false, "Unique id of the event"),
        (
            "action",
            text.clone(),
            false,
            "What happened: list, plan, read.start, read.end, admin.<action>, auth.failure, auth.failure.aggregate, audit.purge, ...",
        ),
        ("issuer", text.clone(), false, "Token issuer of the user"),
        (
            "user",
            text.clone(),
            false,
            "The user (token subject); empty when authentication failed before one was known",
        ),
        (
            "identity_fingerprint",
            text.clone(),
            false,
            "Keyed fingerprint of the user's identity, groups, attributes and permissions at the time",
        ),
        (
            "client_address",
            text.clone(),
            false,
            "Client IP address and port",
        ),
        ("user_agent", text.clone(), false, "Client application"),
        (
            "purpose",
            text.clone(),
            false,
            "Purpose or project acted under",
        ),
        ("dataset", text.clone(), true, "Dataset acted on"),
        (
            "columns",
            text.clone(),
            false,
            "Columns requested, comma-separated",
        ),
        (
            "policies",
            text.clone(),
            false,
            "Policies applied (id@version), comma-separated",
        ),
        (
            "masked_columns",
            text.clone(),
            false,
            "Columns served masked, comma-separated",
        ),
        (
            "rows_filtered",
            DataType::Boolean,
            false,
            "Whether a row policy filtered the rows",
        ),
        (
            "rows",
            DataType::Int64,
            true,
            "Rows served (read.end); events purged (audit.purge); failed attempts counted (auth.failure.aggregate)",
        ),
        ("bytes", DataType::Int64, true, "Bytes served (read.end)"),
        (
            "duration_ms",
            DataType::Int64,
            true,
            "Duration in milliseconds (read.end); from the first failed attempt counted to the last (auth.failure.aggregate)",
        ),
        (
            "status",
            text.clone(),
            false,
            "ok, or the error kind (permission_denied, not_found, ...)",
        ),
        (
            "message",
            text.clone(),
            false,
            "What went wrong, without values or secrets",
        ),
        (
            "query_fingerprint",
            text,
            false,
            "Digest of the request with literals removed",
        ),
    ]
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(
        columns()
            .into_iter()
            .map(|(n, dt, nullable, _)| Field::new(n, dt, nullable))
            .collect::<Vec<_>>(),
    ))
}

/// The dataset record: its dictionary documents every column.
pub fn audit_dataset() -> DatasetRecord {
    DatasetRecord {
        id: AUDIT_ID.into(),
        name: AUDIT_DATASET.into(),
        source: SourceSpec {
            format: FileFormatKind::Json,
            location: AUDIT_LOCATION.into(),
            hive_partitioned: false,
            database: None,
        },
        description: "Veil's audit trail: every authentication failure, listing, plan, read, denial and administrative action, one row per event, in the order recorded. Read by holders of the AUDIT permission (policy veil.audit-readers); governors may add policies to it.".into(),
        owners: vec![],
        experts: vec![],
        tags: vec![],
        columns: columns()
            .into_iter()
            .map(|(name, dt, nullable, description)| ColumnRecord {
                name: name.into(),
                data_type: dt.to_string(),
                nullable,
                description: description.into(),
                tags: vec![],
                partition: false,
                from_config: true,
            })
            .collect(),
        origin: Origin::Config,
        event_time: Some("time".into()),
        tag_proposals: vec![],
    }
}

/// The built-in subscription: holders of `AUDIT`.
fn readers_policy() -> Policy {
    let spec: PolicySpec = serde_json::from_value(serde_json::json!({
        "name": READERS_POLICY,
        "dataset": AUDIT_DATASET,
        "subscription": SubscriptionSpec {
            permissions: vec![Permission::Audit],
            ..Default::default()
        },
    }))
    .expect("the built-in audit subscription is a policy");
    let rule = spec
        .validate()
        .expect("the built-in audit subscription validates");
    Policy {
        id: "builtin:veil.audit-readers".into(),
        version: 1,
        origin: Origin::Config,
        spec,
        rule,
    }
}

/// Add Veil's own datasets and their policies to a node's view of the state.
pub fn add_builtins(snapshot: &mut Snapshot) {
    let d = audit_dataset();
    snapshot.datasets.insert(d.name.clone(), d);
    let p = readers_policy();
    let at = snapshot
        .policies
        .partition_point(|q| q.spec.name < p.spec.name);
    snapshot.policies.insert(at, p);
}

/// The audit events as a table, read from the store as it is scanned.
#[derive(Debug)]
pub struct AuditTable {
    store: Arc<dyn Store>,
    schema: SchemaRef,
}

impl AuditTable {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            schema: schema(),
        }
    }
}

#[async_trait]
impl TableProvider for AuditTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let partition: Arc<dyn PartitionStream> = Arc::new(AuditPartition {
            store: Arc::clone(&self.store),
            schema: Arc::clone(&self.schema),
        });
        Ok(Arc::new(StreamingTableExec::try_new(
            Arc::clone(&self.schema),
            vec![partition],
            projection,
            vec![],
            false,
            limit,
        )?))
    }
}

#[derive(Debug)]
struct AuditPartition {
    store: Arc<dyn Store>,
    schema: SchemaRef,
}

impl PartitionStream for AuditPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let store = Arc::clone(&self.store);
        let schema = Arc::clone(&self.schema);
        let pages = futures::stream::try_unfold(Some(0u64), move |after| {
            let store = Arc::clone(&store);
            let schema = Arc::clone(&schema);
            async move {
                let Some(after) = after else { return Ok(None) };
                let page = store
                    .audit_page(after, PAGE)
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                let Some((last, _)) = page.last() else {
                    return Ok(None);
                };
                let next = (page.len() == PAGE).then_some(*last);
                let events: Vec<AuditEvent> = page.into_iter().map(|(_, e)| e).collect();
                Ok(Some((to_batch(&schema, &events)?, next)))
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            pages,
        ))
    }
}

/// Events as one batch of the table's schema.
fn to_batch(schema: &SchemaRef, events: &[AuditEvent]) -> datafusion::common::Result<RecordBatch> {
    let n = events.len();
    let text = |f: &dyn Fn(&AuditEvent) -> &str| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(n, n * 16);
        events.iter().for_each(|e| b.append_value(f(e)));
        Arc::new(b.finish())
    };
    let int = |f: &dyn Fn(&AuditEvent) -> Option<i64>| -> ArrayRef {
        let mut b = Int64Builder::with_capacity(n);
        events.iter().for_each(|e| b.append_option(f(e)));
        Arc::new(b.finish())
    };
    let joined = |f: &dyn Fn(&AuditEvent) -> &Vec<String>| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(n, n * 16);
        events.iter().for_each(|e| b.append_value(f(e).join(",")));
        Arc::new(b.finish())
    };
    let mut time = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    events.iter().for_each(|e| time.append_value(e.time_ms));
    let mut dataset = StringBuilder::with_capacity(n, n * 16);
    events
        .iter()
        .for_each(|e| dataset.append_option(e.dataset.as_deref()));
    let mut filtered = BooleanBuilder::with_capacity(n);
    events
        .iter()
        .for_each(|e| filtered.append_value(e.rows_filtered));
    let signed = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
    let columns: Vec<ArrayRef> = vec![
        int(&|e| signed(e.seq)),
        text(&|e| &e.node_id),
        Arc::new(time.finish()),
        text(&|e| &e.event_id),
        text(&|e| &e.action),
        text(&|e| &e.issuer),
        text(&|e| &e.subject),
        text(&|e| &e.identity_fingerprint),
        text(&|e| &e.client_address),
        text(&|e| &e.user_agent),
        text(&|e| &e.purpose),
        Arc::new(dataset.finish()),
        joined(&|e| &e.columns),
        joined(&|e| &e.policies),
        joined(&|e| &e.masked_columns),
        Arc::new(filtered.finish()),
        int(&|e| signed(e.rows)),
        int(&|e| signed(e.bytes)),
        int(&|e| signed(e.duration_ms)),
        text(&|e| &e.status),
        text(&|e| &e.message),
        text(&|e| &e.query_fingerprint),
    ];
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditEventExt;
    use crate::policy::effective::dictionary_field;

    #[test]
    fn the_dictionary_parses_back_to_the_table_schema() {
        let d = audit_dataset();
        let fields: Vec<Field> = d
            .columns
            .iter()
            .map(|c| dictionary_field(&c.name, &c.data_type, c.nullable).unwrap())
            .collect();
        assert_eq!(Schema::new(fields), *schema());
    }

    #[test]
    fn events_become_rows() {
        let mut e = AuditEvent::new("read.end", None);
        e.seq = Some(7);
        e.subject = "bob".into();
        e.columns = vec!["a".into(), "b".into()];
        e.rows = Some(3);
        let mut list = AuditEvent::new("list", None);
        list.seq = Some(8);
        let batch = to_batch(&schema(), &[e, list]).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), schema());
    }
}
