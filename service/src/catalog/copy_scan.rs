//! Reading kept copies (`engine::kept_masks`): Arrow IPC files on the local
//! disk, read one block at a time on a blocking thread, so a read holds one
//! block of each file it is reading and nothing more. A copy's blocks are
//! already Arrow: a large block is mapped, not copied (its arrays point
//! into the disk cache's pages, and the block is unmapped when the last
//! of them is dropped, once sent); a small one is read into memory. Only
//! the columns a read wants are touched or read.

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::convert::fb_to_schema;
use datafusion::arrow::ipc::reader::{FileDecoder, read_footer_length};
use datafusion::arrow::ipc::{Block, MetadataVersion, root_as_footer, root_as_message};
use datafusion::common::{DataFusionError, ScalarValue, Statistics};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};
use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::VeilError;

/// One copy to read: its blocks (all, or a part's row groups, or the
/// picks of a dealt read) and the partition values of the file it stands
/// in for.
#[derive(Debug, Clone)]
pub struct CopyRead {
    pub path: PathBuf,
    pub blocks: Option<Range<usize>>,
    /// A dealt read's blocks, and their rows it takes (`blocks` is then
    /// `None`); blocks not picked are not read.
    pub picks: Option<Vec<Pick>>,
    pub partition_values: Vec<ScalarValue>,
}

/// A block a dealt read takes rows of.
#[derive(Debug, Clone)]
pub struct Pick {
    pub block: usize,
    /// The rows the block holds, as the copy was written.
    pub rows: usize,
    /// The rows taken, in order.
    pub keep: Vec<Range<usize>>,
}

/// Scans kept copies: each partition reads its copies in order. The
/// table's columns are the copies' own, then the partition columns.
#[derive(Debug)]
pub struct CopyScanExec {
    groups: Vec<Vec<CopyRead>>,
    /// Columns of the table to produce, in order.
    projection: Vec<usize>,
    /// How many of the table's columns a copy holds (the rest are
    /// partition columns).
    copy_columns: usize,
    schema: SchemaRef,
    limit: Option<usize>,
    properties: Arc<PlanProperties>,
}

impl CopyScanExec {
    /// `table`: the copies' columns then the partition columns;
    /// `projection`: indices into it (`None`: all).
    pub fn new(
        groups: Vec<Vec<CopyRead>>,
        table: &SchemaRef,
        copy_columns: usize,
        projection: Option<&Vec<usize>>,
        limit: Option<usize>,
    ) -> datafusion::common::Result<Self> {
        let projection = projection
            .cloned()
            .unwrap_or_else(|| (0..table.fields().len()).collect());
        let schema = Arc::new(table.project(&projection)?);
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(groups.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            groups,
            projection,
            copy_columns,
            schema,
            limit,
            properties,
        })
    }
}

impl DisplayAs for CopyScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        write!(
            f,
            "KeptCopyScanExec: copies={}, projection=[{}]",
            self.groups.iter().map(Vec::len).sum::<usize>(),
            names.join(", ")
        )?;
        if let Some(l) = self.limit {
            write!(f, ", limit={l}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for CopyScanExec {
    fn name(&self) -> &str {
        "KeptCopyScanExec"
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
                "KeptCopyScanExec has no children".into(),
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
        let reads = self.groups.get(partition).cloned().unwrap_or_default();
        let layout = Arc::new(Layout {
            projection: self.projection.clone(),
            copy_columns: self.copy_columns,
            schema: Arc::clone(&self.schema),
        });
        let batches = futures::stream::iter(reads)
            .map(move |read| read_copy(read, Arc::clone(&layout)))
            .flatten();
        let batches = match self.limit {
            None => batches.boxed(),
            Some(limit) => batches
                .scan(limit, |left, batch| {
                    let out = match batch {
                        Ok(_) if *left == 0 => None,
                        Ok(b) => {
                            let take = b.num_rows().min(*left);
                            *left -= take;
                            Some(Ok(b.slice(0, take)))
                        }
                        Err(e) => Some(Err(e)),
                    };
                    futures::future::ready(out)
                })
                .boxed(),
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            batches,
        )))
    }

    fn partition_statistics(
        &self,
        _partition: Option<usize>,
    ) -> datafusion::common::Result<Arc<Statistics>> {
        Ok(Arc::new(Statistics::new_unknown(&self.schema)))
    }
}

/// Where each output column comes from.
#[derive(Debug)]
struct Layout {
    projection: Vec<usize>,
    copy_columns: usize,
    schema: SchemaRef,
}

impl Layout {
    /// The copy's columns to decode, in output order.
    fn from_copy(&self) -> Vec<usize> {
        self.projection
            .iter()
            .copied()
            .filter(|p| *p < self.copy_columns)
            .collect()
    }

    /// The output batch: the decoded columns, with the partition values
    /// put where the projection names them.
    fn assemble(
        &self,
        decoded: RecordBatch,
        partition_values: &[ScalarValue],
    ) -> datafusion::common::Result<RecordBatch> {
        let rows = decoded.num_rows();
        let mut from_copy = decoded.columns().iter();
        let columns = self
            .projection
            .iter()
            .map(|p| match p.checked_sub(self.copy_columns) {
                None => from_copy.next().cloned().ok_or_else(|| {
                    DataFusionError::Internal("a kept copy block lacks a column".into())
                }),
                Some(i) => partition_values
                    .get(i)
                    .ok_or_else(|| {
                        DataFusionError::Internal("a kept copy lacks a partition value".into())
                    })?
                    .to_array_of_size(rows),
            })
            .collect::<datafusion::common::Result<Vec<ArrayRef>>>()?;
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }
}

fn failed(e: impl fmt::Display) -> DataFusionError {
    DataFusionError::External(Box::new(VeilError::internal("reading a kept copy", e)))
}

/// One kept copy open for reading: its blocks, and where the columns a
/// read wants sit in each.
struct OpenCopy {
    path: PathBuf,
    file: File,
    blocks: Arc<[Block]>,
    decoder: FileDecoder,
    /// The copy's chunk checksums and a decoder that doesn't validate
    /// what it decodes, for blocks whose bytes passed them (the bytes Veil
    /// wrote from valid arrays); `None` for a copy written without them.
    trusted: Option<(Arc<Checksums>, FileDecoder)>,
    /// Per column read: the index range of its buffers in a block's
    /// buffer list; `None` when some column's buffers can't be counted
    /// (nested types): then whole blocks are read.
    wanted: Option<Vec<Range<usize>>>,
}

/// How many IPC buffers a column of this type has (validity included), for
/// the types whose layout is flat; `None` for the rest.
fn flat_buffers(t: &DataType) -> Option<usize> {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary | DataType::LargeBinary => Some(3),
        DataType::Boolean | DataType::FixedSizeBinary(_) => Some(2),
        t if t.is_primitive() => Some(2),
        _ => None,
    }
}

/// Blocks at least this long are mapped instead of read: below it the
/// mapping's two system calls cost more than the copy they save.
const MAP_AT_LEAST: usize = 256 * 1024;

/// A kept copy that failed its checksums (damaged on disk): removed, so
/// the next read uses the source, and this read's error.
fn damaged(path: &std::path::Path) -> DataFusionError {
    FOOTERS.invalidate(path);
    let _ = std::fs::remove_file(path);
    tracing::error!(copy = %path.display(), "a kept copy failed its checksum (damaged on disk): removed");
    DataFusionError::External(Box::new(VeilError::Unavailable(
        "a kept copy of this data was damaged on disk and has been removed; retry the read (it will read the source)".into(),
    )))
}

/// A decoder that doesn't validate the arrays it decodes.
#[allow(unsafe_code)]
fn unvalidated(decoder: FileDecoder) -> FileDecoder {
    // SAFETY: used only for blocks whose every byte the decoder reads (the
    // message and the wanted columns' buffers) matched the checksums taken
    // as Veil wrote them with arrow's IPC writer from valid arrays
    // (`OpenCopy::mapped`): the same bytes decode to the same valid
    // arrays. The checksums catch damage on disk, not a forger with write
    // access to Veil's data directory (who could read raw values anyway).
    unsafe { decoder.with_skip_validation(true) }
}

/// The wanted columns' bytes in a block's body, as spans in file order
/// (spans less than a page apart as one), from the block's message
/// (`meta`: as written, with its continuation marker and length).
fn wanted_spans(
    meta: &[u8],
    body_len: usize,
    wanted: &[Range<usize>],
) -> Result<Vec<Range<usize>>, DataFusionError> {
    let message = match meta.get(..4) {
        Some(m) if m == [0xff; 4] => meta.get(8..),
        _ => meta.get(4..),
    }
    .ok_or_else(|| failed("a kept copy's block is damaged"))?;
    let message = root_as_message(message).map_err(failed)?;
    let buffers: Vec<_> = message
        .header_as_record_batch()
        .and_then(|b| b.buffers())
        .ok_or_else(|| failed("a kept copy's block is not a record batch"))?
        .iter()
        .collect();
    let mut spans: Vec<Range<usize>> = Vec::new();
    for w in wanted {
        let mut span: Option<Range<usize>> = None;
        for i in w.clone() {
            let b = buffers
                .get(i)
                .ok_or_else(|| failed("a kept copy's block lacks a buffer"))?;
            let (start, len) = (b.offset() as usize, b.length() as usize);
            let end = start
                .checked_add(len)
                .filter(|e| *e <= body_len)
                .ok_or_else(|| failed("a kept copy's buffer passes its block"))?;
            if len > 0 {
                span = Some(match span {
                    None => start..end,
                    Some(s) => s.start.min(start)..s.end.max(end),
                });
            }
        }
        spans.extend(span);
    }
    spans.sort_by_key(|s| s.start);
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(spans.len());
    for s in spans {
        match merged.last_mut() {
            Some(last) if s.start <= last.end + 4096 => last.end = last.end.max(s.end),
            _ => merged.push(s),
        }
    }
    Ok(merged)
}

/// Where a copy's blocks start, when they tile the file up to `end` (where
/// the checksums end: the footer follows) exactly: every block
/// (dictionaries and record batches) starts where the one before it ends,
/// the last ends at `end`, and the record batches are listed in file
/// order. The checksums don't cover the footer, so a damaged offset there
/// is caught here: a block's lengths are checked against its own (checked)
/// message when it is read, and with them the tiling fixes every offset
/// (otherwise a damaged offset landing on another block's start would
/// serve that block's rows in its place). `None`: they don't tile.
fn head_of_tiling(batches: &[Block], dictionaries: &[Block], end: u64) -> Option<u64> {
    let span = |b: &Block| {
        let start = u64::try_from(b.offset()).ok()?;
        let len = u64::try_from(b.metaDataLength())
            .ok()?
            .checked_add(u64::try_from(b.bodyLength()).ok()?)?;
        Some((start, start.checked_add(len)?))
    };
    let ordered = batches.windows(2).all(|w| w[0].offset() < w[1].offset());
    let mut all = batches
        .iter()
        .chain(dictionaries)
        .map(span)
        .collect::<Option<Vec<_>>>()?;
    all.sort_unstable();
    let (head, last) = match (all.first(), all.last()) {
        (Some(first), Some(last)) => (first.0, last.1),
        _ => return Some(end),
    };
    (ordered && last == end && all.windows(2).all(|w| w[0].1 == w[1].0)).then_some(head)
}

/// The footer key of a kept copy's checksums ([`Checksummed`]).
pub const CHECKSUMS_KEY: &str = "veil.crc32c";

/// Checksums are taken per chunk of this many bytes of the file.
const CHUNK: u64 = 64 * 1024;

/// A copy's checksums: the CRC-32C of each [`CHUNK`] of the file up to
/// `end` (the last chunk may be shorter), as written by [`Checksummed`];
/// and which chunks have passed since they were parsed.
#[derive(Debug)]
struct Checksums {
    end: u64,
    crcs: Vec<u32>,
    /// One bit per chunk: it passed. A copy is never rewritten in place
    /// and its footer is kept only while the file's identity is unchanged,
    /// and the bits count for [`FOOTER_TTL`] from the parse (also for a
    /// read still holding them), so a chunk that passed is checked again
    /// only after that: reads of a copy in the disk cache don't checksum
    /// the same bytes on every read.
    passed: Box<[std::sync::atomic::AtomicU64]>,
    parsed_at: std::time::Instant,
}

impl Checksums {
    /// `"<end>:<hex of each CRC, big-endian>"`.
    fn parse(text: &str) -> Result<Self, DataFusionError> {
        let bad = || failed("a kept copy's checksums are damaged");
        let (end, hex) = text.split_once(':').ok_or_else(bad)?;
        let end: u64 = end.parse().map_err(|_| bad())?;
        if !hex.is_ascii() || hex.len() % 8 != 0 || (hex.len() / 8) as u64 != end.div_ceil(CHUNK) {
            return Err(bad());
        }
        let crcs: Vec<u32> = (0..hex.len() / 8)
            .map(|i| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        let passed = (0..crcs.len().div_ceil(64))
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect();
        Ok(Self {
            end,
            crcs,
            passed,
            parsed_at: std::time::Instant::now(),
        })
    }

    fn has_passed(&self, chunk: usize) -> bool {
        use std::sync::atomic::Ordering;
        self.passed
            .get(chunk / 64)
            .is_some_and(|w| w.load(Ordering::Relaxed) & (1 << (chunk % 64)) != 0)
    }

    fn mark_passed(&self, chunk: usize) {
        use std::sync::atomic::Ordering;
        if let Some(w) = self.passed.get(chunk / 64) {
            w.fetch_or(1 << (chunk % 64), Ordering::Relaxed);
        }
    }

    /// Whether the file's first `head` bytes (its magic and schema
    /// message, before the first block) pass the checksums and hold
    /// `schema`.
    fn schema_matches(
        &self,
        file: &File,
        head: u64,
        schema: &datafusion::arrow::datatypes::Schema,
    ) -> bool {
        let (_, to) = self.around(0, head);
        let mut bytes = vec![0u8; to as usize];
        if head < 16
            || head > self.end
            || read_at(file, 0, &mut bytes).is_err()
            || !self.check(&bytes, 0, 0, head)
        {
            return false;
        }
        // The magic, padding, then the schema message (its continuation
        // marker and length first).
        let head = head as usize;
        let message = (8..head)
            .step_by(8)
            .find(|i| bytes.get(*i..*i + 4) == Some(&[0xff; 4][..]))
            .and_then(|at| bytes.get(at + 8..head))
            .and_then(|m| root_as_message(m).ok());
        message
            .and_then(|m| m.header_as_schema())
            .is_some_and(|s| fb_to_schema(s) == *schema)
    }

    /// The whole chunks around `start..end`, as file offsets.
    fn around(&self, start: u64, end: u64) -> (u64, u64) {
        (
            start / CHUNK * CHUNK,
            end.div_ceil(CHUNK).saturating_mul(CHUNK).min(self.end),
        )
    }

    /// Whether every chunk holding `a..b` matches (or passed before);
    /// `bytes` holds the file from `from`, in whole chunks.
    fn check(&self, bytes: &[u8], from: u64, a: u64, b: u64) -> bool {
        if a >= b {
            return true;
        }
        let remembered = self.parsed_at.elapsed() < FOOTER_TTL;
        (a / CHUNK..b.div_ceil(CHUNK)).all(|i| {
            let (lo, hi) = (i * CHUNK, ((i + 1) * CHUNK).min(self.end));
            let chunk = lo
                .checked_sub(from)
                .and_then(|lo| bytes.get(lo as usize..(hi - from) as usize));
            match (chunk, self.crcs.get(i as usize)) {
                (Some(_), Some(_)) if remembered && self.has_passed(i as usize) => true,
                (Some(chunk), Some(crc)) => {
                    let ok = crc32c::crc32c(chunk) == *crc;
                    if ok {
                        self.mark_passed(i as usize);
                    }
                    ok
                }
                _ => false,
            }
        })
    }
}

/// A writer that takes the CRC-32C of every [`CHUNK`] of what passes
/// through it, for a kept copy's footer ([`CHECKSUMS_KEY`]): reads check
/// the chunks a block's bytes sit in, and decode a block that passes
/// without validating it again.
#[derive(Debug)]
pub struct Checksummed<W> {
    inner: W,
    at: u64,
    crc: u32,
    crcs: Vec<u32>,
}

impl<W> Checksummed<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            at: 0,
            crc: 0,
            crcs: Vec::new(),
        }
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The footer value for everything written so far (flush any buffer
    /// in front of this writer first).
    pub fn footer_value(&self) -> String {
        let partial = (self.at % CHUNK != 0).then_some(self.crc);
        let mut text = format!("{}:", self.at);
        for crc in self.crcs.iter().chain(partial.as_ref()) {
            text.push_str(&format!("{crc:08x}"));
        }
        text
    }

    fn absorb(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = (CHUNK - self.at % CHUNK) as usize;
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.crc = crc32c::crc32c_append(self.crc, now);
            self.at += now.len() as u64;
            bytes = rest;
            if self.at % CHUNK == 0 {
                self.crcs.push(std::mem::take(&mut self.crc));
            }
        }
    }
}

impl<W: std::io::Write> std::io::Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.absorb(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn read_at(file: &File, offset: u64, into: &mut [u8]) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, into, offset)
}

/// What opening a kept copy learns before reading a block: its schema and
/// blocks from the footer, and its checksums, with the file's head and
/// the blocks' tiling checked against them. Kept per file ([`FOOTERS`])
/// and reused while the path names the same file, unchanged (a copy is
/// written once, under a name of its own, and never rewritten in place):
/// a repeated read of a small copy then costs an open, a `stat` and its
/// blocks, not the footer's parse and the head's check again.
struct Footer {
    /// The file it was read from.
    identity: FileIdentity,
    schema: SchemaRef,
    version: MetadataVersion,
    blocks: Arc<[Block]>,
    /// `None`: a copy written without checksums.
    checksums: Option<Arc<Checksums>>,
}

/// A file's device, inode, length, modification time and status change
/// time (seconds, nanoseconds: the status change time can't be set back
/// without changing the clock).
type FileIdentity = (u64, u64, u64, i64, i64, i64, i64);

fn identity(meta: &std::fs::Metadata) -> FileIdentity {
    use std::os::unix::fs::MetadataExt;
    (
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    )
}

/// How long a copy's footer, and with it which of its chunks passed their
/// checksums, is kept: after that the next read parses the footer and
/// checks every chunk it reads again (damage that appears on disk after a
/// check, under pages the disk cache dropped, is caught within this).
pub const FOOTER_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// Footers of the copies read lately, by path; a copy with dictionaries is
/// not kept here (its decoders need the dictionaries read on each open).
/// Bounded by the checksums and blocks held, whatever the number of copies.
static FOOTERS: std::sync::LazyLock<moka::sync::Cache<PathBuf, Arc<Footer>>> =
    std::sync::LazyLock::new(|| {
        moka::sync::Cache::builder()
            // In units of 4 bytes: a checksum is one, a block and each
            // field of the schema (its name too) what they take in memory.
            .weigher(|_, f: &Arc<Footer>| {
                let crcs = f.checksums.as_ref().map_or(0, |c| c.crcs.len());
                let blocks = f.blocks.len() * std::mem::size_of::<Block>();
                let fields: usize = f
                    .schema
                    .fields()
                    .iter()
                    .map(|field| {
                        std::mem::size_of::<datafusion::arrow::datatypes::Field>()
                            + field.name().len()
                    })
                    .sum();
                u32::try_from(64 + crcs + (blocks + fields) / 4).unwrap_or(u32::MAX)
            })
            // About 16 MiB of checksums (each covers 64 KiB: about 1 TiB
            // of copies), blocks and schemas.
            .max_capacity(4 << 20)
            .time_to_live(FOOTER_TTL)
            .build()
    });

/// Appends `len` bytes of `file` from `offset` to `into`, read straight
/// into its spare capacity (`read_to_end` hands the kernel uninitialized
/// memory: nothing is zeroed first, unlike a `read_exact` into a zeroed
/// buffer, which cost a memset of every block).
fn append_at(file: &File, offset: u64, len: usize, into: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    let want = into.len() + len;
    into.reserve(len);
    f.take(len as u64).read_to_end(into)?;
    if into.len() != want {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "a kept copy ends inside a block",
        ));
    }
    Ok(())
}

impl OpenCopy {
    /// Open `path` to read the columns `projection` names, in that order.
    fn open(path: &std::path::Path, projection: Vec<usize>) -> Result<Self, DataFusionError> {
        let file = File::open(path).map_err(|e| match e.kind() {
            // Deleted behind Veil's back since the read was planned (an
            // operator may delete copies): the retry reads the source.
            std::io::ErrorKind::NotFound => {
                FOOTERS.invalidate(path);
                DataFusionError::External(Box::new(VeilError::Unavailable(
                    "a kept copy of this data was deleted while it was being read; retry the read (it will read the source)".into(),
                )))
            }
            _ => failed(e),
        })?;
        let meta = file.metadata().map_err(failed)?;
        let id = identity(&meta);
        let (footer, dictionaries) = match FOOTERS.get(path) {
            Some(kept) if kept.identity == id => (kept, Vec::new()),
            _ => {
                let (footer, dictionaries) = Self::footer(path, &file, id)?;
                let footer = Arc::new(footer);
                if dictionaries.is_empty() {
                    FOOTERS.insert(path.to_path_buf(), Arc::clone(&footer));
                }
                (footer, dictionaries)
            }
        };
        let schema = &footer.schema;
        // Each column's buffers, in the order a block lists them.
        let mut at = 0;
        let mut ranges = Vec::with_capacity(schema.fields().len());
        for f in schema.fields() {
            match flat_buffers(f.data_type()) {
                Some(n) => {
                    ranges.push(Some(at..at + n));
                    at += n;
                }
                None => {
                    ranges.push(None);
                    break;
                }
            }
        }
        let wanted = projection
            .iter()
            .map(|i| ranges.get(*i).cloned().flatten())
            .collect::<Option<Vec<_>>>()
            .filter(|_| ranges.iter().all(Option::is_some));
        let mut decoder = FileDecoder::new(Arc::clone(schema), footer.version)
            .with_projection(projection.clone());
        // Trusted only with checksums and no dictionaries.
        let trusted = match (&footer.checksums, dictionaries.is_empty()) {
            (Some(sums), true) => {
                let decoder = FileDecoder::new(Arc::clone(schema), footer.version)
                    .with_projection(projection);
                Some((Arc::clone(sums), unvalidated(decoder)))
            }
            _ => None,
        };
        for block in &dictionaries {
            let buf = Self::whole(&file, block)?;
            decoder.read_dictionary(block, &buf).map_err(failed)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            blocks: Arc::clone(&footer.blocks),
            decoder,
            trusted,
            wanted,
        })
    }

    /// The footer of the copy `file` (at `path`), checked; and its
    /// dictionaries' blocks, which each open reads.
    fn footer(
        path: &std::path::Path,
        file: &File,
        identity: FileIdentity,
    ) -> Result<(Footer, Vec<Block>), DataFusionError> {
        let len = identity.2;
        let mut tail = [0u8; 10];
        if len < 10 {
            return Err(failed("a kept copy is too short"));
        }
        read_at(file, len - 10, &mut tail).map_err(failed)?;
        let footer_len = read_footer_length(tail).map_err(failed)? as u64;
        let start = len
            .checked_sub(10 + footer_len)
            .ok_or_else(|| failed("a kept copy's footer is longer than the file"))?;
        let mut footer_bytes = vec![0u8; footer_len as usize];
        read_at(file, start, &mut footer_bytes).map_err(failed)?;
        let footer = root_as_footer(&footer_bytes).map_err(failed)?;
        let schema = Arc::new(fb_to_schema(
            footer
                .schema()
                .ok_or_else(|| failed("a kept copy has no schema"))?,
        ));
        let blocks: Arc<[Block]> = footer
            .recordBatches()
            .map(|b| b.iter().copied().collect::<Arc<[Block]>>())
            .unwrap_or_else(|| Arc::new([]));
        let dictionaries: Vec<Block> = footer
            .dictionaries()
            .map(|b| b.iter().copied().collect())
            .unwrap_or_default();
        // Checksums that don't parse, blocks that don't tile the bytes
        // they cover, or a start of the file (its schema message) that
        // fails them or differs from the footer's schema (which they don't
        // cover): the file was damaged.
        let checksums = match footer
            .custom_metadata()
            .into_iter()
            .flatten()
            .find(|kv| kv.key() == Some(CHECKSUMS_KEY))
            .and_then(|kv| kv.value())
        {
            None => None,
            Some(text) => {
                let sums = Checksums::parse(text).ok();
                let head = sums
                    .as_ref()
                    .and_then(|sums| head_of_tiling(&blocks, &dictionaries, sums.end));
                match (sums, head) {
                    (Some(sums), Some(head)) if sums.schema_matches(file, head, &schema) => {
                        Some(Arc::new(sums))
                    }
                    _ => return Err(damaged(path)),
                }
            }
        };
        Ok((
            Footer {
                identity,
                schema,
                version: footer.version(),
                blocks,
                checksums,
            },
            dictionaries,
        ))
    }

    /// A block as written: its message, then its body.
    fn whole(file: &File, block: &Block) -> Result<Buffer, DataFusionError> {
        let len = block.metaDataLength() as usize + block.bodyLength() as usize;
        let mut buf = Vec::with_capacity(len);
        append_at(file, block.offset() as u64, len, &mut buf).map_err(failed)?;
        Ok(Buffer::from_vec(buf))
    }

    /// Block `index`, with only the byte ranges of the wanted columns read
    /// or touched (the decoder skips the others).
    fn read(&self, index: usize) -> Result<RecordBatch, DataFusionError> {
        let block = self
            .blocks
            .get(index)
            .ok_or_else(|| failed("a part names blocks past the copy's end"))?;
        let len = block.metaDataLength() as usize + block.bodyLength() as usize;
        let mapped = match len >= MAP_AT_LEAST {
            true => self.mapped(block)?,
            false => None,
        };
        let (buf, decoder) = match (mapped, &self.wanted) {
            (Some(mapped), _) => mapped,
            (None, None) => (Self::whole(&self.file, block)?, &self.decoder),
            (None, Some(wanted)) => (self.projected(block, wanted)?, &self.decoder),
        };
        decoder
            .read_record_batch(block, &buf)
            .map_err(failed)?
            .ok_or_else(|| failed("a kept copy's block holds no rows"))
    }

    /// A large block of a checksummed copy, mapped, and the decoder for
    /// it: the chunks holding the block's message and the wanted columns'
    /// bytes are read (a disk error is an error here, not a fault later),
    /// checked against the checksums, and the block decoded without
    /// validation. A chunk that fails, or a message that contradicts its
    /// block, means the file was damaged on disk: it is removed (the next
    /// read uses the source) and this read fails. `None`: not mapped (a
    /// copy without checksums, a block past them, a mapping refused):
    /// read it instead.
    fn mapped(&self, block: &Block) -> Result<Option<(Buffer, &FileDecoder)>, DataFusionError> {
        let Some((sums, trusted)) = self.trusted.as_ref() else {
            return Ok(None);
        };
        let start = u64::try_from(block.offset()).map_err(failed)?;
        let meta_len = usize::try_from(block.metaDataLength()).map_err(failed)?;
        let body_len = usize::try_from(block.bodyLength()).map_err(failed)?;
        let len = meta_len + body_len;
        let end = start + len as u64;
        if end > sums.end || meta_len < 8 {
            return Ok(None);
        }
        // Whole chunks around the block, so each can be checked.
        let (from, to) = sums.around(start, end);
        let Ok(map) = crate::memory::map_read_only(&self.file, from, (to - from) as usize) else {
            return Ok(None);
        };
        let damaged = || damaged(&self.path);
        // Reads the whole chunks holding `a..b` (block offsets), checks them.
        let checked = |a: usize, b: usize| -> Result<(), DataFusionError> {
            let (a, b) = (start + a as u64, start + b as u64);
            let (lo, hi) = sums.around(a, b);
            map.populate((lo - from) as usize..(hi - from) as usize)
                .map_err(failed)?;
            match sums.check(map.bytes(), from, a, b) {
                true => Ok(()),
                false => Err(damaged()),
            }
        };
        checked(0, meta_len)?;
        let at = (start - from) as usize;
        let meta = &map.bytes()[at..at + meta_len];
        // As arrow writes a block: the continuation marker, the message's
        // length, the message; its body as long as the footer says.
        let said = meta[4..8].try_into().map(u32::from_le_bytes).unwrap_or(0);
        let body_said = root_as_message(&meta[8..]).ok().map(|m| m.bodyLength());
        if meta[..4] != [0xff; 4]
            || 8 + said as usize != meta_len
            || body_said != Some(block.bodyLength())
        {
            return Err(damaged());
        }
        match &self.wanted {
            None => checked(meta_len, len)?,
            Some(wanted) => {
                for s in wanted_spans(meta, body_len, wanted)? {
                    checked(meta_len + s.start, meta_len + s.end)?;
                }
            }
        }
        Ok(Some((map.buffer().slice_with_length(at, len), trusted)))
    }

    fn projected(&self, block: &Block, wanted: &[Range<usize>]) -> Result<Buffer, DataFusionError> {
        let meta_len = usize::try_from(block.metaDataLength()).map_err(failed)?;
        let body_len = usize::try_from(block.bodyLength()).map_err(failed)?;
        let mut meta = vec![0u8; meta_len];
        read_at(&self.file, block.offset() as u64, &mut meta).map_err(failed)?;
        let merged = wanted_spans(&meta, body_len, wanted)?;
        let end = merged.last().map_or(0, |s| s.end);
        let mut buf = Vec::with_capacity(meta_len + end);
        buf.extend_from_slice(&meta);
        for s in merged {
            // The bytes between wanted spans are never read: zeros.
            buf.resize(meta_len + s.start, 0);
            append_at(
                &self.file,
                block.offset() as u64 + (meta_len + s.start) as u64,
                s.end - s.start,
                &mut buf,
            )
            .map_err(failed)?;
        }
        let buf = Buffer::from_vec(buf);
        Ok(buf.into())
    }
}

/// The batches of one copy, one block read at a time.
fn read_copy(
    read: CopyRead,
    layout: Arc<Layout>,
) -> futures::stream::BoxStream<'static, datafusion::common::Result<RecordBatch>> {
    struct Reading {
        copy: Option<OpenCopy>,
        /// The first block, read with the opening (one trip to the
        /// blocking pool fewer: a small copy is read in one).
        first: Option<Result<RecordBatch, DataFusionError>>,
        /// The blocks to read, in order, with the rows to take of each
        /// (`None`: all).
        order: std::vec::IntoIter<(usize, Option<Pick>)>,
        /// Slices of the last block not yet handed on.
        ready: std::collections::VecDeque<RecordBatch>,
    }
    if read.picks.as_ref().is_some_and(Vec::is_empty) {
        // A dealt read takes nothing of this copy: not even opened.
        return futures::stream::empty().boxed();
    }
    let path = read.path.clone();
    let opened = {
        let (path, blocks, picks, layout) = (
            read.path.clone(),
            read.blocks.clone(),
            read.picks,
            Arc::clone(&layout),
        );
        async move {
            tokio::task::spawn_blocking(move || {
                let copy = OpenCopy::open(&path, layout.from_copy())?;
                let order: Vec<(usize, Option<Pick>)> = match picks {
                    Some(picks) => picks.into_iter().map(|p| (p.block, Some(p))).collect(),
                    None => blocks
                        .unwrap_or(0..copy.blocks.len())
                        .map(|b| (b, None))
                        .collect(),
                };
                if order.iter().any(|(b, _)| *b >= copy.blocks.len()) {
                    return Err(failed("a part names blocks past the copy's end"));
                }
                let first = order.first().map(|(b, _)| copy.read(*b));
                Ok(Reading {
                    copy: Some(copy),
                    first,
                    order: order.into_iter(),
                    ready: Default::default(),
                })
            })
            .await
            .map_err(failed)?
        }
    };
    let values = Arc::new(read.partition_values);
    let path = Arc::new(path);
    futures::stream::once(opened)
        .map_ok(move |reading| {
            let (layout, values, path) =
                (Arc::clone(&layout), Arc::clone(&values), Arc::clone(&path));
            futures::stream::try_unfold(reading, move |mut reading| {
                let (layout, values, path) =
                    (Arc::clone(&layout), Arc::clone(&values), Arc::clone(&path));
                async move {
                    loop {
                        if let Some(batch) = reading.ready.pop_front() {
                            return Ok(Some((batch, reading)));
                        }
                        let Some((index, pick)) = reading.order.next() else {
                            return Ok(None);
                        };
                        let batch = match reading.first.take() {
                            Some(first) => first?,
                            None => {
                                let copy = reading
                                    .copy
                                    .take()
                                    .ok_or_else(|| failed("a kept copy's reader was lost"))?;
                                let (copy, batch) = tokio::task::spawn_blocking(move || {
                                    let batch = copy.read(index);
                                    (copy, batch)
                                })
                                .await
                                .map_err(failed)?;
                                reading.copy = Some(copy);
                                batch?
                            }
                        };
                        let batch = layout.assemble(batch, &values)?;
                        match pick {
                            None => reading.ready.push_back(batch),
                            Some(pick) => {
                                // The rows the index counted, or the copy
                                // was damaged: dealt by wrong counts, rows
                                // would go to no endpoint or to two.
                                if batch.num_rows() != pick.rows
                                    || pick.keep.iter().any(|r| r.end > pick.rows)
                                {
                                    return Err(damaged(&path));
                                }
                                reading.ready.extend(
                                    pick.keep
                                        .iter()
                                        .map(|r| batch.slice(r.start, r.end - r.start)),
                                );
                            }
                        }
                    }
                }
            })
        })
        .try_flatten()
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::ipc::writer::FileWriter;
    use datafusion::prelude::SessionContext;

    /// A copy of two columns in three blocks: a large one, a small one
    /// and a large one again (with checksums, the large ones are mapped).
    fn write_copy(path: &std::path::Path) -> (SchemaRef, Vec<RecordBatch>) {
        write_copy_as(path, false)
    }

    /// Damage as the disk would: the same file, other bytes. Its footer,
    /// if already kept, is forgotten, as a new process would not have it
    /// (in place, within one tick of the file system's clock, the file
    /// may keep its length and modification time).
    fn damage_in_place(path: &std::path::Path, bytes: &[u8]) {
        std::fs::write(path, bytes).unwrap();
        FOOTERS.invalidate(path);
    }

    /// As a kept copy is written (`checksummed`: with its checksums).
    fn write_copy_as(path: &std::path::Path, checksummed: bool) -> (SchemaRef, Vec<RecordBatch>) {
        // Veil never writes two copies under one name; these tests do.
        FOOTERS.invalidate(path);
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let batch = |from: i64, rows: i64| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(Int64Array::from_iter_values(from..from + rows)),
                    Arc::new(StringArray::from_iter((from..from + rows).map(|i| {
                        (i % 7 != 0).then(|| format!("name number {i} of the copy"))
                    }))),
                ],
            )
            .unwrap()
        };
        let batches = vec![batch(0, 40_000), batch(40_000, 10), batch(40_010, 30_000)];
        let file = Checksummed::new(File::create(path).unwrap());
        let mut w = FileWriter::try_new_buffered(file, &schema).unwrap();
        for b in &batches {
            w.write(b).unwrap();
        }
        if checksummed {
            std::io::Write::flush(w.get_mut()).unwrap();
            let sums = w.get_ref().get_ref().footer_value();
            w.write_metadata(CHECKSUMS_KEY, sums);
        }
        w.finish().unwrap();
        (schema, batches)
    }

    async fn try_scan(
        path: &std::path::Path,
        table: &SchemaRef,
        projection: Option<Vec<usize>>,
        blocks: Option<Range<usize>>,
    ) -> datafusion::common::Result<Vec<RecordBatch>> {
        let exec = CopyScanExec::new(
            vec![vec![CopyRead {
                path: path.to_path_buf(),
                blocks,
                picks: None,
                partition_values: vec![ScalarValue::Utf8(Some("CA".into()))],
            }]],
            table,
            2,
            projection.as_ref(),
            None,
        )?;
        let ctx = SessionContext::new();
        exec.execute(0, ctx.task_ctx())?.try_collect().await
    }

    async fn scan(
        path: &std::path::Path,
        table: &SchemaRef,
        projection: Option<Vec<usize>>,
        blocks: Option<Range<usize>>,
    ) -> Vec<RecordBatch> {
        try_scan(path, table, projection, blocks).await.unwrap()
    }

    async fn scan_picks(
        path: &std::path::Path,
        table: &SchemaRef,
        picks: Vec<Pick>,
    ) -> datafusion::common::Result<Vec<RecordBatch>> {
        let exec = CopyScanExec::new(
            vec![vec![CopyRead {
                path: path.to_path_buf(),
                blocks: None,
                picks: Some(picks),
                partition_values: vec![ScalarValue::Utf8(Some("CA".into()))],
            }]],
            table,
            2,
            Some(&vec![0]),
            None,
        )?;
        let ctx = SessionContext::new();
        exec.execute(0, ctx.task_ctx())?.try_collect().await
    }

    /// A checksummed copy at `path`, and its table: the copy's columns
    /// and a partition column `state`.
    fn checksummed_copy_table(path: &std::path::Path) -> SchemaRef {
        table_of(&write_copy_as(path, true).0)
    }

    /// A copy deleted after the read was planned (an operator may delete
    /// copies) fails the read with UNAVAILABLE, saying to retry.
    #[tokio::test]
    async fn a_copy_deleted_before_its_read_says_to_retry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy.arrow");
        let table = checksummed_copy_table(&path);
        std::fs::remove_file(&path).unwrap();
        let e = try_scan(&path, &table, None, None).await.unwrap_err();
        let DataFusionError::External(e) = e else {
            panic!("{e}")
        };
        let e = e.downcast_ref::<VeilError>().unwrap();
        assert!(
            matches!(e, VeilError::Unavailable(m) if m.contains("retry the read")),
            "{e}"
        );
    }

    /// A dealt read takes the rows each pick names, in order, reading only
    /// the blocks picked; a block whose rows differ from the index's count
    /// is a damaged copy, not a wrong answer.
    #[tokio::test]
    async fn a_dealt_read_takes_the_rows_it_picks() {
        use datafusion::arrow::array::AsArray;
        use datafusion::arrow::datatypes::Int64Type;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy.arrow");
        let table = checksummed_copy_table(&path);
        let pick = |block, rows, keep: Vec<Range<usize>>| Pick { block, rows, keep };
        let got = scan_picks(
            &path,
            &table,
            vec![
                pick(0, 40_000, vec![5..7, 39_999..40_000]),
                pick(2, 30_000, vec![0..1, 29_998..30_000]),
            ],
        )
        .await
        .unwrap();
        let ids: Vec<i64> = got
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        assert_eq!(ids, [5, 6, 39_999, 40_010, 70_008, 70_009]);
        // The index says block 1 holds 11 rows; it holds 10.
        let wrong = scan_picks(&path, &table, vec![pick(1, 11, vec![0..11])]).await;
        assert!(wrong.unwrap_err().to_string().contains("damaged"));
        assert!(!path.exists(), "a damaged copy is removed");
    }

    #[tokio::test]
    async fn large_and_small_blocks_give_the_rows_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy.arrow");
        let (schema, written) = write_copy(&path);
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("state", DataType::Utf8, false));
        let table = Arc::new(Schema::new(fields));
        // The large blocks are past the mapping threshold, the small one not.
        let sizes: Vec<usize> = OpenCopy::open(&path, vec![0, 1])
            .unwrap()
            .blocks
            .iter()
            .map(|b| b.metaDataLength() as usize + b.bodyLength() as usize)
            .collect();
        assert!(sizes[0] >= MAP_AT_LEAST && sizes[1] < MAP_AT_LEAST && sizes[2] >= MAP_AT_LEAST);

        // Every column, a projection (the name and the partition value
        // only: the id column's pages are never touched), one block range.
        let all = scan(&path, &table, None, None).await;
        let names = scan(&path, &table, Some(vec![2, 1]), None).await;
        let middle_on = scan(&path, &table, Some(vec![1, 0]), Some(1..3)).await;
        // The mapped buffers stay readable after the copy is deleted
        // (eviction while a read holds its blocks).
        std::fs::remove_file(&path).unwrap();
        assert_eq!(all.len(), 3);
        for (got, want) in all.iter().zip(&written) {
            assert_eq!(got.column(0), want.column(0));
            assert_eq!(got.column(1), want.column(1));
            let state = got
                .column(2)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            assert!(state.iter().all(|s| s == Some("CA")));
        }
        for (got, want) in names.iter().zip(&written) {
            assert_eq!(got.num_columns(), 2);
            assert_eq!(got.column(1), want.column(1));
            assert_eq!(got.column(0).len(), want.num_rows());
        }
        assert_eq!(middle_on.len(), 2);
        for (got, want) in middle_on.iter().zip(&written[1..]) {
            assert_eq!(got.column(0), want.column(1));
            assert_eq!(got.column(1), want.column(0));
        }
    }

    fn table_of(schema: &SchemaRef) -> SchemaRef {
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("state", DataType::Utf8, false));
        Arc::new(Schema::new(fields))
    }

    #[tokio::test]
    async fn checksummed_copies_are_read_unvalidated_and_give_the_same_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy.arrow");
        let (schema, written) = write_copy_as(&path, true);
        let table = table_of(&schema);
        let copy = OpenCopy::open(&path, vec![0, 1]).unwrap();
        let sums = &copy.trusted.as_ref().expect("the footer's checksums").0;
        // They end where the last block does (the footer follows).
        let last = copy.blocks[2];
        let end = last.offset() as u64 + last.metaDataLength() as u64 + last.bodyLength() as u64;
        assert_eq!(sums.end, end);
        assert!(sums.crcs.len() > 3);
        // The large blocks are mapped and decoded unvalidated, the small
        // one read and validated.
        let trusted = &copy.trusted.as_ref().unwrap().1;
        for (i, large) in [(0, true), (1, false), (2, true)] {
            let block = copy.blocks[i];
            let len = block.metaDataLength() as usize + block.bodyLength() as usize;
            assert_eq!(len >= MAP_AT_LEAST, large);
            if large {
                let (buf, decoder) = copy.mapped(&block).unwrap().expect("mapped");
                assert!(std::ptr::eq(decoder, trusted));
                assert_eq!(buf.len(), len);
            }
        }
        drop(copy);
        let all = scan(&path, &table, None, None).await;
        let names = scan(&path, &table, Some(vec![1]), Some(2..3)).await;
        // Mapped blocks stay readable after their copy is deleted
        // (evicted while a read holds them).
        std::fs::remove_file(&path).unwrap();
        for (got, want) in all.iter().zip(&written) {
            assert_eq!(got.column(0), want.column(0));
            assert_eq!(got.column(1), want.column(1));
        }
        assert_eq!(names[0].column(0), written[2].column(1));
    }

    /// Reads `path` (every column, or `projection`) and returns the error.
    async fn scan_error(
        path: &std::path::Path,
        table: &SchemaRef,
        projection: Option<Vec<usize>>,
    ) -> Option<String> {
        let got = try_scan(path, table, projection, None).await;
        got.err().map(|e| e.to_string())
    }

    #[tokio::test]
    async fn a_damaged_checksummed_copy_fails_its_read_and_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy.arrow");
        let (schema, _) = write_copy_as(&path, true);
        let table = table_of(&schema);
        // One byte of the last block's text, changed to another ASCII
        // letter (valid UTF-8: validation alone would not notice).
        let copy = OpenCopy::open(&path, vec![0, 1]).unwrap();
        let last = copy.blocks[2];
        drop(copy);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = (last.offset() + last.metaDataLength() as i64 + last.bodyLength() - 100) as usize;
        let text = (at..at + 64)
            .find(|i| bytes[*i] == b'n')
            .expect("a letter n");
        bytes[text] = b'm';
        damage_in_place(&path, &bytes);
        // A read of the id column only doesn't read the damaged bytes.
        assert_eq!(scan_error(&path, &table, Some(vec![0])).await, None);
        let e = scan_error(&path, &table, None)
            .await
            .expect("a failed read");
        assert!(
            e.contains("damaged on disk") && e.contains("removed"),
            "{e}"
        );
        assert!(!path.exists());

        // A damaged message (the first block's, where its row count
        // sits): even a read of one column fails, and the copy goes.
        write_copy_as(&path, true);
        let first = OpenCopy::open(&path, vec![0, 1]).unwrap().blocks[0];
        let mut bytes = std::fs::read(&path).unwrap();
        let at = first.offset() as usize + 8 + 40;
        bytes[at] ^= 0x10;
        damage_in_place(&path, &bytes);
        let e = scan_error(&path, &table, Some(vec![0]))
            .await
            .expect("a failed read");
        assert!(e.contains("damaged on disk"), "{e}");
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_copy_whose_head_or_checksums_are_damaged_is_removed() {
        // The schema the footer gives is trusted only when the checked
        // schema message at the file's start says the same.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy.arrow");
        let damage = |from: &[u8], to: &[u8]| {
            let mut bytes = std::fs::read(&path).unwrap();
            let at = bytes
                .windows(from.len())
                .position(|w| w == from)
                .expect("the bytes to damage");
            bytes[at..at + to.len()].copy_from_slice(to);
            damage_in_place(&path, &bytes);
        };
        let (schema, written) = write_copy_as(&path, true);
        let table = table_of(&schema);
        // The field's name in the schema message at the start.
        damage(b"name", b"m");
        let e = scan_error(&path, &table, Some(vec![0]))
            .await
            .expect("a failed read");
        assert!(e.contains("damaged on disk"), "{e}");
        assert!(!path.exists());
        // The checksums' own text in the footer.
        write_copy_as(&path, true);
        let sums = OpenCopy::open(&path, vec![0, 1])
            .unwrap()
            .trusted
            .unwrap()
            .0;
        let first = format!(":{:08x}", sums.crcs[0]);
        damage(first.as_bytes(), b":g");
        assert!(OpenCopy::open(&path, vec![0, 1]).is_err());
        assert!(!path.exists());
        // A block's offset in the footer (which the checksums don't
        // cover), pointing at another block's start: its message and
        // lengths would pass, so the tiling catches it.
        write_copy_as(&path, true);
        let blocks = OpenCopy::open(&path, vec![0, 1]).unwrap().blocks;
        let entry = |b: &Block| {
            let mut e = b.offset().to_le_bytes().to_vec();
            e.extend(b.metaDataLength().to_le_bytes());
            e
        };
        let mut moved = blocks[0];
        moved.set_offset(blocks[2].offset());
        damage(&entry(&blocks[0]), &entry(&moved));
        assert!(OpenCopy::open(&path, vec![0, 1]).is_err());
        assert!(!path.exists());
        // A copy written without checksums is read, and validated.
        write_copy_as(&path, false);
        let copy = OpenCopy::open(&path, vec![0, 1]).unwrap();
        assert!(copy.trusted.is_none() && copy.mapped(&copy.blocks[0]).unwrap().is_none());
        drop(copy);
        let all = scan(&path, &table, None, None).await;
        assert_eq!(all[2].column(1), written[2].column(1));
    }

    #[tokio::test]
    async fn a_checksummed_copy_with_dictionaries_tiles_and_is_read_validated() {
        use datafusion::arrow::array::{DictionaryArray, Int32Array};
        use datafusion::arrow::datatypes::Int32Type;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy.arrow");
        let kind = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("state", kind, false),
        ]));
        // One dictionary (an IPC file allows no replacement), written
        // before the first batch: a block the tiling must count.
        let batch = |from: i64, words: &[&str]| {
            let keys = Int32Array::from_iter_values((0..1000).map(|i| i % words.len() as i32));
            let values = StringArray::from_iter_values(words.iter().copied());
            let dict = DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values)).unwrap();
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(Int64Array::from_iter_values(from..from + 1000)),
                    Arc::new(dict),
                ],
            )
            .unwrap()
        };
        let written = [
            batch(0, &["CA", "NY", "TX"]),
            batch(1000, &["CA", "NY", "TX"]),
        ];
        let file = Checksummed::new(File::create(&path).unwrap());
        let mut w = FileWriter::try_new_buffered(file, &schema).unwrap();
        for b in &written {
            w.write(b).unwrap();
        }
        std::io::Write::flush(w.get_mut()).unwrap();
        let sums = w.get_ref().get_ref().footer_value();
        w.write_metadata(CHECKSUMS_KEY, sums);
        w.finish().unwrap();
        let copy = OpenCopy::open(&path, vec![0, 1]).expect("dictionaries tile with the batches");
        assert!(
            copy.trusted.is_none(),
            "copies with dictionaries are validated"
        );
        drop(copy);
        // Nor is their footer kept: each open reads their dictionaries.
        assert!(FOOTERS.get(&path).is_none());
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("part", DataType::Utf8, false));
        let got = scan(
            &path,
            &Arc::new(Schema::new(fields)),
            Some(vec![1, 0]),
            None,
        )
        .await;
        assert_eq!(got.len(), 2);
        for (got, want) in got.iter().zip(&written) {
            assert_eq!(got.column(0), want.column(1));
            assert_eq!(got.column(1), want.column(0));
        }
    }

    #[tokio::test]
    async fn a_footer_is_kept_while_its_file_is_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy.arrow");
        let (schema, written) = write_copy_as(&path, true);
        let first = OpenCopy::open(&path, vec![0, 1]).unwrap();
        let again = OpenCopy::open(&path, vec![1]).unwrap();
        assert!(Arc::ptr_eq(&first.blocks, &again.blocks));
        assert!(Arc::ptr_eq(
            &first.trusted.as_ref().unwrap().0,
            &again.trusted.as_ref().unwrap().0
        ));
        // The kept footer serves any projection, with the rows written.
        let table = table_of(&schema);
        let names = scan(&path, &table, Some(vec![1]), None).await;
        assert_eq!(names[0].column(0), written[0].column(1));
        // Another file put in its place (written apart, then renamed
        // over it, as a writer would): its own footer is read.
        let other = dir.path().join("other.arrow");
        write_copy_as(&other, false);
        std::fs::rename(&other, &path).unwrap();
        let replaced = OpenCopy::open(&path, vec![0, 1]).unwrap();
        assert!(!Arc::ptr_eq(&first.blocks, &replaced.blocks));
        assert!(replaced.trusted.is_none());
        assert!(FOOTERS.get(&path).is_some());
    }

    #[test]
    fn blocks_must_tile_the_copy_up_to_its_checksums_end() {
        let b = |offset: i64, meta: i32, body: i64| Block::new(offset, meta, body);
        let batches = [b(16, 8, 24), b(48, 8, 40), b(96, 16, 16)];
        assert_eq!(head_of_tiling(&batches, &[], 128), Some(16));
        // A dictionary between them is part of the tiling.
        let with_dict = [b(16, 8, 24), b(64, 8, 24), b(96, 16, 16)];
        assert_eq!(head_of_tiling(&with_dict, &[b(48, 8, 8)], 128), Some(16));
        assert_eq!(head_of_tiling(&with_dict, &[], 128), None, "a gap");
        // Short of the end, past it, overlapping, duplicated, out of order.
        assert_eq!(head_of_tiling(&batches, &[], 136), None);
        assert_eq!(head_of_tiling(&batches[..2], &[], 128), None);
        assert_eq!(
            head_of_tiling(&[b(16, 8, 24), b(40, 8, 48), b(96, 16, 16)], &[], 128),
            None
        );
        assert_eq!(head_of_tiling(&[b(16, 8, 24), b(16, 8, 24)], &[], 48), None);
        assert_eq!(
            head_of_tiling(&[b(48, 8, 40), b(16, 8, 24), b(96, 16, 16)], &[], 128),
            None
        );
        assert_eq!(head_of_tiling(&[b(-8, 8, 24)], &[], 24), None);
        // No blocks: the schema message runs to the end.
        assert_eq!(head_of_tiling(&[], &[], 64), Some(64));
    }

    #[test]
    fn checksums_cover_every_chunk_written() {
        let mut w = Checksummed::new(Vec::new());
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
        // Written in odd pieces, across chunk ends.
        for piece in data.chunks(7_777) {
            std::io::Write::write_all(&mut w, piece).unwrap();
        }
        let sums = Checksums::parse(&w.footer_value()).unwrap();
        assert_eq!(sums.end, 200_000);
        assert_eq!(sums.crcs.len(), 4);
        assert_eq!(sums.crcs[3], crc32c::crc32c(&data[3 * 65_536..]));
        assert!(sums.check(&data, 0, 0, 200_000));
        let (from, to) = sums.around(70_000, 140_000);
        assert_eq!((from, to), (65_536, 196_608));
        assert!(sums.check(&data[from as usize..to as usize], from, 70_000, 140_000));
        let mut damaged = data.clone();
        damaged[150_000] ^= 1;
        // Checksums as parsed afresh (a new footer): every chunk is checked.
        let fresh = || Checksums::parse(&w.footer_value()).unwrap();
        let sums = fresh();
        assert!(!sums.check(&damaged, 0, 140_000, 150_001));
        assert!(sums.check(&damaged, 0, 0, 131_072));
        // A chunk that passed is not checksummed again while its footer is
        // kept (the same file, unchanged); one that failed still fails.
        assert!(!sums.check(&damaged, 0, 131_072, 200_000));
        assert!(sums.check(&data, 0, 131_072, 200_000));
        assert!(sums.check(&damaged, 0, 131_072, 200_000), "passed before");
        assert!(!fresh().check(&damaged, 0, 131_072, 200_000));
        // Data ending on a chunk's end; chunks around a range stop there.
        let mut w = Checksummed::new(Vec::new());
        std::io::Write::write_all(&mut w, &data[..131_072]).unwrap();
        let even = Checksums::parse(&w.footer_value()).unwrap();
        assert_eq!((even.end, even.crcs.len()), (131_072, 2));
        assert_eq!(even.around(70_000, 131_072), (65_536, 131_072));
        assert!(even.check(&data, 0, 0, 131_072));
        assert_eq!(sums.around(190_000, 200_000), (131_072, 200_000));
        // Bytes not held, or a malformed footer value: not checked.
        assert!(!sums.check(&data[..1000], 0, 0, 2000));
        for bad in [
            "65537:0000000é0000000",
            "",
            "12",
            "x:00000000",
            "65537:00000000",
            "10:0000000g",
        ] {
            assert!(Checksums::parse(bad).is_err(), "{bad}");
        }
    }
}
