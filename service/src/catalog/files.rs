//! Finding a dataset's files and splitting a scan into parts.
//!
//! Parts are what endpoints serve: whole files, or row-group ranges of
//! parquet files. They are computed from the files alone, in path order, so
//! the same files always give the same parts, and the union of all parts is
//! exactly the whole dataset.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::datasource::object_store::ObjectStoreUrl;
use futures::{FutureExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use veil_proto::{FileSlice, ScanPart};

use super::object_stores::{ObjectStores, Resolved};
use crate::error::{Result, VeilError};
use crate::model::dataset::{FileFormatKind, SourceSpec};

/// One data file of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// How tickets name the file: the local path, or the object key.
    pub path: String,
    /// Where its store keeps it.
    pub object: ObjectPath,
    pub size: u64,
    /// When the file was last written (milliseconds), where the store says.
    /// With the size it tells whether a file changed since it was read.
    pub modified_ms: Option<i64>,
    /// `key=value` folder names between the dataset root and the file.
    pub partition_values: Vec<(String, String)>,
    /// What the store says identifies this version of the file beyond its
    /// size and time (a remote store's ETag; a local file's inode and
    /// nanosecond modification time), where it says anything.
    pub version: Option<String>,
}

/// A dataset's files and the store that holds them.
#[derive(Debug, Clone)]
pub struct Listing {
    pub url: ObjectStoreUrl,
    pub store: Arc<dyn ObjectStore>,
    /// Sorted by path.
    pub files: Vec<SourceFile>,
}

impl Listing {
    /// A digest of the files as listed: their paths, sizes, times and
    /// versions (a change to any file, or a file added or gone, changes it).
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for f in &self.files {
            let text = format!(
                "{}\u{0}{}\u{0}{:?}\u{0}{:?}",
                f.path, f.size, f.modified_ms, f.version
            );
            h.update((text.len() as u64).to_be_bytes());
            h.update(text.as_bytes());
        }
        h.finalize().into()
    }
}

fn unreadable() -> VeilError {
    VeilError::FailedPrecondition(
        "the dataset's files are not readable right now; ask its owner to check the location"
            .into(),
    )
}

/// Every data file of a source, sorted by path.
pub async fn list_files(stores: &ObjectStores, source: &SourceSpec) -> Result<Listing> {
    let resolved = stores.resolve(&source.location)?;
    let files = match &resolved.local {
        Some(root) => {
            let mut files = list_local(root, source)?;
            files.sort_by(|a, b| a.path.cmp(&b.path));
            files
        }
        None => remote_files(&resolved, source).await?,
    };
    Ok(Listing {
        url: resolved.url,
        store: resolved.store,
        files,
    })
}

/// A remote store's listings, reused for the store's `listing_cache_secs`
/// (a listing is one or more paged round trips; a local folder is listed
/// afresh each time, which costs no more than checking it is unchanged).
/// Keyed by the store instance and everything about the source that
/// decides which files are its, so a dataset whose location, format or
/// partitioning changes is listed again at once. Bounded by the number of
/// files kept, whatever the number of listings.
type RemoteListings = moka::future::Cache<RemoteListingKey, (Instant, Arc<Vec<SourceFile>>)>;
type RemoteListingKey = (u64, String, &'static str, bool);

const MAX_KEPT_FILES: u64 = 1_000_000;

static REMOTE_LISTINGS: std::sync::LazyLock<RemoteListings> = std::sync::LazyLock::new(|| {
    moka::future::Cache::builder()
        .weigher(|_, (_, files): &(Instant, Arc<Vec<SourceFile>>)| {
            u32::try_from(files.len().max(1)).unwrap_or(u32::MAX)
        })
        .max_capacity(MAX_KEPT_FILES)
        // No store keeps a listing longer than this whatever its setting.
        .time_to_live(Duration::from_secs(3600))
        .build()
});

async fn remote_files(resolved: &Resolved, source: &SourceSpec) -> Result<Vec<SourceFile>> {
    let list = || async {
        let mut files = list_remote(resolved.store.as_ref(), &resolved.path, source).await?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok::<_, VeilError>(files)
    };
    if resolved.listing_ttl.is_zero() {
        return list().await;
    }
    let key = (
        resolved.store_id,
        resolved.path.to_string(),
        source.format.extension(),
        source.hive_partitioned,
    );
    if let Some((at, files)) = REMOTE_LISTINGS.get(&key).await
        && at.elapsed() < resolved.listing_ttl
    {
        return Ok(files.as_ref().clone());
    }
    let files = list().await?;
    REMOTE_LISTINGS
        .insert(key, (Instant::now(), Arc::new(files.clone())))
        .await;
    Ok(files)
}

fn list_local(root: &Path, source: &SourceSpec) -> Result<Vec<SourceFile>> {
    let meta = std::fs::metadata(root).map_err(|_| unreadable())?;
    let mut out = Vec::new();
    if meta.is_file() {
        out.push(local_file(root, &meta, vec![])?);
        return Ok(out);
    }
    walk(root, root, source, &mut out)?;
    Ok(out)
}

fn local_file(
    path: &Path,
    meta: &std::fs::Metadata,
    partition_values: Vec<(String, String)>,
) -> Result<SourceFile> {
    Ok(SourceFile {
        path: path.to_string_lossy().into_owned(),
        object: ObjectPath::from_absolute_path(path).map_err(|e| {
            tracing::warn!(error = %e, "a file of a dataset folder has no object path");
            VeilError::FailedPrecondition(
                "a file name in the dataset's folder can't be read as a path; ask its owner to rename it"
                    .into(),
            )
        })?,
        size: meta.len(),
        modified_ms: meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64),
        partition_values,
        version: local_version(meta),
    })
}

#[cfg(unix)]
fn local_version(meta: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    Some(format!(
        "{}:{}:{}.{}",
        meta.dev(),
        meta.ino(),
        meta.mtime(),
        meta.mtime_nsec()
    ))
}

#[cfg(not(unix))]
fn local_version(_meta: &std::fs::Metadata) -> Option<String> {
    None
}

/// A remote location is one object when it exists as such; otherwise it is
/// a prefix listed like a folder (hidden and bookkeeping keys skipped).
async fn list_remote(
    store: &dyn ObjectStore,
    prefix: &ObjectPath,
    source: &SourceSpec,
) -> Result<Vec<SourceFile>> {
    let logged = |e: object_store::Error| crate::error::query::listing_failed(&e);
    if !prefix.as_ref().is_empty() {
        match store.head(prefix).await {
            Ok(meta) => {
                return Ok(vec![SourceFile {
                    path: meta.location.to_string(),
                    modified_ms: Some(meta.last_modified.timestamp_millis()),
                    version: meta.e_tag.clone().or(meta.version.clone()),
                    object: meta.location,
                    size: meta.size,
                    partition_values: vec![],
                }]);
            }
            // Not one object (some servers answer a HEAD on a "folder"
            // with an error other than 404): list it as a prefix; a real
            // failure fails the listing too.
            Err(e) => tracing::debug!(error = %e, "remote location is not a single object"),
        }
    }
    let metas: Vec<_> = store
        .list(Some(prefix))
        .try_collect()
        .await
        .map_err(logged)?;
    let depth = prefix.parts().count();
    let mut out = Vec::new();
    for meta in metas {
        let parts: Vec<String> = meta
            .location
            .parts()
            .skip(depth)
            .map(|p| p.as_ref().to_string())
            .collect();
        let Some((name, folders)) = parts.split_last() else {
            continue;
        };
        if parts
            .iter()
            .any(|p| p.starts_with('.') || p.starts_with('_'))
            || !name
                .to_ascii_lowercase()
                .ends_with(source.format.extension())
        {
            continue;
        }
        let partition_values = if source.hive_partitioned {
            folders
                .iter()
                .map(|f| hive_value(f))
                .collect::<Result<Vec<_>>>()?
        } else {
            vec![]
        };
        out.push(SourceFile {
            path: meta.location.to_string(),
            modified_ms: Some(meta.last_modified.timestamp_millis()),
            version: meta.e_tag.clone().or(meta.version.clone()),
            object: meta.location,
            size: meta.size,
            partition_values,
        });
    }
    Ok(out)
}

fn walk(root: &Path, dir: &Path, source: &SourceSpec, out: &mut Vec<SourceFile>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        VeilError::FailedPrecondition(format!("cannot list a dataset folder: {}", e.kind()))
    })?;
    for entry in entries {
        let entry = entry.map_err(|e| {
            VeilError::FailedPrecondition(format!("cannot list a dataset folder: {}", e.kind()))
        })?;
        let name = entry.file_name().to_string_lossy().to_string();
        // Hidden and bookkeeping files (_SUCCESS, .crc) are never data.
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let path = entry.path();
        let ft = entry.file_type().map_err(|e| {
            VeilError::FailedPrecondition(format!("cannot stat a file: {}", e.kind()))
        })?;
        if ft.is_dir() {
            walk(root, &path, source, out)?;
        } else if ft.is_file()
            && name
                .to_ascii_lowercase()
                .ends_with(source.format.extension())
        {
            let partition_values = if source.hive_partitioned {
                hive_values(root, &path)?
            } else {
                vec![]
            };
            let meta = entry.metadata().map_err(|e| {
                VeilError::FailedPrecondition(format!("cannot stat a file: {}", e.kind()))
            })?;
            out.push(local_file(&path, &meta, partition_values)?);
        }
    }
    Ok(())
}

fn hive_values(root: &Path, file: &Path) -> Result<Vec<(String, String)>> {
    let rel = file
        .strip_prefix(root)
        .map_err(|e| VeilError::internal("hive path", e))?;
    let mut out = Vec::new();
    if let Some(parent) = rel.parent() {
        for comp in parent.components() {
            out.push(hive_value(&comp.as_os_str().to_string_lossy())?);
        }
    }
    Ok(out)
}

/// `key=value` from one folder name.
fn hive_value(folder: &str) -> Result<(String, String)> {
    let (k, v) = folder.split_once('=').ok_or_else(|| {
        VeilError::FailedPrecondition(format!(
            "folder '{folder}' in a hive-partitioned dataset is not of the form key=value"
        ))
    })?;
    Ok((k.to_string(), percent_decode(v)))
}

/// Hive writers escape some characters as `%XX`.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Partition keys, in folder order, from the first file (all files must agree).
pub fn partition_keys(files: &[SourceFile]) -> Result<Vec<String>> {
    let Some(first) = files.first() else {
        return Ok(vec![]);
    };
    let keys: Vec<String> = first
        .partition_values
        .iter()
        .map(|(k, _)| k.clone())
        .collect();
    for f in files {
        if f.partition_values.iter().map(|(k, _)| k).ne(keys.iter()) {
            return Err(VeilError::FailedPrecondition(
                "the files of a hive-partitioned dataset must all use the same key=value folder levels".into(),
            ));
        }
    }
    Ok(keys)
}

/// Row counts per row group of a parquet file, from its footer (two ranged
/// reads, whatever the store). Decoding runs under `catch_unwind`: a hostile
/// footer is an invalid file, never a crashed request.
/// Row counts per row group, by (store URL, path, size, modified ms): a
/// footer is read and decoded once per version of a file, not on every
/// layout. Files without a modification time are read every time.
type RowGroupKey = (String, String, u64, i64);
static ROW_GROUPS: std::sync::LazyLock<moka::sync::Cache<RowGroupKey, Arc<Vec<u64>>>> =
    std::sync::LazyLock::new(|| {
        moka::sync::Cache::builder()
            // Weighed by row groups: at most about a million counts kept.
            .max_capacity(1_000_000)
            .weigher(|_, v: &Arc<Vec<u64>>| 1 + v.len() as u32)
            .time_to_idle(std::time::Duration::from_secs(3600))
            .build()
    });

pub async fn parquet_row_groups(listing: &Listing, file: &SourceFile) -> Result<Vec<u64>> {
    let key = file.modified_ms.map(|ms| {
        (
            listing.url.as_str().to_string(),
            file.path.clone(),
            file.size,
            ms,
        )
    });
    if let Some(counts) = key.as_ref().and_then(|k| ROW_GROUPS.get(k)) {
        return Ok(counts.as_ref().clone());
    }
    let counts = read_row_groups(listing, file).await?;
    if let Some(k) = key {
        ROW_GROUPS.insert(k, Arc::new(counts.clone()));
    }
    Ok(counts)
}

/// How many rows the parquet files of a listing hold, from their footers
/// (kept per file version); `None` when a footer can't be read or the
/// listing has over 1,000 files (not worth reading them all to plan).
pub async fn parquet_rows(listing: &Listing) -> Option<u64> {
    if listing.files.len() > 1_000 {
        return None;
    }
    let mut rows = 0u64;
    for f in &listing.files {
        let groups = parquet_row_groups(listing, f).await.ok()?;
        rows = rows.checked_add(groups.iter().sum())?;
    }
    Some(rows)
}

async fn read_row_groups(listing: &Listing, file: &SourceFile) -> Result<Vec<u64>> {
    use datafusion::parquet::file::metadata::ParquetMetaDataReader;
    let invalid = || {
        VeilError::FailedPrecondition("a parquet file of the dataset is not valid parquet".into())
    };
    if file.size < 12 {
        return Err(invalid());
    }
    let read = |range: std::ops::Range<u64>| {
        let store = Arc::clone(&listing.store);
        let object = file.object.clone();
        async move {
            store.get_range(&object, range).await.map_err(|e| {
                tracing::warn!(error = %e, "reading a parquet footer failed");
                unreadable()
            })
        }
    };
    let tail = read(file.size - 8..file.size).await?;
    if &tail[4..] != b"PAR1" {
        return Err(invalid());
    }
    let len = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as u64;
    if len + 8 > file.size {
        return Err(invalid());
    }
    let footer = read(file.size - 8 - len..file.size - 8).await?;
    let decoded =
        std::panic::AssertUnwindSafe(
            async move { ParquetMetaDataReader::decode_metadata(&footer) },
        )
        .catch_unwind()
        .await;
    let meta = match decoded {
        Ok(Ok(m)) => m,
        _ => return Err(invalid()),
    };
    Ok(meta
        .row_groups()
        .iter()
        .map(|rg| rg.num_rows().max(0) as u64)
        .collect())
}

/// The units parts are made of: whole CSV/JSON files (weighed by size, 100
/// bytes per row, an estimate) or single parquet row groups (exact rows).
pub async fn split_units(
    format: FileFormatKind,
    listing: &Listing,
) -> Result<Vec<(FileSlice, u64)>> {
    let mut units = Vec::new();
    for f in &listing.files {
        match format {
            FileFormatKind::Parquet => {
                let groups = parquet_row_groups(listing, f).await?;
                let count = groups.len() as u32;
                for (i, rows) in groups.iter().enumerate() {
                    units.push((
                        FileSlice {
                            path: f.path.clone(),
                            row_group_start: i as u32,
                            row_group_end: i as u32 + 1,
                            row_group_count: count,
                        },
                        *rows,
                    ));
                }
            }
            FileFormatKind::Csv | FileFormatKind::Json => units.push((
                FileSlice {
                    path: f.path.clone(),
                    ..Default::default()
                },
                (f.size / 100).max(1),
            )),
        }
    }
    Ok(units)
}

/// How a source splits into parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub parts: Vec<ScanPart>,
    /// Exact row count when the format records it (parquet).
    pub total_rows: Option<u64>,
}

/// Split units into at most `max_parts` parts of about `rows_per_part` rows.
pub fn split_into_parts(
    format: FileFormatKind,
    units: Vec<(FileSlice, u64)>,
    rows_per_part: u64,
    max_parts: usize,
) -> Split {
    let total: u64 = units.iter().map(|u| u.1).sum();
    let max_parts = max_parts.max(1) as u64;
    let target = rows_per_part.max(1).max(total.div_ceil(max_parts));
    let mut parts: Vec<ScanPart> = Vec::new();
    let mut current = ScanPart::default();
    let mut weight = 0u64;
    for (slice, w) in units {
        if weight > 0 && weight + w > target && (parts.len() as u64) < max_parts - 1 {
            parts.push(std::mem::take(&mut current));
            weight = 0;
        }
        push_slice(&mut current, slice);
        weight += w;
    }
    if !current.files.is_empty() || parts.is_empty() {
        parts.push(current);
    }
    let total_rows = (format == FileFormatKind::Parquet).then_some(total);
    Split { parts, total_rows }
}

/// Adjacent row-group slices of one file merge into one range.
fn push_slice(part: &mut ScanPart, slice: FileSlice) {
    if let Some(last) = part.files.last_mut()
        && last.path == slice.path
        && !slice.is_whole_file()
        && last.row_group_end == slice.row_group_start
    {
        last.row_group_end = slice.row_group_end;
        return;
    }
    part.files.push(slice);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv_files(n: usize) -> Vec<(FileSlice, u64)> {
        (0..n)
            .map(|i| {
                (
                    FileSlice {
                        path: format!("/d/{i:03}.csv"),
                        ..Default::default()
                    },
                    10,
                )
            })
            .collect()
    }

    #[test]
    fn parts_cover_every_file_once_and_respect_the_cap() {
        let parts = split_into_parts(FileFormatKind::Csv, csv_files(10), 20, 3).parts;
        assert!(parts.len() <= 3);
        let mut seen: Vec<String> = parts
            .iter()
            .flat_map(|p| p.files.iter().map(|f| f.path.clone()))
            .collect();
        seen.sort();
        assert_eq!(seen.len(), 10);
        seen.dedup();
        assert_eq!(seen.len(), 10);
    }

    #[test]
    fn hive_values_are_read_from_folders() {
        let root = Path::new("/data/t");
        let v = hive_values(root, Path::new("/data/t/state=CA/year=2020/f.parquet")).unwrap();
        assert_eq!(
            v,
            vec![
                ("state".into(), "CA".into()),
                ("year".into(), "2020".into())
            ]
        );
        assert!(hive_values(root, Path::new("/data/t/CA/f.parquet")).is_err());
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("%é%"), "%é%");
    }

    async fn put(store: &Arc<dyn ObjectStore>, key: &str) {
        store
            .put(
                &ObjectPath::from(key),
                bytes::Bytes::from_static(b"a\n1\n").into(),
            )
            .await
            .unwrap();
    }

    fn paths(l: &Listing) -> Vec<String> {
        l.files.iter().map(|f| f.path.clone()).collect()
    }

    #[tokio::test]
    async fn remote_listings_are_reused_for_the_stores_ttl_only() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        put(&store, "t/a.csv").await;
        let cached = ObjectStores::local_only().with_remote_listed(
            "s3://lake",
            Arc::clone(&store),
            Duration::from_secs(3600),
        );
        let fresh = ObjectStores::local_only().with_remote("s3://lake", Arc::clone(&store));
        let source = |format, hive| SourceSpec {
            format,
            location: "s3://lake/t".into(),
            hive_partitioned: hive,
            database: None,
        };
        let csv = source(FileFormatKind::Csv, false);
        assert_eq!(
            paths(&list_files(&cached, &csv).await.unwrap()),
            ["t/a.csv"]
        );
        put(&store, "t/b.csv").await;
        // Within the TTL the listing is reused ...
        assert_eq!(
            paths(&list_files(&cached, &csv).await.unwrap()),
            ["t/a.csv"]
        );
        // ... never for another store under the same name ...
        let other = ObjectStores::local_only().with_remote_listed(
            "s3://lake",
            Arc::new(object_store::memory::InMemory::new()),
            Duration::from_secs(3600),
        );
        assert!(list_files(&other, &csv).await.unwrap().files.is_empty());
        // ... a store without one lists afresh ...
        assert_eq!(
            paths(&list_files(&fresh, &csv).await.unwrap()),
            ["t/a.csv", "t/b.csv"]
        );
        // ... and a source that differs in what makes a file its own is
        // another listing.
        assert_eq!(
            paths(
                &list_files(&cached, &source(FileFormatKind::Csv, true))
                    .await
                    .unwrap()
            ),
            ["t/a.csv", "t/b.csv"]
        );
        assert!(
            list_files(&cached, &source(FileFormatKind::Json, false))
                .await
                .unwrap()
                .files
                .is_empty()
        );
    }
}
