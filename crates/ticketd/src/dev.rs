//! `ticketd dev`: a local nats-server with JetStream in the data directory, and the engine on it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tracing::info;

use crate::config::Config;

/// Finds nats-server (`NATS_SERVER_BIN`, `PATH`, the project's install location), installing it
/// with `deploy/scripts/install-nats-server` when it is nowhere.
fn nats_server_bin() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN").map(PathBuf::from).filter(|p| p.is_file()) {
        return Ok(bin);
    }
    if let Some(found) = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("nats-server")).find(|p| p.is_file()))
    {
        return Ok(found);
    }
    let script = Path::new("deploy/scripts/install-nats-server");
    if !script.is_file() {
        bail!("nats-server is not installed and {} is not here: run ticketd dev from the repository", script.display());
    }
    info!(script = %script.display(), "nats-server not found; installing it");
    let output = Command::new("bash").arg(script).stderr(Stdio::inherit()).output()?;
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if !output.status.success() || !path.is_file() {
        bail!("{} could not install nats-server", script.display());
    }
    Ok(path)
}

struct LocalNats(Child);

impl Drop for LocalNats {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn dev(mut config: Config, port: u16) -> anyhow::Result<()> {
    let bin = nats_server_bin()?;
    let store = config.data().nats_store();
    std::fs::create_dir_all(&store).with_context(|| format!("cannot create {}", store.display()))?;
    let mut command = Command::new(&bin);
    let conf = Path::new("deploy/nats/dev.conf");
    if conf.is_file() {
        command.arg("-c").arg(conf);
    } else {
        command.arg("-a").arg("127.0.0.1").arg("-js");
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
    info!(nats_server = %bin.display(), port, store = %store.display(), "local nats-server with JetStream started");
    config.nats.url = Some(format!("nats://127.0.0.1:{port}").parse()?);
    let served = crate::serve::serve(config).await;
    drop(child);
    served
}
