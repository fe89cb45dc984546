//! What the tests of several modules share.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use ticket_domain::{Partition, Partitions};

use crate::fence::{LogStream, LogStreamConfig};

/// Partition `index` of 16.
pub fn partition(index: u64) -> Partition {
    Partitions::new(16).unwrap().get(index).unwrap()
}

/// The log stream on `url`, created (JetStream on a fresh cluster elects its leaders first, so
/// creating it is retried until a deadline).
pub async fn log_stream(url: &str, replicas: usize) -> LogStream {
    let client = async_nats::connect(url).await.unwrap();
    let mut js = jetstream::new(client);
    js.set_timeout(Duration::from_secs(3));
    let config = LogStreamConfig { replicas, read_idle: Duration::from_secs(5), ..LogStreamConfig::default() };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match LogStream::ensure(js.clone(), config.clone()).await {
            Ok(stream) => return stream,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "the log stream is not there yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no log stream within the deadline: {e}"),
        }
    }
}
