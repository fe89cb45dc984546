//! Leases against a real nats-server.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use ticket_testkit::NatsServer;

use super::*;
use crate::test_support::partition;

async fn leases(url: &str, ttl: Duration) -> Leases {
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    Leases::ensure(&js, LeaseConfig { ttl, ..LeaseConfig::default() }).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_nodes_racing_for_a_free_partition_exactly_one_gets_it() {
    let server = NatsServer::start().unwrap();
    let p = partition(5);
    let mut tasks = Vec::new();
    for n in 0..6 {
        let url = server.url();
        tasks.push(tokio::spawn(async move {
            leases(&url, Duration::from_secs(30)).await.acquire(p, &format!("node-{n}")).await.unwrap()
        }));
    }
    let mut won = Vec::new();
    for task in tasks {
        won.extend(task.await.unwrap());
    }
    assert_eq!(won.len(), 1, "{won:?}");
    let holder = leases(&server.url(), Duration::from_secs(30)).await.holder(p).await.unwrap();
    assert_eq!(holder, Some((won[0].node().to_owned(), won[0].revision())));
    // Another partition is free.
    assert_eq!(leases(&server.url(), Duration::from_secs(30)).await.holder(partition(6)).await.unwrap(), None);
}

/// Given a lease renewed well within its time to live, no other node gets it; when its owner
/// stops renewing, it expires on the server and another node takes it; the first owner's next
/// renewal is refused, naming the new holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_not_renewed_expires_and_passes_to_another_node() {
    let server = NatsServer::start().unwrap();
    let ttl = Duration::from_secs(2);
    let (a, b) = (leases(&server.url(), ttl).await, leases(&server.url(), ttl).await);
    let p = partition(1);
    let mut held = a.acquire(p, "node-a").await.unwrap().unwrap();
    // Renewed every tenth of the time to live, for longer than it: nobody else gets it.
    let until = Instant::now() + ttl + ttl / 2;
    while Instant::now() < until {
        a.renew(&mut held).await.unwrap();
        assert_eq!(b.acquire(p, "node-b").await.unwrap(), None);
        tokio::time::sleep(ttl / 10).await;
    }
    // No more renewals: the server lets it expire, and node b takes it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let taken = loop {
        if let Some(lease) = b.acquire(p, "node-b").await.unwrap() {
            break lease;
        }
        assert!(Instant::now() < deadline, "the lease did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(taken.written() >= held.written() + ttl, "not taken before it could have expired");
    assert_eq!(a.renew(&mut held).await, Err(LeaseError::Lost { partition: p, holder: Some("node-b".to_owned()) }));
    assert_eq!(a.holder(p).await.unwrap().map(|(node, _)| node), Some("node-b".to_owned()));
}

/// A planned handover: the owner releases, another node takes the lease at once, and the
/// released lease can neither be renewed nor released again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_lease_is_taken_at_once_and_stays_lost_to_its_old_owner() {
    let server = NatsServer::start().unwrap();
    let ttl = Duration::from_secs(60);
    let (a, b) = (leases(&server.url(), ttl).await, leases(&server.url(), ttl).await);
    let p = partition(2);
    let held = a.acquire(p, "node-a").await.unwrap().unwrap();
    let mut stale = held.clone();
    a.release(held).await.unwrap();
    assert_eq!(a.holder(p).await.unwrap(), None);
    let taken = b.acquire(p, "node-b").await.unwrap().unwrap();
    let lost = LeaseError::Lost { partition: p, holder: Some("node-b".to_owned()) };
    assert_eq!(a.renew(&mut stale).await, Err(lost.clone()));
    assert_eq!(a.release(stale).await, Err(lost));
    assert_eq!(b.holder(p).await.unwrap(), Some(("node-b".to_owned(), taken.revision())));
}

/// The leases' time to live is the cluster's: a node configured with another one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_time_to_live_than_the_buckets_is_refused() {
    let server = NatsServer::start().unwrap();
    leases(&server.url(), Duration::from_secs(30)).await;
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let other = Leases::ensure(&js, LeaseConfig { ttl: Duration::from_secs(10), ..LeaseConfig::default() }).await;
    assert!(matches!(other, Err(LeaseError::Misconfigured(_))), "{other:?}");
    let same = Leases::ensure(&js, LeaseConfig { ttl: Duration::from_secs(30), ..LeaseConfig::default() }).await;
    assert!(same.is_ok());
}

/// Given a lease written at some instant with a time to live, the watch says it is held up to
/// the time to live less its margin (an eighth), on the boot clock, and not from then on; a
/// lapse ends it at once.
#[test]
fn a_lease_watch_holds_for_the_time_to_live_less_its_margin_on_the_boot_clock() {
    let watch = LeaseWatch::default();
    let written = BootInstant::now();
    assert!(!watch.held_at(written), "a watch never renewed is not held");
    let ttl = Duration::from_secs(8);
    watch.renewed(written, ttl);
    assert!(watch.held_at(written));
    assert!(watch.held_at(written + Duration::from_millis(6_999)));
    assert!(!watch.held_at(written + Duration::from_secs(7)), "held into the margin");
    assert!(!watch.held_at(written + Duration::from_secs(60 * 60)), "held after an hour asleep");
    watch.lapse();
    assert!(!watch.held_at(written));
}

/// The boot clock is time since the host booted, as the kernel counts it in `/proc/uptime`
/// (suspensions included, unlike std's `Instant`), and never goes back.
#[cfg(target_os = "linux")]
#[test]
fn the_boot_clock_is_the_time_since_boot() {
    let uptime = || -> Duration {
        let text = std::fs::read_to_string("/proc/uptime").unwrap();
        Duration::from_secs_f64(text.split_whitespace().next().unwrap().parse().unwrap())
    };
    let before = uptime();
    let now = BootInstant::now();
    let after = uptime();
    // /proc/uptime is in hundredths of a second.
    let since_boot = now.saturating_duration_since(BootInstant(Duration::ZERO));
    assert!(since_boot + Duration::from_millis(20) >= before, "{since_boot:?} before {before:?}");
    assert!(since_boot <= after + Duration::from_millis(20), "{since_boot:?} after {after:?}");
    let mut last = now;
    for _ in 0..1000 {
        let next = BootInstant::now();
        assert!(next >= last);
        last = next;
    }
}
