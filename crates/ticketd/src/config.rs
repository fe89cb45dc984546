//! Settings: flags > environment > config file > defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use ticket_nats::connection::{Credentials, NatsUrl, Secret};

#[derive(Debug, Clone, clap::Args)]
pub struct Flags {
    /// A TOML config file (see deploy/ticketd.toml).
    #[arg(long, env = "TICKETD_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// The NATS server(s), comma separated, with the login in the URL if the server needs one:
    /// `nats://user:password@host:4222` or `nats://token@host:4222` (logged with `***`).
    #[arg(long, env = "TICKETD_NATS_URL", global = true, hide_env_values = true)]
    pub nats_url: Option<Secret>,
    /// A NATS credentials file (JWT and NKey seed).
    #[arg(long, env = "TICKETD_NATS_CREDS", global = true)]
    pub nats_creds: Option<PathBuf>,
    /// A file with a user NKey seed (`SU...`) to log in to NATS with.
    #[arg(long, env = "TICKETD_NATS_NKEY_SEED_FILE", global = true)]
    pub nats_nkey_seed_file: Option<PathBuf>,
    /// A PEM file of the CA that signed the NATS servers' certificates (a private CA); requires
    /// TLS. `tls://` URLs require TLS too, trusting the system's roots without this.
    #[arg(long, env = "TICKETD_NATS_TLS_CA", global = true)]
    pub nats_tls_ca: Option<PathBuf>,
    /// A PEM client certificate for NATS servers that verify clients (mutual TLS).
    #[arg(long, env = "TICKETD_NATS_TLS_CERT", global = true)]
    pub nats_tls_cert: Option<PathBuf>,
    /// The client certificate's PEM private key.
    #[arg(long, env = "TICKETD_NATS_TLS_KEY", global = true)]
    pub nats_tls_key: Option<PathBuf>,
    /// Where the log and snapshots (and in dev mode, the nats-server store) live.
    #[arg(long, env = "TICKETD_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// The SLA policy file (default: the embedded deploy/policies/regional-operator.toml).
    #[arg(long, env = "TICKETD_POLICY", global = true)]
    pub policy: Option<PathBuf>,
    /// The address of the operators' HTTP endpoint (`/metrics`, `/healthz`, `/readyz`), e.g.
    /// `127.0.0.1:9464` (default: none, no endpoint).
    #[arg(long, env = "TICKETD_OPS_LISTEN", global = true)]
    pub ops_listen: Option<std::net::SocketAddr>,
    /// Log format: text or json.
    #[arg(long, env = "TICKETD_LOG_FORMAT", global = true)]
    pub log_format: Option<LogFormat>,
    /// What a request from inside ticketd's own NATS account (without nats-server's
    /// `Nats-Request-Info` stamp) is taken as: deny (default) or trust (single-account setups).
    #[arg(long, env = "TICKETD_API_UNSTAMPED", global = true)]
    pub api_unstamped: Option<UnstampedSetting>,
    /// The JetStream API prefix (default `$JS.API`; `$JS.EVENTS.API` with the shipped accounts).
    #[arg(long, env = "TICKETD_STREAM_API_PREFIX", global = true)]
    pub stream_api_prefix: Option<String>,
    /// Serve as the named node of a cluster (`[cluster]`, ADR 0015): partitions owned under
    /// leases in NATS JetStream, every append fenced and replicated before it is acknowledged.
    #[arg(long, env = "TICKETD_CLUSTER_NODE", global = true)]
    pub cluster_node: Option<String>,
    /// Replicas of the cluster's log stream, buckets and event streams (`[cluster] replicas`):
    /// 3 on a three-server NATS cluster.
    #[arg(long, env = "TICKETD_CLUSTER_REPLICAS", global = true)]
    pub cluster_replicas: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub data_dir: PathBuf,
    /// The SLA policy file; without one, the policy embedded in the binary.
    pub policy: Option<PathBuf>,
    pub nats: NatsConfig,
    pub api: ApiSettings,
    pub stream: StreamSettings,
    pub shutdown: ShutdownSettings,
    pub log: LogSettings,
    pub timer: TimerSettings,
    pub projections: ProjectionSettings,
    pub ops: OpsSettings,
    pub cluster: ClusterSettings,
    /// Who may do what on the API: `[[identities]]` entries, each an account's user (or `*`,
    /// every user of it) mapped to an actor and a role.
    pub identities: Vec<IdentitySettings>,
}

/// One `[[identities]]` entry (see deploy/ticketd.toml).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySettings {
    /// The NATS account the requests come from (its name, or its public key with JWTs).
    pub account: String,
    /// The user (its name, or its NKey public key), or `*` for every user of the account.
    pub user: String,
    /// The actor id recorded (default: the user name).
    #[serde(default)]
    pub actor: Option<String>,
    pub role: RoleName,
    /// For `role = "customer"`: the customer it acts for.
    #[serde(default)]
    pub customer: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleName {
    Agent,
    Customer,
    Operator,
    Importer,
    Subscriber,
}

impl IdentitySettings {
    fn rule(&self, index: usize) -> anyhow::Result<ticket_nats::IdentityRule> {
        let at = || format!("identities[{index}] ({}/{})", self.account, self.user);
        if self.account.is_empty() || self.user.is_empty() {
            anyhow::bail!("{}: account and user are required (user \"*\" for every user)", at());
        }
        let role = match (self.role, &self.customer) {
            (RoleName::Customer, Some(customer)) => ticket_nats::Role::Customer {
                customer: ticket_domain::CustomerId::new(customer.clone())
                    .map_err(|e| anyhow::anyhow!("{}: customer: {e}", at()))?,
            },
            (RoleName::Customer, None) => anyhow::bail!("{}: a customer identity needs `customer`", at()),
            (RoleName::Agent | RoleName::Operator | RoleName::Importer | RoleName::Subscriber, Some(_)) => {
                anyhow::bail!("{}: only a customer identity takes `customer`", at())
            }
            (RoleName::Agent, None) => ticket_nats::Role::Agent,
            (RoleName::Operator, None) => ticket_nats::Role::Operator,
            (RoleName::Importer, None) => ticket_nats::Role::Importer,
            (RoleName::Subscriber, None) => ticket_nats::Role::Subscriber,
        };
        let actor = self
            .actor
            .clone()
            .map(ticket_domain::ActorId::new)
            .transpose()
            .map_err(|e| anyhow::anyhow!("{}: actor: {e}", at()))?;
        Ok(ticket_nats::IdentityRule { account: self.account.clone(), user: self.user.clone(), actor, role })
    }
}

/// The read models, kept in the state store (ADR 0013).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectionSettings {
    /// At most how long an applied change waits before it is flushed to the state store.
    pub flush_ms: u64,
    /// ...or flushed once this many events were applied since the last flush.
    pub flush_events: u64,
    /// A catch-up (a start behind the log, a rebuild from nothing) writes to the state store
    /// every this many events: its memory grows with it, its time shrinks.
    pub catch_up_flush_events: u64,
    /// ...and makes it durable every this many: what a kill during one replays at most.
    pub catch_up_sync_events: u64,
}

impl Default for ProjectionSettings {
    fn default() -> Self {
        let defaults = ticket_engine::ProjectorConfig::default();
        Self {
            flush_ms: defaults.flush_every.as_millis() as u64,
            flush_events: defaults.flush_events,
            catch_up_flush_events: defaults.catch_up_flush_events,
            catch_up_sync_events: defaults.catch_up_sync_events,
        }
    }
}

/// The operators' HTTP endpoint: Prometheus metrics at `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpsSettings {
    /// The address to serve on; none (the default) serves nothing.
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimerSettings {
    /// Run the timer service in this process (one per log).
    pub enabled: bool,
    /// The system actor its firings are recorded as.
    pub actor: String,
    /// Firing commands in flight at once.
    pub max_in_flight: usize,
    /// At most how long a change of the deadline index waits before it is flushed to the state
    /// store (ADR 0013).
    pub flush_ms: u64,
    /// No longer read (the index is flushed incrementally, `flush_ms`); accepted so that older
    /// configuration files still start, with a warning.
    pub checkpoint_secs: Option<u64>,
    /// How long an imported ticket's history must have been quiet before a breach already due at
    /// import is recorded as detected at import (the rest of its history may still be coming).
    pub import_quiet_secs: u64,
}

impl Default for TimerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            actor: "ticket-timer".into(),
            max_in_flight: 512,
            flush_ms: 200,
            checkpoint_secs: None,
            import_quiet_secs: 60,
        }
    }
}

/// Where NATS is and how to log in there: at most one of credentials in the URL, `user` and
/// `password`, `token`, `nkey_seed_file`, `creds`. Secrets never show in `Debug`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// The servers, comma separated (default `nats://127.0.0.1:4222`).
    #[serde(deserialize_with = "nats_url")]
    pub url: Option<NatsUrl>,
    /// A credentials file (JWT and NKey seed).
    pub creds: Option<PathBuf>,
    pub user: Option<String>,
    #[serde(deserialize_with = "secret")]
    pub password: Option<Secret>,
    #[serde(deserialize_with = "secret")]
    pub token: Option<Secret>,
    /// A file holding a user NKey seed (`SU...`).
    pub nkey_seed_file: Option<PathBuf>,
    /// TLS: the CA to trust (PEM), and a client certificate and key for mutual TLS. Any of them
    /// requires TLS; so does a `tls://` url.
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

impl NatsConfig {
    pub fn url(&self) -> anyhow::Result<NatsUrl> {
        match &self.url {
            Some(url) => Ok(url.clone()),
            None => Ok("nats://127.0.0.1:4222".parse()?),
        }
    }

    pub fn credentials(&self) -> Credentials {
        Credentials {
            user: self.user.clone(),
            password: self.password.clone(),
            token: self.token.clone(),
            nkey_seed_file: self.nkey_seed_file.clone(),
            creds_file: self.creds.clone(),
        }
    }

    pub fn tls(&self) -> ticket_nats::connection::Tls {
        ticket_nats::connection::Tls {
            ca_file: self.tls_ca_file.clone(),
            cert_file: self.tls_cert_file.clone(),
            key_file: self.tls_key_file.clone(),
        }
    }
}

fn nats_url<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<NatsUrl>, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

fn secret<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Secret>, D::Error> {
    Ok(Some(Secret::new(String::deserialize(deserializer)?)))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    pub max_payload: usize,
    pub max_in_flight: usize,
    /// A request without nats-server's `Nats-Request-Info` stamp (one from inside ticketd's own
    /// account, not through a service import): `deny` (the default) or `trust` (taken as sent:
    /// single-account setups and tests only).
    pub unstamped: UnstampedSetting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum UnstampedSetting {
    #[default]
    Deny,
    Trust,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSettings {
    pub name: String,
    pub breach_stream: String,
    pub subject_prefix: String,
    pub breach_subject_prefix: String,
    pub replicas: usize,
    pub duplicate_window_secs: u64,
    /// The JetStream API prefix ticketd manages its streams and publishes through: `$JS.API` on
    /// a plain server; with the shipped accounts, the import of the EVENTS account's API
    /// (`$JS.EVENTS.API`).
    pub api_prefix: String,
}

/// `[cluster]`: ticketd as one node of a cluster on NATS JetStream (ADR 0015).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// Serve as a node of a cluster (`--cluster-node` sets it and the node's name).
    pub enabled: bool,
    /// The node's name, unique in the cluster.
    pub node: String,
    /// The partitions, fixed when the cluster is created (the same on every node).
    pub partitions: u64,
    /// Replicas of the log stream and of the buckets: 3 on a three-server NATS cluster.
    pub replicas: usize,
    /// A partition's lease not renewed for this long passes to another node.
    pub lease_ttl_secs: u64,
    /// How long a request forwarded to a partition's owner waits for its answer.
    pub forward_timeout_ms: u64,
    /// How long a request about a partition being handed over (no owner, or one giving it up,
    /// nothing decided) is tried again before it is answered `UNAVAILABLE`: a planned handover
    /// fails no request, a dead owner's partitions answer `UNAVAILABLE` after this long.
    pub handover_wait_ms: u64,
    /// The key-value bucket of the partitions' published watermarks (the event stream's).
    pub watermark_bucket: String,
    /// How often, at most, a partition's outbox shares its published watermark in that bucket
    /// (a next owner publishes again, as duplicates the stream drops, what came after it).
    pub watermark_share_ms: u64,
    /// How long a partition's outbox waits for more events once new ones arrive after it drained,
    /// and after a round that was not a backlog, so that they go in one atomic batch (one
    /// replicated write instead of one each); events reach subscribers up to this much later.
    pub outbox_linger_ms: u64,
    /// How often the read models on this node's copies of the partitions are flushed to their
    /// state stores (rebuilt from the copies, so rarely: each flush is an fsync, per partition).
    pub copy_flush_ms: u64,
    /// How long this node's follower gathers the log stream's entries before it writes them to
    /// its copies: a partition's groups arriving meanwhile are written together (one sled batch,
    /// a few synchronous writes, instead of one per group). The copies, and the queries that
    /// read them on a node that does not own the partition, are that much behind.
    pub copy_linger_ms: u64,
    /// How often an owner's read models and timer index of the partitions it serves are flushed
    /// to their state stores (`[projections] flush_ms` and `[timer] flush_ms` on one ticketd).
    /// Each flush is an fsync per partition; what is not flushed is replayed from the partition's
    /// log when the node starts again (a node taking a partition over catches up from its own
    /// stores, whatever the last owner flushed).
    pub owner_flush_ms: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            node: String::new(),
            partitions: 16,
            replicas: 1,
            lease_ttl_secs: 5,
            forward_timeout_ms: 5000,
            handover_wait_ms: 2000,
            watermark_bucket: "TICKETS_OUTBOX".into(),
            watermark_share_ms: 1000,
            outbox_linger_ms: 100,
            copy_flush_ms: 2000,
            copy_linger_ms: 100,
            owner_flush_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownSettings {
    /// How long in-flight commands and the outbox drain may take on SIGTERM.
    pub deadline_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            policy: None,
            nats: NatsConfig::default(),
            api: ApiSettings::default(),
            stream: StreamSettings::default(),
            shutdown: ShutdownSettings::default(),
            log: LogSettings::default(),
            timer: TimerSettings::default(),
            projections: ProjectionSettings::default(),
            ops: OpsSettings::default(),
            cluster: ClusterSettings::default(),
            identities: Vec::new(),
        }
    }
}

impl Default for ApiSettings {
    fn default() -> Self {
        let api = ticket_nats::ApiConfig::default();
        Self { max_payload: api.max_payload, max_in_flight: api.max_in_flight, unstamped: UnstampedSetting::Deny }
    }
}

impl Default for StreamSettings {
    fn default() -> Self {
        let p = ticket_nats::publisher::PublisherConfig::default();
        Self {
            name: p.stream,
            breach_stream: p.breach_stream,
            subject_prefix: p.subject_prefix,
            breach_subject_prefix: p.breach_subject_prefix,
            replicas: p.replicas,
            duplicate_window_secs: p.duplicate_window.as_secs(),
            api_prefix: "$JS.API".into(),
        }
    }
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self { deadline_secs: 10 }
    }
}

impl Config {
    pub fn resolve(flags: &Flags) -> anyhow::Result<Self> {
        let mut config = match &flags.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        if let Some(url) = &flags.nats_url {
            config.nats.url = Some(url.expose().parse().context("--nats-url")?);
        }
        if let Some(creds) = &flags.nats_creds {
            config.nats.creds = Some(creds.clone());
        }
        if let Some(seed) = &flags.nats_nkey_seed_file {
            config.nats.nkey_seed_file = Some(seed.clone());
        }
        if let Some(ca) = &flags.nats_tls_ca {
            config.nats.tls_ca_file = Some(ca.clone());
        }
        if let Some(cert) = &flags.nats_tls_cert {
            config.nats.tls_cert_file = Some(cert.clone());
        }
        if let Some(key) = &flags.nats_tls_key {
            config.nats.tls_key_file = Some(key.clone());
        }
        if let Some(dir) = &flags.data_dir {
            config.data_dir.clone_from(dir);
        }
        if let Some(policy) = &flags.policy {
            config.policy = Some(policy.clone());
        }
        if let Some(listen) = flags.ops_listen {
            config.ops.listen = Some(listen);
        }
        if let Some(format) = flags.log_format {
            config.log.format = format;
        }
        if let Some(unstamped) = flags.api_unstamped {
            config.api.unstamped = unstamped;
        }
        if let Some(prefix) = &flags.stream_api_prefix {
            config.stream.api_prefix.clone_from(prefix);
        }
        if let Some(node) = &flags.cluster_node {
            config.cluster.enabled = true;
            config.cluster.node.clone_from(node);
        }
        if let Some(replicas) = flags.cluster_replicas {
            config.cluster.replicas = replicas;
        }
        if config.cluster.enabled {
            let node = &config.cluster.node;
            if node.trim().is_empty() {
                anyhow::bail!("[cluster] enabled needs the node's name: cluster.node, or --cluster-node");
            }
            // It names the node's key in the live nodes' bucket and its log stream entries.
            if node.len() > 64 || !node.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                anyhow::bail!("cluster.node {node:?}: 1 to 64 of the letters a-z, A-Z, digits, '-' and '_'");
            }
            if !(1..=3600).contains(&config.cluster.lease_ttl_secs) {
                anyhow::bail!("cluster.lease_ttl_secs {}: 1 to 3600", config.cluster.lease_ttl_secs);
            }
        }
        Ok(config)
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {}", path.display(), e.message()))
    }

    /// The data directory and its layout.
    pub fn data(&self) -> ticket_engine::DataDir {
        ticket_engine::DataDir::new(&self.data_dir)
    }

    /// The policy file when one is set, else the embedded default policy; logs which.
    pub fn load_policy(&self) -> anyhow::Result<ticket_domain::Policy> {
        let (policy, origin) = ticket_defaults::policy(self.policy.as_deref())?;
        tracing::info!(policy = %policy.version(), source = %origin, "SLA policy loaded");
        Ok(policy)
    }

    pub fn projector(&self) -> ticket_engine::ProjectorConfig {
        ticket_engine::ProjectorConfig {
            flush_every: Duration::from_millis(self.projections.flush_ms.max(1)),
            flush_events: self.projections.flush_events.max(1),
            catch_up_flush_events: self.projections.catch_up_flush_events.max(1),
            catch_up_sync_events: self.projections.catch_up_sync_events.max(1),
            ..ticket_engine::ProjectorConfig::default()
        }
    }

    pub fn timer(&self) -> anyhow::Result<ticket_timer::TimerConfig> {
        let actor =
            ticket_domain::ActorId::new(self.timer.actor.clone()).map_err(|e| anyhow::anyhow!("timer.actor: {e}"))?;
        let mut config = ticket_timer::TimerConfig::new(actor);
        config.max_in_flight = self.timer.max_in_flight.max(1);
        config.flush_every = Duration::from_millis(self.timer.flush_ms.max(1));
        if let Some(secs) = self.timer.checkpoint_secs {
            tracing::warn!(
                checkpoint_secs = secs,
                "timer.checkpoint_secs is no longer read: the deadline index is flushed to the state store as it \
                 changes (timer.flush_ms)"
            );
        }
        config.import_quiet = i64::try_from(self.timer.import_quiet_secs)
            .ok()
            .and_then(chrono::TimeDelta::try_seconds)
            .ok_or_else(|| anyhow::anyhow!("timer.import_quiet_secs: {} is too long", self.timer.import_quiet_secs))?;
        Ok(config)
    }

    pub fn api(&self) -> anyhow::Result<ticket_nats::ApiConfig> {
        let rules = self.identities.iter().enumerate().map(|(i, id)| id.rule(i)).collect::<anyhow::Result<Vec<_>>>()?;
        let unstamped = match self.api.unstamped {
            UnstampedSetting::Deny => ticket_nats::Unstamped::Deny,
            UnstampedSetting::Trust => ticket_nats::Unstamped::Trust,
        };
        Ok(ticket_nats::ApiConfig {
            max_payload: self.api.max_payload,
            max_in_flight: self.api.max_in_flight,
            identities: ticket_nats::Identities { rules, unstamped },
            ..ticket_nats::ApiConfig::default()
        })
    }

    pub fn publisher(&self) -> ticket_nats::publisher::PublisherConfig {
        ticket_nats::publisher::PublisherConfig {
            stream: self.stream.name.clone(),
            breach_stream: self.stream.breach_stream.clone(),
            subject_prefix: self.stream.subject_prefix.clone(),
            breach_subject_prefix: self.stream.breach_subject_prefix.clone(),
            replicas: self.stream.replicas,
            duplicate_window: Duration::from_secs(self.stream.duplicate_window_secs),
            ..ticket_nats::publisher::PublisherConfig::default()
        }
    }
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sled=warn,async_nats=warn"));
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> Flags {
        Flags {
            config: None,
            nats_url: None,
            nats_creds: None,
            nats_nkey_seed_file: None,
            nats_tls_ca: None,
            nats_tls_cert: None,
            nats_tls_key: None,
            data_dir: None,
            policy: None,
            ops_listen: None,
            log_format: None,
            api_unstamped: None,
            stream_api_prefix: None,
            cluster_node: None,
            cluster_replicas: None,
        }
    }

    #[test]
    fn a_cluster_node_is_named_by_the_flag_or_refused_without_a_name() {
        let config = Config::resolve(&Flags { cluster_node: Some("node-a".into()), ..flags() }).unwrap();
        assert_eq!(config.cluster.replicas, 1);
        let three = Config::resolve(&Flags { cluster_node: Some("a".into()), cluster_replicas: Some(3), ..flags() });
        assert_eq!(three.unwrap().cluster.replicas, 3);
        assert!(config.cluster.enabled);
        assert_eq!(config.cluster.node, "node-a");
        assert_eq!(config.cluster.partitions, 16);
        assert!(!Config::resolve(&flags()).unwrap().cluster.enabled, "single-node by default");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ticketd.toml");
        std::fs::write(&file, "[cluster]\nenabled = true\n").unwrap();
        let error = Config::resolve(&Flags { config: Some(file), ..flags() }).unwrap_err().to_string();
        assert!(error.contains("--cluster-node"), "{error}");
        for bad in ["node a", "node*", "n.1", ""] {
            let refused = Config::resolve(&Flags { cluster_node: Some(bad.into()), ..flags() });
            assert!(refused.is_err(), "{bad:?} is not a node name");
        }
        std::fs::write(dir.path().join("ttl.toml"), "[cluster]\nlease_ttl_secs = 18446744073709551615\n").unwrap();
        let flags_ttl = Flags { config: Some(dir.path().join("ttl.toml")), cluster_node: Some("a".into()), ..flags() };
        assert!(Config::resolve(&flags_ttl).is_err(), "an endless lease is refused");
    }

    #[test]
    fn the_shipped_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/ticketd.toml");
        let config = Config::from_file(&path).unwrap();
        assert_eq!(config.stream.name, "TICKETS");
        assert_eq!(config.api.max_payload, 65536);
        assert_eq!(config.ops.listen, Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9464))));
        // The shipped accounts: the streams through EVENTS' API, every account's identities.
        assert_eq!(config.stream.api_prefix, "$JS.EVENTS.API");
        let api = config.api().unwrap();
        assert_eq!(api.identities.unstamped, ticket_nats::Unstamped::Deny);
        assert_eq!(api.identities.rules.len(), 6);
        let acme = api.identities.rules.iter().find(|r| r.user == "acme").unwrap();
        assert_eq!(acme.actor.as_ref().map(|a| a.as_str()), Some("acme-admin"));
        assert!(matches!(&acme.role, ticket_nats::Role::Customer { customer } if customer.as_str() == "acme"));
        // Without a file: the embedded policy, and no ops endpoint unless asked for.
        let defaults = Config::resolve(&flags()).unwrap();
        assert_eq!((defaults.policy, defaults.ops.listen), (None, None));
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = std::env::temp_dir().join(format!("ticketd-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        std::fs::write(&file, "data_dir = \"/from/file\"\n[nats]\nurl = \"nats://file:4222\"\n").unwrap();
        let mut f = flags();
        f.config = Some(file);
        f.nats_url = Some(Secret::new("nats://flag:4222"));
        let config = Config::resolve(&f).unwrap();
        assert_eq!(
            (config.nats.url().unwrap().to_string().as_str(), config.data_dir.as_path()),
            ("nats://flag:4222", Path::new("/from/file"))
        );
    }

    #[test]
    fn nats_credentials_come_from_the_file_and_never_show() {
        let dir = std::env::temp_dir().join(format!("ticketd-config-nats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        let text = "[nats]\nurl = \"nats://a:4222,nats://b:4222\"\nuser = \"ticketd\"\npassword = \"hunter2\"\n";
        std::fs::write(&file, text).unwrap();
        let config = Config::from_file(&file).unwrap();
        assert_eq!(config.nats.credentials().password.map(|p| p.expose().to_owned()).as_deref(), Some("hunter2"));
        assert_eq!(config.nats.url().unwrap().servers().len(), 2);
        let mut flags = flags();
        flags.config = Some(file);
        flags.nats_url = Some(Secret::new("nats://ticketd:s3cret@c:4222"));
        let shown = format!("{:?} {:?}", Config::resolve(&flags).unwrap(), flags);
        assert!(!shown.contains("hunter2") && !shown.contains("s3cret"), "{shown}");

        std::fs::write(dir.join("bad.toml"), "[nats]\nurl = \"http://u:p@h\"\n").unwrap();
        let err = Config::from_file(&dir.join("bad.toml")).unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains("url"), "{err}");
    }

    #[test]
    fn nats_tls_files_come_from_the_file_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("ticketd-config-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        let text = "[nats]\nurl = \"tls://nats.internal:4222\"\ntls_ca_file = \"/etc/ticketd/ca.pem\"\n\
                    tls_cert_file = \"/etc/ticketd/client.pem\"\ntls_key_file = \"/etc/ticketd/client-key.pem\"\n";
        std::fs::write(&file, text).unwrap();
        let mut f = flags();
        f.config = Some(file);
        f.nats_tls_ca = Some(PathBuf::from("/flag/ca.pem"));
        let tls = Config::resolve(&f).unwrap().nats.tls();
        assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/flag/ca.pem")));
        assert_eq!(tls.cert_file.as_deref(), Some(Path::new("/etc/ticketd/client.pem")));
        assert_eq!(tls.key_file.as_deref(), Some(Path::new("/etc/ticketd/client-key.pem")));
    }

    #[test]
    fn an_identity_is_checked_when_the_api_is_configured() {
        let parse = |text: &str| toml::from_str::<Config>(text).unwrap().api();
        let customer = "[[identities]]\naccount = \"C\"\nuser = \"u\"\nrole = \"customer\"\n";
        assert!(parse(customer).unwrap_err().to_string().contains("needs `customer`"));
        let agent = "[[identities]]\naccount = \"S\"\nuser = \"*\"\nrole = \"agent\"\ncustomer = \"x\"\n";
        assert!(parse(agent).unwrap_err().to_string().contains("only a customer"));
        let empty = "[[identities]]\naccount = \"\"\nuser = \"*\"\nrole = \"agent\"\n";
        assert!(parse(empty).is_err());
        assert!(toml::from_str::<Config>("[[identities]]\naccount = \"S\"\nuser = \"*\"\nrole = \"boss\"\n").is_err());
        let trusting = parse("[api]\nunstamped = \"trust\"\n").unwrap();
        assert_eq!(trusting.identities.unstamped, ticket_nats::Unstamped::Trust);
    }

    #[test]
    fn unknown_keys_are_refused_with_the_file_named() {
        let dir = std::env::temp_dir().join(format!("ticketd-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "[nats]\nurll = \"x\"\n").unwrap();
        let err = Config::from_file(&file).unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains("urll"), "{err}");
    }
}
