//! Kept copies: a file's rows decoded once and kept, with its costly
//! masks' values, so a read (governed or not) costs a copy from the disk
//! cache instead of a parquet, CSV or JSON decode and the masks' work.
//!
//! A keyed hash, a cipher, a regex or a rounding gives the same output for
//! the same row every time (`secure_view::keepable_masks` says which masks
//! qualify: deterministic, and worth it). So after a read of a file, a
//! background job writes a **kept copy** of each file it read: an Arrow
//! IPC file (uncompressed: its blocks are read back as Arrow, not decoded)
//! under `<data_dir>/kept-masks` with the file's own columns and rows, in
//! the same order, a parquet file's row groups ending on block boundaries
//! (so an endpoint's row groups are a range of blocks), plus one stored
//! column per masked column's expression (none for a read without such
//! masks: a plain decoded copy). When the read's row policies can be
//! applied once (`secure_view::keepable_rows`: bound to the principal's
//! attributes, deterministic), the copy holds only the rows they keep, in
//! blocks of exactly the rows a row-filtered read sends per batch
//! (`even_batches::piece_rows`), so such a read sends the copy's blocks
//! as they are instead of regrouping them.
//! Later reads whose policy asks for exactly those expressions (and binds
//! its row policies alike) scan the copy instead (`catalog::copy_scan`),
//! and the view projects the stored column where it would have computed
//! the mask, and filters no row the copy already left out.
//!
//! What keeps this safe:
//! * A copy is found by a keyed digest ([`KeyPurpose::KeptMasks`]) of the
//!   dataset, the file's location, size, modification time and version
//!   (ETag, or a local file's inode and nanosecond time), the dictionary, and every stored expression's fingerprint (the masks with
//!   their conditions and bound attributes, the column's type, and keys
//!   derived from the master key), and the bound row predicate it applied. A read uses a copy only when every part
//!   of that digest matches its own: a changed file, dictionary, policy or
//!   key means another name, so a copy made for one policy never serves
//!   another. Files without a modification time are never copied.
//! * Copies sit below the policy barrier like the source they stand in
//!   for: nothing can name them, and the view filters and masks the same
//!   way over either.
//! * Each server instance writes in a folder of its own (locked while it
//!   runs; folders no running server holds are removed at start-up), so
//!   copies never outlive the server that made them. The folder is bounded
//!   by `engine.kept_masks_max_mb` (least recently used copies go first; a
//!   build stops once it would pass the limit). A copy a running read or a
//!   kept plan still uses is deleted when that ends ([`KeptCopy`] is the
//!   lease); every build gets a new file name, so a late delete never hits
//!   a newer copy, and a copy deleted behind Veil's back is forgotten.
//!
//! Builds run one at a time on one background task, from a bounded queue
//! (a full queue drops the job: the next read asks again); a failed build
//! is logged without values and not retried for ten minutes.

use datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::BatchCoalescer;
use datafusion::arrow::datatypes::{FieldRef, SchemaRef};
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::execution::runtime_env::RuntimeEnv;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::catalog::copy_scan::{CHECKSUMS_KEY, Checksummed};
use crate::catalog::files::{Listing, SourceFile, parquet_row_groups};
use crate::catalog::source_table::{CopiedFile, CopiedFiles, SourceTable};
use crate::error::{Result, VeilError};
use crate::model::dataset::{DatasetRecord, FileFormatKind};
use crate::policy::secure_view::{KEPT_ROWS_FLAG, KeepableMask, KeepableRows, copy_plan};
use crate::secrets::{KeyPurpose, MasterKey, SecretKey};

/// About how many bytes a kept copy's block holds.
const BLOCK_BYTES: usize = 2 * 1024 * 1024;

/// Jobs waiting for the builder at most; more are dropped.
const QUEUE: usize = 64;

/// Longest one copy may take to build; then it is given up (and counts as
/// failed).
const BUILD_TIMEOUT: Duration = Duration::from_secs(1800);

/// How long a copy that failed to build is not tried again.
const RETRY_AFTER: Duration = Duration::from_secs(600);

/// A kept copy on disk. Shared by the index and by every plan reading it;
/// the file is deleted when the last holder lets go.
#[derive(Debug)]
pub struct KeptCopy {
    path: PathBuf,
    size: u64,
    /// The stored columns after the file's own, as written.
    fields: Vec<FieldRef>,
    /// Where each source row group starts among the blocks, then the
    /// block count (`CopiedFile::row_groups`); empty for a copy that is
    /// never read by row groups.
    row_groups: Vec<usize>,
    /// The row each block starts at, then the copy's rows
    /// (`CopiedFile::block_starts`).
    block_starts: Arc<[u64]>,
    last_used: AtomicU64,
}

impl KeptCopy {
    /// Is the file still there (nobody deleted it behind Veil's back)?
    pub fn exists(&self) -> bool {
        self.path.exists()
    }
}

impl Drop for KeptCopy {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(error = %e, path = %self.path.display(), "a kept copy could not be deleted");
        }
    }
}

/// A copy to build.
struct Job {
    key: [u8; 32],
    dataset: DatasetRecord,
    listing: Listing,
    file: SourceFile,
    masks: Vec<KeepableMask>,
    rows: Option<KeepableRows>,
}

#[derive(Default)]
struct Index {
    ready: HashMap<[u8; 32], Arc<KeptCopy>>,
    /// Queued or building.
    pending: std::collections::HashSet<[u8; 32]>,
    failed: HashMap<[u8; 32], Instant>,
    bytes: u64,
    /// Per dataset id: moves whenever one of its copies appears or goes,
    /// so kept plans made before are not reused.
    generations: HashMap<String, u64>,
    tick: u64,
}

/// The kept copies of one node.
pub struct KeptMasks {
    dir: PathBuf,
    /// Held (locked) while this process lives: a folder whose lock can be
    /// taken belongs to no running server and is removed at start-up.
    _lock: std::fs::File,
    max_bytes: u64,
    naming: SecretKey,
    index: Mutex<Index>,
    jobs: tokio::sync::mpsc::Sender<Job>,
}

impl std::fmt::Debug for KeptMasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeptMasks")
            .field("dir", &self.dir)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

/// What a read gets when every file it reads has a copy: the copies, the
/// stored columns by masked column, and the leases to hold while reading.
#[derive(Debug)]
pub struct Copies {
    pub files: CopiedFiles,
    pub columns: HashMap<String, String>,
    /// The copies hold only the rows the read's row policies keep.
    pub rows: bool,
    pub leases: Vec<Arc<KeptCopy>>,
}

impl KeptMasks {
    /// Kept copies under `root` (in a new folder of this instance's:
    /// copies never outlive the server that made them), at most `max_bytes` of them, built with the
    /// object stores of `runtime`. Starts the builder on the current tokio
    /// runtime.
    pub fn open(
        root: &Path,
        max_bytes: u64,
        master: &MasterKey,
        runtime: Arc<RuntimeEnv>,
        batch_size: usize,
    ) -> Result<Arc<Self>> {
        // One folder per server instance, named at random and locked while
        // it runs, so servers sharing a data folder (even across hosts or
        // containers) never empty each other's; folders no server holds
        // are removed.
        let io = |what: &'static str| move |e: std::io::Error| VeilError::internal(what, e);
        std::fs::create_dir_all(root).map_err(io("creating the kept-masks folder"))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
                .map_err(io("securing the kept-masks folder"))?;
        }
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let lock = std::fs::File::create(root.join(format!("{instance}.lock")))
            .map_err(io("locking the kept-masks folder"))?;
        lock.lock().map_err(io("locking the kept-masks folder"))?;
        let dir = root.join(&instance);
        std::fs::create_dir(&dir).map_err(io("creating the kept-masks folder"))?;
        // Absolute: copies are read through the local object store by URL
        // (a relative `data_dir` is relative to where Veil was started).
        let dir = std::fs::canonicalize(&dir).map_err(io("creating the kept-masks folder"))?;
        prune(root, &instance);
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        let kept = Arc::new(Self {
            dir,
            _lock: lock,
            max_bytes,
            naming: master.derive(KeyPurpose::KeptMasks),
            index: Mutex::new(Index::default()),
            jobs: tx,
        });
        let mut config = SessionConfig::new()
            .with_batch_size(batch_size)
            // One stream, rows in file order: a copy keeps the file's order.
            .with_target_partitions(1);
        config
            .options_mut()
            .execution
            .parquet
            .schema_force_view_types = false;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        tokio::spawn(builder(Arc::downgrade(&kept), rx, ctx));
        Ok(kept)
    }

    /// Nothing queued or building.
    pub fn idle(&self) -> bool {
        self.lock().pending.is_empty()
    }

    /// Moves whenever a copy of `dataset_id` appears or is dropped.
    pub fn generation(&self, dataset_id: &str) -> u64 {
        self.lock()
            .generations
            .get(dataset_id)
            .copied()
            .unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The copies of `files` holding `masks` (and, with `rows`, only the
    /// rows it keeps), if every one is kept; else `None`, and with `queue`
    /// the missing ones are queued to be built. `schema`: the source
    /// table's (dictionary columns, partition columns last).
    pub fn copies(
        &self,
        dataset: &DatasetRecord,
        listing: &Listing,
        files: &[&SourceFile],
        schema: &SchemaRef,
        masks: &[KeepableMask],
        rows: Option<&KeepableRows>,
        queue: bool,
    ) -> Option<Copies> {
        if files.is_empty() || self.max_bytes == 0 {
            return None;
        }
        let shape = shape_digest(schema, masks, rows);
        let keys = files
            .iter()
            .map(|f| self.key(dataset, listing, f, &shape))
            .collect::<Option<Vec<_>>>()?;
        let mut index = self.lock();
        index.tick += 1;
        let tick = index.tick;
        let mut found = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        for (key, f) in keys.iter().zip(files) {
            match index.ready.get(key) {
                // A copy deleted behind Veil's back is forgotten, not read.
                Some(c) if !c.exists() => {
                    if let Some(c) = index.ready.remove(key) {
                        index.bytes -= c.size;
                    }
                    *index.generations.entry(dataset.id.clone()).or_default() += 1;
                    missing.push((*key, *f));
                }
                Some(c) => {
                    c.last_used.store(tick, Ordering::Relaxed);
                    found.push((f.path.clone(), Arc::clone(c)));
                }
                None => missing.push((*key, *f)),
            }
        }
        if missing.is_empty() {
            drop(index);
            // Every copy of one mask set over one dictionary stores the same columns.
            let fields = found.first()?.1.fields.clone();
            return Some(Copies {
                files: CopiedFiles {
                    fields,
                    copies: found
                        .iter()
                        .map(|(p, c)| {
                            let copy = CopiedFile {
                                path: c.path.clone(),
                                row_groups: c.row_groups.clone(),
                                block_starts: Arc::clone(&c.block_starts),
                            };
                            (p.clone(), copy)
                        })
                        .collect(),
                },
                columns: masks
                    .iter()
                    .map(|m| (m.column.clone(), m.stored.clone()))
                    .collect(),
                rows: rows.is_some(),
                leases: found.into_iter().map(|(_, c)| c).collect(),
            });
        }
        if !queue {
            return None;
        }
        for (key, f) in missing {
            // A copy holds every column of its file, decoded: more bytes
            // than a parquet file. (Not judged for a copy of the rows a
            // reader's row policies keep: the file's size counts rows the
            // reader can't see, and whether their reads are dealt must not
            // depend on them; its build stops if the copy passes the limit.)
            let too_big = rows.is_none()
                && dataset.source.format == FileFormatKind::Parquet
                && f.size > self.max_bytes;
            if too_big
                || index.pending.contains(&key)
                || index
                    .failed
                    .get(&key)
                    .is_some_and(|at| at.elapsed() < RETRY_AFTER)
            {
                continue;
            }
            let job = Job {
                key,
                dataset: dataset.clone(),
                listing: Listing {
                    url: listing.url.clone(),
                    store: Arc::clone(&listing.store),
                    files: vec![f.clone()],
                },
                file: f.clone(),
                masks: masks.to_vec(),
                rows: rows.cloned(),
            };
            if self.jobs.try_send(job).is_ok() {
                index.pending.insert(key);
            }
        }
        None
    }

    /// A copy's key: a keyed digest of everything its content depends on
    /// (`shape`: [`shape_digest`] of the columns and masks, the same for
    /// every file of a read). `None` for a file without a modification
    /// time (a change to it could go unseen).
    fn key(
        &self,
        dataset: &DatasetRecord,
        listing: &Listing,
        file: &SourceFile,
        shape: &[u8; 32],
    ) -> Option<[u8; 32]> {
        let modified = file.modified_ms?;
        let mut mac = <Hmac<sha2::Sha256>>::new_from_slice(self.naming.bytes())
            .expect("HMAC takes any key length");
        let mut part = |bytes: &[u8]| {
            // Length-prefixed, so no two lists of parts hash alike.
            mac.update(&(bytes.len() as u64).to_be_bytes());
            mac.update(bytes);
        };
        part(b"copy");
        part(dataset.id.as_bytes());
        part(format!("{:?}", dataset.source.format).as_bytes());
        part(listing.url.as_str().as_bytes());
        part(file.path.as_bytes());
        part(&file.size.to_be_bytes());
        part(&modified.to_be_bytes());
        for (k, v) in &file.partition_values {
            part(k.as_bytes());
            part(v.as_bytes());
        }
        part(file.version.as_deref().unwrap_or("").as_bytes());
        part(shape);
        Some(mac.finalize().into_bytes().into())
    }

    /// Keep a built copy, then drop the least recently used ones until the
    /// folder fits its budget again.
    fn keep(&self, key: [u8; 32], dataset_id: &str, copy: KeptCopy) {
        let mut index = self.lock();
        index.pending.remove(&key);
        index.failed.retain(|_, at| at.elapsed() < RETRY_AFTER);
        if copy.size > self.max_bytes {
            tracing::info!(
                bytes = copy.size,
                "a kept copy is larger than engine.kept_masks_max_mb allows; it is not kept"
            );
            index.failed.insert(key, Instant::now());
            return;
        }
        index.tick += 1;
        copy.last_used.store(index.tick, Ordering::Relaxed);
        index.bytes += copy.size;
        index.ready.insert(key, Arc::new(copy));
        *index.generations.entry(dataset_id.to_string()).or_default() += 1;
        while index.bytes > self.max_bytes {
            let Some(oldest) = index
                .ready
                .iter()
                .filter(|(k, _)| **k != key)
                .min_by_key(|(_, c)| c.last_used.load(Ordering::Relaxed))
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some(c) = index.ready.remove(&oldest) {
                index.bytes -= c.size;
            }
            // Which dataset it was for isn't kept: move every generation.
            for g in index.generations.values_mut() {
                *g += 1;
            }
        }
    }

    fn failed(&self, key: [u8; 32]) {
        let mut index = self.lock();
        index.pending.remove(&key);
        index.failed.retain(|_, at| at.elapsed() < RETRY_AFTER);
        index.failed.insert(key, Instant::now());
    }
}

/// A digest of the source's columns (`schema`, partition columns included)
/// and the stored masks: what a copy holds besides its file's rows. Taken
/// once per read, not per file.
fn shape_digest(
    schema: &SchemaRef,
    masks: &[KeepableMask],
    rows: Option<&KeepableRows>,
) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut part = |bytes: &[u8]| {
        // Length-prefixed, so no two lists of parts hash alike.
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    for f in schema.fields() {
        part(f.name().as_bytes());
        part(format!("{:?}/{}", f.data_type(), f.is_nullable()).as_bytes());
    }
    part(b"masks");
    for m in masks {
        part(&m.fingerprint);
    }
    if let Some(r) = rows {
        part(b"rows");
        part(&r.fingerprint);
    }
    h.finalize().into()
}

/// Remove the folders (and lock files) of instances no longer running:
/// those whose lock can be taken, or that have no lock file at all.
fn prune(root: &Path, mine: &str) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let instance = name.strip_suffix(".lock").unwrap_or(&name).to_string();
        if instance == mine {
            continue;
        }
        let lock_path = root.join(format!("{instance}.lock"));
        let free = match std::fs::File::open(&lock_path) {
            Ok(f) => f.try_lock().is_ok(),
            Err(_) => true,
        };
        if free {
            let _ = std::fs::remove_dir_all(root.join(&instance));
            let _ = std::fs::remove_file(&lock_path);
        }
    }
}

/// Build queued copies, one at a time, while the [`KeptMasks`] lives.
async fn builder(
    kept: Weak<KeptMasks>,
    mut jobs: tokio::sync::mpsc::Receiver<Job>,
    ctx: SessionContext,
) {
    while let Some(job) = jobs.recv().await {
        let Some(k) = kept.upgrade() else { return };
        let started = Instant::now();
        let (key, dataset_id) = (job.key, job.dataset.id.clone());
        let (dir, ctx2, max_bytes) = (k.dir.clone(), ctx.clone(), k.max_bytes);
        drop(k);
        // A build allocates as much as a read: the node isn't idle.
        let in_flight = crate::memory::in_flight();
        // Its own task: a panic fails this build only; a build that hangs
        // (a stalled store) is given up after BUILD_TIMEOUT.
        let built = tokio::spawn(async move {
            match tokio::time::timeout(BUILD_TIMEOUT, build(&dir, &ctx2, job, max_bytes)).await {
                Ok(built) => built,
                Err(_) => {
                    // One build at a time: any unfinished file is this one's.
                    if let Ok(entries) = std::fs::read_dir(&dir) {
                        for e in entries.flatten() {
                            if e.path().extension().is_some_and(|x| x == "tmp") {
                                let _ = std::fs::remove_file(e.path());
                            }
                        }
                    }
                    Err(VeilError::Unavailable(format!(
                        "building a kept copy took over {} s",
                        BUILD_TIMEOUT.as_secs()
                    )))
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(VeilError::internal(
                "building a kept copy",
                "the build panicked",
            ))
        });
        drop(in_flight);
        let Some(k) = kept.upgrade() else { return };
        match built {
            Ok(copy) => {
                tracing::info!(
                    dataset_id,
                    bytes = copy.size,
                    stored_columns = copy.fields.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "kept a copy of a file"
                );
                k.keep(key, &dataset_id, copy);
            }
            Err(e) => {
                tracing::warn!(dataset_id, error = %e, "a kept copy could not be built; reads decode the file and compute its masks");
                k.failed(key);
            }
        }
    }
}

/// Write one file's copy, an Arrow IPC file: its columns as read (a
/// parquet file's row groups ending on block boundaries; a copy of the
/// rows a row predicate keeps in blocks of a row-filtered read's batch
/// size instead) and each mask's stored column.
async fn build(dir: &Path, ctx: &SessionContext, job: Job, max_bytes: u64) -> Result<KeptCopy> {
    let piece_rows = super::even_batches::piece_rows(ctx.copied_config().batch_size());
    // Named afresh per build: a copy still held after its eviction can
    // never delete a later build of the same key.
    let name = uuid::Uuid::new_v4().simple().to_string();
    let path = dir.join(format!("{name}.arrow"));
    let tmp = dir.join(format!("{name}.tmp"));
    let bounds = match job.dataset.source.format {
        FileFormatKind::Parquet => parquet_row_groups(&job.listing, &job.file).await?,
        _ => Vec::new(),
    };
    let table = SourceTable::from_listing(&job.dataset, None, job.listing).await?;
    let file_schema = Arc::clone(table.file_schema());
    let table: Arc<dyn datafusion::catalog::TableProvider> = Arc::new(table);
    let plan = copy_plan(
        Arc::clone(&table),
        &file_schema,
        &job.masks,
        job.rows.as_ref(),
    )?;
    // The copy's columns as a read planned over the source declares them,
    // not as the build's execution reports them: a copy of the kept rows
    // computes a mask only where its row flag is set (a CASE without ELSE,
    // nullable), and a mask's function may report a nullable field where
    // its expression is not (`date_trunc`). A read planned over the copy
    // must declare what a read over the source does (GetFlightInfo,
    // GetSchema, GetTables and each endpoint's stream alike, whether the
    // copy exists yet or not).
    let declared = copy_plan(table, &file_schema, &job.masks, None)?;
    let declared = declared.schema().inner();
    let df = ctx
        .execute_logical_plan(plan)
        .await
        .map_err(crate::error::query::from_datafusion)?;
    let mut stream = df
        .execute_stream()
        .await
        .map_err(crate::error::query::from_datafusion)?;
    let flagged = job.rows.is_some();
    let streamed = stream.schema();
    if streamed.fields().len() != declared.fields().len() + usize::from(flagged) {
        return Err(VeilError::internal(
            "building a kept copy",
            "the plan's columns differ from its stream's".to_string(),
        ));
    }
    // The stream's fields with the nullability declared; with a row
    // predicate the plan adds its flag last, and the copy holds the rows
    // it keeps, without it.
    let fields: Vec<FieldRef> = streamed
        .fields()
        .iter()
        .zip(declared.fields())
        .map(|(s, d)| Arc::new(s.as_ref().clone().with_nullable(d.is_nullable())))
        .collect();
    let schema = match flagged {
        true => {
            if streamed.fields().last().map(|f| f.name().as_str()) != Some(KEPT_ROWS_FLAG) {
                return Err(VeilError::internal(
                    "building a kept copy",
                    "the plan lacks its row flag".to_string(),
                ));
            }
            Arc::new(datafusion::arrow::datatypes::Schema::new(fields))
        }
        false => Arc::new(datafusion::arrow::datatypes::Schema::new_with_metadata(
            fields,
            streamed.metadata().clone(),
        )),
    };
    let fields: Vec<FieldRef> = schema.fields()[file_schema.fields().len()..].to_vec();
    // A batch under the declared schema: the same columns (a column with a
    // null where the plan declares none fails the build, and reads go to
    // the source).
    let declare = |batch: RecordBatch| -> Result<RecordBatch> {
        RecordBatch::try_new(Arc::clone(&schema), batch.columns().to_vec())
            .map_err(|e| VeilError::internal("building a kept copy", e))
    };
    // A batch of the flagged plan without its flag, and the flag: which of
    // its rows the copy keeps.
    let flagged_rows = |mut batch: RecordBatch| -> Result<(RecordBatch, BooleanArray)> {
        let last = batch.num_columns() - 1;
        let flag = batch
            .column(last)
            .as_boolean_opt()
            .cloned()
            .ok_or_else(|| {
                VeilError::internal(
                    "building a kept copy",
                    "a row flag that is not boolean".to_string(),
                )
            })?;
        batch.remove_column(last);
        Ok((batch, flag))
    };
    let written = async {
        let file = std::fs::File::create(&tmp)
            .map_err(|e| VeilError::internal("writing a kept copy", e))?;
        let writer = FileWriter::try_new_buffered(Checksummed::new(file), &schema)
            .map_err(|e| VeilError::internal("writing a kept copy", e))?;
        let mut copy = CopyWriter {
            writer: Some(writer),
            blocks: 0,
            block_starts: vec![0],
            rows: 0,
            bytes: 0,
            max_bytes,
        };
        if flagged {
            // Only the caller's rows: blocks of exactly the pieces a read
            // under a row policy is sent in (the last one shorter), across
            // the source's row groups. Reads of it (one stream, or dealt in
            // runs of `batch_size` rows) then send whole blocks as they
            // are, mapped, never regrouped; it is never read by row groups.
            // Declared once filtered: a row the flag drops has no mask.
            let mut blocks = BatchCoalescer::new(
                Arc::new(datafusion::arrow::datatypes::Schema::new(
                    streamed.fields()[..schema.fields().len()].to_vec(),
                )),
                piece_rows.max(1),
            );
            let coalescing = |e| VeilError::internal("writing a kept copy", e);
            let mut ended = false;
            while !ended {
                match stream.next().await {
                    Some(batch) => {
                        let batch = batch.map_err(crate::error::query::from_datafusion)?;
                        let (rows, flag) = flagged_rows(batch)?;
                        blocks
                            .push_batch_with_filter(rows, &flag)
                            .map_err(coalescing)?;
                    }
                    None => {
                        blocks.finish_buffered_batch().map_err(coalescing)?;
                        ended = true;
                    }
                }
                while let Some(block) = blocks.next_completed_batch() {
                    copy.write(declare(block)?).await?;
                }
            }
            copy.finish().await?;
            return Ok((Vec::new(), std::mem::take(&mut copy.block_starts)));
        }
        // Rows left in the current source row group; where each starts.
        let mut groups = bounds.iter().copied();
        let mut left = groups.next().unwrap_or(u64::MAX);
        let mut starts = vec![0];
        while let Some(batch) = stream.next().await {
            let mut batch = declare(batch.map_err(crate::error::query::from_datafusion)?)?;
            let block_rows = copy.block_rows(&batch);
            while batch.num_rows() > 0 {
                let take = (batch.num_rows() as u64).min(left).min(block_rows) as usize;
                if take > 0 {
                    copy.write(batch.slice(0, take)).await?;
                }
                batch = batch.slice(take, batch.num_rows() - take);
                left -= take as u64;
                if left == 0 {
                    starts.push(copy.blocks);
                    left = groups.next().unwrap_or(u64::MAX);
                }
            }
        }
        copy.finish().await?;
        // Endpoints name row groups: a copy must hold the source's exactly
        // (empty ones too).
        while starts.len() <= bounds.len() && left == 0 {
            starts.push(copy.blocks);
            left = groups.next().unwrap_or(u64::MAX);
        }
        let block_starts = std::mem::take(&mut copy.block_starts);
        if bounds.is_empty() {
            return Ok((Vec::new(), block_starts));
        }
        if starts.len() != bounds.len() + 1 || left != u64::MAX {
            return Err(VeilError::FailedPrecondition(
                "a kept copy's row groups differ from its file's".into(),
            ));
        }
        Ok::<_, VeilError>((starts, block_starts))
    }
    .await;
    let (row_groups, block_starts) = match written {
        Ok(written) => written,
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
    };
    let size = match tokio::fs::metadata(&tmp).await {
        Ok(m) => m.len(),
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(VeilError::internal("keeping a kept copy", e));
        }
    };
    if let Err(e) = tokio::fs::rename(&tmp, &path).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(VeilError::internal("keeping a kept copy", e));
    }
    Ok(KeptCopy {
        path,
        size,
        fields,
        row_groups,
        block_starts: block_starts.into(),
        last_used: AtomicU64::new(0),
    })
}

/// A kept copy's file as it is written: buffered, checksummed.
type CopyFile = FileWriter<std::io::BufWriter<Checksummed<std::fs::File>>>;

/// An IPC file being written, one block per batch, on a blocking thread.
struct CopyWriter {
    writer: Option<CopyFile>,
    blocks: usize,
    /// The row each block written starts at, then the rows written.
    block_starts: Vec<u64>,
    rows: u64,
    bytes: u64,
    max_bytes: u64,
}

impl CopyWriter {
    /// How many rows of `batch` go in one block: about [`BLOCK_BYTES`],
    /// by the bytes per row written so far (or, for the first block, the
    /// batch's own size, which can count buffers it shares). A read holds
    /// a block of each copy it reads at once and sends it as one message:
    /// blocks bound a read's memory, stay in the CPU's cache between
    /// reading, encoding and sending, and are large enough for a client
    /// to convert chunks cheaply (pandas).
    fn block_rows(&self, batch: &RecordBatch) -> u64 {
        let per_row = match (self.bytes, self.rows) {
            (b, r) if b > 0 && r > 0 => (b / r) as usize,
            _ => batch.get_array_memory_size() / batch.num_rows().max(1),
        };
        (BLOCK_BYTES / per_row.max(1)).max(1024) as u64
    }

    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let mut writer = self.take()?;
        self.rows += batch.num_rows() as u64;
        let (writer, written) = tokio::task::spawn_blocking(move || {
            let written = writer
                .write(&batch)
                .and_then(|()| Ok(writer.get_ref().get_ref().get_ref().metadata()?.len()));
            (writer, written)
        })
        .await
        .map_err(|e| VeilError::internal("writing a kept copy", e))?;
        self.writer = Some(writer);
        self.bytes = written.map_err(|e| VeilError::internal("writing a kept copy", e))?;
        self.blocks += 1;
        self.block_starts.push(self.rows);
        if self.bytes > self.max_bytes {
            return Err(VeilError::FailedPrecondition(
                "a kept copy would pass engine.kept_masks_max_mb".into(),
            ));
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        let mut writer = self.take()?;
        tokio::task::spawn_blocking(move || {
            // The checksums cover everything before the footer.
            std::io::Write::flush(writer.get_mut())?;
            let sums = writer.get_ref().get_ref().footer_value();
            writer.write_metadata(CHECKSUMS_KEY, sums);
            writer.finish()?;
            let file = writer
                .into_inner()?
                .into_inner()
                .map_err(|e| e.into_error())?;
            // Written to disk now, by this background build: a copy is as
            // large as its decoded file, and left to the kernel its pages
            // were written back half a minute later, taking the disk and a
            // core from the reads of that moment (benches/README.md).
            file.get_ref().sync_data()?;
            Ok(())
        })
        .await
        .map_err(|e| VeilError::internal("writing a kept copy", e))?
        .map_err(|e: datafusion::arrow::error::ArrowError| {
            VeilError::internal("writing a kept copy", e)
        })
    }

    fn take(&mut self) -> Result<CopyFile> {
        self.writer
            .take()
            .ok_or_else(|| VeilError::internal("writing a kept copy", "the writer was lost"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder no running server holds is removed when a server starts;
    /// one whose lock is held is left alone, whatever its name.
    #[tokio::test]
    async fn only_folders_no_server_holds_are_removed() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        std::fs::create_dir_all(root.join("stale")).unwrap();
        std::fs::write(root.join("stale/a.parquet"), b"x").unwrap();
        std::fs::create_dir_all(root.join("unlocked")).unwrap();
        std::fs::File::create(root.join("unlocked.lock")).unwrap();
        std::fs::create_dir_all(root.join("live")).unwrap();
        let held = std::fs::File::create(root.join("live.lock")).unwrap();
        held.lock().unwrap();
        let master = MasterKey::from_bytes([1; 32]);
        let kept = KeptMasks::open(
            root,
            1 << 20,
            &master,
            Arc::new(RuntimeEnv::default()),
            1024,
        )
        .unwrap();
        assert!(!root.join("stale").exists());
        assert!(!root.join("unlocked").exists() && !root.join("unlocked.lock").exists());
        assert!(
            root.join("live").exists(),
            "a running server's folder stays"
        );
        assert!(kept.dir.exists());
        // A second server beside the first keeps the first's folder.
        let other = KeptMasks::open(
            root,
            1 << 20,
            &master,
            Arc::new(RuntimeEnv::default()),
            1024,
        )
        .unwrap();
        assert!(kept.dir.exists() && other.dir.exists() && kept.dir != other.dir);
        drop(held);
    }

    /// A relative data folder (the demo's, started from another folder)
    /// still gives copies absolute paths: they are read by URL.
    #[tokio::test]
    async fn a_relative_data_folder_gives_absolute_copy_paths() {
        let root = tempfile::tempdir().unwrap();
        let cwd = std::env::current_dir().unwrap();
        let up: PathBuf = cwd.components().skip(1).map(|_| "..").collect();
        let relative = up.join(root.path().strip_prefix("/").unwrap()).join(".");
        assert!(relative.is_relative());
        let master = MasterKey::from_bytes([1; 32]);
        let kept = KeptMasks::open(
            &relative,
            1 << 20,
            &master,
            Arc::new(RuntimeEnv::default()),
            1024,
        )
        .unwrap();
        assert!(kept.dir.is_absolute());
        object_store::path::Path::from_absolute_path(kept.dir.join("x.arrow")).unwrap();
    }
}
