//! What the tests of several modules share.

use std::time::Duration;

use async_nats::jetstream;
use ticket_domain::{Partition, Partitions};

use crate::fence::{LogStream, LogStreamConfig};

/// Partition `index` of 16.
pub fn partition(index: u64) -> Partition {
    Partitions::new(16).unwrap().get(index).unwrap()
}

/// The log stream on `url`, created (retried while a fresh cluster elects its leaders).
pub async fn log_stream(url: &str, replicas: usize) -> LogStream {
    let client = async_nats::connect(url).await.unwrap();
    let mut js = jetstream::new(client);
    js.set_timeout(Duration::from_secs(3));
    let config = LogStreamConfig { replicas, read_idle: Duration::from_secs(5), ..LogStreamConfig::default() };
    LogStream::ensure_within(js, config, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("no log stream within the deadline: {e}"))
}
