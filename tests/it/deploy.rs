//! The shipped NATS configurations are valid for the nats-server the project installs.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn every_shipped_nats_configuration_is_valid() {
    let bin = ticket_testkit::nats_server_bin().unwrap();
    let deploy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats");
    let files = ["dev.conf", "accounts.conf", "cluster/nats-1.conf", "cluster/nats-2.conf", "cluster/nats-3.conf"];
    for file in files {
        let out = Command::new(&bin).arg("-c").arg(deploy.join(file)).arg("-t").output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && said.contains("is valid"), "{file}: {said}");
    }
}
