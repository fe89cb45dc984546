//! `ticketctl` local mode, run as a process on a data directory the engine wrote.

use std::path::Path;
use std::process::{Command, Output};

use prost::Message;
use ticket_proto::pb;

use crate::durability::{populate, tamper};
use crate::policy_path;

fn ticketctl(data_dir: &Path, args: &[&str]) -> Output {
    // Run from the data directory, so no default policy file is found: the tests say which.
    Command::new(env!("CARGO_BIN_EXE_it-ticketctl"))
        .current_dir(data_dir)
        .env_remove("TICKETD_POLICY")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

#[tokio::test]
async fn history_state_audit_and_export_on_a_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (ticket, child) = populate(dir.path()).await;
    let (ticket, child) = (ticket.to_string(), child.to_string());

    let history = ticketctl(dir.path(), &["history", &ticket]);
    assert_eq!(code(&history), 0, "{}", String::from_utf8_lossy(&history.stderr));
    for name in ["opened", "sla_breached", "escalated", "customer_info_requested", "linked", "resolved"] {
        assert!(stdout(&history).contains(name), "history lacks {name}:\n{}", stdout(&history));
    }
    let history: Vec<pb::EventEnvelope> =
        serde_json::from_slice(&ticketctl(dir.path(), &["history", &ticket, "--json"]).stdout).unwrap();
    let versions: Vec<u64> = history.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());

    let at_open: serde_json::Value =
        serde_json::from_slice(&ticketctl(dir.path(), &["state", &ticket, "--at", "1", "--json"]).stdout).unwrap();
    assert_eq!(at_open["severity"], "SEVERITY_A");
    assert_eq!(at_open["status"], "TICKET_STATUS_OPEN");
    assert_eq!(at_open["position"], "1");
    let midway = ticketctl(dir.path(), &["state", &ticket, "--at", "2026-11-21T04:10:00+08:00", "--json"]);
    let midway: serde_json::Value = serde_json::from_slice(&midway.stdout).unwrap();
    assert_eq!(midway["status"], "TICKET_STATUS_AWAITING_CUSTOMER");
    assert_eq!(midway["team"], "duty-manager");
    let now = ticketctl(dir.path(), &["state", &ticket]);
    assert_eq!(code(&now), 0);
    assert!(stdout(&now).contains("resolved"), "{}", stdout(&now));
    assert_eq!(code(&ticketctl(dir.path(), &["state", &ticket, "--at", "2026-11-20T00:00:00Z"])), 1);
    assert_eq!(code(&ticketctl(dir.path(), &["state", &child])), 0);

    let audit = ticketctl(
        dir.path(),
        &["audit", "verify", "--policy", policy_path("regional-operator.toml").to_str().unwrap()],
    );
    assert_eq!(code(&audit), 0, "{}{}", stdout(&audit), String::from_utf8_lossy(&audit.stderr));
    assert!(stdout(&audit).contains("intact"), "{}", stdout(&audit));
    let audit: serde_json::Value = serde_json::from_slice(
        &ticketctl(
            dir.path(),
            &["audit", "verify", "--json", "--policy", policy_path("regional-operator.toml").to_str().unwrap()],
        )
        .stdout,
    )
    .unwrap();
    assert_eq!(audit["ok"], true);
    assert_eq!(audit["replayed"], audit["commands"]);
    // Without --policy, the embedded default policy (the same file) re-runs every decision.
    let embedded: serde_json::Value =
        serde_json::from_slice(&ticketctl(dir.path(), &["audit", "verify", "--json"]).stdout).unwrap();
    assert_eq!(embedded["replayed"], audit["commands"]);
    // Under another policy only, the decisions made under this one are not re-run.
    let other = policy_path("professional.toml");
    let unreplayed: serde_json::Value = serde_json::from_slice(
        &ticketctl(dir.path(), &["audit", "verify", "--json", "--policy", other.to_str().unwrap()]).stdout,
    )
    .unwrap();
    assert_eq!(unreplayed["replayed"], 0);
    assert_eq!(unreplayed["not_replayed"]["regional-operator@2026-12-01.1"], audit["commands"]);

    let file = dir.path().join("export.jsonl");
    let export = ticketctl(
        dir.path(),
        &["export", "--format", "jsonl", "--from", "2", "--to", "4", "-o", file.to_str().unwrap()],
    );
    assert_eq!(code(&export), 0, "{}", String::from_utf8_lossy(&export.stderr));
    let lines: Vec<pb::EventEnvelope> =
        std::fs::read_to_string(&file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().map(|e| e.position).collect::<Vec<_>>(), [2, 3, 4]);

    let export = ticketctl(dir.path(), &["export", "--format", "protobuf"]);
    let mut bytes = export.stdout.as_slice();
    let mut positions = Vec::new();
    while !bytes.is_empty() {
        let envelope = pb::EventEnvelope::decode_length_delimited(&mut bytes).unwrap();
        positions.push(ticket_proto::decode_envelope(&envelope.encode_to_vec()).unwrap().position);
    }
    assert_eq!(positions, (1..=positions.len() as u64).collect::<Vec<_>>());
    // Opened; the two warnings and the escalation of the second (settled with the breach, at
    // their instants); breach and escalation; request; reply; split (link, child opened, child
    // link); resolved.
    assert_eq!(positions.len(), 12);

    let by_instant = ticketctl(dir.path(), &["export", "--from", "2026-11-21T05:00:00+08:00"]);
    let count = stdout(&by_instant).lines().count();
    assert!(count > 0 && count < positions.len(), "{count} of {}", positions.len());
}

#[tokio::test]
async fn a_flipped_byte_fails_the_audit_at_its_position() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path()).await;
    tamper(&dir.path().join("log"), 3);
    let audit = ticketctl(dir.path(), &["audit", "verify"]);
    assert_eq!(code(&audit), 1, "{}", stdout(&audit));
    assert!(stdout(&audit).contains("BROKEN at position 3"), "{}", stdout(&audit));
    let json: serde_json::Value =
        serde_json::from_slice(&ticketctl(dir.path(), &["audit", "verify", "--json"]).stdout).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["chain"]["broken_at"], 3);
}

#[test]
fn bad_usage_is_exit_code_two() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        code(&ticketctl(dir.path(), &["history", "00000000-0000-0000-0000-000000000001"])),
        2,
        "no log in the directory"
    );
    assert_eq!(code(&ticketctl(dir.path(), &["history", "not-a-ticket"])), 2);
    assert_eq!(code(&ticketctl(dir.path(), &["audit", "verify", "--policy", "/nonexistent.toml"])), 2);
}

fn issue(data_dir: &Path, args: &[&str]) -> Output {
    let policy = policy_path("regional-operator.toml");
    Command::new(env!("CARGO_BIN_EXE_it-ticketctl"))
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--policy")
        .arg(&policy)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn commands_in_local_mode_run_the_engine_on_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let open = ["open", "--customer", "acme", "--category", "technical", "--severity", "A", "--title", "mail is down"];

    let refused = issue(dir.path(), &[&open[..], &["--plan", "standard"]].concat());
    assert_eq!(code(&refused), 1);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("ERROR_CODE_SEVERITY_NOT_IN_CONTRACT"));

    let opened = issue(dir.path(), &[&open[..], &["--plan", "advanced", "--json", "--command-id", "open-1"]].concat());
    assert_eq!(code(&opened), 0, "{}", String::from_utf8_lossy(&opened.stderr));
    let accepted: pb::CommandAccepted = serde_json::from_slice(&opened.stdout).unwrap();
    let ticket = accepted.ticket_id.clone();
    assert_eq!((accepted.events.len(), accepted.events[0].position, accepted.duplicate), (1, 1, false));

    let again = issue(dir.path(), &[&open[..], &["--plan", "advanced", "--json", "--command-id", "open-1"]].concat());
    let again: pb::CommandAccepted = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!((again.duplicate, again.ticket_id.as_str(), again.events.len()), (true, ticket.as_str(), 1));

    assert_eq!(code(&issue(dir.path(), &["ask", &ticket, "--request", "send the logs"])), 0);
    assert_eq!(
        code(&issue(dir.path(), &["--actor", "customer:acme-admin", "reply", &ticket, "--message", "attached"])),
        0
    );
    assert_eq!(
        code(&issue(
            dir.path(),
            &["escalate", &ticket, "--tier", "tier-2", "--team", "mail", "--reason", "needs mail"]
        )),
        0
    );
    let split = issue(
        dir.path(),
        &["--json", "split", &ticket, "--category", "billing", "--severity", "B", "--title", "credit"],
    );
    let split: pb::CommandAccepted = serde_json::from_slice(&split.stdout).unwrap();
    assert_eq!(split.events.len(), 3);
    assert_eq!(code(&issue(dir.path(), &["resolve", &ticket, "--resolution", "renewed"])), 0);
    let twice = issue(dir.path(), &["resolve", &ticket, "--resolution", "again"]);
    assert_eq!(code(&twice), 1);
    assert!(String::from_utf8_lossy(&twice.stderr).contains("ERROR_CODE_INVALID_TRANSITION"));
    assert_eq!(code(&issue(dir.path(), &["respond", "not-a-ticket"])), 2);

    let state: serde_json::Value =
        serde_json::from_slice(&ticketctl(dir.path(), &["state", &ticket, "--json"]).stdout).unwrap();
    assert_eq!(state["status"], "TICKET_STATUS_RESOLVED");
    assert_eq!(state["tier"], "tier-2");
    let audit = ticketctl(
        dir.path(),
        &["audit", "verify", "--policy", policy_path("regional-operator.toml").to_str().unwrap()],
    );
    assert_eq!(code(&audit), 0, "{}", stdout(&audit));
}

#[test]
fn the_demo_tours_the_engine_on_a_simulated_clock_and_its_audit_passes() {
    // From an empty directory and without --policy: the policy is the one embedded in the binary.
    let dir = tempfile::tempdir().unwrap();
    let out = ticketctl(dir.path(), &["demo"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 0, "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for expected in [
        "opened as acme-a; first response due Sat 11-21 04:00",
        "REFUSED ERROR_CODE_SEVERITY_NOT_IN_CONTRACT",
        "REFUSED ERROR_CODE_SEVERITY_NOT_ALLOWED_FOR_CATEGORY",
        "first_response#1 severity A, was due 2026-11-20T20:00:00Z",
        "A -> B, no reply by",
        "to tier-2/calendar (needs the calendar team)",
        "resolving acme a second time is refused",
        "Step 8: time travel",
        "at risk",
        "audit: OK",
    ] {
        assert!(text.contains(expected), "the demo's output lacks {expected:?}:\n{text}");
    }
    assert!(text.lines().any(|l| l.contains("acme-a") && l.contains("BREACHED")), "the board marks the breach");
}
