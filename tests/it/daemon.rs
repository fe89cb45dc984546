//! `ticketd serve` and `ticketd dev` as processes: ready, serving commands over NATS, publishing
//! events, and shutting down gracefully on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use ticket_proto::pb;
use ticket_testkit::NatsServer;

use crate::policy_path;

pub(crate) struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Daemon {
    pub(crate) fn spawn(args: &[&str], cwd: &Path, env: &[(&str, &Path)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_it-ticketd"))
            .args(args)
            .current_dir(cwd)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .env("TICKETD_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines, seen: Vec::new() }
    }

    /// Waits for a log line holding `needle`; returns it.
    pub(crate) fn wait_for(&mut self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            let left = deadline.checked_duration_since(Instant::now()).unwrap_or_else(|| {
                panic!("no {needle:?} within {within:?}; ticketd logged:\n{}", self.seen.join("\n"))
            });
            if let Ok(line) = self.lines.recv_timeout(left.min(Duration::from_millis(100))) {
                self.seen.push(line);
            }
        }
    }

    /// Waits until `n` log lines hold `needle`.
    pub(crate) fn wait_for_count(&mut self, needle: &str, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.seen.iter().filter(|l| l.contains(needle)).count() < n {
            let left = deadline.checked_duration_since(Instant::now()).unwrap_or_else(|| {
                panic!("not {n} lines with {needle:?} within {within:?}; ticketd logged:\n{}", self.seen.join("\n"))
            });
            if let Ok(line) = self.lines.recv_timeout(left.min(Duration::from_millis(100))) {
                self.seen.push(line);
            }
        }
    }

    /// The log lines seen so far that hold `needle`.
    pub(crate) fn lines_with(&self, needle: &str) -> Vec<String> {
        self.seen.iter().filter(|l| l.contains(needle)).cloned().collect()
    }

    /// Sends `signal` (`-STOP`, `-CONT`, ...) to the process.
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(signal).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success(), "kill {signal}");
    }

    /// SIGKILL, as a crash: nothing is flushed or drained.
    pub(crate) fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub(crate) fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "ticketd did not stop within 30 s");
            while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(20)) {
                self.seen.push(line);
            }
        };
        let rest: Vec<String> = self.lines.try_iter().collect();
        self.seen.extend(rest);
        (status, std::mem::take(&mut self.seen))
    }
}

/// The `ticketd stopped` line says every appended event was published, and nothing failed on the
/// way.
fn assert_drained(log: &[String]) {
    let stopped = log
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["fields"]["message"] == "ticketd stopped")
        .unwrap_or_else(|| panic!("no stop line:\n{}", log.join("\n")));
    assert_eq!(stopped["fields"]["head"], stopped["fields"]["published"], "the outbox was not drained: {stopped}");
    // A plain nats-server is one account, which these tests tell ticketd to trust: it says so.
    let trusting = |l: &&String| l.contains("api.unstamped");
    let warnings: Vec<&String> = log.iter().filter(|l| l.contains("\"level\":\"WARN\"") && !trusting(l)).collect();
    assert!(warnings.is_empty(), "ticketd warned: {warnings:?}");
}

impl Daemon {
    /// Waits, up to `within`, for the process to exit by itself.
    pub(crate) fn exited(mut self, within: Duration) -> (std::process::ExitStatus, Vec<String>) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "ticketd did not exit within {within:?}:\n{}", self.seen.join("\n"));
            while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(20)) {
                self.seen.push(line);
            }
        };
        let rest: Vec<String> = self.lines.iter().collect();
        self.seen.extend(rest);
        (status, std::mem::take(&mut self.seen))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn open_request() -> Vec<u8> {
    use ticket_domain::testing::{agent, open, utc};
    let mut command =
        pb::Command::from(&agent(utc(2026, 11, 21, 0, 0), open("advanced", "technical", ticket_domain::Severity::A)));
    command.ticket_id.clear();
    command.command_id.clear();
    command.issued_at = None;
    prost::Message::encode_to_vec(&command)
}

/// Opens a ticket through the typed client, ticketd naming it; the position of its first event.
async fn open_a_ticket(url: &str) -> u64 {
    let client = ticket_client::Client::new(async_nats::connect(url).await.unwrap());
    let accepted = client.open(&crate::client::agent(), None, crate::client::opening("advanced")).await.unwrap();
    accepted.events[0].position
}

/// Messages in the TICKETS stream; 0 while the publisher has not created it yet.
async fn stream_messages(url: &str) -> u64 {
    messages_in(async_nats::connect(url).await.unwrap()).await
}

/// Messages in the TICKETS stream as `client` sees it; 0 while the publisher has not created it.
async fn messages_in(client: async_nats::Client) -> u64 {
    match jetstream::new(client).get_stream("TICKETS").await {
        Ok(stream) => stream.get_info().await.unwrap().state.messages,
        Err(e) if e.to_string().contains("stream not found") => 0,
        Err(e) => panic!("{e}"),
    }
}

/// `ticketd serve` on `server`, with its data in `data`, once it says it is ready.
pub(crate) fn serve(server: &NatsServer, data: &Path) -> Daemon {
    serve_on(&server.url(), data)
}

/// `ticketd serve` on the nats-server at `url`, once it says it is ready.
pub(crate) fn serve_on(url: &str, data: &Path) -> Daemon {
    let mut daemon = spawn_serve(url, &[], data);
    daemon.wait_for("ticketd ready", Duration::from_secs(30));
    daemon
}

/// `ticketd serve` on `url`, with more flags, its data in `data`.
pub(crate) fn spawn_serve(url: &str, flags: &[&str], data: &Path) -> Daemon {
    // A plain nats-server is one account: ticketd trusts it (the shipped accounts are tested in
    // identity.rs).
    let flags = [&["--api-unstamped", "trust"], flags].concat();
    spawn_serve_with(url, &policy_path("regional-operator.toml"), &flags, data)
}

/// `ticketd serve` on `url` with `policy`, `flags` and its data in `data`.
pub(crate) fn spawn_serve_with(url: &str, policy: &Path, flags: &[&str], data: &Path) -> Daemon {
    let mut args = vec!["--nats-url", url, "--data-dir", data.to_str().unwrap(), "--policy", policy.to_str().unwrap()];
    args.extend_from_slice(flags);
    args.push("serve");
    Daemon::spawn(&args, data, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_nats_down_stops_within_the_shutdown_deadline() {
    // Given ticketd serving with a 2 s shutdown deadline, a ticket opened, then its nats-server
    // killed
    let mut server = NatsServer::start().unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("ticketd.toml");
    std::fs::write(&config, "[shutdown]\ndeadline_secs = 2\n").unwrap();
    let mut daemon = spawn_serve(&server.url(), &["--config", config.to_str().unwrap()], data.path());
    daemon.wait_for("ticketd ready", Duration::from_secs(30));
    server.stop();
    daemon.wait_for("NATS connection lost", Duration::from_secs(30));
    // When it is told to stop
    let started = Instant::now();
    let (status, log) = daemon.terminate();
    // Then it stops by itself within its deadline, without the watchdog's forced exit
    assert!(status.success(), "ticketd exited with {status}:\n{}", log.join("\n"));
    let stopped = log
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["fields"]["message"] == "ticketd stopped")
        .unwrap_or_else(|| panic!("no stop line:\n{}", log.join("\n")));
    let took = stopped["fields"]["took_ms"].as_u64().unwrap();
    assert!(took <= 2_000 + 100, "the shutdown took {took} ms of its 2 s deadline:\n{}", log.join("\n"));
    eprintln!("stopped {:?} after SIGTERM with NATS down (shutdown {took} ms)", started.elapsed());
}

/// The JSON log line whose message is `message`.
fn logged(log: &[String], message: &str) -> Option<serde_json::Value> {
    log.iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["fields"]["message"] == message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_long_rebuild_stops_within_the_deadline_and_the_next_start_resumes() {
    // Given a log of a few thousand events and no read models (a rebuild from nothing), and
    // ticketd flushing them every 5 events (a long rebuild: one sync per 5 events)
    let (engine, _) = crate::projections::busy_log(1000).await;
    let head = ticket_log::EventLog::head(engine.service.log());
    let crate::timers::Engine { dir, timer, service, .. } = engine;
    if let Some(timer) = timer {
        timer.stop().await;
    }
    drop(service);
    let data = dir.path();
    let _ = std::fs::remove_file(ticket_engine::DataDir::new(data).state());
    let server = NatsServer::start().unwrap();
    let config = data.join("ticketd.toml");
    std::fs::write(
        &config,
        "[shutdown]\ndeadline_secs = 3\n[timer]\nenabled = false\n[projections]\ncatch_up_flush_events = 5\ncatch_up_sync_events = 5\n",
    )
    .unwrap();
    let flags = ["--config", config.to_str().unwrap()];
    let mut daemon = spawn_serve(&server.url(), &flags, data);
    daemon.wait_for("ticketd ready", Duration::from_secs(60));

    // When it is told to stop while it rebuilds
    let (status, log) = daemon.terminate();

    // Then it stops cleanly within its deadline, the rebuild stopped part way with what it
    // applied flushed
    assert!(status.success(), "ticketd exited with {status}:\n{}", log.join("\n"));
    let took = logged(&log, "ticketd stopped").and_then(|l| l["fields"]["took_ms"].as_u64());
    let took = took.unwrap_or_else(|| panic!("no stop line:\n{}", log.join("\n")));
    assert!(took <= 3_000 + 100, "the shutdown took {took} ms of its 3 s deadline:\n{}", log.join("\n"));
    let stopped = logged(&log, "projections stopped catching up (shutdown); what they applied is flushed")
        .unwrap_or_else(|| panic!("the rebuild was not stopped part way:\n{}", log.join("\n")));
    let position = stopped["fields"]["position"].as_u64().unwrap();
    assert!(position < head, "stopped at {position} of {head}");
    eprintln!("the rebuild stopped at {position} of {head} after SIGTERM (shutdown {took} ms)");

    // And the next start resumes from there, not from the beginning
    let mut daemon = spawn_serve(&server.url(), &["--config", config.to_str().unwrap()], data);
    let caught_up = daemon.wait_for("projections caught up with the log", Duration::from_secs(120));
    let caught_up: serde_json::Value = serde_json::from_str(&caught_up).unwrap();
    assert_eq!(caught_up["fields"]["from"].as_u64(), Some(position), "{caught_up}");
    assert_eq!(caught_up["fields"]["position"].as_u64(), Some(head), "{caught_up}");
    let (status, log) = daemon.terminate();
    assert!(status.success(), "ticketd exited with {status}:\n{}", log.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticketd_serve_takes_commands_publishes_and_stops_gracefully() {
    let server = NatsServer::start().unwrap();
    let data = tempfile::tempdir().unwrap();
    let daemon = serve(&server, data.path());
    assert_eq!(open_a_ticket(&server.url()).await, 1);
    let (status, log) = daemon.terminate();
    assert!(status.success(), "ticketd exited with {status}:\n{}", log.join("\n"));
    assert_drained(&log);
    assert_eq!(stream_messages(&server.url()).await, 1, "the event was published before ticketd stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticketd_dev_starts_its_own_nats_server_from_any_directory() {
    let data = tempfile::tempdir().unwrap();
    let (port, monitor) = (ticket_testkit::free_port().unwrap(), ticket_testkit::free_port().unwrap());
    let nats = ticket_testkit::nats_server_bin().unwrap();
    let (port_arg, monitor_arg) = (port.to_string(), monitor.to_string());
    let args =
        ["--data-dir", data.path().to_str().unwrap(), "dev", "--port", &port_arg, "--nats-monitor-port", &monitor_arg];
    // Run from an empty directory: the dev NATS config and the policy are the embedded ones.
    let empty = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::spawn(&args, empty.path(), &[("NATS_SERVER_BIN", nats.as_path())]);
    daemon.wait_for("ticketd ready", Duration::from_secs(60));
    let started = daemon.wait_for("local nats-server with JetStream started", Duration::ZERO);
    assert!(started.contains("embedded deploy/nats/dev.conf"), "{started}");
    let policy = daemon.wait_for("SLA policy loaded", Duration::ZERO);
    assert!(policy.contains("embedded deploy/policies/regional-operator.toml"), "{policy}");
    let varz = ticket_testkit::monitor(monitor, "varz").unwrap();
    assert_eq!(varz["jetstream"]["config"]["sync_always"], true, "the local JetStream fsyncs every write: {varz}");
    // The dev users log in with their dev passwords: the support tool opens a ticket (recorded as
    // its identity), and a downstream system of EVENTS sees the event.
    let users = daemon.wait_for("dev user", Duration::ZERO);
    assert!(users.contains(&format!("nats://support:support-dev-password@127.0.0.1:{port}")), "{users}");
    let support = ticket_client::Client::new(
        async_nats::ConnectOptions::with_user_and_password("support".into(), "support-dev-password".into())
            .connect(format!("nats://127.0.0.1:{port}"))
            .await
            .unwrap(),
    );
    let as_support = ticket_client::Issue::by(ticket_domain::Actor {
        kind: ticket_domain::ActorKind::Agent,
        id: ticket_domain::ActorId::new("support").unwrap(),
    });
    let accepted = support.open(&as_support, None, crate::client::opening("advanced")).await.unwrap();
    assert_eq!(accepted.events[0].position, 1);
    let refused = support.open(&crate::client::agent(), None, crate::client::opening("advanced")).await;
    assert_eq!(refused.unwrap_err().code(), Some(pb::ErrorCode::PermissionDenied));
    let billing = async_nats::ConnectOptions::with_user_and_password("billing".into(), "billing-dev-password".into())
        .connect(format!("nats://127.0.0.1:{port}"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while messages_in(billing.clone()).await < 1 {
        assert!(Instant::now() < deadline, "the event never reached the local JetStream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, log) = daemon.terminate();
    assert!(status.success(), "ticketd exited with {status}:\n{}", log.join("\n"));
    assert_drained(&log);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the local nats-server outlived ticketd");
    assert!(data.path().join("nats").is_dir() && data.path().join("log").is_dir());
}

/// Given `ticketd dev` that has just started its nats-server, when it is told to stop before it
/// is ready, then it stops gracefully once ready, and takes its nats-server with it (the signal
/// met its default action before, which killed ticketd and left the nats-server running).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticketd_dev_told_to_stop_while_starting_stops_gracefully_with_its_nats_server() {
    let data = tempfile::tempdir().unwrap();
    let port = ticket_testkit::free_port().unwrap();
    let nats = ticket_testkit::nats_server_bin().unwrap();
    let port_arg = port.to_string();
    let args = ["--data-dir", data.path().to_str().unwrap(), "dev", "--port", &port_arg];
    let empty = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::spawn(&args, empty.path(), &[("NATS_SERVER_BIN", nats.as_path())]);
    daemon.wait_for("local nats-server with JetStream started", Duration::from_secs(60));
    let (status, log) = daemon.terminate();
    assert!(status.success(), "ticketd dev exited with {status}:\n{}", log.join("\n"));
    assert!(log.iter().any(|line| line.contains("\"signal\":\"SIGTERM\"")), "{}", log.join("\n"));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the local nats-server outlived ticketd dev");
}

fn ticketctl_remote(url: &str, args: &[&str]) -> std::process::Output {
    // A plain nats-server stamps no identity (ticketd trusts it): the actor is named.
    Command::new(env!("CARGO_BIN_EXE_it-ticketctl"))
        .arg("--nats-url")
        .arg(url)
        .args(args)
        .env("TICKETCTL_ACTOR", "agent:ticketctl")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_lifecycle_over_nats_through_ticketctl() {
    let server = NatsServer::start().unwrap();
    let data = tempfile::tempdir().unwrap();
    let daemon = serve(&server, data.path());
    let url = server.url();
    let code = |o: &std::process::Output| o.status.code().unwrap_or(-1);

    let open = ["open", "--customer", "acme", "--category", "technical", "--severity", "A", "--title", "mail is down"];
    let refused = ticketctl_remote(&url, &[&open[..], &["--plan", "standard"]].concat());
    assert_eq!(code(&refused), 1);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("ERROR_CODE_SEVERITY_NOT_IN_CONTRACT"));

    let opened = ticketctl_remote(&url, &[&open[..], &["--plan", "advanced", "--json"]].concat());
    assert_eq!(code(&opened), 0, "{}", String::from_utf8_lossy(&opened.stderr));
    let accepted: pb::CommandAccepted = serde_json::from_slice(&opened.stdout).unwrap();
    let ticket = accepted.ticket_id;
    for step in [
        vec!["ask", &ticket, "--request", "logs please"],
        vec!["--actor", "customer:acme-admin", "reply", &ticket, "--message", "attached"],
        vec!["escalate", &ticket, "--tier", "tier-2", "--reason", "hard"],
        vec!["resolve", &ticket, "--resolution", "fixed"],
    ] {
        let out = ticketctl_remote(&url, &step);
        assert_eq!(code(&out), 0, "{step:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(code(&ticketctl_remote(&url, &["resolve", &ticket, "--resolution", "again"])), 1);
    let state: serde_json::Value =
        serde_json::from_slice(&ticketctl_remote(&url, &["state", &ticket, "--json"]).stdout).unwrap();
    assert_eq!(state["status"], "TICKET_STATUS_RESOLVED");
    assert_eq!(state["tier"], "tier-2");
    let open_again = ticketctl_remote(&url, &[&open[..], &["--plan", "advanced"]].concat());
    assert_eq!(code(&open_again), 0);
    let tickets: serde_json::Value =
        serde_json::from_slice(&ticketctl_remote(&url, &["tickets", "--customer", "acme", "--all", "--json"]).stdout)
            .unwrap();
    assert_eq!(tickets["tickets"].as_array().map(Vec::len), Some(2));
    let board = ticketctl_remote(&url, &["board"]);
    assert_eq!(code(&board), 0);
    assert!(
        String::from_utf8_lossy(&board.stdout).contains("1 open tickets"),
        "{}",
        String::from_utf8_lossy(&board.stdout)
    );

    let (status, log) = daemon.terminate();
    assert!(status.success(), "{}", log.join("\n"));
    assert_drained(&log);
    assert_eq!(stream_messages(&url).await, 6, "every event was published:\n{}", log.join("\n"));
    let nobody = ticketctl_remote(&url, &["state", &ticket]);
    assert_eq!(code(&nobody), 3);
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("is it running?"));
}

/// A severity A ticket was opened two hours ago while no ticketd ran: its first response was
/// due an hour ago. `ticketd serve` starts on the real clock, its timer fires the breach at once
/// with both instants, and a paging system on `tickets.sla.breached.A` receives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_passed_while_ticketd_was_down_fires_at_its_start_and_pages() {
    use futures::StreamExt;
    use ticket_domain::testing::{agent, open, ticket_id};

    let server = NatsServer::start().unwrap();
    let data = tempfile::tempdir().unwrap();
    let opened_at = ticket_log::now() - chrono::TimeDelta::hours(2);
    {
        // The engine without its timer (ticketd is down), to write the ticket.
        let policy = std::sync::Arc::new(crate::shipped_policy("regional-operator.toml"));
        let layout = ticket_engine::DataDir::new(data.path());
        let config =
            ticket_engine::EngineConfig { projector: None, ..ticket_engine::EngineConfig::new(layout, policy) };
        let engine = ticket_engine::Engine::start(config).await.unwrap();
        let command = agent(opened_at, open("advanced", "technical", ticket_domain::Severity::A));
        engine.service().execute(command.into()).await.unwrap();
        assert!(engine.stop(Duration::from_secs(5)).await.clean);
    }
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut paging = client.subscribe("tickets.sla.breached.A").await.unwrap();
    client.flush().await.unwrap();

    let started = ticket_log::now();
    let daemon = serve(&server, data.path());
    let message = tokio::time::timeout(Duration::from_secs(30), paging.next())
        .await
        .expect("no page within 30 s")
        .expect("the subscription ended");
    let envelope = ticket_proto::decode_envelope(&message.payload).unwrap();
    assert_eq!(envelope.event.ticket_id, ticket_id());
    let ticket_domain::EventKind::SlaBreached { due_at, severity, .. } = envelope.event.kind else {
        panic!("not a breach: {:?}", envelope.event.kind)
    };
    assert_eq!(severity, ticket_domain::Severity::A);
    assert_eq!(due_at, opened_at + chrono::TimeDelta::hours(1), "the original due instant");
    assert!(envelope.event.occurred_at >= started, "recorded at its detection, after the start");
    assert_eq!(envelope.actor.id.as_str(), "ticket-timer");

    let (status, log) = daemon.terminate();
    assert!(status.success(), "ticketd exited with {status}:\n{}", log.join("\n"));
    assert_drained(&log);
}

/// A nats-server whose config file (in `dir`) holds `authorization`.
fn server_requiring(dir: &Path, authorization: &str) -> NatsServer {
    let file = dir.join("auth.conf");
    std::fs::write(&file, format!("authorization {{\n{authorization}\n}}\n")).unwrap();
    NatsServer::start_with(ticket_testkit::ServerConfig { config_file: Some(file), ..Default::default() }).unwrap()
}

/// The ticket id a `ticketctl open --json` printed.
fn opened_ticket(out: &std::process::Output) -> String {
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<pb::CommandAccepted>(&out.stdout).unwrap().ticket_id
}

const OPEN: [&str; 10] =
    ["open", "--customer", "acme", "--plan", "advanced", "--category", "technical", "--severity", "A", "--title"];

/// `ticketd serve --nats-url nats://user:password@host` (as deploy/compose.yaml gives it) logs
/// in with those credentials and never shows the password; so does ticketctl; an NKey seed file
/// logs in too; a wrong password stops the start with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticketd_and_ticketctl_log_in_with_a_password_in_the_url_or_an_nkey() {
    let dir = tempfile::tempdir().unwrap();
    let nkey = nkeys::KeyPair::new_user();
    let seed_file = dir.path().join("ticketd.nk");
    std::fs::write(&seed_file, format!("{}\n", nkey.seed().unwrap())).unwrap();
    let users =
        format!("users: [\n{{ user: ticketd, password: \"s3cret/pa55\" }}\n{{ nkey: {} }}\n]", nkey.public_key());
    let server = server_requiring(dir.path(), &users);
    let port = server.port();
    let url = format!("nats://ticketd:s3cret%2Fpa55@127.0.0.1:{port}");
    let data = tempfile::tempdir().unwrap();

    // Without credentials, nothing gets in: the server does require them.
    assert!(async_nats::connect(server.url()).await.is_err());

    let mut daemon = spawn_serve(&url, &[], data.path());
    daemon.wait_for("ticketd ready", Duration::from_secs(30));
    let ticket =
        opened_ticket(&ticketctl_remote(&url, &[&OPEN[..], &["down", "--json", "--command-id", "c-1"]].concat()));
    // A retried `open` names the ticket it opened (ticketctl mints another ticket id each time).
    let again =
        opened_ticket(&ticketctl_remote(&url, &[&OPEN[..], &["down", "--json", "--command-id", "c-1"]].concat()));
    assert_eq!(again, ticket);
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{}", log.join("\n"));
    assert_drained(&log);
    assert!(log.iter().all(|l| !l.contains("s3cret")), "the password was logged:\n{}", log.join("\n"));
    assert!(
        log.iter().any(|l| l.contains("ticketd ready") && l.contains(&format!("nats://ticketd:***@127.0.0.1:{port}")))
    );

    // The NKey seed: the daemon and ticketctl.
    let plain = server.url();
    let seed = seed_file.to_str().unwrap();
    let mut daemon = spawn_serve(&plain, &["--nats-nkey-seed-file", seed], data.path());
    daemon.wait_for("ticketd ready", Duration::from_secs(30));
    let out = ticketctl_remote(&plain, &["--nats-nkey-seed-file", seed, "state", &ticket, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{}", log.join("\n"));
    assert!(log.iter().any(|l| l.contains("ticketd ready") && l.contains(&nkey.public_key())));

    // A wrong password: a clear error, the process stops, and the password is not shown.
    let wrong = format!("nats://ticketd:not-the-pa55word@127.0.0.1:{port}");
    let (status, log) = spawn_serve(&wrong, &[], data.path()).exited(Duration::from_secs(30));
    assert!(!status.success());
    let text = log.join("\n");
    assert!(text.contains("refused the login with user ticketd"), "{text}");
    assert!(!text.contains("not-the-pa55word"), "{text}");
    let refused = ticketctl_remote(&wrong, &["state", &ticket]);
    assert_eq!(refused.status.code(), Some(3));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("authorization violation") && !said.contains("not-the-pa55word"), "{said}");
}

/// A token in the URL (`nats://token@host`) logs in, and never shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticketd_and_ticketctl_log_in_with_a_token_in_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_requiring(dir.path(), "token: \"t0ken-s3cret\"");
    let url = format!("nats://t0ken-s3cret@127.0.0.1:{}", server.port());
    let data = tempfile::tempdir().unwrap();
    let mut daemon = spawn_serve(&url, &[], data.path());
    daemon.wait_for("ticketd ready", Duration::from_secs(30));
    opened_ticket(&ticketctl_remote(&url, &[&OPEN[..], &["down", "--json"]].concat()));
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{}", log.join("\n"));
    assert_drained(&log);
    assert!(log.iter().all(|l| !l.contains("t0ken-s3cret")), "the token was logged:\n{}", log.join("\n"));

    // A URL that cannot be used is bad usage, and its secret is not shown either.
    let unusable = "http://t0ken-s3cret@127.0.0.1:4222";
    let (status, log) = spawn_serve(unusable, &[], data.path()).exited(Duration::from_secs(30));
    assert_eq!(status.code(), Some(2));
    assert!(log.iter().all(|l| !l.contains("t0ken-s3cret")) && log.join("\n").contains("--nats-url"), "{log:?}");
    let out = ticketctl_remote(unusable, &["board"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("t0ken-s3cret"));
}
