//! `veil admin ...`: administer a running server through its Flight actions.
//! Every command is checked and audited by the server, exactly like the same
//! action sent from any other client.

use clap::{Args, Subcommand};
use std::path::PathBuf;

use veil::error::VeilError;
use veil_client::{ClientError, Connection};
use veil_proto::{RegisterDatasetRequest, UserRef};

/// Where the server is and who you are.
#[derive(Debug, Args)]
pub(crate) struct ConnectArgs {
    /// Server address, e.g. grpc://127.0.0.1:8815 or grpc+tls://host:8815
    /// (default, like the Python client's: the local demo's).
    #[arg(long, env = "VEIL_ADDRESS", default_value = "grpc://127.0.0.1:8815")]
    address: String,
    /// Bearer token (a JWT; `veil token` prints one in development).
    #[arg(long, env = "VEIL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM file of the CA that signed the server's certificate (TLS).
    #[arg(long, env = "VEIL_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Server name to verify in its certificate (TLS; default: the host).
    #[arg(long)]
    tls_domain: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct AdminArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    command: AdminCommand,
}

/// `veil explain`: what a user gets from a dataset, and why.
#[derive(Debug, Args)]
pub(crate) struct ExplainArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    explain: ExplainOptions,
}

#[derive(Debug, Args)]
struct ExplainOptions {
    /// The user's `sub` claim.
    #[arg(long)]
    user: String,
    /// `schema.name`
    #[arg(long)]
    dataset: String,
    /// The user's token issuer (default: auth.default_issuer).
    #[arg(long)]
    issuer: Option<String>,
    /// A group the user's token carries (repeatable; the directory's are
    /// added). Counts only if the issuer is trusted for groups.
    #[arg(long = "group")]
    groups: Vec<String>,
    /// KEY=VALUE the user's token carries (repeatable). Counts only if the
    /// issuer is trusted for attributes.
    #[arg(long = "attr")]
    attrs: Vec<String>,
}

/// `veil discover`: propose column tags for a dataset, or decide proposals.
#[derive(Debug, Args)]
pub(crate) struct DiscoverArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    discover: DiscoverOptions,
}

#[derive(Debug, Args)]
struct DiscoverOptions {
    /// `schema.name` of a dataset you own (or govern).
    dataset: String,
    /// Rows to sample (default 1000, at most 100000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    sample: Option<u32>,
    /// Propose only at this confidence or more, in percent (default 50).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    min_confidence: Option<u32>,
    /// Accept a pending proposal, COLUMN=TAG (repeatable): the column gets
    /// the tag and policies on it apply from the next request.
    #[arg(long = "accept", value_name = "COLUMN=TAG")]
    accept: Vec<String>,
    /// Reject a pending proposal, COLUMN=TAG (repeatable): not proposed again.
    #[arg(long = "reject", value_name = "COLUMN=TAG")]
    reject: Vec<String>,
    /// With one --accept: tag the column with this tag instead (your taxonomy).
    #[arg(long, value_name = "TAG")]
    tag_as: Option<String>,
    /// Print the server's JSON report instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Who the server thinks you are.
    Whoami,
    /// The actions the server offers.
    Actions,
    /// The datasets you can see.
    Datasets,
    /// Re-read the server's config file (like SIGHUP). Needs GOVERNANCE.
    Reload,
    /// Register files under a configured root, or a database table, view
    /// or query, as a dataset you own (into a schema your `veil.schemas`
    /// attribute grants you, or any as a governor).
    #[command(group(clap::ArgGroup::new("source").required(true).args(["format", "connection"])))]
    Register {
        /// `schema.name`
        name: String,
        /// Files: parquet, csv or json ...
        #[arg(long, requires = "location", conflicts_with = "connection")]
        format: Option<String>,
        /// ... and the file or folder, as the server sees it.
        #[arg(long, requires = "format")]
        location: Option<String>,
        #[arg(long, requires = "format")]
        hive_partitioned: bool,
        /// A database: a connection declared in the server's config ...
        #[arg(long)]
        connection: Option<String>,
        /// ... and a table or view, `schema.table` (MySQL: `database.table`) ...
        #[arg(long, requires = "connection", conflicts_with = "query")]
        table: Option<String>,
        /// ... or a SELECT statement (governors only).
        #[arg(long, requires = "connection")]
        query: Option<String>,
        /// An integer column reads split over endpoints by (default: a
        /// primary key of one integer column).
        #[arg(long, requires = "connection")]
        partition_column: Option<String>,
        /// Default: the database's comment on the table, if any.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Drop a runtime-registered dataset (the files stay).
    Drop { name: String },
    /// A dataset's dictionary as you see it.
    Describe { name: String },
    /// Search the datasets you can see (name, description, tags, columns).
    Search {
        /// Words that must all match.
        query: Vec<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// A few rows of a dataset as you may read them (policies applied).
    Preview {
        name: String,
        #[arg(long, default_value_t = 10)]
        rows: u64,
    },
    /// Set a dataset's description, or a column's with --column.
    SetDescription {
        dataset: String,
        description: String,
        #[arg(long)]
        column: Option<String>,
    },
    /// Keep a local copy of a database dataset and serve reads from it
    /// while it is at most --max-staleness-secs old (or --off).
    Accelerate {
        dataset: String,
        /// How old a copy may be served (required unless --off).
        #[arg(long, required_unless_present = "off")]
        max_staleness_secs: Option<u64>,
        /// Refresh every this many seconds (default 0: only on demand).
        #[arg(long, default_value_t = 0)]
        refresh_secs: u64,
        /// Read only rows whose column passed the last refresh's highest value.
        #[arg(long)]
        incremental_column: Option<String>,
        /// Stop: reads go to the database again.
        #[arg(long, conflicts_with_all = ["max_staleness_secs", "incremental_column"])]
        off: bool,
    },
    /// Refresh an accelerated dataset's copy now.
    Refresh { dataset: String },
    /// Differential privacy budgets this period: yours (owners, governors
    /// and auditors: the dataset's and every user's too).
    DpBudget {
        /// Only this dataset (default: every one under such a policy).
        dataset: Option<String>,
    },
    /// Name the people to ask about a dataset (none: clear them).
    SetExperts {
        dataset: String,
        /// An expert's `sub` claim (repeatable).
        #[arg(long = "expert")]
        experts: Vec<String>,
        /// The experts' token issuer (default: auth.default_issuer).
        #[arg(long)]
        issuer: Option<String>,
    },
    /// Set a column's tags (none: clear them).
    SetTags {
        dataset: String,
        column: String,
        tags: Vec<String>,
    },
    /// The directory: users, groups, attributes, permissions.
    Users,
    /// Create or replace a user's directory entry.
    PutUser {
        /// The user's `sub` claim.
        subject: String,
        /// The user's token issuer (default: auth.default_issuer).
        #[arg(long)]
        issuer: Option<String>,
        /// A group (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// KEY=VALUE (repeatable; repeat a key for several values).
        #[arg(long = "attr")]
        attrs: Vec<String>,
    },
    /// Delete a runtime directory entry.
    DeleteUser {
        /// The user's `sub` claim.
        subject: String,
        /// The user's token issuer (default: auth.default_issuer).
        #[arg(long)]
        issuer: Option<String>,
    },
    /// Disable a user: denied whatever their token says.
    Disable {
        /// The user's `sub` claim.
        subject: String,
        /// The user's token issuer (default: auth.default_issuer).
        #[arg(long)]
        issuer: Option<String>,
    },
    /// Re-enable a disabled user.
    Enable {
        /// The user's `sub` claim.
        subject: String,
        /// The user's token issuer (default: auth.default_issuer).
        #[arg(long)]
        issuer: Option<String>,
    },
    /// Grant GOVERNANCE, CREATE_DATA_SOURCE, USER_ADMIN or AUDIT.
    Grant {
        /// The user's `sub` claim.
        subject: String,
        /// GOVERNANCE, CREATE_DATA_SOURCE, USER_ADMIN or AUDIT.
        permission: String,
        /// The user's token issuer (default: auth.default_issuer).
        #[arg(long)]
        issuer: Option<String>,
    },
    /// Revoke a runtime grant.
    Revoke {
        /// The user's `sub` claim.
        subject: String,
        /// GOVERNANCE, CREATE_DATA_SOURCE, USER_ADMIN or AUDIT.
        permission: String,
        /// The user's token issuer (default: auth.default_issuer).
        #[arg(long)]
        issuer: Option<String>,
    },
    /// The most recent audit events (JSON lines). Needs AUDIT.
    AuditTail {
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
    /// Policies you govern or that apply to datasets you own, and (for data
    /// owners) every global policy (JSON lines).
    Policies {
        /// Only those applying to this dataset.
        #[arg(long)]
        dataset: Option<String>,
    },
    /// Create the policies in a file: TOML ([[policies]] entries, or one
    /// policy's fields) or JSON.
    CreatePolicy { file: PathBuf },
    /// Replace runtime policies from a file (same forms as create-policy).
    UpdatePolicy {
        file: PathBuf,
        /// Only if the policy is still at this version.
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// Delete a runtime policy: its name, or its id (`policies` shows it)
    /// when several you may delete share the name.
    DeletePolicy { name: String },
    /// What a user gets from a dataset, and why (as `veil explain`).
    Explain(ExplainOptions),
    /// Profile columns for k-anonymization: distinct values, current and
    /// suggested k.
    ProfileK {
        dataset: String,
        #[arg(required = true)]
        columns: Vec<String>,
    },
    /// Datasets open on request that you may not read yet.
    Requestable,
    /// Ask to read a dataset open on request.
    RequestAccess {
        dataset: String,
        /// Why you need the data (shown to the approvers).
        #[arg(long)]
        reason: String,
    },
    /// Access requests you may decide, and your own (JSON lines).
    AccessRequests {
        #[arg(long)]
        dataset: Option<String>,
        /// Include decided requests.
        #[arg(long)]
        all: bool,
    },
    /// Approve a pending access request.
    Approve {
        request_id: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Deny a pending access request.
    Deny {
        request_id: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Ask to see the originals of masked values (reversible or
    /// format-preserving masks).
    RequestUnmask {
        dataset: String,
        column: String,
        /// The masked values, as read.
        #[arg(required = true)]
        values: Vec<String>,
        /// Why you need the originals (shown to the approvers).
        #[arg(long)]
        reason: String,
    },
    /// Unmask requests you may decide, and yours (JSON lines).
    UnmaskRequests {
        #[arg(long)]
        dataset: Option<String>,
        /// Include decided requests.
        #[arg(long)]
        all: bool,
    },
    /// Approve a pending unmask request (someone the masking policy exempts).
    ApproveUnmask {
        request_id: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Deny a pending unmask request.
    DenyUnmask {
        request_id: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// The originals of your approved unmask request.
    UnmaskResult { request_id: String },
    /// Withdraw a user's approved access to a dataset.
    RevokeAccess {
        dataset: String,
        /// The user's `sub` claim.
        subject: String,
        #[arg(long)]
        issuer: Option<String>,
        #[arg(long, default_value = "")]
        note: String,
    },
}

/// Policies in a file, as the JSON the policy actions take.
fn policies_in(file: &std::path::Path) -> Result<Vec<String>, ClientError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| ClientError::Invalid(format!("cannot read {}: {e}", file.display())))?;
    let bad = |e: String| ClientError::Invalid(format!("{}: {e}", file.display()));
    let specs: Vec<veil::model::policy::PolicySpec> = if file
        .extension()
        .is_some_and(|x| x.eq_ignore_ascii_case("json"))
    {
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        match v {
            serde_json::Value::Array(items) => items
                .into_iter()
                .map(|i| serde_json::from_value(i).map_err(|e| bad(e.to_string())))
                .collect::<Result<_, _>>()?,
            one => vec![serde_json::from_value(one).map_err(|e| bad(e.to_string()))?],
        }
    } else {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Many {
            policies: Vec<veil::model::policy::PolicySpec>,
        }
        match toml::from_str::<Many>(&text) {
            Ok(m) => m.policies,
            Err(many) => vec![toml::from_str(&text).map_err(|one| {
                bad(format!(
                    "neither [[policies]] entries ({many}) nor one policy ({one})"
                ))
            })?],
        }
    };
    if specs.is_empty() {
        return Err(bad("no policy in the file".into()));
    }
    specs
        .iter()
        .map(|s| serde_json::to_string(s).map_err(|e| bad(e.to_string())))
        .collect()
}

fn attributes_of(attrs: Vec<String>) -> Result<Vec<(String, Vec<String>)>, ClientError> {
    let mut attributes: Vec<(String, Vec<String>)> = Vec::new();
    for a in attrs {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| ClientError::Invalid(format!("--attr '{a}' must be KEY=VALUE")))?;
        match attributes.iter_mut().find(|(key, _)| key == k) {
            Some((_, values)) => values.push(v.to_string()),
            None => attributes.push((k.to_string(), vec![v.to_string()])),
        }
    }
    Ok(attributes)
}

async fn explain(conn: &Connection, o: ExplainOptions) -> Result<Vec<String>, ClientError> {
    let request = veil_proto::ExplainRequest {
        user: Some(user(o.user, o.issuer)),
        dataset: o.dataset,
        groups: o.groups,
        attributes: attributes_of(o.attrs)?
            .into_iter()
            .map(|(key, values)| veil_proto::AttributeValues { key, values })
            .collect(),
    };
    Ok(vec![conn.explain(request).await?])
}

fn column_and_tag(arg: &str, flag: &str) -> Result<(String, String), ClientError> {
    // Tags have no '=' (they are checked), column names may.
    match arg.rsplit_once('=') {
        Some((c, t)) if !c.is_empty() && !t.is_empty() => Ok((c.to_string(), t.to_string())),
        _ => Err(ClientError::Invalid(format!(
            "--{flag} '{arg}' must be COLUMN=TAG, as the proposals list them"
        ))),
    }
}

async fn discover(conn: &Connection, a: DiscoverOptions) -> Result<Vec<String>, ClientError> {
    if a.tag_as.is_some() && (a.accept.len() != 1 || !a.reject.is_empty()) {
        return Err(ClientError::Invalid(
            "--tag-as goes with exactly one --accept".into(),
        ));
    }
    if !a.accept.is_empty() || !a.reject.is_empty() {
        let decisions = a
            .accept
            .iter()
            .map(|x| (x, true))
            .chain(a.reject.iter().map(|x| (x, false)))
            .map(|(arg, accept)| {
                let flag = if accept { "accept" } else { "reject" };
                column_and_tag(arg, flag).map(|(column, tag)| (arg, flag, accept, column, tag))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Each decision is applied on its own: one that fails doesn't stop
        // the others, and deciding again what was decided changes nothing,
        // so the same command can be run again once the failure is fixed.
        let mut out = Vec::new();
        let mut failed: Option<tonic::Status> = None;
        for (arg, flag, accept, column, tag) in decisions {
            match conn
                .decide_tag_proposal(&a.dataset, &column, &tag, accept, a.tag_as.as_deref())
                .await
            {
                Ok(done) => out.push(done),
                Err(ClientError::Status(s)) => {
                    let message = format!("--{flag} {arg}: {}", s.message());
                    failed = Some(match failed {
                        None => tonic::Status::new(s.code(), message),
                        Some(f) => {
                            tonic::Status::new(f.code(), format!("{}; {message}", f.message()))
                        }
                    });
                }
                Err(e) => return Err(e),
            }
        }
        return match failed {
            None => Ok(out),
            Some(s) => {
                // Say what the others did, then which failed.
                for line in &out {
                    println!("{line}");
                }
                Err(ClientError::Status(s))
            }
        };
    }
    let report = conn
        .discover(
            &a.dataset,
            a.sample.unwrap_or_default(),
            a.min_confidence.unwrap_or_default(),
        )
        .await?;
    if a.json {
        return Ok(vec![report]);
    }
    let v: serde_json::Value = serde_json::from_str(&report)
        .map_err(|e| ClientError::Flight(format!("discovery answered malformed JSON: {e}")))?;
    let list = |key: &str| v[key].as_array().cloned().unwrap_or_default();
    let text = |x: &serde_json::Value, key: &str| x[key].as_str().unwrap_or_default().to_string();
    let mut out = vec![format!(
        "{}: sampled {} rows, examined {} columns (proposals at {}% confidence or more)",
        text(&v, "dataset"),
        v["sampled_rows"],
        v["columns_examined"],
        v["min_confidence"]
    )];
    if let Some(note) = v["sample_note"].as_str() {
        out.push(format!("note: {note}"));
    }
    let proposals = list("proposals");
    if proposals.is_empty() {
        out.push("no new proposals".into());
    } else {
        out.push("proposals (pending):".into());
        for p in &proposals {
            out.push(format!(
                "  {:<24} {:<18} {:>3}%  {}{}",
                text(p, "column"),
                text(p, "tag"),
                p["confidence"],
                text(p, "evidence"),
                if p["needs_governance"].as_bool() == Some(true) {
                    " [a global policy targets this tag: deciding needs GOVERNANCE]"
                } else {
                    ""
                }
            ));
        }
    }
    for (key, title) in [
        ("already_tagged", "already tagged"),
        (
            "previously_rejected",
            "rejected before (not proposed again)",
        ),
    ] {
        let items = list(key);
        if !items.is_empty() {
            out.push(format!(
                "{title}: {}",
                items
                    .iter()
                    .map(|x| format!("{}={}", text(x, "column"), text(x, "tag")))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    for x in list("config_columns") {
        out.push(format!(
            "described in the config file: {} looks like {} ({}%): add tag {} there and reload",
            text(&x, "column"),
            text(&x, "kind"),
            x["confidence"],
            text(&x, "tag")
        ));
    }
    for x in list("skipped") {
        out.push(format!(
            "not examined: {} ({})",
            text(&x, "column"),
            text(&x, "reason")
        ));
    }
    if let Some(first) = proposals.first() {
        out.push(format!(
            "decide: veil discover {} --accept {} (or --reject)",
            text(&v, "dataset"),
            shell_word(&format!("{}={}", text(first, "column"), text(first, "tag")))
        ));
    }
    Ok(out)
}

/// `word` as one shell word: quoted when it holds anything but plain
/// characters (a column named `Phone #` or `E-Mail Address`).
fn shell_word(word: &str) -> String {
    if word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-.=/:@+,".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// `veil discover ...`
pub(crate) fn run_discover(args: DiscoverArgs) -> Result<(), VeilError> {
    run_with(&args.connect, |conn| {
        Box::pin(async move { discover(&conn, args.discover).await })
    })
}

/// `veil explain ...`
pub(crate) fn run_explain(args: ExplainArgs) -> Result<(), VeilError> {
    run_with(&args.connect, |conn| {
        Box::pin(async move { explain(&conn, args.explain).await })
    })
}

fn user(subject: String, issuer: Option<String>) -> UserRef {
    UserRef {
        issuer: issuer.unwrap_or_default(),
        subject,
    }
}

fn client_error(e: ClientError) -> VeilError {
    match e {
        ClientError::Status(s) => VeilError::from_code(s.code(), s.message().to_string()),
        // A malformed address or argument, said before anything was sent.
        ClientError::Invalid(m) => VeilError::InvalidArgument(m),
        other => VeilError::Unavailable(other.to_string()),
    }
}

pub(crate) fn run(args: AdminArgs) -> Result<(), VeilError> {
    let command = args.command;
    let when_empty = command.when_empty();
    run_with(&args.connect, |conn| {
        Box::pin(async move {
            let lines = execute(&conn, command).await?;
            // On stderr: stdout stays the (JSON) lines alone.
            if lines.is_empty()
                && let Some(note) = when_empty
            {
                eprintln!("veil: {note}");
            }
            Ok(lines)
        })
    })
}

impl AdminCommand {
    /// What a listing that printed nothing means.
    fn when_empty(&self) -> Option<String> {
        let pending = |all: bool| match all {
            true => "",
            false => " pending (--all includes decided ones)",
        };
        Some(match self {
            AdminCommand::Datasets => "no dataset you can see".into(),
            AdminCommand::Users => "the directory is empty".into(),
            AdminCommand::DpBudget { .. } => {
                "no differential privacy budget to show to you this period".into()
            }
            AdminCommand::Policies { .. } => {
                "no policy you govern or that applies to a dataset you own".into()
            }
            AdminCommand::Requestable => {
                "no dataset open on request that you can't read yet".into()
            }
            AdminCommand::AccessRequests { all, .. } => format!(
                "no access requests you may decide or filed{}",
                pending(*all)
            ),
            AdminCommand::UnmaskRequests { all, .. } => format!(
                "no unmask requests you may decide or filed{}",
                pending(*all)
            ),
            AdminCommand::AuditTail { .. } => "no audit events".into(),
            _ => return None,
        })
    }
}

type Lines = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<String>, ClientError>>>>;

/// Connect, run `f`, print its lines.
fn run_with(args: &ConnectArgs, f: impl FnOnce(Connection) -> Lines) -> Result<(), VeilError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| VeilError::internal("tokio runtime", e))?;
    runtime.block_on(async move {
        let conn = connect(args).await?;
        let lines = f(conn).await.map_err(client_error)?;
        // A closed pipe (`veil admin users | head`) ends the output quietly.
        let mut out = std::io::stdout().lock();
        for line in lines {
            if std::io::Write::write_all(&mut out, format!("{line}\n").as_bytes()).is_err() {
                break;
            }
        }
        Ok(())
    })
}

async fn connect(args: &ConnectArgs) -> Result<Connection, VeilError> {
    let token = args.token.as_deref().ok_or_else(|| {
        VeilError::Unauthenticated(
            "no token: set VEIL_TOKEN or pass --token (in development: `export VEIL_TOKEN=$(veil token --data-dir <the server's directory> --user NAME)`)".into(),
        )
    })?;
    match &args.ca_file {
        Some(ca) => {
            let pem = std::fs::read(ca).map_err(|e| {
                VeilError::FailedPrecondition(format!(
                    "cannot read --ca-file {}: {e}",
                    ca.display()
                ))
            })?;
            let domain = match &args.tls_domain {
                Some(d) => d.clone(),
                None => args
                    .address
                    .rsplit("://")
                    .next()
                    .and_then(|hp| hp.rsplit_once(':').map(|(h, _)| h.to_string()))
                    .unwrap_or_default(),
            };
            Connection::connect_tls(&args.address, token, &pem, &domain)
                .await
                .map_err(client_error)
        }
        None => Connection::connect(&args.address, token)
            .await
            .map_err(client_error),
    }
}

async fn execute(conn: &Connection, command: AdminCommand) -> Result<Vec<String>, ClientError> {
    let one = |s: String| vec![s];
    Ok(match command {
        AdminCommand::Whoami => {
            let w = conn.whoami().await?;
            vec![
                format!("user: {} (issuer {})", w.subject, w.issuer),
                format!("groups: {}", w.groups.join(", ")),
                format!(
                    "attributes: {}",
                    w.attributes
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                format!("permissions: {}", w.permissions.join(", ")),
            ]
        }
        AdminCommand::Actions => conn
            .list_actions()
            .await?
            .into_iter()
            .map(|(name, what)| format!("{name:<24} {what}"))
            .collect(),
        AdminCommand::Reload => one(conn.reload().await?),
        AdminCommand::Datasets => conn.list_datasets().await?,
        AdminCommand::Register {
            name,
            format,
            location,
            hive_partitioned,
            connection,
            table,
            query,
            partition_column,
            description,
        } => one(conn
            .register_dataset(RegisterDatasetRequest {
                name,
                format: format.unwrap_or_default(),
                location: location.unwrap_or_default(),
                description,
                hive_partitioned,
                connection: connection.unwrap_or_default(),
                table: table.unwrap_or_default(),
                query: query.unwrap_or_default(),
                partition_column: partition_column.unwrap_or_default(),
            })
            .await?),
        AdminCommand::Drop { name } => one(conn.drop_dataset(&name).await?),
        AdminCommand::Search { query, limit } => {
            let hits = conn.search(&query.join(" "), limit).await?;
            if hits.is_empty() {
                return Ok(vec!["no dataset you can see matches".into()]);
            }
            let mut out = Vec::new();
            for h in hits {
                let access = if h.access == "request" {
                    " (on request)"
                } else {
                    ""
                };
                out.push(format!("{}{access}: {}", h.name, h.description));
                out.push(format!("  matched: {}", h.matches.join(", ")));
                if !h.owners.is_empty() || !h.experts.is_empty() {
                    out.push(format!(
                        "  owners: {}; experts: {}",
                        if h.owners.is_empty() {
                            "-".to_string()
                        } else {
                            h.owners.join(", ")
                        },
                        if h.experts.is_empty() {
                            "-".to_string()
                        } else {
                            h.experts.join(", ")
                        }
                    ));
                }
            }
            out
        }
        AdminCommand::Preview { name, rows } => {
            let batches = conn.preview(&name, rows).await?;
            if batches.iter().all(|b| b.num_rows() == 0) {
                // A read of no rows may send no batch: the dictionary
                // names the columns then.
                let columns = match batches.first() {
                    Some(b) => b
                        .schema()
                        .fields()
                        .iter()
                        .map(|f| f.name().clone())
                        .collect::<Vec<_>>(),
                    None => conn
                        .describe(&name)
                        .await?
                        .columns
                        .into_iter()
                        .map(|c| c.name)
                        .collect(),
                }
                .join(", ");
                one(format!(
                    "no rows of {name} for you (columns: {columns}): the dataset is empty, or a row policy leaves you none; `veil admin describe {name}` says whether rows are filtered for you"
                ))
            } else {
                one(arrow::util::pretty::pretty_format_batches(&batches)
                    .map_err(|e| ClientError::Flight(format!("cannot format the rows: {e}")))?
                    .to_string())
            }
        }
        AdminCommand::Describe { name } => {
            let d = conn.describe(&name).await?;
            let mut out = vec![
                format!("{} ({})", d.name, d.format),
                format!("description: {}", d.description),
                format!("owners: {}", d.owners.join(", ")),
                format!(
                    "experts: {}",
                    if d.experts.is_empty() {
                        "-".to_string()
                    } else {
                        d.experts.join(", ")
                    }
                ),
                format!("tags: {}", d.tags.join(", ")),
                format!("rows filtered for you: {}", d.rows_filtered),
            ];
            for c in d.columns {
                out.push(format!(
                    "  {:<20} {:<12} mask={:<10} tags=[{}] {}",
                    c.name,
                    c.data_type,
                    if c.mask.is_empty() { "-" } else { &c.mask },
                    c.tags.join(", "),
                    c.description
                ));
            }
            out
        }
        AdminCommand::SetDescription {
            dataset,
            description,
            column,
        } => one(conn
            .set_description(&dataset, column.as_deref(), &description)
            .await?),
        AdminCommand::Accelerate {
            dataset,
            max_staleness_secs,
            refresh_secs,
            incremental_column,
            off,
        } => one(conn
            .accelerate(veil_proto::AccelerateRequest {
                dataset,
                off,
                refresh_secs,
                max_staleness_secs: max_staleness_secs.unwrap_or_default(),
                incremental_column: incremental_column.unwrap_or_default(),
            })
            .await?),
        AdminCommand::Refresh { dataset } => one(conn.refresh(&dataset).await?),
        AdminCommand::DpBudget { dataset } => conn.dp_budget(dataset.as_deref()).await?,
        AdminCommand::SetExperts {
            dataset,
            experts,
            issuer,
        } => one(conn
            .set_experts(
                &dataset,
                experts
                    .into_iter()
                    .map(|e| user(e, issuer.clone()))
                    .collect(),
            )
            .await?),
        AdminCommand::SetTags {
            dataset,
            column,
            tags,
        } => one(conn.set_column_tags(&dataset, &column, &tags).await?),
        AdminCommand::Users => conn
            .list_users()
            .await?
            .into_iter()
            .map(|u| {
                format!(
                    "{} (issuer {}){}{} groups=[{}] attributes=[{}] permissions=[{}]",
                    u.subject,
                    u.issuer,
                    if u.origin.is_empty() {
                        String::new()
                    } else {
                        format!(" [{}]", u.origin)
                    },
                    if u.disabled { " DISABLED" } else { "" },
                    u.groups.join(", "),
                    u.attributes
                        .iter()
                        .map(|a| format!("{}={}", a.key, a.values.join("|")))
                        .collect::<Vec<_>>()
                        .join(", "),
                    u.permissions.join(", ")
                )
            })
            .collect(),
        AdminCommand::PutUser {
            subject,
            issuer,
            groups,
            attrs,
        } => {
            let attributes = attributes_of(attrs)?;
            one(conn
                .put_user(user(subject, issuer), &groups, &attributes)
                .await?)
        }
        AdminCommand::DeleteUser { subject, issuer } => {
            one(conn.delete_user(user(subject, issuer)).await?)
        }
        AdminCommand::Disable { subject, issuer } => {
            one(conn.set_user_disabled(user(subject, issuer), true).await?)
        }
        AdminCommand::Enable { subject, issuer } => {
            one(conn.set_user_disabled(user(subject, issuer), false).await?)
        }
        AdminCommand::Grant {
            subject,
            permission,
            issuer,
        } => one(conn.grant(user(subject, issuer), &permission).await?),
        AdminCommand::Revoke {
            subject,
            permission,
            issuer,
        } => one(conn.revoke(user(subject, issuer), &permission).await?),
        AdminCommand::AuditTail { limit } => conn.audit_tail(limit).await?,
        AdminCommand::Policies { dataset } => conn.list_policies(dataset.as_deref()).await?,
        AdminCommand::CreatePolicy { file } => {
            let mut out = Vec::new();
            for spec in policies_in(&file)? {
                out.push(conn.create_policy(&spec).await?);
            }
            out
        }
        AdminCommand::UpdatePolicy {
            file,
            expected_version,
        } => {
            let mut out = Vec::new();
            for spec in policies_in(&file)? {
                out.push(conn.update_policy(&spec, expected_version).await?);
            }
            out
        }
        AdminCommand::DeletePolicy { name } => one(conn.delete_policy(&name).await?),
        AdminCommand::Explain(o) => explain(conn, o).await?,
        AdminCommand::ProfileK { dataset, columns } => {
            let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
            one(conn.profile_k_anonymity(&dataset, &columns).await?)
        }
        AdminCommand::Requestable => conn.list_requestable().await?,
        AdminCommand::RequestAccess { dataset, reason } => {
            one(conn.request_access(&dataset, &reason).await?)
        }
        AdminCommand::AccessRequests { dataset, all } => {
            conn.list_access_requests(dataset.as_deref(), all).await?
        }
        AdminCommand::Approve { request_id, note } => {
            one(conn.decide_access(&request_id, true, &note).await?)
        }
        AdminCommand::Deny { request_id, note } => {
            one(conn.decide_access(&request_id, false, &note).await?)
        }
        AdminCommand::RequestUnmask {
            dataset,
            column,
            values,
            reason,
        } => one(conn
            .request_unmask(&dataset, &column, &values, &reason)
            .await?),
        AdminCommand::UnmaskRequests { dataset, all } => {
            conn.list_unmask_requests(dataset.as_deref(), all).await?
        }
        AdminCommand::ApproveUnmask { request_id, note } => {
            one(conn.decide_unmask(&request_id, true, &note).await?)
        }
        AdminCommand::DenyUnmask { request_id, note } => {
            one(conn.decide_unmask(&request_id, false, &note).await?)
        }
        AdminCommand::UnmaskResult { request_id } => one(conn.unmask_result(&request_id).await?),
        AdminCommand::RevokeAccess {
            dataset,
            subject,
            issuer,
            note,
        } => one(conn
            .revoke_access(&dataset, user(subject, issuer), &note)
            .await?),
    })
}
