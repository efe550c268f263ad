//! Acceleration: a local copy of a database dataset's relation, so
//! notebook reads don't load the owner's production database.
//!
//! An owner marks a database dataset accelerated (`Acceleration`: how often
//! to refresh, how stale a copy may be served, and optionally an
//! incremental column). This node then keeps a **copy** of the relation as
//! it is in the database, every column raw, as parquet files under
//! `<data_dir>/accelerated/<dataset id>/<generation>/`. Reads are served
//! from the copy while it is within its freshness bound, and from the
//! database otherwise (a stale copy is never served).
//!
//! What keeps this safe:
//! * The copy sits below the policy barrier like the source it stands in
//!   for: the dataset's secure view reads it, nothing can name it, and the
//!   view filters and masks the same way over either. Registering a
//!   location inside the acceleration folder is refused.
//! * A copy holds the relation as the *database* returns it to Veil's own
//!   user, so it is exactly what a read of the source would see.
//! * Every refresh is audited (`accelerate.refresh`, with its rows, time
//!   and outcome), and every read says in its audit record whether it was
//!   served from the copy, and how old the copy was.
//!
//! Refreshes: full (the relation read whole into a new generation), or
//! incremental with `incremental_column` (only rows whose column passed the
//! last refresh's highest value are read; with a primary key they replace
//! their older versions, without one they are appended). Deletions reach
//! the copy only through a full refresh: an incremental copy gets a full
//! one every `full_refresh_every` refreshes. One refresh runs at a time per
//! node, on a background task that wakes every few seconds; a refresh on
//! demand (`veil admin refresh`) runs at once. A new generation becomes the
//! served one atomically; the one before it stays on disk (tickets issued
//! for it still read it) until the next refresh replaces it.
//!
//! Each generation carries a manifest (`copy.json`: when it was refreshed,
//! its rows, the incremental column's high-water mark, the dictionary and
//! source it was made from), written before the generation is published.
//! So a copy survives a restart of its node: the newest complete
//! generation is served again while it is within its freshness bound and
//! matches the dataset's dictionary and source, and incremental refreshes
//! continue from it. Anything else in the folder (a refresh cut short, a
//! generation without a manifest) is removed at start.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::audit::{AuditEventExt, AuditLog};
use crate::catalog::database::Databases;
use crate::catalog::database::sql::{Renderer, Select, from_clause, source_column};
use crate::catalog::state::StateCache;
use crate::error::{Result, VeilError};
use crate::model::audit::AuditEvent;
use crate::model::dataset::{
    Acceleration, DatabaseSource, DatasetRecord, FileFormatKind, SourceSpec,
};
use crate::model::source_kind::SourceKind;
use crate::policy::effective::dictionary_schema;

/// Rows per file of a copy (each file's row groups split endpoints).
const ROWS_PER_FILE: usize = 1_000_000;
/// Rows per row group.
const ROWS_PER_GROUP: usize = 64 * 1024;
/// An incremental copy is rebuilt whole every this many refreshes, so rows
/// deleted in the database leave it.
pub const FULL_REFRESH_EVERY: u64 = 24;
/// A failed scheduled refresh is tried again after this long.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// A generation's manifest file.
const MANIFEST: &str = "copy.json";

/// One generation of a dataset's copy.
#[derive(Debug, Clone)]
pub struct Copy {
    /// The generation's folder (its files are `part-NNNNN.parquet`).
    pub dir: PathBuf,
    pub generation: u64,
    pub refreshed_at: chrono::DateTime<chrono::Utc>,
    pub rows: u64,
    /// The incremental column's highest value, as a SQL literal of the
    /// source's dialect (`None`: full refreshes only, or an empty copy).
    high_water: Option<String>,
    /// Refreshes since the last full one.
    since_full: u64,
    /// The dictionary and source the copy was made from: a changed one
    /// needs a new copy.
    dictionary: String,
}

/// What a generation's manifest holds: the [`Copy`] but its folder.
#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest {
    generation: u64,
    refreshed_at_ms: i64,
    rows: u64,
    high_water: Option<String>,
    since_full: u64,
    dictionary: String,
}

impl Copy {
    fn manifest(&self) -> Manifest {
        Manifest {
            generation: self.generation,
            refreshed_at_ms: self.refreshed_at.timestamp_millis(),
            rows: self.rows,
            high_water: self.high_water.clone(),
            since_full: self.since_full,
            dictionary: self.dictionary.clone(),
        }
    }

    fn from_manifest(dir: PathBuf, m: Manifest) -> Option<Self> {
        Some(Self {
            dir,
            generation: m.generation,
            refreshed_at: chrono::DateTime::from_timestamp_millis(m.refreshed_at_ms)?,
            rows: m.rows,
            high_water: m.high_water,
            since_full: m.since_full,
            dictionary: m.dictionary,
        })
    }

    /// A record reading this generation's files as a parquet dataset.
    pub fn as_files(&self, d: &DatasetRecord) -> DatasetRecord {
        let mut copy = d.clone();
        copy.source = SourceSpec {
            format: FileFormatKind::Parquet,
            location: self.dir.display().to_string(),
            hive_partitioned: false,
            database: None,
        };
        copy
    }

    /// How old it is at `now`, in whole seconds.
    pub fn age_secs(&self, now: chrono::DateTime<chrono::Utc>) -> i64 {
        (now - self.refreshed_at).num_seconds().max(0)
    }
}

/// This node's copies of accelerated datasets.
#[derive(Debug)]
pub struct Accelerator {
    dir: PathBuf,
    databases: Arc<Databases>,
    batch_size: usize,
    /// By dataset id: the served generation.
    copies: Mutex<HashMap<String, Copy>>,
    /// One refresh at a time on this node.
    running: tokio::sync::Mutex<()>,
    /// When a scheduled refresh of a dataset last failed: it is retried a
    /// minute later, not at every tick.
    failed: Mutex<HashMap<String, Instant>>,
    audit: Mutex<Option<AuditLog>>,
}

impl Accelerator {
    /// Copies live under `dir`. Copies an earlier run of this node made
    /// are served again (each is checked against its dataset when a read
    /// asks for it: [`Accelerator::fresh`]); what is not a complete
    /// generation is removed.
    pub fn open(dir: &Path, databases: Arc<Databases>, batch_size: usize) -> Result<Arc<Self>> {
        std::fs::create_dir_all(dir).map_err(|e| {
            VeilError::FailedPrecondition(format!(
                "cannot create the acceleration folder {}: {e}",
                dir.display()
            ))
        })?;
        let dir = std::fs::canonicalize(dir)
            .map_err(|e| VeilError::FailedPrecondition(format!("acceleration folder: {e}")))?;
        let copies = restore(&dir);
        if !copies.is_empty() {
            tracing::info!(
                copies = copies.len(),
                "accelerated copies kept from an earlier run"
            );
        }
        Ok(Arc::new(Self {
            dir,
            databases,
            batch_size: batch_size.max(1),
            copies: Mutex::new(copies),
            running: tokio::sync::Mutex::new(()),
            failed: Mutex::new(HashMap::new()),
            audit: Mutex::new(None),
        }))
    }

    /// Record refreshes in `audit`.
    pub fn set_audit(&self, audit: AuditLog) {
        if let Ok(mut a) = self.audit.lock() {
            *a = Some(audit);
        }
    }

    /// The folder copies live in (no dataset may be registered inside it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The copy to serve `d` from at `now`: the served generation, if it
    /// exists, was made with `d`'s dictionary and is within the freshness
    /// bound.
    pub fn fresh(&self, d: &DatasetRecord, now: chrono::DateTime<chrono::Utc>) -> Option<Copy> {
        let acceleration = acceleration_of(d)?;
        let copy = self.copies.lock().ok()?.get(&d.id).cloned()?;
        let fresh = copy.age_secs(now) <= acceleration.max_staleness_secs as i64
            && copy.dictionary == self.copy_key(d);
        fresh.then_some(copy)
    }

    /// The generation a ticket's copy files belong to, if it is still on
    /// disk (the served one or the one before it).
    pub fn generation_of(&self, d: &DatasetRecord, file: &str) -> Option<Copy> {
        let path = Path::new(file);
        let dir = path.parent()?;
        if dir.parent()? != self.dir.join(&d.id) || !dir.is_dir() {
            return None;
        }
        let generation: u64 = dir.file_name()?.to_str()?.parse().ok()?;
        let copies = self.copies.lock().ok()?;
        let served = copies.get(&d.id)?;
        let mut copy = served.clone();
        copy.dir = dir.to_path_buf();
        copy.generation = generation;
        Some(copy)
    }

    /// Refresh every accelerated dataset that is due, one at a time, until
    /// the process ends. Wakes every `tick`.
    pub fn spawn_scheduler(self: &Arc<Self>, state: Arc<StateCache>, tick: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                let Some(this) = weak.upgrade() else { return };
                let asked = chrono::Utc::now();
                let Ok(snapshot) = state.current().await else {
                    continue;
                };
                let now = chrono::Utc::now();
                this.forget_unaccelerated(&snapshot, asked).await;
                for d in snapshot.datasets.values() {
                    let Some(a) = acceleration_of(d) else {
                        continue;
                    };
                    let due = match this.copies.lock().ok().and_then(|c| c.get(&d.id).cloned()) {
                        None => true,
                        Some(c) => {
                            c.dictionary != this.copy_key(d)
                                || (a.refresh_secs > 0 && c.age_secs(now) >= a.refresh_secs as i64)
                        }
                    };
                    let backing_off = this
                        .failed
                        .lock()
                        .ok()
                        .and_then(|f| f.get(&d.id).copied())
                        .is_some_and(|t| t.elapsed() < RETRY_AFTER);
                    if due && !backing_off {
                        // Failures are audited and logged, and retried later.
                        let failed = this.refresh(d, "scheduled", false).await.is_err();
                        if let Ok(mut f) = this.failed.lock() {
                            if failed {
                                f.insert(d.id.clone(), Instant::now());
                            } else {
                                f.remove(&d.id);
                            }
                        }
                    }
                }
            }
        });
    }

    /// What a copy of `d` is made from: its connection's target (where it
    /// points: a re-pointed connection needs a new copy), its relation and
    /// its dictionary.
    fn copy_key(&self, d: &DatasetRecord) -> String {
        let target = d
            .source
            .database
            .as_ref()
            .and_then(|s| self.databases.get(&s.connection).ok())
            .map(|db| db.target.clone())
            .unwrap_or_default();
        format!("{target}\u{1f}{}", dictionary_key(d))
    }

    /// Drop the copies of datasets that are gone or no longer accelerated
    /// in `snapshot` (an earlier run's, or turned off since), folders and
    /// all; a copy refreshed after the snapshot was read (`asked`) stays.
    async fn forget_unaccelerated(
        &self,
        snapshot: &crate::model::snapshot::Snapshot,
        asked: chrono::DateTime<chrono::Utc>,
    ) {
        let accelerated: std::collections::HashSet<&str> = snapshot
            .datasets
            .values()
            .filter(|d| acceleration_of(d).is_some())
            .map(|d| d.id.as_str())
            .collect();
        // No refresh runs meanwhile, so none publishes into a folder being
        // removed.
        let _one = self.running.lock().await;
        let gone: Vec<String> = match self.copies.lock() {
            Ok(mut copies) => {
                let gone: Vec<String> = copies
                    .iter()
                    .filter(|(id, c)| !accelerated.contains(id.as_str()) && c.refreshed_at < asked)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in &gone {
                    copies.remove(id);
                }
                gone
            }
            Err(_) => return,
        };
        for id in gone {
            tracing::info!(dataset_id = %id, "an accelerated copy no longer needed was removed");
            let dir = self.dir.join(&id);
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
        }
    }

    /// Refresh `d`'s copy now; `why` goes in the audit record. Returns
    /// what was done, in words: with the copy's rows when `count_rows`
    /// (the caller may learn how many rows the dataset holds).
    pub async fn refresh(&self, d: &DatasetRecord, why: &str, count_rows: bool) -> Result<String> {
        let started = Instant::now();
        let _one = self.running.lock().await;
        let result = self.refresh_now(d).await;
        let mut event = AuditEvent::new("accelerate.refresh", None).dataset(&d.name);
        event.duration_ms = Some(started.elapsed().as_millis() as u64);
        match &result {
            Ok((copy, how)) => {
                event.rows = Some(copy.rows);
                event.message = format!("{why} {how} refresh: generation {}", copy.generation);
            }
            Err(e) => {
                tracing::warn!(dataset = %d.name, error = %e.audit_message(), "an accelerated copy could not be refreshed");
                event = event.failed(e);
                event.message = format!("{why} refresh failed: {}", e.audit_message());
            }
        }
        let audit = self.audit.lock().ok().and_then(|a| a.clone());
        if let Some(audit) = audit {
            audit.record(event).await?;
        }
        let (copy, how) = result?;
        // How long it took grows with the rows: said with them only.
        Ok(match count_rows {
            true => format!(
                "{} refreshed ({how}): {} rows, generation {}, in {} ms",
                d.name,
                copy.rows,
                copy.generation,
                started.elapsed().as_millis()
            ),
            false => format!(
                "{} refreshed ({how}): generation {}",
                d.name, copy.generation
            ),
        })
    }

    async fn refresh_now(&self, d: &DatasetRecord) -> Result<(Copy, &'static str)> {
        let Some(source) = d.source.database.as_ref() else {
            return Err(VeilError::FailedPrecondition(format!(
                "{} is not a database dataset: only those are accelerated",
                d.name
            )));
        };
        let Some(acceleration) = source.acceleration.as_ref() else {
            return Err(VeilError::FailedPrecondition(format!(
                "{} is not accelerated; its owner turns acceleration on first (veil admin accelerate)",
                d.name
            )));
        };
        let db = self.databases.get(&source.connection)?;
        let schema = Arc::new(dictionary_schema(d)?);
        let previous = self.copies.lock().ok().and_then(|c| c.get(&d.id).cloned());
        let incremental = match (&acceleration.incremental_column, &previous) {
            (Some(column), Some(p))
                if p.dictionary == self.copy_key(d)
                    && p.since_full + 1 < FULL_REFRESH_EVERY
                    && p.high_water.is_some() =>
            {
                Some((column.as_str(), p))
            }
            _ => None,
        };
        let generation = previous.as_ref().map_or(1, |p| p.generation + 1);
        let base = self.dir.join(&d.id);
        let building = base.join(format!("{generation}.building"));
        let _ = std::fs::remove_dir_all(&building);
        std::fs::create_dir_all(&building).map_err(|e| {
            VeilError::FailedPrecondition(format!("cannot write the accelerated copy: {e}"))
        })?;
        let columns: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| {
                source_column(
                    source.engine,
                    f.name(),
                    f.data_type(),
                    source
                        .column_types
                        .get(f.name())
                        .map(String::as_str)
                        .unwrap_or_default(),
                )
            })
            .collect();
        let mut select = Select {
            engine: source.engine,
            from: from_clause(source.engine, &source.relation),
            columns,
            conditions: vec![],
            limit: None,
        };
        let how;
        let rows = match incremental {
            None => {
                how = "full";
                let stream = db.stream(select.render(), Arc::clone(&schema), self.batch_size);
                write_copy(
                    &building,
                    Arc::clone(&schema),
                    stream.map(|r| r.map_err(VeilError::from)),
                )
                .await?
            }
            Some((column, p)) => {
                how = "incremental";
                let c = select
                    .columns
                    .iter()
                    .find(|c| c.name == column)
                    .cloned()
                    .ok_or_else(|| {
                        VeilError::FailedPrecondition(format!(
                            "{}'s incremental column '{column}' is not in its dictionary",
                            d.name
                        ))
                    })?;
                let high = p.high_water.clone().unwrap_or_default();
                select
                    .conditions
                    .push(format!("({} > {high})", c.reference));
                let changed: Vec<RecordBatch> = db
                    .stream(select.render(), Arc::clone(&schema), self.batch_size)
                    .map(|r| r.map_err(VeilError::from))
                    .collect::<Vec<_>>()
                    .await
                    .into_iter()
                    .collect::<Result<_>>()?;
                merge(&p.dir, &building, Arc::clone(&schema), changed, source).await?
            }
        };
        let high_water = match &acceleration.incremental_column {
            Some(column) => high_water(&building, column, source, &schema).await?,
            None => None,
        };
        let dir = base.join(generation.to_string());
        let copy = Copy {
            dir: dir.clone(),
            generation,
            refreshed_at: chrono::Utc::now(),
            rows,
            high_water,
            since_full: match how {
                "full" => 0,
                _ => previous.as_ref().map_or(0, |p| p.since_full + 1),
            },
            dictionary: self.copy_key(d),
        };
        // The manifest, everything on disk, then the generation whole, at
        // once: a machine crash leaves a complete generation or none.
        let manifest = serde_json::to_vec(&copy.manifest())
            .map_err(|e| VeilError::internal("encoding an accelerated copy's manifest", e))?;
        let (from, to, base_dir) = (building.clone(), dir.clone(), base.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::write(from.join(MANIFEST), manifest)?;
            for file in std::fs::read_dir(&from)? {
                std::fs::File::open(file?.path())?.sync_all()?;
            }
            std::fs::File::open(&from)?.sync_all()?;
            std::fs::rename(&from, &to)?;
            std::fs::File::open(&base_dir)?.sync_all()
        })
        .await
        .map_err(|e| VeilError::internal("publishing an accelerated copy", e))?
        .map_err(|e| {
            VeilError::FailedPrecondition(format!("cannot publish the accelerated copy: {e}"))
        })?;
        if let Ok(mut copies) = self.copies.lock() {
            copies.insert(d.id.clone(), copy.clone());
        }
        // Keep the generation before (tickets issued for it), drop older.
        if let Ok(entries) = std::fs::read_dir(&base) {
            for e in entries.flatten() {
                let name = e.file_name();
                let keep = name
                    .to_str()
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|g| g + 1 >= generation);
                if !keep {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        tracing::info!(dataset = %d.name, rows = copy.rows, generation, how, "accelerated copy refreshed");
        Ok((copy, how))
    }
}

/// The dataset's acceleration settings, if it is an accelerated database
/// dataset.
pub fn acceleration_of(d: &DatasetRecord) -> Option<&Acceleration> {
    match SourceKind::of(d) {
        SourceKind::Database(_) => d.source.database.as_ref()?.acceleration.as_ref(),
        _ => None,
    }
}

/// What a copy's validity depends on in the record: its source (the
/// connection and the relation) and its columns and types.
fn dictionary_key(d: &DatasetRecord) -> String {
    let source = d
        .source
        .database
        .as_ref()
        .map(|s| serde_json::to_string(&(&s.connection, &s.relation)).unwrap_or_default())
        .unwrap_or_default();
    std::iter::once(source)
        .chain(
            d.columns
                .iter()
                .map(|c| format!("{}:{}:{}", c.name, c.data_type, c.nullable)),
        )
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

/// The newest complete generation of each dataset's copy under `dir`, as
/// an earlier run left them; everything else there is removed (a refresh
/// cut short, a generation without a readable manifest, older ones).
fn restore(dir: &Path) -> HashMap<String, Copy> {
    let mut copies = HashMap::new();
    let Ok(datasets) = std::fs::read_dir(dir) else {
        return copies;
    };
    for dataset in datasets.flatten() {
        let base = dataset.path();
        let Some(id) = dataset.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let mut complete: Vec<Copy> = Vec::new();
        for generation in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let path = generation.path();
            let copy = std::fs::read(path.join(MANIFEST))
                .ok()
                .and_then(|m| serde_json::from_slice::<Manifest>(&m).ok())
                .and_then(|m| Copy::from_manifest(path.clone(), m));
            let named = generation
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok());
            match (copy, named) {
                (Some(copy), Some(g)) if g == copy.generation => complete.push(copy),
                _ => {
                    let _ = std::fs::remove_dir_all(&path);
                }
            }
        }
        complete.sort_by_key(|c| c.generation);
        if let Some(newest) = complete.pop() {
            // The one before stays too (as after a refresh), older ones go.
            for older in complete.iter().rev().skip(1) {
                let _ = std::fs::remove_dir_all(&older.dir);
            }
            copies.insert(id, newest);
        } else {
            let _ = std::fs::remove_dir_all(&base);
        }
    }
    copies
}

/// Write `batches` as parquet files of at most [`ROWS_PER_FILE`] rows
/// into `dir`; returns the rows written.
async fn write_copy(
    dir: &Path,
    schema: SchemaRef,
    batches: impl futures::Stream<Item = Result<RecordBatch>>,
) -> Result<u64> {
    let props = WriterProperties::builder()
        .set_compression(Compression::LZ4_RAW)
        .set_max_row_group_row_count(Some(ROWS_PER_GROUP))
        .build();
    let fail = |e: &dyn std::fmt::Display| {
        VeilError::FailedPrecondition(format!("cannot write the accelerated copy: {e}"))
    };
    let mut file_index = 0usize;
    let mut in_file = 0usize;
    let mut total = 0u64;
    let mut writer: Option<AsyncArrowWriter<tokio::fs::File>> = None;
    futures::pin_mut!(batches);
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        if writer.is_none() || in_file >= ROWS_PER_FILE {
            if let Some(w) = writer.take() {
                w.close().await.map_err(|e| fail(&e))?;
            }
            let file = tokio::fs::File::create(dir.join(format!("part-{file_index:05}.parquet")))
                .await
                .map_err(|e| fail(&e))?;
            writer = Some(
                AsyncArrowWriter::try_new(file, Arc::clone(&schema), Some(props.clone()))
                    .map_err(|e| fail(&e))?,
            );
            file_index += 1;
            in_file = 0;
        }
        in_file += batch.num_rows();
        total += batch.num_rows() as u64;
        if let Some(w) = writer.as_mut() {
            w.write(&batch).await.map_err(|e| fail(&e))?;
        }
    }
    match writer {
        Some(w) => {
            w.close().await.map_err(|e| fail(&e))?;
        }
        // An empty relation: one empty file, so the copy has its schema.
        None => {
            let file = tokio::fs::File::create(dir.join("part-00000.parquet"))
                .await
                .map_err(|e| fail(&e))?;
            AsyncArrowWriter::try_new(file, schema, Some(props))
                .map_err(|e| fail(&e))?
                .close()
                .await
                .map_err(|e| fail(&e))?;
        }
    }
    Ok(total)
}

/// The previous copy (at `old`) with `changed` rows merged in, written to
/// `dir`: with a one-column primary key a changed row replaces the old
/// version of its key, without one it is appended.
async fn merge(
    old: &Path,
    dir: &Path,
    schema: SchemaRef,
    changed: Vec<RecordBatch>,
    source: &DatabaseSource,
) -> Result<u64> {
    let fail = |e: datafusion::error::DataFusionError| {
        tracing::warn!(error = %crate::redact::describe(&e), "merging an incremental refresh failed");
        VeilError::FailedPrecondition(
            "an incremental refresh could not be merged into the accelerated copy; the next full refresh rebuilds it".into(),
        )
    };
    let ctx = SessionContext::new();
    let opts = datafusion::prelude::ParquetReadOptions {
        schema: Some(&schema),
        ..Default::default()
    };
    let previous = ctx
        .read_parquet(old.display().to_string(), opts)
        .await
        .map_err(fail)?;
    // Nothing changed since the last refresh: the copy is rewritten as it
    // was (`read_batches` of no batch has no columns to join or union).
    if changed.iter().all(|b| b.num_rows() == 0) {
        let stream = previous.execute_stream().await.map_err(fail)?;
        return write_copy(dir, schema, stream.map(|r| r.map_err(fail))).await;
    }
    let new = ctx.read_batches(changed.clone()).map_err(fail)?;
    let merged = match source.primary_key.as_slice() {
        [key] => {
            let keys = ctx
                .read_batches(changed)
                .map_err(fail)?
                .select_columns(&[key.as_str()])
                .map_err(fail)?;
            previous
                .join(
                    keys,
                    datafusion::prelude::JoinType::LeftAnti,
                    &[key.as_str()],
                    &[key.as_str()],
                    None,
                )
                .map_err(fail)?
                .union(new)
                .map_err(fail)?
        }
        _ => previous.union(new).map_err(fail)?,
    };
    let stream = merged.execute_stream().await.map_err(fail)?;
    write_copy(dir, schema, stream.map(|r| r.map_err(fail))).await
}

/// The incremental column's highest value in the copy at `dir`, as a
/// literal of the source's dialect.
async fn high_water(
    dir: &Path,
    column: &str,
    source: &DatabaseSource,
    schema: &SchemaRef,
) -> Result<Option<String>> {
    let fail = |e: datafusion::error::DataFusionError| {
        tracing::warn!(error = %crate::redact::describe(&e), "reading the copy's highest value failed");
        VeilError::FailedPrecondition("the accelerated copy could not be read back".into())
    };
    let ctx = SessionContext::new();
    let opts = datafusion::prelude::ParquetReadOptions {
        schema: Some(schema),
        ..Default::default()
    };
    let batches = ctx
        .read_parquet(dir.display().to_string(), opts)
        .await
        .map_err(fail)?
        .aggregate(
            vec![],
            vec![datafusion::functions_aggregate::expr_fn::max(
                datafusion::prelude::col(datafusion::common::Column::from_name(column)),
            )],
        )
        .map_err(fail)?
        .collect()
        .await
        .map_err(fail)?;
    let Some(b) = batches.first() else {
        return Ok(None);
    };
    let value = datafusion::common::ScalarValue::try_from_array(b.column(0), 0).map_err(fail)?;
    let field = schema.field_with_name(column).map_err(|_| {
        VeilError::FailedPrecondition(format!(
            "incremental column '{column}' is not in the dictionary"
        ))
    })?;
    let c = source_column(
        source.engine,
        column,
        field.data_type(),
        source
            .column_types
            .get(column)
            .map(String::as_str)
            .unwrap_or_default(),
    );
    let columns = std::collections::BTreeMap::from([(column.to_string(), c)]);
    let renderer = Renderer {
        engine: source.engine,
        columns: &columns,
    };
    Ok(renderer.literal_of(column, &value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generation(base: &Path, g: u64, manifest: bool) {
        let dir = base.join(g.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("part-00000.parquet"), b"x").unwrap();
        if manifest {
            let copy = Copy {
                dir: dir.clone(),
                generation: g,
                refreshed_at: chrono::DateTime::from_timestamp_millis(1_000 * g as i64).unwrap(),
                rows: g * 10,
                high_water: Some(format!("{g}")),
                since_full: g,
                dictionary: "d".into(),
            };
            std::fs::write(
                dir.join(MANIFEST),
                serde_json::to_vec(&copy.manifest()).unwrap(),
            )
            .unwrap();
        }
    }

    /// A restart serves the newest complete generation of each copy with
    /// what its manifest says, keeps the one before it, and removes the
    /// rest: older generations, refreshes cut short, folders without a
    /// manifest or with a mislabelled one.
    #[test]
    fn a_restart_keeps_the_newest_complete_generation_only() {
        let root = tempfile::tempdir().unwrap();
        let a = root.path().join("dataset-a");
        for g in 1..=3 {
            generation(&a, g, true);
        }
        generation(&a, 5, false);
        std::fs::create_dir_all(a.join("6.building")).unwrap();
        // A manifest copied into another generation's folder.
        generation(&a, 7, false);
        std::fs::copy(a.join("3").join(MANIFEST), a.join("7").join(MANIFEST)).unwrap();
        let b = root.path().join("dataset-b");
        generation(&b, 1, false);

        let copies = restore(root.path());
        assert_eq!(copies.len(), 1, "dataset-b has no complete generation");
        let copy = &copies["dataset-a"];
        assert_eq!(copy.generation, 3);
        assert_eq!(copy.rows, 30);
        assert_eq!(copy.high_water.as_deref(), Some("3"));
        assert_eq!(copy.since_full, 3);
        assert_eq!(copy.refreshed_at.timestamp_millis(), 3_000);
        assert_eq!(copy.dir, a.join("3"));
        let mut left: Vec<String> = std::fs::read_dir(&a)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["2", "3"]);
        assert!(!b.exists());
    }
}

#[cfg(test)]
mod restored_tests {
    use super::*;
    use crate::model::dataset::DatabaseEngine;

    /// A copy an earlier run left is served again only while it is fresh
    /// and was made from what the dataset is now: its connection's target,
    /// its relation and its dictionary.
    #[tokio::test]
    async fn a_restored_copy_is_served_only_if_fresh_and_made_from_the_same_source() {
        let root = tempfile::tempdir().unwrap();
        let mut d = crate::engine::database_plans::people("crm.people", DatabaseEngine::Postgres);
        if let Some(s) = d.source.database.as_mut() {
            s.acceleration = Some(Acceleration {
                refresh_secs: 0,
                max_staleness_secs: 600,
                incremental_column: None,
            });
        }
        let config = tempfile::tempdir().unwrap();
        let databases = databases_at(config.path(), "127.0.0.1");
        let first = Accelerator::open(root.path(), Arc::clone(&databases), 1024).unwrap();
        let now = chrono::Utc::now();
        // What a refresh publishes, by hand (no database here).
        let copy = Copy {
            dir: root.path().join(&d.id).join("4"),
            generation: 4,
            refreshed_at: now - chrono::Duration::seconds(60),
            rows: 3,
            high_water: None,
            since_full: 0,
            dictionary: first.copy_key(&d),
        };
        std::fs::create_dir_all(&copy.dir).unwrap();
        std::fs::write(
            copy.dir.join(MANIFEST),
            serde_json::to_vec(&copy.manifest()).unwrap(),
        )
        .unwrap();
        drop(first);

        let again = Accelerator::open(root.path(), Arc::clone(&databases), 1024).unwrap();
        let served = again.fresh(&d, now).expect("fresh and the same source");
        assert_eq!(served.generation, 4);
        assert!(
            again
                .fresh(&d, now + chrono::Duration::seconds(600))
                .is_none(),
            "past its freshness bound"
        );
        let mut retyped = d.clone();
        retyped.columns[1].data_type = "Int64".into();
        assert!(again.fresh(&retyped, now).is_none(), "another dictionary");
        let mut moved = d.clone();
        if let Some(s) = moved.source.database.as_mut() {
            s.relation = crate::model::dataset::DatabaseRelation::Table {
                schema: "archive".into(),
                name: "people".into(),
            };
        }
        assert!(again.fresh(&moved, now).is_none(), "another relation");
        drop(again);
        // The connection re-pointed (a config change, then a restart).
        let elsewhere = tempfile::tempdir().unwrap();
        let repointed = Accelerator::open(
            root.path(),
            databases_at(elsewhere.path(), "192.0.2.7"),
            1024,
        )
        .unwrap();
        assert!(
            repointed.fresh(&d, now).is_none(),
            "a copy of another database"
        );
    }

    /// The demo's config with a PostgreSQL connection `crm` to `host`
    /// (never opened here).
    fn databases_at(dir: &Path, host: &str) -> Arc<Databases> {
        let path = crate::demo::prepare(dir).unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&format!(
            "\n[[connections]]\nname = \"crm\"\nkind = \"postgres\"\nhost = \"{host}\"\nport = 5432\nuser = \"postgres\"\ndatabase = \"test\"\n"
        ));
        std::fs::write(&path, text).unwrap();
        let cfg = crate::config::Config::load(&path).unwrap();
        Arc::new(Databases::from_config(&cfg).unwrap())
    }
}
