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
        .open(path)
        .map_err(fail)?;
    file.write_all(format!("{line}\n").as_bytes())
        .map_err(fail)?;
    file.sync_data().map_err(fail)
}

/// Every checkpoint in the given files (a missing file holds none).
pub fn load(paths: &[PathBuf]) -> Result<Vec<Checkpoint>> {
    let mut out = Vec::new();
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
        out.extend(read_checkpoints(&text, &path.display().to_string())?);
    }
    Ok(out)
}
