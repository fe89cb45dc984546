//! TLS on client connections: nats-server with the shipped `deploy/nats/tls.conf` and a
//! certificate made at test time by a private CA; ticketd, the typed client and ticketctl
//! connect with `tls://` and the CA file (and a client certificate where the server verifies
//! clients); a client that does not trust the CA fails clearly.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use ticket_client::Client;
use ticket_client::connection::{Credentials, NatsUrl, Tls};
use ticket_testkit::{NatsServer, ServerConfig};

use crate::client::{agent, opening};
use crate::daemon::spawn_serve;

/// A private CA, and files of certificates it signed, in a directory.
struct Pki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, "ticketd test CA");
        let ca = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Self { dir, issuer: Issuer::new(params, key) }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for `names` with `usage`, signed by the CA: (certificate, key) files.
    fn issue(&self, file: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_file, key_file) =
            (self.dir.path().join(format!("{file}.pem")), self.dir.path().join(format!("{file}-key.pem")));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (cert_file, key_file)
    }

    /// nats-server with the shipped `deploy/nats/tls.conf`, its paths replaced by a server
    /// certificate of this CA; with `verify_clients`, its mutual TLS lines uncommented.
    fn server(&self, verify_clients: bool) -> NatsServer {
        let (cert, key) = self.issue("server", &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
        let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats/tls.conf");
        let mut text = std::fs::read_to_string(shipped).unwrap();
        for (shipped, path) in [
            ("/etc/nats/tls/server.pem", cert.as_path()),
            ("/etc/nats/tls/server-key.pem", key.as_path()),
            ("/etc/nats/tls/client-ca.pem", self.ca().as_path()),
        ] {
            assert!(text.contains(shipped), "deploy/nats/tls.conf no longer names {shipped}");
            text = text.replace(shipped, path.to_str().unwrap());
        }
        if verify_clients {
            for line in ["  # ca_file:", "  # verify: true"] {
                assert!(text.contains(line), "deploy/nats/tls.conf no longer has {line:?}");
                text = text.replace(line, &line.replace("# ", ""));
            }
        }
        let file = self.dir.path().join(if verify_clients { "mtls.conf" } else { "tls.conf" });
        std::fs::write(&file, text).unwrap();
        NatsServer::start_with(ServerConfig { config_file: Some(file), ..ServerConfig::default() }).unwrap()
    }
}

fn tls_url(server: &NatsServer) -> String {
    format!("tls://127.0.0.1:{}", server.port())
}

async fn connect(url: &str, tls: &Tls) -> Result<Client, ticket_client::ClientError> {
    let url: NatsUrl = url.parse().unwrap();
    Client::connect_with_tls(&url, &Credentials::default(), tls, "tls-test").await
}

fn ticketctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_it-ticketctl")).args(args).output().unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticketd_the_client_and_ticketctl_work_over_tls_and_a_client_without_the_ca_fails_clearly() {
    let pki = Pki::new();
    let server = pki.server(false);
    let url = tls_url(&server);
    let data = tempfile::tempdir().unwrap();
    // (No timer: on this one-account server an import is taken as sent, not marked imported,
    // and a timer would fire the history's past deadlines between its lines.)
    let config = data.path().join("ticketd.toml");
    std::fs::write(&config, "[timer]\nenabled = false\n").unwrap();
    let ca = pki.ca();
    let flags = ["--nats-tls-ca", path(&ca), "--config", path(&config)];
    let mut daemon = spawn_serve(&url, &flags, data.path());
    daemon.wait_for("ticketd ready", Duration::from_secs(30));

    let trusted = Tls { ca_file: Some(pki.ca()), ..Tls::default() };
    let client = connect(&url, &trusted).await.unwrap();
    let opened = client.open(&agent(), None, opening("advanced")).await.unwrap();
    assert_eq!(opened.events[0].position, 1);

    let board = ticketctl(&["--nats-url", &url, "--nats-tls-ca", path(&pki.ca()), "--json", "board"]);
    assert!(board.status.success(), "{}", String::from_utf8_lossy(&board.stderr));
    let board: serde_json::Value = serde_json::from_slice(&board.stdout).unwrap();
    assert!(board["entries"].as_array().is_some_and(|e| !e.is_empty()), "{board}");

    // An import over TLS takes the same flags (on this one-account server, trusted as sent).
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/import-history.jsonl");
    let import = ticketctl(&["--nats-url", &url, "--nats-tls-ca", path(&pki.ca()), "--json", "import", path(&example)]);
    assert!(import.status.success(), "{}", String::from_utf8_lossy(&import.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&import.stdout).unwrap();
    assert_eq!(summary["imported"].as_u64(), Some(12), "{summary}");

    // Without the CA, neither the client nor ticketctl trusts the server's certificate.
    let untrusted = connect(&url, &Tls::default()).await.unwrap_err().to_string();
    assert!(untrusted.contains("cannot connect") && untrusted.contains("certificate"), "{untrusted}");
    let refused = ticketctl(&["--nats-url", &url, "board"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("certificate"), "{stderr}");
    // A CA file that is not there is named before any connection is tried.
    let missing = Tls { ca_file: Some(pki.dir.path().join("nope.pem")), ..Tls::default() };
    let missing = connect(&url, &missing).await.unwrap_err().to_string();
    assert!(missing.contains("CA file") && missing.contains("nope.pem"), "{missing}");

    let (status, log) = daemon.terminate();
    assert!(status.success(), "ticketd exited with {status}:\n{}", log.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_verifying_clients_takes_a_client_certificate_of_its_ca_and_refuses_none() {
    let pki = Pki::new();
    let server = pki.server(true);
    let url = tls_url(&server);
    let (cert, key) = pki.issue("ticketd-client", &["ticketd"], ExtendedKeyUsagePurpose::ClientAuth);
    let data = tempfile::tempdir().unwrap();
    let ca = pki.ca();
    let flags = ["--nats-tls-ca", path(&ca), "--nats-tls-cert", path(&cert), "--nats-tls-key", path(&key)];
    let mut daemon = spawn_serve(&url, &flags, data.path());
    daemon.wait_for("ticketd ready", Duration::from_secs(30));

    let mutual = Tls { ca_file: Some(pki.ca()), cert_file: Some(cert.clone()), key_file: Some(key.clone()) };
    let client = connect(&url, &mutual).await.unwrap();
    client.open(&agent(), None, opening("advanced")).await.unwrap();
    let no_certificate = Tls { ca_file: Some(pki.ca()), ..Tls::default() };
    assert!(connect(&url, &no_certificate).await.is_err(), "a client without a certificate was let in");
    let half = Tls { cert_file: Some(cert), ..mutual.clone() };
    let half = Tls { key_file: None, ..half };
    assert!(connect(&url, &half).await.unwrap_err().to_string().contains("needs its key"));

    let (status, log) = daemon.terminate();
    assert!(status.success(), "ticketd exited with {status}:\n{}", log.join("\n"));
}
