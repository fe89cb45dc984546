//! `ticketctl import`: the shipped example history (deploy/examples/import-history.jsonl) moved
//! into a data directory, as a real process, killed half-way and resumed; then the timer runs on
//! it. The compliance report is what the history's instants imply, and nothing past at import is
//! fired.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ticket_domain::{ActorId, EventKind, RecordedEvent, TicketId};
use ticket_engine::{DataDir, Engine, EngineConfig};
use ticket_log::EventLog;
use ticket_proto::pb;
use ticket_timer::TimerConfig;

use crate::{policy_path, shipped_policy};

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/import-history.jsonl")
}

fn ticketctl(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_it-ticketctl"));
    command
        .current_dir(data_dir)
        .env_remove("TICKETD_POLICY")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--policy")
        .arg(policy_path("regional-operator.toml"));
    command
}

fn run(data_dir: &Path, args: &[&str]) -> Output {
    ticketctl(data_dir).args(args).output().unwrap()
}

fn summary(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)))
}

/// Runs the engine's timer on the data directory (no quiet time: the import is over) until it
/// has handled everything due now; returns the events it appended.
async fn run_timer(data_dir: &Path) -> Vec<RecordedEvent> {
    let mut timer = TimerConfig::new(ActorId::new("ticket-timer").unwrap());
    timer.import_quiet = chrono::TimeDelta::zero();
    let config = EngineConfig {
        timer: Some(timer),
        projector: None,
        ..EngineConfig::new(DataDir::new(data_dir), Arc::new(shipped_policy("regional-operator.toml")))
    };
    let engine = Engine::start(config).await.unwrap();
    let head = engine.log().head();
    let settled = engine.timer().unwrap().settled(ticket_log::now(), head);
    tokio::time::timeout(Duration::from_secs(60), settled).await.unwrap().unwrap();
    let appended = engine.log().read_from(head + 1, 1000).unwrap();
    engine.stop(Duration::from_secs(10)).await;
    appended
}

type ComplianceRows = Vec<(String, String, String, String, u64, u64)>;

/// The compliance arguments of March 2026, when the example history happened.
const MARCH: [&str; 6] = ["--json", "compliance", "--from", "2026-03-01T00:00:00Z", "--to", "2026-04-01T00:00:00Z"];

fn compliance(data_dir: &Path) -> ComplianceRows {
    compliance_rows(&run(data_dir, &MARCH))
}

/// The rows of `ticketctl --json compliance`'s output, sorted.
fn compliance_rows(output: &Output) -> ComplianceRows {
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let report: pb::ComplianceReport = serde_json::from_slice(&output.stdout).unwrap();
    let mut rows: Vec<_> = report
        .rows
        .iter()
        .map(|r| {
            let severity = r.severity().as_str_name().trim_start_matches("SEVERITY_").to_owned();
            let metric = r.metric().as_str_name().trim_start_matches("METRIC_").to_lowercase();
            (r.plan.clone(), severity, r.category.clone(), metric, r.met, r.breached)
        })
        .collect();
    rows.sort();
    rows
}

/// What the example history's instants imply.
fn expected_compliance() -> ComplianceRows {
    vec![
        ("advanced".into(), "A".into(), "technical".into(), "first_response".into(), 2, 1),
        ("advanced".into(), "A".into(), "technical".into(), "follow_up".into(), 2, 0),
        ("standard".into(), "B".into(), "technical".into(), "first_response".into(), 0, 1),
        ("standard".into(), "C".into(), "billing".into(), "first_response".into(), 1, 0),
    ]
}

fn open_ticket() -> TicketId {
    TicketId::parse("0195a3c0-0000-7000-8000-00000000a003").unwrap()
}

/// What the timer appended after the import: only the still-open ticket's first-response breach
/// (due 2026-03-03 14:00 Beijing time), detected at the import's instant and marked imported. No
/// warning, escalation or downgrade whose instant was past at import.
fn assert_only_the_breach_at_import(appended: &[RecordedEvent], import_instant: ticket_domain::Timestamp) {
    let names: Vec<(&str, TicketId)> = appended.iter().map(|e| (e.event.kind.name(), e.event.ticket_id)).collect();
    assert_eq!(names, vec![("sla_breached", open_ticket())]);
    let breach = &appended[0];
    let EventKind::SlaBreached { due_at, .. } = breach.event.kind else { unreachable!() };
    assert_eq!(due_at, ticket_domain::testing::utc(2026, 3, 3, 6, 0));
    assert_eq!(breach.event.occurred_at, import_instant, "detected at the import's instant");
    assert!(breach.imported);
}

/// The instant the open ticket's history was appended (its only event: the opening).
async fn import_instant(data_dir: &Path) -> ticket_domain::Timestamp {
    let log = DataDir::new(data_dir).open_log().unwrap();
    let opened = log.read_stream(open_ticket(), 1).unwrap();
    opened[0].recorded_at
}

#[tokio::test]
async fn the_example_history_imports_with_the_compliance_its_instants_imply_and_fires_nothing_past() {
    // Given the example history imported in one go
    let whole = tempfile::tempdir().unwrap();
    let output = run(whole.path(), &["--json", "import", example().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let done = summary(&output);
    assert_eq!((done["lines"].as_u64(), done["imported"].as_u64()), (Some(12), Some(12)));
    assert_eq!((done["duplicates"].as_u64(), done["refused"].as_array().map(Vec::len)), (Some(0), Some(0)));
    let imported_at = import_instant(whole.path()).await;
    // When the timer runs on it
    let appended = run_timer(whole.path()).await;
    // Then it records the still-open ticket's breach as detected at import, and nothing else
    assert_only_the_breach_at_import(&appended, imported_at);
    // And the compliance report is what the instants imply: critical tickets answered in 20
    // minutes (met), 90 minutes (breached at 11:00, recorded by the late response) and 30
    // minutes (met); the high one never answered (breached); the billing one answered on time
    let expected = expected_compliance();
    assert_eq!(compliance(whole.path()), expected);
    // And the audit verifies it: instants in order per ticket, none ahead of its append
    let audit = run(whole.path(), &["audit", "verify"]);
    assert_eq!(
        audit.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&audit.stdout),
        String::from_utf8_lossy(&audit.stderr)
    );

    // Given the same history imported by a process killed (SIGKILL) after its fifth command
    let killed = tempfile::tempdir().unwrap();
    let mut child = ticketctl(killed.path())
        .args(["import", "-"])
        .env("RUST_LOG", "ticketctl=debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines: Vec<String> = std::fs::read_to_string(example()).unwrap().lines().map(str::to_owned).collect();
    let mut stdin = child.stdin.take().unwrap();
    for line in &lines[..5] {
        writeln!(stdin, "{line}").unwrap();
    }
    stdin.flush().unwrap();
    // (it waits for more input with its standard input open: killed mid-import, whatever the pace)
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "ticketctl ended before its fifth command: {log}");
        log.push_str(&line);
        // The fifth line's command id (the log may be coloured around `line=5`).
        if line.contains("import line done") && line.contains("\"zammad-late-05\"") {
            break;
        }
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), None, "killed by a signal, not exited");
    drop(stdin);
    // When the import is run again on the whole file
    let rerun = run(killed.path(), &["--json", "import", example().to_str().unwrap()]);
    assert_eq!(rerun.status.code(), Some(0), "{}", String::from_utf8_lossy(&rerun.stderr));
    // Then the five commands already in are reported as duplicates, the rest imported
    let resumed = summary(&rerun);
    assert_eq!((resumed["imported"].as_u64(), resumed["duplicates"].as_u64()), (Some(7), Some(5)));
    assert_eq!(resumed["refused"].as_array().map(Vec::len), Some(0));
    // And the result is the same
    let imported_at = import_instant(killed.path()).await;
    assert_only_the_breach_at_import(&run_timer(killed.path()).await, imported_at);
    assert_eq!(compliance(killed.path()), expected);
}

#[tokio::test]
async fn an_agents_response_after_the_import_fires_nothing_past_at_import() {
    // Given the example history imported, its still-open ticket's first response overdue since
    // long before the import, the timer not yet run
    let dir = tempfile::tempdir().unwrap();
    let output = run(dir.path(), &["--json", "import", example().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let head = DataDir::new(dir.path()).open_log().unwrap().head();
    // When an agent responds on it
    let ticket = open_ticket().to_string();
    let respond = run(dir.path(), &["respond", &ticket, "--message", "sorry for the wait"]);
    assert_eq!(respond.status.code(), Some(0), "{}", String::from_utf8_lossy(&respond.stderr));
    // Then the breach is recorded as detected then, with its due instant, and no warning,
    // escalation or downgrade past at import is
    let log = DataDir::new(dir.path()).open_log().unwrap();
    let appended = log.read_from(head + 1, 100).unwrap();
    let names: Vec<&str> = appended.iter().map(|e| e.event.kind.name()).collect();
    assert_eq!(names, ["sla_breached", "agent_responded"]);
    let EventKind::SlaBreached { due_at, .. } = appended[0].event.kind else { unreachable!() };
    assert_eq!(due_at, ticket_domain::testing::utc(2026, 3, 3, 6, 0));
    assert!(appended.iter().all(|e| !e.imported), "live events");
    drop(log);
    // And the timer, run afterwards, has nothing left to record
    assert_eq!(run_timer(dir.path()).await, Vec::new());
}

#[test]
fn a_history_out_of_time_order_is_refused_line_by_line_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let ticket = "0195a3c0-0000-7000-8000-00000000b001";
    let actor = r#"{"kind":"ACTOR_KIND_AGENT","id":"zammad:agent-wang"}"#;
    let file = dir.path().join("history.jsonl");
    let lines = [
        format!(
            r#"{{"commandId":"h-1","ticketId":"{ticket}","actor":{actor},"issuedAt":"2026-03-02T01:00:00Z","open":{{"customer":"acme","plan":"advanced","category":"technical","title":"t","severity":"SEVERITY_A"}}}}"#
        ),
        format!(
            r#"{{"commandId":"h-2","ticketId":"{ticket}","actor":{actor},"issuedAt":"2026-03-02T00:59:00Z","recordAgentResponse":{{"message":"before the opening"}}}}"#
        ),
        format!(
            r#"{{"commandId":"h-3","ticketId":"{ticket}","actor":{actor},"issuedAt":"2100-01-01T00:00:00Z","recordAgentResponse":{{"message":"from the future"}}}}"#
        ),
        "not json".to_owned(),
        format!(
            r#"{{"commandId":"h-5","ticketId":"{ticket}","actor":{actor},"issuedAt":"2026-03-02T01:10:00Z","recordAgentResponse":{{"message":"in order"}}}}"#
        ),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let output = run(dir.path(), &["--json", "import", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "refusals make the exit code non-zero");
    let summary = summary(&output);
    assert_eq!(summary["imported"].as_u64(), Some(2));
    let refused: Vec<(u64, String)> = summary["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["line"].as_u64().unwrap(), r["code"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        refused,
        vec![
            (2, "ERROR_CODE_INVALID_COMMAND".to_owned()),
            (3, "ERROR_CODE_INVALID_COMMAND".to_owned()),
            (4, "ERROR_CODE_MALFORMED_REQUEST".to_owned()),
        ]
    );
    let reasons = summary["refused"].to_string();
    assert!(reasons.contains("time order") && reasons.contains("ahead of the service"), "{reasons}");
}

/// `ticketctl --nats-url <as user> ...` against `ticketd dev`'s server at `address`.
fn remote(address: &str, user: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_it-ticketctl"))
        .env_remove("TICKETCTL_ACTOR")
        .arg("--nats-url")
        .arg(format!("nats://{user}:{user}-dev-password@{address}"))
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_importer_moves_the_example_history_in_over_nats_and_an_agent_cannot() {
    // Given `ticketd dev` with the shipped accounts, its timer recording breaches already due at
    // import once a ticket's import has been quiet for a second
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("ticketd.toml");
    std::fs::write(&config, "[timer]\nimport_quiet_secs = 1\n").unwrap();
    let port = ticket_testkit::free_port().unwrap();
    let nats = ticket_testkit::nats_server_bin().unwrap();
    let policy = policy_path("regional-operator.toml");
    let port_arg = port.to_string();
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.path().to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
        "dev",
        "--port",
        &port_arg,
    ];
    let mut daemon = crate::daemon::Daemon::spawn(&args, data.path(), &[("NATS_SERVER_BIN", nats.as_path())]);
    daemon.wait_for("ticketd ready", Duration::from_secs(60));
    let address = format!("127.0.0.1:{port}");
    let file = example();

    // When the support tool (an agent) tries to import it
    let refused = remote(&address, "support", &["--json", "import", file.to_str().unwrap()]);
    // Then every line is refused: another helpdesk's actors and past instants are the importer's
    // alone (the actor is checked first)
    assert_eq!(refused.status.code(), Some(1), "{}", String::from_utf8_lossy(&refused.stderr));
    let refused = summary(&refused);
    assert_eq!(refused["imported"].as_u64(), Some(0));
    let codes: Vec<&str> = refused["refused"].as_array().unwrap().iter().map(|r| r["code"].as_str().unwrap()).collect();
    assert_eq!(codes, vec!["ERROR_CODE_PERMISSION_DENIED"; 12], "{refused}");

    // When the importer imports it, then again (a rerun after a kill sends the same ids)
    let imported = remote(&address, "importer", &["--json", "import", file.to_str().unwrap()]);
    assert_eq!(imported.status.code(), Some(0), "{}", String::from_utf8_lossy(&imported.stderr));
    assert_eq!(summary(&imported)["imported"].as_u64(), Some(12));
    let again = summary(&remote(&address, "importer", &["--json", "import", file.to_str().unwrap()]));
    assert_eq!((again["imported"].as_u64(), again["duplicates"].as_u64()), (Some(0), Some(12)), "{again}");

    // Then the operator's compliance report comes to what the instants imply, once the open
    // ticket's breach is detected at import
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let rows = loop {
        let rows = compliance_rows(&remote(&address, "operator", &MARCH));
        if rows == expected_compliance() || std::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(rows, expected_compliance());
    // And the open ticket's timeline holds its imported opening and the breach detected at
    // import, both marked imported: no warning or escalation whose instant was past
    let timeline = remote(&address, "operator", &["--json", "timeline", &open_ticket().to_string()]);
    assert_eq!(timeline.status.code(), Some(0), "{}", String::from_utf8_lossy(&timeline.stderr));
    let timeline: pb::Timeline = serde_json::from_slice(&timeline.stdout).unwrap();
    let entries: Vec<(&str, bool)> = timeline.entries.iter().map(|e| (e.event_type.as_str(), e.imported)).collect();
    assert_eq!(entries, vec![("opened", true), ("sla_breached", true)], "{timeline:?}");
    let (status, log) = daemon.terminate();
    assert!(status.success(), "ticketd exited with {status}:\n{}", log.join("\n"));
}
