use std::time::Duration;

use super::*;

#[test]
fn a_server_starts_on_a_free_port_and_serves() {
    let server = NatsServer::start().unwrap();
    assert_ne!(server.port(), 0);
    let info = greeting(server.port(), Duration::from_secs(5)).unwrap();
    assert!(info.starts_with("INFO "), "{info}");
    assert!(info.contains("\"jetstream\":true"), "{info}");
}

#[test]
fn a_stopped_server_restarts_on_the_same_port_with_its_store() {
    let mut server = NatsServer::start().unwrap();
    let (port, store) = (server.port(), server.store_dir().to_path_buf());
    server.stop();
    assert!(!server.is_running());
    assert!(greeting(port, Duration::from_millis(500)).is_err(), "a stopped server still answers");
    server.restart().unwrap();
    assert_eq!((server.port(), server.store_dir()), (port, store.as_path()));
    assert!(greeting(port, Duration::from_secs(5)).unwrap().starts_with("INFO "));
}

#[test]
fn a_dropped_server_is_gone() {
    let port = {
        let server = NatsServer::start().unwrap();
        server.port()
    };
    assert!(greeting(port, Duration::from_millis(500)).is_err());
}

#[test]
fn three_servers_form_a_cluster() {
    let cluster = Cluster::start(3).unwrap();
    cluster.wait_routed(Duration::from_secs(30)).unwrap();
    for node in &cluster.nodes {
        assert!(greeting(node.port(), Duration::from_secs(5)).unwrap().starts_with("INFO "));
        let varz = node.monitor("varz").unwrap();
        assert_eq!(varz["cluster"]["name"], cluster.nodes[0].monitor("varz").unwrap()["cluster"]["name"]);
    }
    assert_eq!(cluster.urls().split(',').count(), 3);
}

#[test]
fn the_monitoring_endpoint_reports_jetstream() {
    let server = NatsServer::start().unwrap();
    let varz = server.monitor("varz").unwrap();
    assert_eq!(varz["server_name"], server.name());
    assert!(varz["jetstream"]["config"]["store_dir"].as_str().is_some());
}

#[test]
fn a_bad_configuration_fails_loudly_with_the_log() {
    let err = NatsServer::start_with(ServerConfig { args: vec!["--no-such-flag".into()], ..ServerConfig::default() })
        .unwrap_err();
    assert!(matches!(err, TestkitError::Exited { .. }), "{err}");
}
