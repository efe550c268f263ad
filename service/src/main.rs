//! The `veil` command: serve, and mint development tokens.

mod admin;
mod audit_cmd;

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use veil::auth::claim_trust::ClaimTrust;
use veil::auth::jwt::TokenMinter;
use veil::config::Config;
use veil::config::StoreBackend;
use veil::error::VeilError;
use veil::logging::LogFormat;
use veil::model::identity::{Attributes, Identity};
use veil::server::{ServeOptions, start};

#[derive(Debug, Parser)]
#[command(
    name = "veil",
    version,
    about = "Veil: governed access to sensitive data over Arrow Flight"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Serve Arrow Flight. Without --config, runs the demo.
    Serve {
        /// Config file (see README). Without it, demo mode.
        #[arg(long, env = "VEIL_CONFIG")]
        config: Option<PathBuf>,
        /// Address to listen on, overriding the config (e.g. 127.0.0.1:0).
        #[arg(long)]
        listen: Option<String>,
        /// Demo mode: loopback only, demo data, users and policies.
        #[arg(long)]
        demo: bool,
        /// Where demo mode keeps its data, keys and state.
        #[arg(long, env = "VEIL_DATA_DIR", default_value = "veil-data")]
        data_dir: PathBuf,
        /// Allow plaintext on a non-loopback address (behind a TLS proxy).
        #[arg(long)]
        insecure: bool,
        /// Write the bound address to this file once listening.
        #[arg(long)]
        address_file: Option<PathBuf>,
        /// How log lines (stderr) are written: text, or one JSON object per line.
        #[arg(long, value_enum, env = "VEIL_LOG_FORMAT", default_value = "text")]
        log_format: LogFormat,
    },
    /// Print a JWT signed with the configured (or demo) HS256 key.
    Token {
        /// Subject of the token.
        #[arg(long)]
        user: String,
        /// Group claim (repeatable); believed only if the key's issuer is
        /// trusted for groups ([[auth.issuers]]); the directory adds more.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Attribute claim KEY=VALUE (repeatable); believed only if the
        /// key's issuer is trusted for attributes.
        #[arg(long = "attr")]
        attrs: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        #[arg(long, env = "VEIL_CONFIG")]
        config: Option<PathBuf>,
        /// The demo's directory. Default: ./veil-data, or the nearest
        /// veil-data above the current directory.
        #[arg(long, env = "VEIL_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Administer a running server (datasets, dictionary, directory,
    /// permissions, reload). Uses VEIL_ADDRESS and VEIL_TOKEN.
    Admin(admin::AdminArgs),
    /// What a user gets from a dataset (subscription, policies, the step of
    /// each that matched, schema, masks, row filters). For governors and the
    /// dataset's owners. Uses VEIL_ADDRESS and VEIL_TOKEN.
    Explain(admin::ExplainArgs),
    /// Sensitive data discovery: sample a dataset you own (or govern) and
    /// propose column tags with a confidence (never showing values); accept
    /// or reject proposals. Uses VEIL_ADDRESS and VEIL_TOKEN.
    Discover(admin::DiscoverArgs),
    /// The audit trail: verify its hash chains, export it as JSON lines.
    /// Reads the store named by the config directly.
    Audit(audit_cmd::AuditArgs),
}

/// A read allocates and frees megabytes per batch. glibc's allocator (and
/// mimalloc with its default purge delay) gave those pages back to the
/// kernel and got them again as page faults and zeroing, about 15% of the
/// server's CPU in an unmasked scan (benches/README.md). mimalloc, told by
/// [`veil::memory::hold_freed_pages`] to keep them a while, reuses them;
/// once the node is idle they go back at once
/// ([`veil::memory::return_freed_pages_when_idle`]).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    veil::memory::hold_freed_pages();
    let cli = Cli::parse();
    let log_format = match &cli.command {
        Commands::Serve { log_format, .. } => *log_format,
        _ => LogFormat::Text,
    };
    veil::logging::init(log_format);
    let result = match cli.command {
        Commands::Serve {
            config,
            listen,
            demo,
            data_dir,
            insecure,
            address_file,
            log_format: _,
        } => serve(config, listen, demo, &data_dir, insecure, address_file),
        Commands::Token {
            user,
            groups,
            attrs,
            ttl,
            config,
            data_dir,
        } => token(&user, &groups, &attrs, ttl, config, data_dir),
        Commands::Admin(args) => admin::run(args),
        Commands::Explain(args) => admin::run_explain(args),
        Commands::Audit(args) => audit_cmd::run(args),
        Commands::Discover(args) => admin::run_discover(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A JSON log stays all JSON, for whatever collects it.
        Err(e) if log_format == LogFormat::Json => {
            tracing::error!(error = %e.message(), "veil stopped");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("veil: {}", e.client_message());
            ExitCode::FAILURE
        }
    }
}

fn load(config: Option<PathBuf>, demo: bool, data_dir: &Path) -> Result<(Config, bool), VeilError> {
    match config {
        Some(p) if !demo => Ok((Config::load(&p)?, false)),
        _ => {
            let path = veil::demo::prepare(data_dir)?;
            Ok((Config::load(&path)?, true))
        }
    }
}

fn serve(
    config: Option<PathBuf>,
    listen: Option<String>,
    demo: bool,
    data_dir: &Path,
    insecure: bool,
    address_file: Option<PathBuf>,
) -> Result<(), VeilError> {
    // Said before the demo's data is created: a demo never serves beyond
    // this machine (its users, keys and tokens are for trying Veil out).
    if (demo || config.is_none())
        && let Some(addr) = listen.as_deref().and_then(|l| l.parse::<SocketAddr>().ok())
        && !addr.ip().is_loopback()
    {
        return Err(demo_not_loopback(&addr.to_string()));
    }
    let (mut cfg, demo) = load(config, demo, data_dir)?;
    if let Some(p) = address_file {
        cfg.server.address_file = Some(std::path::absolute(&p).unwrap_or(p));
    }
    if demo && insecure {
        return Err(VeilError::InvalidArgument(
            "demo mode serves on loopback only; --insecure does not apply".into(),
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_keep_alive(veil::memory::BLOCKING_KEEP_ALIVE)
        .enable_all()
        .build()
        .map_err(|e| VeilError::internal("tokio runtime", e))?;
    runtime.block_on(async move {
        tokio::spawn(veil::memory::return_freed_pages_when_idle(
            veil::engine::execution::return_freed_pages,
        ));
        let running = start(
            cfg,
            ServeOptions {
                listen,
                insecure: insecure && !demo,
            },
        )
        .await?;
        if demo && !running.addr.ip().is_loopback() {
            let addr = running.addr.to_string();
            running.stop().await?;
            return Err(demo_not_loopback(&addr));
        }
        let scheme = if running.tls { "grpc+tls" } else { "grpc" };
        let address = format!("{scheme}://{}", running.addr);
        println!("Veil is serving Arrow Flight at {address}");
        if demo {
            print_demo_help(&address, data_dir);
        }
        reload_on_sighup(&running)?;
        running
            .stop_on(async {
                terminated().await;
                tracing::info!("stopping (in-flight reads finish first)");
            })
            .await
    })
}

fn demo_not_loopback(addr: &str) -> VeilError {
    VeilError::InvalidArgument(format!(
        "demo mode serves on loopback only, not on {addr}: use --listen 127.0.0.1:PORT, or write a config file (README, \"Configuration\") with [tls] to serve other machines"
    ))
}

/// Ctrl-C, or SIGTERM (what service managers send).
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// SIGHUP re-reads the config file, like `veil admin reload`.
#[cfg(unix)]
fn reload_on_sighup(running: &veil::server::Running) -> Result<(), VeilError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())
        .map_err(|e| VeilError::internal("cannot listen for SIGHUP", e))?;
    let reloader = running.reloader();
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            // The outcome is logged and audited by the reloader.
            let _ = reloader.reload("SIGHUP").await;
        }
    });
    Ok(())
}

#[cfg(not(unix))]
fn reload_on_sighup(_running: &veil::server::Running) -> Result<(), VeilError> {
    Ok(())
}

fn print_demo_help(address: &str, data_dir: &Path) {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "veil".into());
    let dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    println!(
        r#"
Demo data, keys and state: {dir}
Users: alice (analyst, state CA), erin (analyst, no state: sees no rows), bob (privileged: raw values),
       carol (not subscribed: cannot see clinical.trials), dave (owner and administrator)

Try it from another terminal:
  export VEIL_ADDRESS={address}
  export VEIL_TOKEN=$({exe} token --data-dir {dir} --user alice)
  python -c "import veil; print(veil.connect().scan_as_pandas('clinical.trials').head())"

Administer it as dave (datasets, directory, permissions, reload):
  VEIL_TOKEN=$({exe} token --data-dir {dir} --user dave) {exe} admin users
"#,
        dir = dir.display()
    );
}

/// The demo's data directory for a command that reads it: as given,
/// else `./veil-data` or the nearest one above the current directory that
/// holds a config (so the README's commands work anywhere in the clone).
pub(crate) fn demo_dir(given: Option<PathBuf>) -> PathBuf {
    const DEMO_DIR: &str = "veil-data";
    if let Some(dir) = given {
        return dir;
    }
    let here = PathBuf::from(DEMO_DIR);
    // A ./veil-data of its own (even one without a config, which then
    // fails with its own message) is never passed over.
    if here.is_dir() {
        return here;
    }
    let above = std::env::current_dir().ok().and_then(|cwd| {
        cwd.ancestors()
            .skip(1)
            .map(|d| d.join(DEMO_DIR))
            .find(|d| d.join("veil.toml").is_file())
    });
    match above {
        Some(dir) => {
            // The key signing the token is that directory's: say which.
            eprintln!("veil: using {}", dir.display());
            dir
        }
        None => here,
    }
}

fn token(
    user: &str,
    groups: &[String],
    attrs: &[String],
    ttl: u64,
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
) -> Result<(), VeilError> {
    let cfg = match config {
        // The config names its own key: no demo directory is looked for.
        Some(p) => Config::load(&p)?,
        None => {
            let data_dir = &demo_dir(data_dir);
            let p = data_dir.join("veil.toml");
            if !p.exists() && data_dir.is_dir() {
                return Err(VeilError::FailedPrecondition(format!(
                    "'{}' holds no veil.toml: `--data-dir` names a demo's directory (`veil serve --demo` writes its config there); for a server started with `--config`, pass that file: `veil token --config <its veil.toml> --user NAME`",
                    data_dir.display()
                )));
            }
            if !p.exists() {
                return Err(VeilError::FailedPrecondition(format!(
                    "no Veil data directory at '{}': tokens are signed with the key of the server that will check them, so point at its directory: `veil token --data-dir <the directory the server was started with> --user NAME` (the demo prints it when it starts), or `--config <its veil.toml>`. Only if no server runs yet, start the demo with `veil serve --demo` (it creates ./veil-data)",
                    data_dir.display()
                )));
            }
            Config::load(&p)?
        }
    };
    let mut attributes = Attributes::new();
    for a in attrs {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| VeilError::InvalidArgument(format!("--attr '{a}' must be KEY=VALUE")))?;
        attributes
            .entry(k.to_string())
            .or_default()
            .insert(v.to_string());
    }
    if user.trim().is_empty() || user.trim() != user {
        return Err(VeilError::InvalidArgument(
            "--user must be a non-empty name without leading or trailing spaces".into(),
        ));
    }
    let minter = TokenMinter::from_config(&cfg.auth, &cfg.base_dir)?;
    let token = minter.mint(user, groups, &attributes, ttl)?;
    // stdout holds the token alone (`VEIL_TOKEN=$(veil token ...)`); what the
    // server will make of its claims goes to stderr.
    let trust = ClaimTrust::from_config(&cfg.auth)?.of(minter.issuer());
    let issuer = minter.issuer();
    if !groups.is_empty() && !trust.claims.groups() {
        eprintln!(
            "veil: warning: the server ignores this token's --group claims: issuer '{issuer}' is not trusted for groups. Give the user groups in the directory (`veil admin put-user`), or trust the issuer in [[auth.issuers]] (README: \"Which claims Veil trusts\")"
        );
    } else if !groups.is_empty() && !trust.group_prefix.is_empty() {
        eprintln!(
            "veil: note: issuer '{issuer}' has group_prefix \"{}\": the server sees these groups as {}",
            trust.group_prefix,
            groups
                .iter()
                .map(|g| format!("'{}{g}'", trust.group_prefix))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !attributes.is_empty() && !trust.claims.attributes() {
        eprintln!(
            "veil: warning: the server ignores this token's --attr claims: issuer '{issuer}' is not trusted for attributes. Give the user attributes in the directory (`veil admin put-user`), or trust the issuer in [[auth.issuers]] (README: \"Which claims Veil trusts\")"
        );
    }
    if in_directory(&cfg, &Identity::new(issuer, user)) == Some(false) {
        eprintln!(
            "veil: note: the directory has no user '{user}' (issuer '{issuer}'): no directory groups or attributes apply to them, only the token's claims the server trusts. Check the spelling; `veil admin users` lists the directory"
        );
    }
    println!("{token}");
    Ok(())
}

/// Whether the node's directory holds `who`: the config's users, and for
/// a SQLite store that exists, its users read through a read-only
/// connection (never a migration or a write beside a running server).
/// `None` when it can't tell (a PostgreSQL store, an unreadable file): no
/// note then.
fn in_directory(cfg: &Config, who: &Identity) -> Option<bool> {
    let in_config = cfg.users.iter().any(|u| {
        u.name == who.subject
            && u.issuer
                .clone()
                .unwrap_or_else(|| cfg.auth.default_issuer())
                == who.issuer
    });
    match cfg.store.backend {
        _ if in_config => Some(true),
        // No server has run yet: the config's users are the directory it
        // will start with.
        StoreBackend::Sqlite if !cfg.sqlite_path().exists() => Some(false),
        StoreBackend::Sqlite => {
            veil::store::sqlite::SqliteStore::has_user(&cfg.sqlite_path(), who).ok()
        }
        StoreBackend::Postgres => None,
    }
}
