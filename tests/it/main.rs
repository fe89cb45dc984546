//! The black-box integration tests of ticketd: only public APIs, only shipped files.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod lifecycle;
mod support_rules;

use std::path::PathBuf;

use ticket_domain::Policy;

/// A policy file shipped in `deploy/policies`, loaded the way the daemon loads it.
pub fn shipped_policy(name: &str) -> Policy {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/policies").join(name);
    Policy::load(&path).unwrap_or_else(|e| panic!("{e}"))
}
