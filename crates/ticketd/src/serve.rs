//! `ticketd serve`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream;
use ticket_engine::{AdvanceError, Engine, EngineClock, EngineConfig, TestClock};
use ticket_log::EventLog;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::Config;

/// Serves on `clock` until SIGTERM or SIGINT, then shuts down gracefully. `ticketd serve` runs
/// on the wall clock; only `ticketd dev --test-clock` passes a simulated one. `early`: the
/// signals, if the caller caught them before (`ticketd dev`, which must stop its nats-server
/// whenever it is told to): one received while starting stops ticketd once it is ready.
/// Without it they are caught just before ticketd says it is ready.
pub(crate) async fn serve(config: Config, clock: EngineClock, early: Option<ShutdownSignal>) -> anyhow::Result<()> {
    let ops = crate::ops::start(config.ops.listen).await?;
    let policy = Arc::new(config.load_policy()?);
    let data = config.data();
    data.create()?;

    let mut api_config = config.api()?;
    if api_config.identities.unstamped == ticket_nats::Unstamped::Trust {
        warn!(
            "api.unstamped = \"trust\": requests from inside ticketd's own NATS account are taken as sent \
             (any actor, any issued_at); use it only on a single-account setup"
        );
    }
    info!(identities = api_config.identities.rules.len(), "identities loaded");
    let url = config.nats.url()?;
    // A refused login is reported by the connection while it retries in the background: it stops
    // the start-up with a clear error, and is logged if it happens on a later reconnection.
    let (refusal, refused) = watch::channel(None::<String>);
    let options =
        async_nats::ConnectOptions::new().name("ticketd").retry_on_initial_connect().event_callback(move |event| {
            let refusal = refusal.clone();
            crate::ops::nats_event(&event);
            async move {
                if let Some(why) = ticket_nats::connection::is_login_refused(&event) {
                    warn!(error = %why, "NATS refused the login");
                    refusal.send_replace(Some(why));
                }
            }
        });
    let options = ticket_nats::connection::tls(&url, &config.nats.tls(), options).context("NATS TLS")?;
    let (options, login) =
        ticket_nats::connection::login(&url, &config.nats.credentials(), options).await.context("the NATS login")?;
    info!(nats = %url, login = %login, "connecting to NATS");
    let client = options.connect(url.servers()).await.with_context(|| format!("cannot connect to {url}"))?;
    // Before anything is opened: NATS answers, and no other ticketd serves this account.
    let nats = Nats { client: client.clone(), url: url.to_string(), login: login.to_string(), refused };
    nats.answers().await?;
    if config.cluster.enabled {
        return crate::cluster::serve(config, nats, api_config, policy, ops, early).await;
    }
    let client = nats.client.clone();
    let instance = crate::instance::id(&config.data_dir)?;
    crate::instance::refuse_if_served(&client, &instance).await?;
    api_config.instance_id = Some(instance.clone());

    let timer = if config.timer.enabled { Some(config.timer()?) } else { None };
    let projector = Some(config.projector());
    let engine = match Engine::start(EngineConfig {
        timer,
        clock,
        projector,
        ..EngineConfig::new(data, policy.clone())
    })
    .await
    {
        Ok(engine) => engine,
        // The log's lock: another ticketd has this data directory open.
        Err(e) if e.to_string().contains("could not acquire lock") => anyhow::bail!(
            "the data directory {} is in use by another ticketd (its log is locked); one process per data directory",
            config.data_dir.display()
        ),
        Err(e) => return Err(e.into()),
    };
    let log = engine.log().clone();
    let views = engine.views().cloned().ok_or_else(|| anyhow::anyhow!("the engine runs no projector"))?;
    if let Some(test_clock) = engine.test_clock() {
        warn!(now = %test_clock.now(), "running on a TEST CLOCK: it moves only when advanced (tickets.admin.advance_clock)");
        api_config.test_clock = Some(ticket_nats::TestClockHandle(Arc::new(EngineTestClock(test_clock))));
    }
    let api = ticket_nats::start(client.clone(), engine.service().clone(), views, api_config).await?;
    let (stop_publishing, stopped) = watch::channel(false);
    let publisher = tokio::spawn(ticket_nats::publisher::run(
        log.clone(),
        jetstream::with_prefix(client.clone(), &config.stream.api_prefix),
        config.publisher(),
        stopped,
    ));
    // Ready means serving: the connection may still be coming up (it retries in the background),
    // and a flush's round trip shows the server has every subscription of the API.
    let outcome = nats.answers().await;
    if outcome.is_ok() {
        let signal = early.unwrap_or_else(ShutdownSignal::listen);
        // /readyz turns ready before the line that says so, so whoever reads the line finds it.
        ops.ready();
        info!(
            nats = %url,
            login = %login,
            data_dir = %config.data_dir.display(),
            policy = %policy.version(),
            head = log.head(),
            stream = %config.stream.name,
            stream_api = %config.stream.api_prefix,
            instance = %instance,
            timer = config.timer.enabled,
            clock = %engine.clock_kind(),
            "ticketd ready"
        );
        let signal = signal.received().await;
        ops.stopping();
        info!(signal, "shutting down: no new requests, finishing the commands in flight, draining the outbox");
    } else {
        info!("not started: stopping what was started");
    }

    // Without NATS there is nothing to drain to: what is appended is published at the next start.
    let deadline = if outcome.is_ok() { Duration::from_secs(config.shutdown.deadline_secs) } else { Duration::ZERO };
    // Whatever NATS, the disk or a stuck task does, the process ends: past the deadline (and a
    // second's grace for the steps below to say what they could not flush) it exits. Nothing
    // acknowledged is lost: acknowledged events are durable in the log, and the outbox resumes
    // from it at the next start.
    arm_exit_watchdog(deadline + SHUTDOWN_GRACE);
    let started = tokio::time::Instant::now();
    // Each step has what is left of the one deadline; past it, a step is tried once (a timeout
    // of zero polls its future once).
    let left = || deadline.saturating_sub(started.elapsed());
    if !api.stop(left()).await {
        warn!("commands were still running at the shutdown deadline");
    }
    // The timer and the read models stop and checkpoint (what is not flushed is logged, and
    // rebuilt from the log at the next start).
    engine.stop(left()).await;
    stop_publishing.send_replace(true);
    match tokio::time::timeout(left(), publisher).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => warn!(error = %e, "the outbox was not drained; it is published at the next start"),
        Ok(Err(e)) => warn!(error = %e, "the publisher failed"),
        Err(_) => warn!(
            pending = log.head() - log.published().unwrap_or(0),
            "outbox not drained by the deadline; it is published at the next start"
        ),
    }
    let _ = tokio::time::timeout(left(), client.flush()).await;
    info!(
        head = log.head(),
        published = log.published().unwrap_or(0),
        took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "ticketd stopped"
    );
    outcome
}

/// ticketd's NATS connection, and the login refusals it reports while it retries.
pub(crate) struct Nats {
    pub client: async_nats::Client,
    pub url: String,
    pub login: String,
    pub refused: watch::Receiver<Option<String>>,
}

impl Nats {
    /// Waits until NATS answers a flush (every subscription made so far is then in place),
    /// saying so every 5 s; an error if NATS refused the login meanwhile.
    pub async fn answers(&self) -> anyhow::Result<()> {
        let mut refused = self.refused.clone();
        let mut waited = Duration::ZERO;
        loop {
            tokio::select! {
                flushed = tokio::time::timeout(Duration::from_secs(5), self.client.flush()) => {
                    if matches!(flushed, Ok(Ok(()))) {
                        return Ok(());
                    }
                    waited += Duration::from_secs(5);
                    warn!(nats = %self.url, waited_secs = waited.as_secs(), "waiting for NATS");
                }
                why = refused.wait_for(Option::is_some) => {
                    let why = why.map(|w| w.clone().unwrap_or_default()).unwrap_or_default();
                    anyhow::bail!("NATS at {} refused the login with {}: {why}", self.url, self.login);
                }
            }
        }
    }
}

/// How long past the shutdown deadline the process may take before it is ended.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Ends the process `after` from now, from a thread of its own (so that neither a blocked
/// runtime nor a stuck task can hold it), unless it has exited by then.
pub(crate) fn arm_exit_watchdog(after: Duration) {
    let spawned = std::thread::Builder::new().name("shutdown-watchdog".into()).spawn(move || {
        std::thread::sleep(after);
        error!(
            after_ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
            "shutdown did not end by its deadline; exiting now"
        );
        std::process::exit(1);
    });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the shutdown watchdog");
    }
}

/// The engine's test clock, as the API's operators move it.
struct EngineTestClock(TestClock);

impl ticket_nats::TestClockControl for EngineTestClock {
    fn now(&self) -> ticket_domain::Timestamp {
        self.0.now()
    }

    fn advance_to(
        &self,
        to: ticket_domain::Timestamp,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<ticket_nats::ClockAdvance, ticket_nats::ClockAdvanceError>>
                + Send
                + '_,
        >,
    > {
        use ticket_nats::ClockAdvanceError as E;
        Box::pin(async move {
            let advanced = self.0.advance_to(to).await.map_err(|e| match e {
                AdvanceError::Backwards { .. } => E::Backwards(e.to_string()),
                AdvanceError::NotSettled { .. } => E::NotSettled(e.to_string()),
                AdvanceError::TimerStopped => E::Failed(e.to_string()),
            })?;
            let recorded = advanced.head.saturating_sub(advanced.from_position);
            let limit = usize::try_from(recorded).unwrap_or(usize::MAX).min(ticket_nats::MAX_ADVANCE_EVENTS);
            let events = if limit == 0 {
                Vec::new()
            } else {
                self.0.recorded(advanced.from_position + 1, limit).map_err(|e| E::Failed(e.to_string()))?
            };
            info!(from = %advanced.from, now = %advanced.now, recorded, "test clock advanced");
            Ok(ticket_nats::ClockAdvance {
                from: advanced.from,
                now: advanced.now,
                recorded,
                last_position: advanced.head,
                events,
            })
        })
    }
}

/// SIGTERM and SIGINT, caught from the moment it is made: make it before saying "ready", so that
/// a signal sent by whoever read that line is never met by the default action (death by signal).
pub(crate) struct ShutdownSignal {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    /// Starts catching SIGTERM and SIGINT.
    pub(crate) fn listen() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let caught = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(signal) => Some(signal),
            Err(e) => {
                warn!(signal = name, error = %e, "the signal cannot be caught: it stops ticketd without a graceful shutdown");
                None
            }
        };
        Self { term: caught(SignalKind::terminate(), "SIGTERM"), int: caught(SignalKind::interrupt(), "SIGINT") }
    }

    /// Waits for SIGTERM or SIGINT; returns its name.
    pub(crate) async fn received(mut self) -> &'static str {
        match (self.term.as_mut(), self.int.as_mut()) {
            (Some(term), Some(int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            (Some(term), None) => {
                term.recv().await;
                "SIGTERM"
            }
            (None, Some(int)) => {
                int.recv().await;
                "SIGINT"
            }
            // Neither is caught (said at listen): either one stops the process by its default action.
            (None, None) => std::future::pending().await,
        }
    }
}
