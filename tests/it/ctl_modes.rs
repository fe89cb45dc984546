//! `ticketctl` prints every view the same way whether it asks a running ticketd over NATS or runs
//! the engine on the data directory: the same tables, and the same canonical proto3 JSON.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ticket_testkit::NatsServer;

use crate::daemon::serve;
use crate::policy_path;

fn ticketctl(mode: &[&str], args: &[&str]) -> Output {
    let policy = policy_path("regional-operator.toml");
    Command::new(env!("CARGO_BIN_EXE_it-ticketctl"))
        .args(mode)
        .arg("--policy")
        .arg(&policy)
        .args(args)
        .env_remove("TICKETD_NATS_URL")
        // Over NATS without --actor, ticketd records the stamped identity; a plain nats-server
        // stamps none (ticketd trusts it): both modes name the same actor.
        .env("TICKETCTL_ACTOR", "agent:ticketctl")
        .output()
        .unwrap()
}

fn stdout(out: &Output, args: &[&str]) -> String {
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The business time of a running clock moves with the wall clock between the two runs: those
/// two fields are left out of the comparison of a running clock.
fn steady(json: &str) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                if map.get("status").and_then(|s| s.as_str()) == Some("CLOCK_STATUS_RUNNING") {
                    map.remove("elapsedBusinessSeconds");
                    map.remove("remainingBusinessSeconds");
                }
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            serde_json::Value::Null
            | serde_json::Value::Bool(_)
            | serde_json::Value::Number(_)
            | serde_json::Value::String(_) => {}
        }
    }
    let mut value: serde_json::Value = serde_json::from_str(json).unwrap();
    strip(&mut value);
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_view_prints_the_same_locally_and_remotely() {
    let server = NatsServer::start().unwrap();
    let data = tempfile::tempdir().unwrap();
    let daemon = serve(&server, data.path());
    let url = server.url();
    let remote = ["--nats-url", url.as_str()];
    let data_dir = data.path().to_str().unwrap();
    let local = ["--data-dir", data_dir];

    let open = |severity: &str, title: &str| {
        let args = [
            "open",
            "--customer",
            "acme",
            "--plan",
            "advanced",
            "--category",
            "technical",
            "--severity",
            severity,
            "--title",
            title,
            "--json",
        ];
        let out = stdout(&ticketctl(&remote, &args), &args);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["ticketId"].as_str().unwrap().to_owned()
    };
    // One ticket resolved, one awaiting the customer after a response, one escalated and split,
    // one untouched: clocks stopped, paused and running, links, severity changes.
    let (resolved, waiting, escalated, fresh) =
        (open("A", "mail is down"), open("B", "slow search"), open("A", "login fails"), open("C", "typo"));
    for step in [
        vec!["respond", resolved.as_str(), "--message", "looking"],
        vec!["resolve", resolved.as_str(), "--resolution", "fixed"],
        vec!["respond", waiting.as_str(), "--message", "which index?"],
        vec!["ask", waiting.as_str(), "--request", "logs please"],
        vec!["severity", escalated.as_str(), "B", "--reason", "workaround found"],
        vec!["escalate", escalated.as_str(), "--tier", "tier-2", "--reason", "hard"],
        vec!["split", escalated.as_str(), "--category", "billing", "--severity", "C", "--title", "refund"],
    ] {
        stdout(&ticketctl(&remote, &step), &step);
    }

    // Every view, table and JSON.
    let mut views: Vec<Vec<String>> = vec![
        vec!["board".into()],
        vec!["tickets".into(), "--customer".into(), "acme".into(), "--all".into()],
        vec!["compliance".into()],
        vec!["projections".into(), "status".into(), "--update".into()],
    ];
    for ticket in [&resolved, &waiting, &escalated, &fresh] {
        views.push(vec!["detail".into(), ticket.clone()]);
        views.push(vec!["state".into(), ticket.clone()]);
        views.push(vec!["timeline".into(), ticket.clone()]);
    }
    // The read models have applied every event once the projections' lag says so.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let args = ["projections", "status", "--json"];
        let lags: serde_json::Value = serde_json::from_str(&stdout(&ticketctl(&remote, &args), &args)).unwrap();
        let projections = lags["projections"].as_array().unwrap();
        if projections.iter().all(|p| p["behind"].as_u64().unwrap_or(0) == 0 && p["head"] == projections[0]["head"]) {
            break;
        }
        assert!(Instant::now() < deadline, "the read models never caught up: {lags}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run_all = |mode: &[&str]| -> Vec<(String, String)> {
        views
            .iter()
            .map(|view| {
                let args: Vec<&str> = view.iter().map(String::as_str).collect();
                let table = stdout(&ticketctl(mode, &args), &args);
                let json_args: Vec<&str> = args.iter().copied().chain(["--json"]).collect();
                (table, stdout(&ticketctl(mode, &json_args), &json_args))
            })
            .collect()
    };
    let over_nats = run_all(&remote);
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{}", log.join("\n"));
    let on_disk = run_all(&local);

    for ((view, (remote_table, remote_json)), (local_table, local_json)) in views.iter().zip(&over_nats).zip(&on_disk) {
        assert_eq!(steady(remote_json), steady(local_json), "{view:?} --json differs");
        // Tables show a running clock's business time too; compare them where none runs.
        if !remote_json.contains("CLOCK_STATUS_RUNNING") {
            assert_eq!(remote_table, local_table, "{view:?} differs");
        }
    }
    // The comparison covered tables, not only JSON: the board and the resolved ticket's detail.
    assert!(over_nats[0].0.contains("open tickets with a running clock"), "{}", over_nats[0].0);
    assert!(
        on_disk[4].0.contains("mail is down") && !on_disk[4].1.contains("CLOCK_STATUS_RUNNING"),
        "{:?}",
        on_disk[4]
    );
}
