//! `DatabaseTable`: one database dataset's relation as a DataFusion table,
//! reachable (like `SourceTable`) only inside a secure view, below the
//! policy barrier. Its schema is the data dictionary.
//!
//! Filters it is given are rendered into the statement where `sql` allows
//! and always reported `Inexact`, so DataFusion checks them again; a limit
//! goes into the statement only when no filter is left to DataFusion.

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::{DataFusionError, Statistics};
use datafusion::datasource::TableProvider;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::Database;
use super::sql::{Renderer, Select, SourceColumn, from_clause, range_condition, source_column};
use crate::error::{Result, VeilError};
use crate::model::dataset::{DatabaseSource, DatasetRecord};
use crate::policy::effective::dictionary_field;
use veil_proto::ScanPart;

#[derive(Debug)]
pub struct DatabaseTable {
    db: Arc<Database>,
    schema: SchemaRef,
    /// The dictionary's columns as statements read them, by name.
    columns: BTreeMap<String, SourceColumn>,
    from: String,
    /// The condition of one endpoint's key range (`None`: every row).
    range: Option<String>,
}

impl DatabaseTable {
    /// `part`: the key range one endpoint reads (`None`: every row).
    pub fn new(
        dataset: &DatasetRecord,
        source: &DatabaseSource,
        db: Arc<Database>,
        part: Option<&ScanPart>,
    ) -> Result<Self> {
        if db.engine != source.engine {
            return Err(VeilError::FailedPrecondition(format!(
                "dataset {} was registered on a {} database, but connection '{}' is now {}; an administrator must restore the connection or the owner re-register the dataset",
                dataset.name,
                source.engine.as_str(),
                db.name,
                db.engine.as_str()
            )));
        }
        let mut fields = Vec::with_capacity(dataset.columns.len());
        let mut columns = BTreeMap::new();
        for c in &dataset.columns {
            let f = dictionary_field(&c.name, &c.data_type, c.nullable)?;
            let database_type = source
                .column_types
                .get(&c.name)
                .map(String::as_str)
                .unwrap_or_default();
            columns.insert(
                c.name.clone(),
                source_column(source.engine, &c.name, f.data_type(), database_type),
            );
            fields.push(f);
        }
        let changed = || {
            VeilError::NotFound(
                "the dataset changed since this ticket was issued; call GetFlightInfo again".into(),
            )
        };
        let range = match part {
            None => None,
            Some(ScanPart {
                files,
                key_range: Some(range),
                ..
            }) if files.is_empty() => {
                let column = columns.get(&range.column).ok_or_else(changed)?;
                Some(range_condition(&column.reference, range))
            }
            Some(_) => return Err(changed()),
        };
        Ok(Self {
            from: from_clause(source.engine, &source.relation),
            db,
            schema: Arc::new(Schema::new(fields)),
            columns,
            range,
        })
    }

    fn renderer(&self) -> Renderer<'_> {
        Renderer {
            engine: self.db.engine,
            columns: &self.columns,
        }
    }

    /// The statement a scan sends.
    pub fn select(
        &self,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Select {
        let fields: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let columns = fields
            .iter()
            .filter_map(|i| self.columns.get(self.schema.field(*i).name()).cloned())
            .collect();
        let conditions: Vec<String> = self
            .range
            .iter()
            .cloned()
            .chain(filters.iter().filter_map(|f| self.renderer().condition(f)))
            .collect();
        Select {
            engine: self.db.engine,
            from: self.from.clone(),
            columns,
            conditions,
            // Every filter stays in DataFusion too, which may drop rows the
            // database returned: a limit below it could cut the answer short.
            limit: if filters.is_empty() { limit } else { None },
        }
    }
}

#[async_trait]
impl TableProvider for DatabaseTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::common::Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| match self.renderer().condition(f) {
                Some(_) => TableProviderFilterPushDown::Inexact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => Arc::clone(&self.schema),
        };
        let select = self.select(projection, filters, limit);
        Ok(Arc::new(DatabaseScanExec::new(
            Arc::clone(&self.db),
            select.render(),
            schema,
            state.config().batch_size(),
        )))
    }
}

/// Runs one statement and streams its rows (one partition).
#[derive(Debug)]
pub struct DatabaseScanExec {
    db: Arc<Database>,
    statement: String,
    schema: SchemaRef,
    batch_size: usize,
    properties: Arc<PlanProperties>,
}

impl DatabaseScanExec {
    fn new(db: Arc<Database>, statement: String, schema: SchemaRef, batch_size: usize) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            db,
            statement,
            schema,
            batch_size,
            properties,
        }
    }

    /// The statement this scan sends (plan tests read it).
    pub fn statement(&self) -> &str {
        &self.statement
    }

    /// The connection it runs on.
    pub fn connection(&self) -> &str {
        &self.db.name
    }
}

impl DisplayAs for DatabaseScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The statement holds policy literals: plans shown to users name
        // the connection only.
        write!(f, "DatabaseScanExec: connection={}", self.db.name)
    }
}

impl ExecutionPlan for DatabaseScanExec {
    fn name(&self) -> &str {
        "DatabaseScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "DatabaseScanExec has no children".into(),
            ))
        }
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_expr::PhysicalExpr>,
        ) -> datafusion::common::Result<
            datafusion::common::tree_node::TreeNodeRecursion,
        >,
    ) -> datafusion::common::Result<datafusion::common::tree_node::TreeNodeRecursion> {
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> datafusion::common::Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "DatabaseScanExec has one partition, not {partition}"
            )));
        }
        let rows = self
            .db
            .stream(
                self.statement.clone(),
                Arc::clone(&self.schema),
                self.batch_size,
            )
            .map(|r| r.map_err(|f| DataFusionError::External(Box::new(f))));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            rows,
        )))
    }

    fn partition_statistics(
        &self,
        _partition: Option<usize>,
    ) -> datafusion::common::Result<Arc<Statistics>> {
        Ok(Arc::new(Statistics::new_unknown(&self.schema)))
    }
}
