//! The black-box integration tests of ticketd: only public APIs, only shipped files.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod client;
mod cluster;
mod cluster_daemon;
mod ctl_modes;
mod daemon;
mod deploy;
mod durability;
mod identity;
mod import;
mod lifecycle;
mod nats_events;
mod nats_permissions;
mod operators;
mod ops;
mod projections;
mod retries;
mod rules;
mod support_rules;
mod test_clock;
mod timers;
mod tls;

use std::path::PathBuf;

use ticket_domain::Policy;

/// The path of a policy file shipped in `deploy/policies`.
pub fn policy_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/policies").join(name)
}

/// A policy file shipped in `deploy/policies`, loaded the way the daemon loads it.
pub fn shipped_policy(name: &str) -> Policy {
    Policy::load(&policy_path(name)).unwrap_or_else(|e| panic!("{e}"))
}
