//! Test fixtures for ticketd. Every test that needs NATS starts its own real `nats-server` on a
//! free port with a temporary JetStream directory; it is killed when dropped, can be stopped and
//! restarted on the same port (to inject outages), and three can form a cluster.
//!
//! The binary is found through `NATS_SERVER_BIN`, then `PATH`, then the copy that
//! `deploy/scripts/install-nats-server` installs (which is run if nothing is found). When none
//! can be found or installed, starting a server fails with an error that says so: tests never
//! skip for want of a server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a server may take to become ready.
const READY_WITHIN: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    #[error(
        "no nats-server found: set NATS_SERVER_BIN, put nats-server on PATH, or run deploy/scripts/install-nats-server ({0})"
    )]
    NoServer(String),
    #[error("nats-server {name} did not become ready within {READY_WITHIN:?}; its log:\n{log}")]
    NotReady { name: String, log: String },
    #[error("nats-server {name} exited during start-up ({status}); its log:\n{log}")]
    Exited { name: String, status: String, log: String },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn installed_location() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TICKETD_TOOLS_DIR") {
        return Some(PathBuf::from(dir).join("nats-server"));
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(data.join("ticketd/bin/nats-server"))
}

/// The nats-server binary to run, installing it with the project's script if none is found.
pub fn nats_server_bin() -> Result<PathBuf, TestkitError> {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN").map(PathBuf::from).filter(|p| is_executable(p)) {
        return Ok(bin);
    }
    if let Some(on_path) = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("nats-server")).find(|p| is_executable(p)))
    {
        return Ok(on_path);
    }
    if let Some(installed) = installed_location().filter(|p| is_executable(p)) {
        return Ok(installed);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/scripts/install-nats-server");
    let output = Command::new("bash").arg(&script).output()?;
    let printed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let bin = PathBuf::from(&printed);
    if output.status.success() && is_executable(&bin) {
        Ok(bin)
    } else {
        Err(TestkitError::NoServer(format!(
            "{} exited with {}: {}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// A free TCP port on the loopback interface (free when asked; a later bind can lose a race).
pub fn free_port() -> Result<u16, TestkitError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// What a server is started with.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    /// The server's name (default: a fresh one).
    pub name: Option<String>,
    /// A configuration file (`-c`), for accounts and permissions.
    pub config_file: Option<PathBuf>,
    /// More command-line arguments.
    pub args: Vec<String>,
}

/// A running nats-server with JetStream, on 127.0.0.1.
#[derive(Debug)]
pub struct NatsServer {
    name: String,
    bin: PathBuf,
    port: u16,
    store: PathBuf,
    _store_dir: Option<Arc<tempfile::TempDir>>,
    config: ServerConfig,
    /// The HTTP monitoring port (`/varz`, `/routez`, `/jsz`).
    monitor_port: u16,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

impl NatsServer {
    /// Starts a server on a free port with a fresh JetStream directory, waiting until it is ready.
    pub fn start() -> Result<Self, TestkitError> {
        Self::start_with(ServerConfig::default())
    }

    pub fn start_with(config: ServerConfig) -> Result<Self, TestkitError> {
        let dir = Arc::new(tempfile::Builder::new().prefix("ticketd-nats-").tempdir()?);
        let store = dir.path().to_path_buf();
        Self::start_in(config, store, Some(dir), None)
    }

    fn start_in(
        config: ServerConfig,
        store: PathBuf,
        store_dir: Option<Arc<tempfile::TempDir>>,
        port: Option<u16>,
    ) -> Result<Self, TestkitError> {
        let name = config.name.clone().unwrap_or_else(|| format!("ticketd-test-{}", std::process::id()));
        let mut server = Self {
            name,
            bin: nats_server_bin()?,
            port: port.unwrap_or(0),
            store,
            _store_dir: store_dir,
            config,
            monitor_port: 0,
            child: None,
            log: Arc::default(),
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), TestkitError> {
        let mut command = Command::new(&self.bin);
        command.arg("-a").arg("127.0.0.1").arg("-p");
        command.arg(if self.port == 0 { "-1".to_owned() } else { self.port.to_string() });
        command.arg("-js").arg("-sd").arg(&self.store).arg("-n").arg(&self.name);
        // The server picks its own ports at the first start (no race with another test's bind),
        // and keeps them across restarts.
        command.arg("-m").arg(if self.monitor_port == 0 { "-1".to_owned() } else { self.monitor_port.to_string() });
        if let Some(file) = &self.config.config_file {
            command.arg("-c").arg(file);
        }
        command.args(&self.config.args);
        let mut child = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
        let stderr = child.stderr.take().ok_or_else(|| std::io::Error::other("no stderr"))?;
        let (tx, rx) = mpsc::channel::<(Option<u16>, Option<u16>)>();
        let log = self.log.clone();
        std::thread::spawn(move || {
            let port_after = |line: &str, marker: &str| {
                line.split(marker).nth(1).and_then(|rest| rest.trim().rsplit(':').next()?.parse().ok())
            };
            let (mut port, mut monitor) = (None, None);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                port = port.or_else(|| port_after(&line, "Listening for client connections on "));
                monitor = monitor.or_else(|| port_after(&line, "Starting http monitor on "));
                let ready = line.contains("Server is ready");
                log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line);
                if ready {
                    let _ = tx.send((port, monitor));
                }
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok((port, monitor)) => {
                    if let Some(port) = port {
                        self.port = port;
                    }
                    if let Some(monitor) = monitor {
                        self.monitor_port = monitor;
                    }
                    return Ok(());
                }
                Err(mpsc::RecvTimeoutError::Timeout | mpsc::RecvTimeoutError::Disconnected) => {
                    if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                        self.child = None;
                        return Err(TestkitError::Exited {
                            name: self.name.clone(),
                            status: status.to_string(),
                            log: self.log_text(),
                        });
                    }
                    if Instant::now() >= deadline {
                        self.kill();
                        return Err(TestkitError::NotReady { name: self.name.clone(), log: self.log_text() });
                    }
                }
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The JetStream store directory (kept across restarts).
    pub fn store_dir(&self) -> &Path {
        &self.store
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Kills the server (SIGKILL): an outage, or a crash.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts the server again on the same port with the same JetStream directory.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        self.kill();
        self.spawn()
    }

    /// A monitoring endpoint's JSON (`varz`, `routez`, `jsz`, ...).
    pub fn monitor(&self, endpoint: &str) -> Result<serde_json::Value, TestkitError> {
        monitor(self.monitor_port, endpoint)
    }

    /// Everything the server logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).join("\n")
    }

    /// Waits, up to `within`, for a log line containing `needle`.
    pub fn wait_for_log(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three (or `n`) servers with JetStream, routed into one cluster on the loopback interface.
#[derive(Debug)]
pub struct Cluster {
    pub nodes: Vec<NatsServer>,
}

impl Cluster {
    /// Starts `n` routed servers. The route ports must be known before any server starts (each
    /// names the others), so they are reserved and released; another process can bind one in
    /// between, and the server that loses its port exits. The whole cluster is then started
    /// again on fresh ports, a few times, before the error is returned.
    pub fn start(n: usize) -> Result<Self, TestkitError> {
        Self::start_with(n, None)
    }

    /// [`Cluster::start`], every server also given `config_file` (`-c`: for example
    /// `jetstream { sync_interval: always }`).
    pub fn start_with(n: usize, config_file: Option<PathBuf>) -> Result<Self, TestkitError> {
        const ATTEMPTS: usize = 4;
        let mut attempt = 1;
        loop {
            match Self::start_once(n, config_file.clone()) {
                Ok(cluster) => return Ok(cluster),
                Err(e) if attempt >= ATTEMPTS => return Err(e),
                Err(_) => attempt += 1,
            }
        }
    }

    fn start_once(n: usize, config_file: Option<PathBuf>) -> Result<Self, TestkitError> {
        let cluster_ports = (0..n).map(|_| free_port()).collect::<Result<Vec<_>, _>>()?;
        let routes: Vec<String> = cluster_ports.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect();
        let suffix = format!("{}-{}", std::process::id(), cluster_ports[0]);
        let mut nodes = Vec::with_capacity(n);
        for (i, port) in cluster_ports.iter().enumerate() {
            let config = ServerConfig {
                name: Some(format!("ticketd-node-{i}-{suffix}")),
                config_file: config_file.clone(),
                args: vec![
                    "--cluster_name".into(),
                    format!("ticketd-{suffix}"),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{port}"),
                    "--routes".into(),
                    routes.join(","),
                ],
            };
            nodes.push(NatsServer::start_with(config)?);
        }
        for node in &mut nodes {
            if !node.wait_for_log("Listening for route connections on", READY_WITHIN) || !node.is_running() {
                return Err(TestkitError::NotReady { name: node.name.clone(), log: node.log_text() });
            }
        }
        Ok(Self { nodes })
    }

    /// Waits, up to `within`, until every node has routes to every other node.
    pub fn wait_routed(&self, within: Duration) -> Result<(), TestkitError> {
        let deadline = Instant::now() + within;
        loop {
            let routed = self.nodes.iter().all(|node| {
                let peers: std::collections::BTreeSet<String> = node
                    .monitor("routez")
                    .ok()
                    .and_then(|r| r["routes"].as_array().cloned())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|route| route["remote_name"].as_str().map(str::to_owned))
                    .collect();
                peers.len() + 1 >= self.nodes.len()
            });
            if routed {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let logs = self.nodes.iter().map(NatsServer::log_text).collect::<Vec<_>>().join("\n---\n");
                return Err(TestkitError::NotReady { name: "cluster".into(), log: logs });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The client URLs of every node, comma separated (as NATS clients take them).
    pub fn urls(&self) -> String {
        self.nodes.iter().map(NatsServer::url).collect::<Vec<_>>().join(",")
    }
}

/// Connects to a server's client port and reads its `INFO` greeting: proof it is serving.
/// A plain HTTP GET on loopback: the status code and the body.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String), TestkitError> {
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    let status =
        status.ok_or_else(|| TestkitError::Io(std::io::Error::other(format!("{path}: no status in {head:?}"))))?;
    Ok((status, body.to_owned()))
}

/// A nats-server monitoring endpoint's JSON (`varz`, `routez`, `jsz`, ...) on `port`.
pub fn monitor(port: u16, endpoint: &str) -> Result<serde_json::Value, TestkitError> {
    let (_, body) = http_get(port, &format!("/{endpoint}"))?;
    serde_json::from_str(&body).map_err(|e| TestkitError::Io(std::io::Error::other(format!("/{endpoint}: {e}"))))
}

pub fn greeting(url_port: u16, within: Duration) -> Result<String, TestkitError> {
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], url_port).into(), within)?;
    stream.set_read_timeout(Some(within))?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read(&mut byte)? == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let _ = stream.write_all(b"QUIT\r\n");
    Ok(String::from_utf8_lossy(&line).into_owned())
}

#[cfg(test)]
mod tests;
