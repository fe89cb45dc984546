//! The operators' HTTP endpoint: Prometheus metrics at `/metrics`, `/healthz` (the process is
//! up) and `/readyz` (ready means serving: 200 once `ticketd ready` is logged, 503 before and
//! while shutting down).
//!
//! The libraries record through the `metrics` facade; this module installs the Prometheus
//! recorder (once per process) and renders it with its handle. Without `ops.listen` nothing is
//! installed and the facade's calls cost nothing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::{info, warn};

/// Seconds: from 100 µs to about 13 s, doubling.
fn seconds_buckets() -> Vec<f64> {
    (0..18).map(|i| 0.0001 * f64::from(1u32 << i)).collect()
}

/// Appends per group commit: 1 to 4096, doubling.
fn group_buckets() -> Vec<f64> {
    (0..13).map(|i| f64::from(1u32 << i)).collect()
}

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

fn recorder() -> anyhow::Result<PrometheusHandle> {
    if let Some(handle) = RECORDER.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets(&seconds_buckets())?
        .set_buckets_for_metric(Matcher::Full("ticketd_log_group_commit_appends".into()), &group_buckets())?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    let handle = RECORDER.get_or_init(|| handle).clone();
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "ticketd_commands_total",
        "Commands by command name and outcome (accepted, duplicate, refused with code)"
    );
    describe_histogram!(
        "ticketd_command_duration_seconds",
        "Time from a command's arrival at the service to its answer"
    );
    describe_histogram!("ticketd_log_group_commit_appends", "Appends per group commit of the log's writer");
    describe_histogram!("ticketd_log_fsync_duration_seconds", "Time the log's fsync of a group commit took");
    describe_gauge!("ticketd_log_head", "The log's durable head position");
    describe_gauge!("ticketd_outbox_lag_positions", "Events appended but not yet acknowledged by JetStream");
    describe_gauge!("ticketd_outbox_lag_seconds", "Age of the last event JetStream acknowledged, when it did");
    describe_counter!(
        "ticketd_outbox_republished_total",
        "Events published again because the event stream lost them after acknowledging them"
    );
    describe_gauge!("ticketd_projection_lag_positions", "Positions a read model has not applied yet");
    describe_gauge!("ticketd_timer_pending_deadlines", "Deadlines the timer has yet to fire");
    describe_histogram!("ticketd_timer_firing_lag_seconds", "Time from a deadline to the firing's record");
    describe_gauge!("ticketd_nats_connected", "1 while the NATS connection is up, else 0");
    describe_gauge!("ticketd_ready", "1 while ticketd is serving (as /readyz), else 0");
}

/// The running endpoint (or none): mark it ready once serving.
#[derive(Debug, Clone, Default)]
pub struct Ops {
    ready: Arc<AtomicBool>,
}

impl Ops {
    /// Ready means serving: `/readyz` answers 200 from now on (until [`Ops::stopping`]).
    pub fn ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
        metrics::gauge!("ticketd_ready").set(1.0);
    }

    pub fn stopping(&self) {
        self.ready.store(false, Ordering::SeqCst);
        metrics::gauge!("ticketd_ready").set(0.0);
    }
}

/// Starts the endpoint on `listen` (nothing without an address) and returns the readiness flag.
pub async fn start(listen: Option<SocketAddr>) -> anyhow::Result<Ops> {
    let ops = Ops::default();
    let Some(listen) = listen else { return Ok(ops) };
    let handle = recorder()?;
    let ready = ops.ready.clone();
    let metrics_handle = handle.clone();
    let app = Router::new()
        .route("/metrics", get(move || std::future::ready(metrics_handle.render())))
        .route("/healthz", get(|| std::future::ready("ok\n")))
        .route(
            "/readyz",
            get(move || {
                std::future::ready(if ready.load(Ordering::SeqCst) {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                })
            }),
        );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} for the ops endpoint"))?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "the ops endpoint stopped");
        }
    });
    // Histograms are kept in windows that upkeep rolls over; without it they grow.
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            handle.run_upkeep();
        }
    });
    metrics::gauge!("ticketd_ready").set(0.0);
    info!(address = %address, "ops endpoint listening: /metrics, /healthz, /readyz");
    Ok(ops)
}

/// Records the NATS connection's state from the client's events.
pub fn nats_event(event: &async_nats::Event) {
    match event {
        async_nats::Event::Connected => {
            tracing::info!("connected to NATS");
            metrics::gauge!("ticketd_nats_connected").set(1.0)
        }
        async_nats::Event::Disconnected | async_nats::Event::Closed => {
            tracing::info!(event = %event, "NATS connection lost; reconnecting");
            metrics::gauge!("ticketd_nats_connected").set(0.0)
        }
        async_nats::Event::LameDuckMode
        | async_nats::Event::Draining
        | async_nats::Event::SlowConsumer(_)
        | async_nats::Event::ServerError(_)
        | async_nats::Event::ClientError(_) => {}
    }
}
