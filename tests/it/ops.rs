//! The operators' HTTP endpoint of a real `ticketd serve`: `/healthz` while it starts,
//! `/readyz` only once it serves, and `/metrics` counters and histograms that follow a load.

use std::collections::BTreeMap;
use std::time::Duration;

use prost::Message;
use ticket_domain::Severity;
use ticket_domain::testing::{agent, open, utc};
use ticket_proto::pb;
use ticket_testkit::{NatsServer, http_get};

use crate::daemon::{open_request, spawn_serve};

/// The samples of a Prometheus text exposition, keyed `name{label="value",...}` with the
/// labels sorted.
fn scrape(port: u16) -> BTreeMap<String, f64> {
    let (status, body) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (key, value) = line.rsplit_once(' ').unwrap();
            let key = match key.split_once('{') {
                Some((name, labels)) => {
                    let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
                    labels.sort_unstable();
                    format!("{name}{{{}}}", labels.join(","))
                }
                None => key.to_owned(),
            };
            (key, value.parse().unwrap())
        })
        .collect()
}

fn sample(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

async fn send_open(client: &async_nats::Client, command: pb::Command) -> pb::CommandReply {
    let subject = ticket_nats::command_subject("open");
    let reply = client.request(subject, command.encode_to_vec().into()).await.unwrap();
    pb::CommandReply::decode(reply.payload.as_ref()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ops_endpoint_reports_health_readiness_and_metrics_under_load() {
    // NATS is down at first: ticketd is up (healthz) but not serving (readyz).
    let mut server = NatsServer::start().unwrap();
    server.stop();
    let data = tempfile::tempdir().unwrap();
    let mut daemon = spawn_serve(&server.url(), &["--ops-listen", "127.0.0.1:0"], data.path());
    let listening = daemon.wait_for("ops endpoint listening", Duration::from_secs(30));
    let line: serde_json::Value = serde_json::from_str(&listening).unwrap();
    let address: std::net::SocketAddr = line["fields"]["address"].as_str().unwrap().parse().unwrap();
    let port = address.port();
    assert_eq!(http_get(port, "/healthz").unwrap().0, 200);
    assert_eq!(http_get(port, "/readyz").unwrap().0, 503, "ready before it can serve");

    server.restart().unwrap();
    daemon.wait_for("ticketd ready", Duration::from_secs(60));
    assert_eq!(http_get(port, "/readyz").unwrap().0, 200);
    let before = scrape(port);
    let accepted = r#"ticketd_commands_total{command="open",outcome="accepted"}"#;
    assert_eq!(sample(&before, accepted), 0.0);

    // A small load: opened tickets, one command id sent twice, one refusal.
    let client = async_nats::connect(server.url()).await.unwrap();
    for _ in 0..20 {
        let command = pb::Command::decode(open_request().as_slice()).unwrap();
        assert!(matches!(send_open(&client, command).await.result, Some(pb::command_reply::Result::Accepted(_))));
    }
    let mut twice = pb::Command::decode(open_request().as_slice()).unwrap();
    twice.command_id = "ops-twice".into();
    send_open(&client, twice.clone()).await;
    send_open(&client, twice).await;
    let mut refused =
        pb::Command::from(&agent(utc(2026, 11, 21, 0, 0), open("no-such-plan", "technical", Severity::A)));
    refused.ticket_id.clear();
    refused.command_id.clear();
    refused.issued_at = None;
    send_open(&client, refused).await;

    let after = scrape(port);
    let metrics = format!("{after:#?}");
    assert_eq!(sample(&after, accepted), 21.0, "{metrics}");
    assert_eq!(sample(&after, r#"ticketd_commands_total{command="open",outcome="duplicate"}"#), 1.0, "{metrics}");
    let refusal = r#"ticketd_commands_total{code="UnknownPlan",command="open",outcome="refused"}"#;
    assert_eq!(sample(&after, refusal), 1.0, "{metrics}");
    assert_eq!(sample(&after, r#"ticketd_command_duration_seconds_count{command="open"}"#), 23.0, "{metrics}");
    assert!(sample(&after, "ticketd_log_group_commit_appends_count") >= 1.0, "{metrics}");
    assert!(sample(&after, "ticketd_log_fsync_duration_seconds_count") >= 1.0, "{metrics}");
    assert!(sample(&after, "ticketd_log_head") >= 21.0, "{metrics}");
    assert_eq!(sample(&after, "ticketd_nats_connected"), 1.0, "{metrics}");
    assert_eq!(sample(&after, "ticketd_ready"), 1.0, "{metrics}");
    for gauge in [
        "ticketd_outbox_lag_positions",
        "ticketd_timer_pending_deadlines",
        r#"ticketd_projection_lag_positions{projection="tickets"}"#,
    ] {
        assert!(after.contains_key(gauge), "no {gauge}: {metrics}");
    }

    let (status, log) = daemon.terminate();
    assert!(status.success(), "ticketd exited with {status}:\n{}", log.join("\n"));
    assert!(http_get(port, "/healthz").is_err(), "the endpoint outlived ticketd");
}
