//! The shipped defaults, embedded in the binaries so that they run from any directory.
//!
//! The bytes are the repository's files under `deploy/`, read at compile time: a build (or a
//! `cargo install --path crates/<binary>`, which builds the workspace's sources in place) takes
//! them as they are then. A file given on the command line or in the config overrides them, and
//! every binary says which one it used ([`Origin`]).

use std::fmt;
use std::path::{Path, PathBuf};

use ticket_domain::{Policy, PolicyError};

/// A shipped file: its path in the repository and its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shipped {
    pub path: &'static str,
    pub text: &'static str,
}

/// The default SLA policy: `deploy/policies/regional-operator.toml`.
pub const REGIONAL_OPERATOR_POLICY: Shipped = Shipped {
    path: "deploy/policies/regional-operator.toml",
    text: include_str!("../../../deploy/policies/regional-operator.toml"),
};

/// `deploy/policies/professional.toml`.
pub const PROFESSIONAL_POLICY: Shipped = Shipped {
    path: "deploy/policies/professional.toml",
    text: include_str!("../../../deploy/policies/professional.toml"),
};

/// Every shipped policy.
pub const POLICIES: [Shipped; 2] = [REGIONAL_OPERATOR_POLICY, PROFESSIONAL_POLICY];

/// The policy a binary decides with when no policy file is given.
pub const DEFAULT_POLICY: Shipped = REGIONAL_OPERATOR_POLICY;

/// The nats-server config of `ticketd dev` (JetStream with `sync_interval: always`).
pub const NATS_DEV_CONF: Shipped =
    Shipped { path: "deploy/nats/dev.conf", text: include_str!("../../../deploy/nats/dev.conf") };

/// The accounts of ticketd on NATS (`deploy/nats/accounts.conf`), included by the dev config.
pub const NATS_ACCOUNTS_CONF: Shipped =
    Shipped { path: "deploy/nats/accounts.conf", text: include_str!("../../../deploy/nats/accounts.conf") };

/// The script that installs nats-server when `ticketd dev` finds none (run with `bash -s`).
pub const INSTALL_NATS_SERVER: Shipped = Shipped {
    path: "deploy/scripts/install-nats-server",
    text: include_str!("../../../deploy/scripts/install-nats-server"),
};

/// Where a setting's bytes came from: the binary (a shipped file, by its repository path) or a
/// file given by the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Embedded(&'static str),
    File(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Embedded(path) => write!(f, "embedded {path}"),
            Self::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// The policy in `file` when one is given, else the embedded default policy.
pub fn policy(file: Option<&Path>) -> Result<(Policy, Origin), PolicyError> {
    match file {
        Some(path) => Ok((Policy::load(path)?, Origin::File(path.to_owned()))),
        None => {
            let shipped = DEFAULT_POLICY;
            let policy = Policy::from_toml(&format!("embedded {}", shipped.path), shipped.text)?;
            Ok((policy, Origin::Embedded(shipped.path)))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_shipped_policy_loads_and_the_default_is_used_without_a_file() {
        for shipped in POLICIES {
            Policy::from_toml(shipped.path, shipped.text).unwrap();
        }
        let (policy, origin) = policy(None).unwrap();
        assert_eq!(origin, Origin::Embedded("deploy/policies/regional-operator.toml"));
        assert_eq!(policy.version(), Policy::from_toml("x", REGIONAL_OPERATOR_POLICY.text).unwrap().version());
        assert_eq!(origin.to_string(), "embedded deploy/policies/regional-operator.toml");
    }

    #[test]
    fn a_file_overrides_the_default_and_a_bad_one_is_named() {
        let dir = std::env::temp_dir().join(format!("ticket-defaults-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.toml");
        std::fs::write(&file, PROFESSIONAL_POLICY.text).unwrap();
        let (policy, origin) = policy(Some(&file)).unwrap();
        assert_eq!(origin, Origin::File(file.clone()));
        assert_eq!(policy.version(), Policy::from_toml("x", PROFESSIONAL_POLICY.text).unwrap().version());
        let missing = dir.join("missing.toml");
        let err = super::policy(Some(&missing)).unwrap_err().to_string();
        assert!(err.contains("missing.toml"), "{err}");
    }

    #[test]
    fn the_dev_nats_config_fsyncs_every_write() {
        let lines: Vec<&str> = NATS_DEV_CONF.text.lines().map(str::trim).collect();
        assert!(lines.contains(&"sync_interval: always"), "{}", NATS_DEV_CONF.text);
        assert!(INSTALL_NATS_SERVER.text.starts_with("#!/usr/bin/env bash"));
    }
}
