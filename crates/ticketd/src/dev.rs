//! `ticketd dev`: a local nats-server with JetStream in the data directory, and the engine on it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ticket_defaults::Origin;
use tracing::info;

use crate::config::{Config, IdentitySettings, RoleName};

/// Finds nats-server (`NATS_SERVER_BIN`, `PATH`, the project's install location), installing it
/// with the embedded `deploy/scripts/install-nats-server` when it is nowhere.
fn nats_server_bin() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN").map(PathBuf::from).filter(|p| p.is_file()) {
        return Ok(bin);
    }
    if let Some(found) = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("nats-server")).find(|p| p.is_file()))
    {
        return Ok(found);
    }
    let script = ticket_defaults::INSTALL_NATS_SERVER;
    info!(script = script.path, "nats-server not found; installing it with the embedded script");
    let mut child = Command::new("bash")
        .arg("-s")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot run bash to install nats-server")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.text.as_bytes()).context("cannot pass the install script to bash")?;
    }
    let output = child.wait_with_output()?;
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if !output.status.success() || !path.is_file() {
        bail!("{} could not install nats-server", script.path);
    }
    Ok(path)
}

/// The nats-server config file to start with: the given one, else the embedded
/// `deploy/nats/dev.conf` written into the data directory, with the `deploy/nats/accounts.conf`
/// it includes beside it.
fn nats_config(given: Option<&Path>, data_dir: &Path) -> anyhow::Result<(PathBuf, Origin)> {
    if let Some(file) = given {
        return Ok((file.to_owned(), Origin::File(file.to_owned())));
    }
    let accounts = data_dir.join("accounts.conf");
    let text = ticket_defaults::NATS_ACCOUNTS_CONF.text;
    std::fs::write(&accounts, text).with_context(|| format!("cannot write {}", accounts.display()))?;
    let shipped = ticket_defaults::NATS_DEV_CONF;
    let file = data_dir.join("nats-dev.conf");
    std::fs::write(&file, shipped.text).with_context(|| format!("cannot write {}", file.display()))?;
    Ok((file, Origin::Embedded(shipped.path)))
}

/// The users of the shipped accounts, and the identities `ticketd dev` gives them: (account,
/// user, role, customer).
const DEV_USERS: [(&str, &str, RoleName, Option<&str>); 7] = [
    ("SUPPORT", "support", RoleName::Agent, None),
    ("CUSTOMERS", "acme", RoleName::Customer, Some("acme")),
    ("CUSTOMERS", "globex", RoleName::Customer, Some("globex")),
    ("OPERATORS", "operator", RoleName::Operator, None),
    ("IMPORTERS", "importer", RoleName::Importer, None),
    ("EVENTS", "billing", RoleName::Subscriber, None),
    ("EVENTS", "paging", RoleName::Subscriber, None),
];

/// `ticketd dev` on the shipped accounts: ticketd logs in as `ticketd`, reaches its streams
/// through the import of the EVENTS account's JetStream API, and (unless the config names its
/// own) maps the dev users to identities, each user its own actor.
fn use_dev_accounts(config: &mut Config, port: u16) -> anyhow::Result<()> {
    config.nats.url = Some(format!("nats://ticketd:ticketd-dev-password@127.0.0.1:{port}").parse()?);
    if config.stream.api_prefix == "$JS.API" {
        config.stream.api_prefix = "$JS.EVENTS.API".into();
    }
    if config.identities.is_empty() {
        config.identities = DEV_USERS
            .iter()
            .map(|(account, user, role, customer)| IdentitySettings {
                account: (*account).into(),
                user: (*user).into(),
                actor: None,
                role: *role,
                customer: customer.map(str::to_owned),
            })
            .collect();
    }
    for (account, user, role, customer) in DEV_USERS {
        let customer = customer.map(|c| format!(" for customer {c}")).unwrap_or_default();
        let role = format!("{role:?}").to_lowercase();
        info!(
            account,
            user,
            url = %format!("nats://{user}:{user}-dev-password@127.0.0.1:{port}"),
            "dev user: {role}{customer}"
        );
    }
    Ok(())
}

/// How `ticketd dev` runs its nats-server.
#[derive(Debug, Clone, Default)]
pub struct DevNats {
    /// The client port.
    pub port: u16,
    /// A nats-server config file instead of the embedded `deploy/nats/dev.conf`.
    pub config: Option<PathBuf>,
    /// The nats-server's monitoring port (`/varz`, ...), if any.
    pub monitor_port: Option<u16>,
}

struct LocalNats(Child);

impl Drop for LocalNats {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn dev(mut config: Config, nats: DevNats, clock: ticket_engine::EngineClock) -> anyhow::Result<()> {
    let port = nats.port;
    let bin = nats_server_bin()?;
    let store = config.data().nats_store();
    std::fs::create_dir_all(&store).with_context(|| format!("cannot create {}", store.display()))?;
    let (conf, origin) = nats_config(nats.config.as_deref(), &config.data_dir)?;
    let mut command = Command::new(&bin);
    command.arg("-c").arg(&conf);
    if let Some(monitor) = nats.monitor_port {
        command.arg("-m").arg(monitor.to_string());
    }
    command.arg("-p").arg(port.to_string()).arg("-sd").arg(&store).stdout(Stdio::null()).stderr(Stdio::null());
    let child = LocalNats(command.spawn().with_context(|| format!("cannot start {}", bin.display()))?);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("the local nats-server did not listen on port {port} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    info!(
        nats_server = %bin.display(),
        port,
        store = %store.display(),
        config = %origin,
        "local nats-server with JetStream started"
    );
    if nats.config.is_some() {
        config.nats.url = Some(format!("nats://127.0.0.1:{port}").parse()?);
    } else {
        use_dev_accounts(&mut config, port)?;
    }
    let served = crate::serve::serve(config, clock).await;
    drop(child);
    served
}
