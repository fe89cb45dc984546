//! Nothing acknowledged is lost, nothing is duplicated, tampering is found: on real sled, with a
//! writer process killed by SIGKILL.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ticket_domain::{CommandBody, CommandId, Policy, Severity};
use ticket_log::EventLog;
use ticket_log_sled::{SledConfig, SledLog};
use ticket_service::audit::audit;
use ticket_service::{CommandService, ServiceConfig};

use crate::{policy_path, shipped_policy};

const CYCLES: u64 = 50;

/// A small xorshift generator: the crash moments are random, and the seed is printed so a
/// failing run can be repeated with `CRASH_SEED`.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

pub(crate) fn seed() -> u64 {
    std::env::var("CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1
    })
}

fn open_log(path: &Path) -> SledLog {
    // The crash writer's tiers (`tests/bin/it-crash-writer.rs`).
    let mut config = SledConfig::new(path);
    config.hot_events = 64;
    config.seal_chunk = 16;
    SledLog::open(config).unwrap()
}

/// Runs the writer until `kill_after` has passed since it was ready, kills it with SIGKILL, and
/// returns the acknowledgements it printed.
fn run_and_kill(log_dir: &Path, cycle: u64, kill_after: Duration) -> Vec<(String, u64, u64)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_it-crash-writer"))
        .arg(log_dir)
        .arg(policy_path("regional-operator.toml"))
        .arg(cycle.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line.starts_with("READY") => break,
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(status) = child.try_wait().unwrap() {
                    let mut err = String::new();
                    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
                    panic!("writer exited before it was ready ({status}): {err}");
                }
                assert!(Instant::now() < deadline, "writer not ready within a minute");
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("writer closed its output before it was ready"),
        }
    }
    let killed_at = Instant::now() + kill_after;
    let mut lines = Vec::new();
    while let Some(left) = killed_at.checked_duration_since(Instant::now()) {
        if let Ok(line) = rx.recv_timeout(left) {
            lines.push(line);
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    lines
        .iter()
        .filter_map(|l| {
            let mut parts = l.strip_prefix("ACK ")?.split(' ');
            Some((parts.next()?.to_owned(), parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        })
        .collect()
}

/// Every acknowledged command present exactly once at its positions, positions gapless, the
/// hash chain intact, every command's decision reproducible.
fn check(log_dir: &Path, acked: &HashMap<String, (u64, u64)>, policy: &Policy) {
    let log = open_log(log_dir);
    let head = log.head();
    let chain = log.verify_chain(|_, _| {}).unwrap();
    assert_eq!(chain.broken, None, "hash chain broken after a crash");
    let positions: Vec<u64> = log.read_from(1, usize::MAX).unwrap().iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=head).collect::<Vec<_>>(), "positions are not gapless");
    for (id, (first, last)) in acked {
        let record = log.command(&CommandId::new(id.clone()).unwrap()).unwrap();
        let record = record.unwrap_or_else(|| panic!("acknowledged command {id} is lost"));
        assert_eq!((record.first_position, record.last_position), (*first, *last), "command {id} moved");
    }
    let commands = log.commands_from(1, usize::MAX).unwrap();
    let distinct: HashSet<&CommandId> = commands.iter().map(|c| &c.command.id).collect();
    assert_eq!(distinct.len(), commands.len(), "a command was appended twice");
    let report = audit(&log, std::slice::from_ref(policy), |_, _, _| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.replayed, report.commands);
}

#[test]
fn acknowledged_commands_survive_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let policy = shipped_policy("regional-operator.toml");
    let seed = seed();
    eprintln!("crash test seed {seed} (set CRASH_SEED to repeat)");
    let mut rng = Rng(seed);
    let mut acked: HashMap<String, (u64, u64)> = HashMap::new();
    for cycle in 0..CYCLES {
        let kill_after = Duration::from_millis(rng.next() % 120);
        for (id, first, last) in run_and_kill(&log_dir, cycle, kill_after) {
            assert!(acked.insert(id.clone(), (first, last)).is_none(), "{id} acknowledged twice");
        }
        check(&log_dir, &acked, &policy);
    }
    let log = open_log(&log_dir);
    let (head, sealed) = (log.head(), log.sealed());
    eprintln!(
        "{} commands acknowledged across {CYCLES} kills, all present once; {head} events in the log, {sealed} of them sealed",
        acked.len()
    );
    assert!(acked.len() > 100, "only {} commands were acknowledged across {CYCLES} cycles", acked.len());
    assert!(sealed > 0, "nothing was moved into the archive, so the kills never met a move");
}

fn service(log: &SledLog) -> CommandService<SledLog> {
    CommandService::new(
        log.clone(),
        Arc::new(shipped_policy("regional-operator.toml")),
        Some(Arc::new(log.snapshots())),
        ServiceConfig::default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_on_one_ticket_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(&dir.path().join("log"));
    let service = service(&log);
    let at = ticket_domain::testing::beijing(2026, 11, 21, 3, 0);
    service
        .execute(
            ticket_domain::testing::agent(at, ticket_domain::testing::open("advanced", "technical", Severity::A))
                .into(),
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let service = service.clone();
        let mut command = ticket_domain::testing::command(
            ticket_domain::ActorKind::Customer,
            "acme-admin",
            at,
            CommandBody::RecordCustomerReply { message: ticket_domain::testing::text("more details") },
        );
        command.id = CommandId::new(format!("reply-{i}")).unwrap();
        tasks.push(tokio::spawn(async move { service.execute(command.into()).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let versions: Vec<u64> =
        log.read_stream(ticket_domain::testing::ticket_id(), 1).unwrap().iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=65).collect::<Vec<_>>());
    assert_eq!(log.head(), 65);
}

#[tokio::test]
async fn the_same_command_id_is_appended_once_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let open_command = ticket_domain::testing::agent(
        ticket_domain::testing::beijing(2026, 11, 21, 3, 0),
        ticket_domain::testing::open("advanced", "technical", Severity::A),
    );
    let first = {
        let log = open_log(&path);
        let first = service(&log).execute(open_command.clone().into()).await.unwrap();
        let again = service(&log).execute(open_command.clone().into()).await.unwrap();
        assert_eq!((again.duplicate, &again.events), (true, &first.events));
        first
    };
    let log = open_log(&path);
    let later = service(&log).execute(open_command.into()).await.unwrap();
    assert_eq!((later.duplicate, later.events), (true, first.events));
    assert_eq!(log.head(), 1);
}

/// Produces a small log in `data_dir/log`: a critical ticket through breach, escalation,
/// information request, reply, split and resolution.
pub async fn populate(data_dir: &Path) -> (ticket_domain::TicketId, ticket_domain::TicketId) {
    use chrono::TimeDelta;
    use ticket_domain::testing::*;
    let log = open_log(&data_dir.join("log"));
    let service = service(&log);
    let at = beijing(2026, 11, 21, 3, 0);
    let due = at + TimeDelta::hours(1);
    let commands = [
        agent(at, open("advanced", "technical", Severity::A)),
        timer(
            due,
            CommandBody::RecordSlaBreach {
                metric: ticket_domain::Metric::FirstResponse,
                cycle: 1,
                due_at: due,
                at_import: false,
            },
        ),
        agent(due + TimeDelta::minutes(5), CommandBody::RequestCustomerInfo { request: text("send the logs") }),
        command(
            ticket_domain::ActorKind::Customer,
            "acme-admin",
            due + TimeDelta::minutes(30),
            CommandBody::RecordCustomerReply { message: text("attached") },
        ),
        agent(
            due + TimeDelta::minutes(40),
            CommandBody::Split(ticket_domain::SplitTicket {
                new_ticket: other_ticket_id(),
                category: ticket_domain::CategoryId::new("billing").unwrap(),
                severity: Severity::B,
                title: text("credit for the outage"),
                description: text(""),
            }),
        ),
        agent(due + TimeDelta::hours(2), CommandBody::Resolve { resolution: text("certificate renewed") }),
    ];
    for c in commands {
        service.execute(c.into()).await.unwrap();
    }
    (ticket_id(), other_ticket_id())
}

pub fn tamper(log_dir: &Path, position: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let db = loop {
        match sled::Config::new().path(log_dir).open() {
            Ok(db) => break db,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    };
    let tree = db.open_tree("log").unwrap();
    let key = ticket_log_sled::keys::positional(ticket_log_sled::keys::EVENT, position);
    let mut bytes = tree.get(key).unwrap().unwrap().to_vec();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x20;
    tree.insert(key, bytes).unwrap();
    db.flush().unwrap();
}
