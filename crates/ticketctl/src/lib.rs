//! The operator CLI of ticketd. Local mode works on a data directory (the daemon must not be
//! running on it: the log is opened exclusively).
//!
//! Exit codes: 0 success; 1 the check failed or the thing was not found; 2 bad usage;
//! 3 the data could not be read.

mod backend;
mod clock;
mod demo;
mod import;
mod issue;
mod local;
mod output;
mod render;
mod views;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "ticketctl", version, about = "Operate ticketd: history, time travel, audits, exports")]
pub struct Cli {
    /// The engine's data directory (local mode).
    #[arg(long, env = "TICKETD_DATA_DIR", global = true, default_value = "data")]
    pub data_dir: PathBuf,
    /// Machine-readable output: JSON (the canonical proto3 JSON of the API's messages).
    #[arg(long, global = true)]
    pub json: bool,
    /// The SLA policy file: commands are decided with it, and `audit verify` re-runs decisions
    /// with it (default: deploy/policies/regional-operator.toml, embedded in the binary).
    #[arg(long, env = "TICKETD_POLICY", global = true)]
    pub policy: Option<PathBuf>,
    /// Who issues commands: `agent:<id>`, `customer:<id>` or `system:<id>` (default:
    /// `agent:ticketctl`). Over NATS without it, none is sent: ticketd records the identity the
    /// NATS server vouches for, and refuses an actor that differs from it. In local mode the kind
    /// is kept and the id is the operating-system user's, `local:<user>`.
    #[arg(long, env = "TICKETCTL_ACTOR", global = true)]
    pub actor: Option<String>,
    /// The command's idempotency key (default: a fresh uuid v7). Repeating a command with the same
    /// id returns its original result.
    #[arg(long, global = true)]
    pub command_id: Option<String>,
    /// Remote mode: send commands and queries to a running ticketd over NATS instead of running
    /// the engine on --data-dir. One or more servers, comma separated, with the login in the URL
    /// if the server needs one: `nats://user:password@host:4222` or `nats://token@host:4222`.
    #[arg(long, env = "TICKETD_NATS_URL", global = true, hide_env_values = true)]
    pub nats_url: Option<ticket_nats::connection::Secret>,
    /// A NATS credentials file (JWT and NKey seed) for remote mode.
    #[arg(long, env = "TICKETD_NATS_CREDS", global = true)]
    pub nats_creds: Option<PathBuf>,
    /// A file with a user NKey seed to log in to NATS with, for remote mode.
    #[arg(long, env = "TICKETD_NATS_NKEY_SEED_FILE", global = true)]
    pub nats_nkey_seed_file: Option<PathBuf>,
    /// A PEM file of the CA that signed the NATS servers' certificates (a private CA), for
    /// remote mode; requires TLS (as a `tls://` url does).
    #[arg(long, env = "TICKETD_NATS_TLS_CA", global = true)]
    pub nats_tls_ca: Option<PathBuf>,
    /// A PEM client certificate for NATS servers that verify clients (mutual TLS).
    #[arg(long, env = "TICKETD_NATS_TLS_CERT", global = true)]
    pub nats_tls_cert: Option<PathBuf>,
    /// The client certificate's PEM private key.
    #[arg(long, env = "TICKETD_NATS_TLS_KEY", global = true)]
    pub nats_tls_key: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Opens a ticket; prints its id.
    Open {
        #[arg(long)]
        customer: String,
        #[arg(long)]
        plan: String,
        #[arg(long)]
        category: String,
        /// A, B or C.
        #[arg(long)]
        severity: String,
        #[arg(long)]
        title: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Records an agent's response to the customer.
    Respond {
        ticket: String,
        #[arg(long, default_value = "")]
        message: String,
    },
    /// Asks the customer for information: the ticket awaits the customer.
    Ask {
        ticket: String,
        #[arg(long)]
        request: String,
    },
    /// Records the customer's reply.
    Reply {
        ticket: String,
        #[arg(long, default_value = "")]
        message: String,
    },
    /// Sets the severity (A, B or C).
    Severity {
        ticket: String,
        severity: String,
        #[arg(long)]
        reason: String,
    },
    /// Escalates to a tier, optionally a team.
    Escalate {
        ticket: String,
        #[arg(long)]
        tier: String,
        #[arg(long)]
        team: Option<String>,
        #[arg(long)]
        reason: String,
    },
    /// Resolves the ticket.
    Resolve {
        ticket: String,
        #[arg(long)]
        resolution: String,
    },
    /// Reopens a resolved ticket.
    Reopen {
        ticket: String,
        #[arg(long)]
        reason: String,
    },
    /// Splits a sub-problem into its own ticket, linked both ways; prints the new ticket's id.
    Split {
        ticket: String,
        #[arg(long)]
        category: String,
        #[arg(long)]
        severity: String,
        #[arg(long)]
        title: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// A customer's tickets (open ones; --all adds resolved ones).
    Tickets {
        #[arg(long)]
        customer: String,
        /// Include resolved tickets.
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// As of an RFC 3339 instant or a global position (local mode, computed from the log).
        #[arg(long)]
        at: Option<String>,
    },
    /// Open tickets by nearest SLA due instant, at-risk and breached marked.
    Board {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// As of an RFC 3339 instant or a global position (local mode, computed from the log).
        #[arg(long)]
        at: Option<String>,
    },
    /// A ticket's detail: state, severity history, each SLA clock with its due instant and
    /// remaining business time, links.
    Detail {
        ticket: String,
        /// As of an RFC 3339 instant or a global position (computed from the log).
        #[arg(long)]
        at: Option<String>,
    },
    /// A ticket's audit timeline: every event with its actor, command id and policy version.
    Timeline {
        ticket: String,
        /// As of an RFC 3339 instant or a global position (computed from the log).
        #[arg(long)]
        at: Option<String>,
    },
    /// SLA compliance per plan, severity, category and clock over a period: met, breached,
    /// median and p90 first response in business time.
    Compliance {
        /// Start of the period (RFC 3339, inclusive).
        #[arg(long)]
        from: Option<String>,
        /// End of the period (RFC 3339, exclusive).
        #[arg(long)]
        to: Option<String>,
        /// As of an RFC 3339 instant or a global position (computed from the log).
        #[arg(long)]
        at: Option<String>,
    },
    /// Replays history under a candidate policy (--policy) and reports, ticket by ticket, which
    /// due instants, breaches and downgrades would change. Touches no live data.
    WhatIf {
        /// Only tickets opened at or after this RFC 3339 instant.
        #[arg(long)]
        from: Option<String>,
        /// Only tickets opened before this RFC 3339 instant; the replay's horizon.
        #[arg(long)]
        to: Option<String>,
    },
    /// A guided tour of the engine on a simulated clock, in a temporary directory: tickets of
    /// each plan, severity and category, the board, a breach, a no-response downgrade, an
    /// escalation, a resolution, an audit timeline, time travel, compliance and the audit.
    Demo {
        /// Keep the demo's log in this (empty) directory instead of a temporary one.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
    /// The read models' projections: status, catch-up and rebuilds (local mode, or a running
    /// ticketd's with --nats-url).
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Every event of a ticket, in order.
    History { ticket: String },
    /// Imports another helpdesk's history: one `ticket.v1.Command` per line (canonical proto3
    /// JSON, every command with its id and past `issued_at`), sent in file order as an
    /// importer's (locally, or to ticketd with --nats-url as an importer identity). Resumable:
    /// a rerun reports what is already in as duplicates. Exits 1 if any line was refused.
    Import {
        /// The file; `-` reads standard input.
        file: PathBuf,
    },
    /// A ticket as it is, or as it was at an instant or a global position.
    State {
        ticket: String,
        /// An RFC 3339 instant (2026-11-21T04:00:00+08:00) or a global position (1234).
        #[arg(long)]
        at: Option<String>,
    },
    /// Audits of the log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The engine's clock on a running ticketd (remote only, `--nats-url`): read it, or move
    /// a test clock (`ticketd dev --test-clock`) through every firing due on the way.
    Clock {
        #[command(subcommand)]
        command: ClockCommand,
    },
    /// A cluster of ticketd (remote only, `--nats-url`; ADR 0015).
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Writes events to a file or standard output.
    Export {
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        /// First event: a global position, or an RFC 3339 instant (by occurred-at).
        #[arg(long)]
        from: Option<String>,
        /// Last event, inclusive: a global position, or an RFC 3339 instant.
        #[arg(long)]
        to: Option<String>,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Each partition: its owner, when its lease expires, its last entry in the log stream, the
    /// log position it reaches, what the event stream has of it, the node an operator placed it
    /// on, and the live nodes.
    Status,
    /// A planned handover: places a partition on a live node, whose owner hands it over at once
    /// (no request fails: they wait for the new owner), then waits until the node serves it.
    /// The node keeps it, beyond its fair share, until it is moved again.
    Move {
        /// The partition (0 to the cluster's count - 1).
        partition: u32,
        /// The node to serve it (a live node of the cluster).
        node: String,
        /// How long to wait for the node to serve it.
        #[arg(long, default_value_t = 60)]
        wait_secs: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClockCommand {
    /// The clock's instant, and whether it is the wall clock or a test clock.
    Now,
    /// Moves a test clock forward, firing every warning, breach, downgrade and escalation due on
    /// the way, in order; prints what was recorded. Refused on the wall clock.
    Advance {
        /// To this instant (RFC 3339, e.g. 2026-11-30T09:00:00Z; not earlier than the clock).
        #[arg(long, conflicts_with = "by")]
        to: Option<String>,
        /// By this much: `2d`, `1h30m`, `45s`.
        #[arg(long)]
        by: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Hash chain intact, positions gapless, per-ticket versions contiguous, commands covering
    /// every event, and every stored decision reproduced by re-running it. On a data directory
    /// (a cluster node's: each partition's log there); with `--nats-url` on a cluster, every
    /// partition as the cluster's log stream holds it.
    Verify {
        /// Another policy file decisions may have been made with (repeatable), besides
        /// `--policy`. Commands decided under a policy version not given are reported as not
        /// re-run.
        #[arg(long = "also-policy")]
        policies: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Each projection's checkpointed position against the log's head.
    Status {
        /// Catch the projections up from the log (and flush them to the state store) first.
        #[arg(long)]
        update: bool,
        /// Make the progress durable every this many events while catching up (and at the end).
        #[arg(long, default_value_t = ticket_projections::ProjectorConfig::default().catch_up_sync_events)]
        checkpoint_events: u64,
        /// On a cluster (--nats-url): the node whose read models to report (`cluster status`
        /// lists them); else the node that takes the request, named in the answer.
        #[arg(long)]
        node: Option<String>,
    },
    /// Rebuilds projections from the log: all from scratch, or one (tickets, board, compliance;
    /// the timeline is read from the log and has nothing to rebuild) in place in the state store.
    Rebuild {
        name: Option<String>,
        /// Make the progress durable every this many events on the way (and at the end); one
        /// named read model is written to the store as often and made durable at the end.
        #[arg(long, default_value_t = ticket_projections::ProjectorConfig::default().catch_up_sync_events)]
        checkpoint_events: u64,
        /// On a cluster (--nats-url): the node whose copies of every partition rebuild it
        /// (required there: each node keeps read models of its own).
        #[arg(long)]
        node: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One canonical proto3 JSON `EventEnvelope` per line.
    Jsonl,
    /// Length-delimited protobuf `EventEnvelope`s.
    Protobuf,
}

/// What went wrong, and which exit code says so.
#[derive(Debug)]
pub enum Failure {
    /// A check failed or the thing asked for does not exist (exit 1).
    Negative(String),
    /// The request does not make sense (exit 2).
    Usage(String),
    /// The data could not be read (exit 3).
    Data(anyhow::Error),
    /// Standard output was closed by its reader: stop quietly (exit 0).
    Quiet,
    /// The engine refused (exit 1): printed as `refused (CODE): message`, and with `--json` as
    /// the `ticket.v1.Error`.
    Refused(ticket_proto::pb::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        let e = e.into();
        match e.downcast_ref::<std::io::Error>() {
            Some(io) if io.kind() == std::io::ErrorKind::BrokenPipe => Failure::Quiet,
            Some(_) | None => Failure::Data(e),
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match run(cli) {
        Ok(()) | Err(Failure::Quiet) => ExitCode::SUCCESS,
        Err(Failure::Refused(error)) => {
            eprintln!("ticketctl: refused ({}): {}", error.code().as_str_name(), error.message);
            ExitCode::from(1)
        }
        Err(Failure::Negative(message)) => {
            eprintln!("ticketctl: {message}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(message)) => {
            eprintln!("ticketctl: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Data(e)) => {
            eprintln!("ticketctl: {e:#}");
            ExitCode::from(3)
        }
    }
}

pub fn run(cli: Cli) -> Result<(), Failure> {
    let json = cli.json;
    match dispatch(cli) {
        Err(Failure::Refused(error)) => Err(render::refusal(&error, json)),
        other => other,
    }
}

/// The actor of commands on a data directory when `--actor` is not given.
const DEFAULT_ACTOR: &str = "agent:ticketctl";

/// Chooses the backend (a running ticketd with `--nats-url`, else the data directory) and runs
/// the command on it.
fn dispatch(cli: Cli) -> Result<(), Failure> {
    // The policy file given, else the embedded default.
    let policy = cli.policy.clone();
    let nats_url: Option<ticket_nats::connection::NatsUrl> = cli
        .nats_url
        .as_ref()
        .map(|url| url.expose().parse())
        .transpose()
        .map_err(|e| Failure::Usage(format!("--nats-url: {e}")))?;
    // One runtime for the whole run: commands and NATS requests are async.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    if let Command::Import { file } = &cli.command {
        let target = match &nats_url {
            Some(url) => import::Target::Remote { url, credentials: credentials(&cli), tls: tls(&cli) },
            None => import::Target::Local { data_dir: &cli.data_dir, policy: policy.as_deref() },
        };
        return import::run(file, target, &runtime, cli.json);
    }
    match &nats_url {
        Some(url) => {
            let (credentials, tls) = (credentials(&cli), tls(&cli));
            let remote =
                backend::Remote { url, credentials, tls, runtime: &runtime, stamped_actor: cli.actor.is_none() };
            execute(cli, &remote, None, policy.as_deref())
        }
        None => {
            let data_dir = cli.data_dir.clone();
            let local = backend::Local { data_dir: &data_dir, policy: policy.as_deref(), runtime: &runtime };
            execute(cli, &local, Some(&data_dir), policy.as_deref())
        }
    }
}

/// Runs `cli`'s command on `backend`; `data_dir` is set in local mode, where the commands that
/// read the log itself (history, audits, exports, what-if) work.
/// The NATS login of remote mode: every command (an import too) uses the same flags.
fn credentials(cli: &Cli) -> ticket_nats::connection::Credentials {
    ticket_nats::connection::Credentials {
        creds_file: cli.nats_creds.clone(),
        nkey_seed_file: cli.nats_nkey_seed_file.clone(),
        ..Default::default()
    }
}

/// The TLS of remote mode (a private CA, a client certificate).
fn tls(cli: &Cli) -> ticket_nats::connection::Tls {
    ticket_nats::connection::Tls {
        ca_file: cli.nats_tls_ca.clone(),
        cert_file: cli.nats_tls_cert.clone(),
        key_file: cli.nats_tls_key.clone(),
    }
}

fn execute<B: backend::Backend>(
    cli: Cli,
    backend: &B,
    data_dir: Option<&std::path::Path>,
    policy: Option<&std::path::Path>,
) -> Result<(), Failure> {
    let json = cli.json;
    // Local mode has no authenticated identity but the operating system's: the command is the
    // local user's, whatever id --actor names.
    let named = cli.actor.as_deref().unwrap_or(DEFAULT_ACTOR);
    let actor = match data_dir {
        Some(_) => local_actor(named),
        None => named.to_owned(),
    };
    let issue = issue::Issuer { backend, actor: &actor, command_id: cli.command_id.as_deref(), json };
    let local_only = |what: &str| {
        data_dir.ok_or_else(|| {
            Failure::Usage(format!("{what} reads the log itself: run it on the data directory, without --nats-url"))
        })
    };
    match cli.command {
        Command::Open { customer, plan, category, severity, title, description } => {
            issue.open(&customer, &plan, &category, &severity, &title, &description)
        }
        Command::Respond { ticket, message } => issue.respond(&ticket, &message),
        Command::Ask { ticket, request } => issue.ask(&ticket, &request),
        Command::Reply { ticket, message } => issue.reply(&ticket, &message),
        Command::Severity { ticket, severity, reason } => issue.severity(&ticket, &severity, &reason),
        Command::Escalate { ticket, tier, team, reason } => issue.escalate(&ticket, &tier, team.as_deref(), &reason),
        Command::Resolve { ticket, resolution } => issue.resolve(&ticket, &resolution),
        Command::Reopen { ticket, reason } => issue.reopen(&ticket, &reason),
        Command::Split { ticket, category, severity, title, description } => {
            issue.split(&ticket, &category, &severity, &title, &description)
        }
        Command::State { ticket, at } => {
            render::ticket(&backend.state(issue::ticket(&ticket)?, views::at(at.as_deref())?)?, json)
        }
        Command::Detail { ticket, at } => {
            render::ticket(&backend.detail(issue::ticket(&ticket)?, views::at(at.as_deref())?)?, json)
        }
        Command::Tickets { customer, all, limit, at } => {
            let customer = ticket_domain::CustomerId::new(customer).map_err(|e| Failure::Usage(e.to_string()))?;
            render::tickets(&backend.customer(customer, all, limit, views::at(at.as_deref())?)?, json)
        }
        Command::Board { limit, at } => render::board(&backend.board(limit, views::at(at.as_deref())?)?, json),
        Command::Timeline { ticket, at } => {
            render::timeline(&backend.timeline(issue::ticket(&ticket)?, views::at(at.as_deref())?)?, json)
        }
        Command::Compliance { from, to, at } => {
            let period = ticket_projections::Period {
                from: views::instant_arg(from.as_deref(), "--from")?,
                to: views::instant_arg(to.as_deref(), "--to")?,
            };
            render::compliance(&backend.compliance(period, views::at(at.as_deref())?)?, json)
        }
        Command::Projections { command: ProjectionsCommand::Status { update, checkpoint_events, node } } => {
            render::lags(&backend.lags(update, checkpoint_events, node.as_deref())?, json)
        }
        Command::Projections { command: ProjectionsCommand::Rebuild { name, checkpoint_events, node } } => {
            render::rebuilt(&backend.rebuild(name.as_deref(), checkpoint_events, node.as_deref())?, json)
        }
        Command::WhatIf { from, to } => {
            let data_dir = local_only("what-if")?;
            let Some(candidate) = cli.policy.as_deref() else {
                return Err(Failure::Usage("what-if needs the candidate policy: --policy candidate.toml".into()));
            };
            views::whatif(data_dir, candidate, from.as_deref(), to.as_deref(), json)
        }
        Command::Demo { keep } => demo::run(policy, keep.as_deref()),
        Command::History { ticket } => local::history(local_only("history")?, &ticket, json),
        // Dispatched before a backend is chosen.
        Command::Import { .. } => Err(Failure::Usage("import runs on its own target".into())),
        Command::Audit { command: AuditCommand::Verify { policies } } => {
            // The policy commands are decided with (given, or the embedded default), and the others.
            let mut all = vec![load_policy(policy)?];
            for file in &policies {
                all.push(load_policy(Some(file.as_path()))?);
            }
            match backend.remote() {
                // A cluster as a whole, from its log stream.
                Some(remote) => remote.with_client(|client| async move {
                    let status = client.cluster_status().await.map_err(crate::backend::failure)?;
                    let partitions = status.partitions.len() as u64;
                    local::audit_cluster(client.nats(), partitions, &all, json).await
                }),
                None => local::audit_verify(local_only("audit verify")?, &all, json),
            }
        }
        Command::Clock { command } => {
            let remote = backend
                .remote()
                .ok_or_else(|| Failure::Usage("clock reads a running ticketd's clock: give --nats-url".into()))?;
            match command {
                ClockCommand::Now => remote.with_client(|client| clock::now(client, json)),
                ClockCommand::Advance { to, by } => {
                    let target = clock::target(to.as_deref(), by.as_deref())?;
                    remote.with_client(|client| clock::advance(client, target, json))
                }
            }
        }
        Command::Cluster { command: ClusterCommand::Status } => {
            let remote = backend
                .remote()
                .ok_or_else(|| Failure::Usage("cluster status asks a running cluster node: give --nats-url".into()))?;
            remote.with_client(|client| async move {
                let status = client.cluster_status().await.map_err(crate::backend::failure)?;
                render::cluster(&status, json)
            })
        }
        Command::Cluster { command: ClusterCommand::Move { partition, node, wait_secs } } => {
            let remote = backend
                .remote()
                .ok_or_else(|| Failure::Usage("cluster move asks a running cluster node: give --nats-url".into()))?;
            remote.with_client(|client| async move {
                let started = std::time::Instant::now();
                let moved = client.move_partition(partition, &node).await.map_err(crate::backend::failure)?;
                if moved.from != moved.to {
                    let from = if moved.from.is_empty() { "no owner" } else { moved.from.as_str() };
                    eprintln!("moving partition {partition} from {from} to {node} ...");
                }
                let deadline = started + std::time::Duration::from_secs(wait_secs);
                loop {
                    let status = client.cluster_status().await.map_err(crate::backend::failure)?;
                    if status.partitions.iter().any(|p| p.partition == partition && p.owner == node) {
                        break;
                    }
                    if std::time::Instant::now() >= deadline {
                        return Err(Failure::Negative(format!(
                            "partition {partition} is placed on {node}, which did not serve it within {wait_secs} s \
                             (it keeps trying; see ticketctl cluster status)"
                        )));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                render::moved(&moved, started.elapsed(), json)
            })
        }
        Command::Export { format, from, to, output } => {
            local::export(local_only("export")?, format, from.as_deref(), to.as_deref(), output.as_deref())
        }
    }
}

/// `<kind>:local:<user>`: the kind `--actor` names (agent by default), the operating-system user
/// (USER, else LOGNAME, else the uid).
fn local_actor(actor: &str) -> String {
    let kind = actor.split_once(':').map_or("agent", |(kind, _)| kind);
    format!("{kind}:local:{}", os_user())
}

fn os_user() -> String {
    let named = ["USER", "LOGNAME"].into_iter().filter_map(|v| std::env::var(v).ok()).find(|u| !u.trim().is_empty());
    if let Some(user) = named {
        return user.trim().to_owned();
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(me) = std::fs::metadata("/proc/self") {
            return format!("uid-{}", me.uid());
        }
    }
    "unknown".to_owned()
}

/// The policy file when one is given, else the embedded default policy.
pub(crate) fn load_policy(path: Option<&std::path::Path>) -> Result<ticket_domain::Policy, Failure> {
    ticket_defaults::policy(path).map(|(policy, _)| policy).map_err(|e| Failure::Usage(e.to_string()))
}
