//! `ticketd dev`: a local nats-server with JetStream in the data directory, and the engine on it.

use std::io::Write;
use std::os::unix::process::CommandExt;
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

/// A process `ticketd dev` started (a nats-server, a cluster node): killed when dropped if it
/// still runs, so that none is left behind, whatever path the parent leaves by.
struct LocalProcess(Child);

impl LocalProcess {
    /// Waits, up to 30 s, until something listens on `port`; an error if this process exited
    /// meanwhile (its port taken, say) or nothing listens by then.
    async fn listening(&mut self, port: u16, logs: &Path) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = self.0.try_wait() {
                bail!("the local nats-server on port {port} exited ({status}); see its log in {}", logs.display());
            }
            if Instant::now() > deadline {
                bail!("the local nats-server did not listen on port {port} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

impl Drop for LocalProcess {
    fn drop(&mut self) {
        // A process already waited for is not signalled again (its pid may be another's now).
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn dev(mut config: Config, nats: DevNats, clock: ticket_engine::EngineClock) -> anyhow::Result<()> {
    // Caught from the start: a signal while the nats-server or ticketd comes up stops both once
    // ticketd is ready, rather than killing this process and leaving the nats-server behind.
    let signal = crate::serve::ShutdownSignal::listen();
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
    // In a process group of its own: a terminal's Ctrl-C reaches ticketd only, which stops the
    // server when it stops (the server stopping first would leave ticketd waiting for NATS).
    command
        .arg("-p")
        .arg(port.to_string())
        .arg("-sd")
        .arg(&store)
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = LocalProcess(command.spawn().with_context(|| format!("cannot start {}", bin.display()))?);
    child.listening(port, &config.data_dir).await?;
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
    let served = crate::serve::serve(config, clock, Some(signal)).await;
    drop(child);
    served
}

/// `ticketd dev --nodes N`: a cluster on this machine for trying failover by hand (ADR 0015).
/// N nats-servers in one JetStream cluster (`sync_interval: always`, the shipped accounts), on
/// client ports `port`, `port + 1`, ... (routes on `port + 2000 + i`), each storing under
/// `<data_dir>/nats-<i>/`; and N `ticketd serve --cluster-node node-<i>` processes of this very
/// executable, each with its own data directory `<data_dir>/node-<i>/` and the generated
/// `<data_dir>/cluster-node.toml`. Runs until told to stop (SIGTERM, Ctrl-C), then stops the
/// nodes (each hands its partitions over) and the servers. A node killed by hand stays down; its
/// command line is logged, to start it again.
pub async fn dev_nodes(config: Config, nats: DevNats, nodes: usize) -> anyhow::Result<()> {
    // Caught from the start: a signal while the cluster comes up stops it all once it is up,
    // rather than killing this process and leaving its servers and nodes behind.
    let signal = crate::serve::ShutdownSignal::listen();
    if nats.config.is_some() || nats.monitor_port.is_some() {
        bail!("ticketd dev --nodes writes its nats-servers' configs itself (no --nats-config, no --nats-monitor-port)");
    }
    if config.cluster.enabled {
        bail!("ticketd dev --nodes starts its own cluster nodes: no --cluster-node");
    }
    if usize::from(nats.port) + 2000 + nodes > usize::from(u16::MAX) {
        bail!("ticketd dev --nodes {nodes} needs client ports from {} and route ports 2000 above them", nats.port);
    }
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let bin = nats_server_bin()?;
    let accounts = data_dir.join("accounts.conf");
    std::fs::write(&accounts, ticket_defaults::NATS_ACCOUNTS_CONF.text)
        .with_context(|| format!("cannot write {}", accounts.display()))?;
    let ports: Vec<u16> = (0..nodes).map(|i| nats.port.saturating_add(i as u16)).collect();
    let routes: Vec<String> =
        (0..nodes).map(|i| format!("nats-route://127.0.0.1:{}", nats.port.saturating_add(2000 + i as u16))).collect();
    let mut servers = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let store = data_dir.join(format!("nats-{}", i + 1));
        std::fs::create_dir_all(&store).with_context(|| format!("cannot create {}", store.display()))?;
        let conf = data_dir.join(format!("nats-{}.conf", i + 1));
        let text = format!(
            "server_name: ticketd-dev-{n}\nlisten: 127.0.0.1:{port}\nmax_payload: 1MB\n\
             jetstream {{ store_dir: {store:?}, sync_interval: always }}\n\
             cluster {{ name: ticketd-dev, listen: 127.0.0.1:{route}, routes: [{routes}] }}\n\
             include ./accounts.conf\n",
            n = i + 1,
            store = store.display().to_string(),
            route = nats.port.saturating_add(2000 + i as u16),
            routes = routes.join(", "),
        );
        std::fs::write(&conf, text).with_context(|| format!("cannot write {}", conf.display()))?;
        let log = std::fs::File::create(data_dir.join(format!("nats-{}.log", i + 1)))?;
        // In a process group of its own, as the nodes: Ctrl-C reaches this process alone, which
        // stops the nodes first, then the servers.
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        servers.push(LocalProcess(child));
    }
    for (server, port) in servers.iter_mut().zip(&ports) {
        server.listening(*port, &data_dir).await?;
    }
    // A port another process holds answers too: a server of ours that could not bind has exited.
    for (server, port) in servers.iter_mut().zip(&ports) {
        if let Ok(Some(status)) = server.0.try_wait() {
            bail!("the local nats-server on port {port} exited ({status}); see its log in {}", data_dir.display());
        }
    }
    let replicas = nodes.min(3);
    let node_config = data_dir.join("cluster-node.toml");
    std::fs::write(&node_config, node_toml(&config, replicas))
        .with_context(|| format!("cannot write {}", node_config.display()))?;
    let urls = ports.iter().map(|p| format!("nats://ticketd:ticketd-dev-password@127.0.0.1:{p}")).collect::<Vec<_>>();
    let exe = std::env::current_exe().context("cannot find this ticketd executable")?;
    let mut children = Vec::new();
    for i in 0..nodes {
        let name = format!("node-{}", (b'a' + (i % 26) as u8) as char);
        let dir = data_dir.join(&name);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let log = std::fs::File::create(data_dir.join(format!("{name}.log")))?;
        let mut command = Command::new(&exe);
        command
            .env_remove("TICKETD_OPS_LISTEN")
            .env_remove("TICKETD_CONFIG")
            .arg("--config")
            .arg(&node_config)
            .arg("--data-dir")
            .arg(&dir)
            .arg("--nats-url")
            .arg(urls.join(","))
            .arg("--cluster-node")
            .arg(&name);
        if let Some(policy) = &config.policy {
            command.arg("--policy").arg(policy);
        }
        command.arg("serve").process_group(0).stdout(Stdio::null()).stderr(log);
        let child = command.spawn().with_context(|| format!("cannot start {}", exe.display()))?;
        info!(
            node = %name,
            pid = child.id(),
            log = %data_dir.join(format!("{name}.log")).display(),
            command = ?command,
            "cluster node started (kill -9 it to watch its partitions move; its command starts it again)"
        );
        children.push((name, LocalProcess(child)));
    }
    for (i, port) in ports.iter().enumerate() {
        info!(server = i + 1, url = %format!("nats://127.0.0.1:{port}"), "nats-server of the dev cluster");
    }
    info!(
        operator = %format!("ticketctl --nats-url nats://operator:operator-dev-password@127.0.0.1:{} cluster status", nats.port),
        "the dev cluster runs; SIGTERM or Ctrl-C stops it all"
    );
    let signal = signal.received().await;
    info!(signal, "stopping the dev cluster: the nodes, then the nats-servers");
    for (_, node) in &children {
        let _ = Command::new("kill").arg("-TERM").arg(node.0.id().to_string()).status();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for (name, mut node) in children {
        loop {
            match node.0.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    tracing::warn!(node = %name, "the node did not stop within 30 s; killed");
                    break;
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    drop(servers);
    Ok(())
}

/// The nodes' config: the cluster's partitions and replicas, the streams through the EVENTS
/// account's JetStream API, and the dev users' identities (as `ticketd dev` gives them).
fn node_toml(config: &Config, replicas: usize) -> String {
    let mut text = format!(
        "[cluster]\npartitions = {}\nreplicas = {replicas}\n\n[stream]\nreplicas = {replicas}\napi_prefix = \"$JS.EVENTS.API\"\n",
        config.cluster.partitions
    );
    for (account, user, role, customer) in DEV_USERS {
        let role = format!("{role:?}").to_lowercase();
        text.push_str(&format!("\n[[identities]]\naccount = \"{account}\"\nuser = \"{user}\"\nrole = \"{role}\"\n"));
        if let Some(customer) = customer {
            text.push_str(&format!("customer = \"{customer}\"\n"));
        }
    }
    text
}
