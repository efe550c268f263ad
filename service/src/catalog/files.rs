//! Finding a dataset's files and splitting a scan into parts.
//!
//! Parts are what endpoints serve: whole files, or row-group ranges of
//! parquet files. They are computed from the files alone, in path order, so
//! the same files always give the same parts, and the union of all parts is
//! exactly the whole dataset.

use std::path::{Path, PathBuf};

use veil_proto::{FileSlice, ScanPart};

use crate::error::{Result, VeilError};
use crate::store::model::{FileFormatKind, SourceSpec};

/// One data file of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: PathBuf,
    pub size: u64,
    /// `key=value` folder names between the dataset root and the file.
    pub partition_values: Vec<(String, String)>,
}

/// Every data file of a source, sorted by path.
pub fn list_files(source: &SourceSpec) -> Result<Vec<SourceFile>> {
    let root = Path::new(&source.location);
    let meta = std::fs::metadata(root).map_err(|_| {
        VeilError::FailedPrecondition(
            "the dataset's files are not readable right now; ask its owner to check the location"
                .into(),
        )
    })?;
    let mut out = Vec::new();
    if meta.is_file() {
        out.push(SourceFile {
            path: root.to_path_buf(),
            size: meta.len(),
            partition_values: vec![],
        });
        return Ok(out);
    }
    walk(root, root, source, &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
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
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            out.push(SourceFile {
                path,
                size,
                partition_values,
            });
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
            let s = comp.as_os_str().to_string_lossy();
            let Some((k, v)) = s.split_once('=') else {
                return Err(VeilError::FailedPrecondition(format!(
                    "folder '{s}' in a hive-partitioned dataset is not of the form key=value"
                )));
            };
            out.push((k.to_string(), percent_decode(v)));
        }
    }
    Ok(out)
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

/// Row counts per row group of a parquet file.
pub fn parquet_row_groups(path: &Path) -> Result<Vec<u64>> {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    let file = std::fs::File::open(path).map_err(|e| {
        VeilError::FailedPrecondition(format!("cannot open a data file: {}", e.kind()))
    })?;
    let reader = SerializedFileReader::new(file).map_err(|_| {
        VeilError::FailedPrecondition("a parquet file of the dataset is not valid parquet".into())
    })?;
    Ok(reader
        .metadata()
        .row_groups()
        .iter()
        .map(|rg| rg.num_rows().max(0) as u64)
        .collect())
}

/// How a source splits into parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub parts: Vec<ScanPart>,
    /// Exact row count when the format records it (parquet).
    pub total_rows: Option<u64>,
}

/// Split files into at most `max_parts` parts of about `rows_per_part` rows.
/// CSV and JSON files are weighed by size (100 bytes per row, an estimate).
pub fn split_into_parts(
    format: FileFormatKind,
    files: &[SourceFile],
    rows_per_part: u64,
    max_parts: usize,
) -> Result<Split> {
    let mut units: Vec<(FileSlice, u64)> = Vec::new();
    for f in files {
        let path = f.path.to_string_lossy().to_string();
        match format {
            FileFormatKind::Parquet => {
                let groups = parquet_row_groups(&f.path)?;
                let count = groups.len() as u32;
                for (i, rows) in groups.iter().enumerate() {
                    units.push((
                        FileSlice {
                            path: path.clone(),
                            row_group_start: i as u32,
                            row_group_end: i as u32 + 1,
                            row_group_count: count,
                        },
                        *rows,
                    ));
                }
            }
            FileFormatKind::Csv | FileFormatKind::Json => {
                units.push((
                    FileSlice {
                        path,
                        ..Default::default()
                    },
                    (f.size / 100).max(1),
                ));
            }
        }
    }
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
    Ok(Split { parts, total_rows })
}

/// Split into exactly `n` parts (some possibly empty), whatever the size:
/// the count reveals nothing about the data.
pub fn split_exactly(format: FileFormatKind, files: &[SourceFile], n: usize) -> Result<Split> {
    let n = n.max(1);
    let mut split = split_into_parts(format, files, 1, n)?;
    split.parts.resize_with(n, ScanPart::default);
    Ok(split)
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

    fn csv_files(n: usize) -> Vec<SourceFile> {
        (0..n)
            .map(|i| SourceFile {
                path: format!("/d/{i:03}.csv").into(),
                size: 1000,
                partition_values: vec![],
            })
            .collect()
    }

    #[test]
    fn parts_cover_every_file_once_and_respect_the_cap() {
        let files = csv_files(10);
        let parts = split_into_parts(FileFormatKind::Csv, &files, 20, 3)
            .unwrap()
            .parts;
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
    fn exact_splits_have_the_asked_count_whatever_the_size() {
        for files in [0, 1, 3, 10] {
            let split = split_exactly(FileFormatKind::Csv, &csv_files(files), 4).unwrap();
            assert_eq!(split.parts.len(), 4);
            assert_eq!(
                split.parts.iter().map(|p| p.files.len()).sum::<usize>(),
                files
            );
        }
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
}
