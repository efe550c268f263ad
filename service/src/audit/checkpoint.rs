//! Where chain checkpoints leave the store: appended to a JSON-lines file
//! (fsynced) and logged, so that someone who can rewrite the database still
//! can't rewrite what `veil audit verify` compares it with.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::chain::{Checkpoint, read_checkpoints};
use crate::error::{Result, VeilError};

/// Appends checkpoints to a file and to the log.
#[derive(Debug, Clone)]
pub struct CheckpointSink {
    path: Option<PathBuf>,
}

impl CheckpointSink {
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self {
            path: Some(path.into()),
        }
    }

    /// Log lines only (tests and tools that don't keep a file).
    pub fn log_only() -> Self {
        Self { path: None }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Log the checkpoint and append it to the file, durably.
    pub async fn write(&self, checkpoint: &Checkpoint) -> Result<()> {
        let line = serde_json::to_string(checkpoint)
            .map_err(|e| VeilError::internal("cannot encode an audit checkpoint", e))?;
        // One line a log shipper can forward as is.
        tracing::info!(target: "veil::audit::checkpoint", "audit checkpoint {line}");
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || append_line(&path, &line))
            .await
            .map_err(|e| VeilError::internal("checkpoint writer", e))?
    }
}

fn append_line(path: &Path, line: &str) -> Result<()> {
    let fail = |e: std::io::Error| {
        VeilError::Unavailable(format!(
            "cannot append an audit checkpoint to {}: {e}; check [audit] checkpoint_file",
            path.display()
        ))
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .map_err(fail)?;
    let before = file.metadata().map_err(fail)?.len();
    // A line cut short before (a crash mid-write) stays a line of its own,
    // so this one still reads.
    let mut text = String::with_capacity(line.len() + 2);
    if before > 0 && !ends_with_newline(&mut file, before) {
        text.push('\n');
    }
    text.push_str(line);
    text.push('\n');
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_data());
    if let Err(e) = written {
        // A disk that filled mid-line would leave a fragment every later
        // checkpoint is appended to, and `veil audit verify` would refuse
        // the whole file: cut it back to where it was.
        let _ = file.set_len(before).and_then(|()| file.sync_data());
        return Err(fail(e));
    }
    Ok(())
}

fn ends_with_newline(file: &mut std::fs::File, len: u64) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1)).is_ok()
        && file.read_exact(&mut last).is_ok()
        && last[0] == b'\n'
}

/// Checkpoints read from files, and the lines that weren't checkpoints.
#[derive(Debug, Default)]
pub struct Loaded {
    pub checkpoints: Vec<Checkpoint>,
    /// "FILE, line N: why", one per skipped line.
    pub unreadable: Vec<String>,
}

/// Every checkpoint in the given files (a missing file holds none).
pub fn load(paths: &[PathBuf]) -> Result<Loaded> {
    let mut out = Loaded::default();
    for path in paths {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(VeilError::FailedPrecondition(format!(
                    "cannot read audit checkpoints from {}: {e}",
                    path.display()
                )));
            }
        };
        let (checkpoints, unreadable) = read_checkpoints(&text, &path.display().to_string());
        out.checkpoints.extend(checkpoints);
        out.unreadable.extend(unreadable);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::append_line;

    /// A line cut short before stays on its own line: the next one reads.
    #[test]
    fn a_checkpoint_after_a_torn_line_starts_a_line_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.jsonl");
        append_line(&path, "{\"a\":1}").unwrap();
        std::fs::write(
            &path,
            format!("{}{{\"kind\":", std::fs::read_to_string(&path).unwrap()),
        )
        .unwrap();
        append_line(&path, "{\"b\":2}").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"kind\":\n{\"b\":2}\n");
    }

    /// A torn line is reported and skipped; the checkpoints around it load.
    #[test]
    fn a_torn_line_is_skipped_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.jsonl");
        let cp = |seq| {
            serde_json::to_string(&crate::audit::chain::Checkpoint::of(
                crate::audit::chain::CheckpointKind::Head,
                "n",
                seq,
                &[seq as u8; 32],
            ))
            .unwrap()
        };
        std::fs::write(&path, format!("{}\n{{\"kind\":\n{}\n", cp(1), cp(2))).unwrap();
        let loaded = super::load(&[path]).unwrap();
        assert_eq!(
            loaded.checkpoints.iter().map(|c| c.seq).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(loaded.unreadable.len(), 1);
        assert!(
            loaded.unreadable[0].contains("cp.jsonl, line 2: not an audit checkpoint"),
            "{:?}",
            loaded.unreadable
        );
    }
}
