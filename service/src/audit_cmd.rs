//! `veil audit`: verify the audit chains, export events as JSON lines.
//! These read the store directly (with the config's master key), so they
//! work while the server is down, and need no token.

use clap::{Args, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};

use veil::audit::{checkpoint, verify};
use veil::config::Config;
use veil::error::VeilError;
use veil::model::audit::StoredAuditRow;
use veil::secrets::{KeyPurpose, MasterKey};

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
    /// Config file of the server whose audit to read.
    #[arg(long, env = "VEIL_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Without --config: the demo's data directory (default: ./veil-data,
    /// or the nearest veil-data above the current directory).
    #[arg(long, env = "VEIL_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check every node's chain (sequence, link MACs, checkpoints); print
    /// each chain's first broken link and fail if there is one.
    Verify {
        /// Checkpoint files to check against (repeatable; default: the
        /// config's [audit] checkpoint_file). Give every node's file when
        /// several nodes share the store.
        #[arg(long = "checkpoints")]
        checkpoints: Vec<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write events as JSON lines (one event per line, with its chain MAC),
    /// oldest first, for a SIEM.
    Export {
        /// Only this node's chain.
        #[arg(long)]
        node: Option<String>,
        /// Only events after this sequence number (per node).
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// Append to this file instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Keep running, exporting new events as they are recorded.
        #[arg(long)]
        follow: bool,
    },
}

pub(crate) fn run(args: AuditArgs) -> Result<(), VeilError> {
    let cfg = load(args.config, &crate::demo_dir(args.data_dir))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| VeilError::internal("tokio runtime", e))?;
    runtime.block_on(async move {
        let store = veil::server::open_store(&cfg).await?;
        match args.command {
            AuditCommand::Verify { checkpoints, json } => {
                let master = MasterKey::load(&cfg.master_key_path())?;
                let files = if checkpoints.is_empty() {
                    vec![cfg.audit_checkpoint_path()]
                } else {
                    checkpoints
                };
                let loaded = checkpoint::load(&files)?;
                let mut result = verify::verify_store(
                    store.as_ref(),
                    &master.derive(KeyPurpose::AuditChain),
                    &loaded.checkpoints,
                )
                .await?;
                result.unreadable_checkpoint_lines = loaded.unreadable;
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&result)
                            .map_err(|e| VeilError::internal("encode verification", e))?
                    );
                } else {
                    print!("{}", result.report());
                }
                match result
                    .nodes
                    .iter()
                    .find_map(|n| n.broken.as_ref().map(|b| (n, b)))
                {
                    None => Ok(()),
                    Some((n, why)) => Err(VeilError::FailedPrecondition(format!(
                        "audit verification failed: node {}: {why}",
                        n.node_id
                    ))),
                }
            }
            AuditCommand::Export {
                node,
                since,
                output,
                follow,
            } => export(store.as_ref(), node, since, output.as_deref(), follow).await,
        }
    })
}

fn load(config: Option<PathBuf>, data_dir: &Path) -> Result<Config, VeilError> {
    match config {
        Some(p) => Config::load(&p),
        None => {
            let path = data_dir.join("veil.toml");
            if !path.exists() {
                return Err(VeilError::InvalidArgument(format!(
                    "no --config given and no demo config at {} (nor in a veil-data above the current directory); pass --config PATH (or VEIL_CONFIG)",
                    path.display()
                )));
            }
            Config::load(&path)
        }
    }
}

/// One exported line: the stored event plus its chain position and MAC.
fn line(row: &StoredAuditRow) -> Result<String, VeilError> {
    let mut event: serde_json::Value = serde_json::from_str(&row.body)
        .map_err(|e| VeilError::internal("corrupt audit event", e))?;
    if let Some(obj) = event.as_object_mut() {
        obj.insert("mac".into(), row.mac.clone().into());
    }
    Ok(event.to_string())
}

async fn export(
    store: &dyn veil::store::Store,
    node: Option<String>,
    since: u64,
    output: Option<&Path>,
    follow: bool,
) -> Result<(), VeilError> {
    let mut out: Box<dyn Write> = match output {
        Some(p) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| {
                    VeilError::FailedPrecondition(format!("cannot open {}: {e}", p.display()))
                })?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    if let Some(n) = &node {
        let nodes: Vec<String> = store
            .audit_heads()
            .await?
            .into_iter()
            .map(|h| h.node_id)
            .collect();
        if !nodes.contains(n) {
            let known = match nodes.is_empty() {
                true => "none yet".to_string(),
                false => nodes.join(", "),
            };
            if !follow {
                return Err(VeilError::NotFound(format!(
                    "no audit events from node '{n}' (nodes in this store: {known})"
                )));
            }
            eprintln!(
                "veil: no audit events from node '{n}' yet (nodes in this store: {known}); following"
            );
        }
    }
    let mut after: std::collections::BTreeMap<String, u64> = Default::default();
    loop {
        let nodes: Vec<String> = match &node {
            Some(n) => vec![n.clone()],
            None => store
                .audit_heads()
                .await?
                .into_iter()
                .map(|h| h.node_id)
                .collect(),
        };
        for n in nodes {
            let from = after.entry(n.clone()).or_insert(since);
            loop {
                let rows = store.audit_rows(&n, *from, 5000).await?;
                for row in &rows {
                    match writeln!(out, "{}", line(row)?) {
                        Ok(()) => {}
                        // The reader has had enough (`| head`): not an error.
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                        Err(e) => {
                            return Err(VeilError::Unavailable(format!(
                                "cannot write the export: {e}"
                            )));
                        }
                    }
                }
                match rows.last() {
                    Some(last) => *from = last.seq,
                    None => break,
                }
            }
        }
        match out.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => {
                return Err(VeilError::Unavailable(format!(
                    "cannot write the export: {e}"
                )));
            }
        }
        if !follow {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
