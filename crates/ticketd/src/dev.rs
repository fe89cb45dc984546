//! `ticketd dev`: a local nats-server with JetStream in the data directory, and the engine on it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ticket_defaults::Origin;
use tracing::info;

use crate::config::Config;

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
/// `deploy/nats/dev.conf` written into the data directory.
fn nats_config(given: Option<&Path>, data_dir: &Path) -> anyhow::Result<(PathBuf, Origin)> {
    if let Some(file) = given {
        return Ok((file.to_owned(), Origin::File(file.to_owned())));
    }
    let shipped = ticket_defaults::NATS_DEV_CONF;
    let file = data_dir.join("nats-dev.conf");
    std::fs::write(&file, shipped.text).with_context(|| format!("cannot write {}", file.display()))?;
    Ok((file, Origin::Embedded(shipped.path)))
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
    config.nats.url = Some(format!("nats://127.0.0.1:{port}").parse()?);
    let served = crate::serve::serve(config, clock).await;
    drop(child);
    served
}
