//! One deployment, one instance: a data directory names its instance once (`instance-id`), the
//! API carries the name in its micro service's metadata, and a ticketd that finds another
//! instance already serving its NATS account refuses to start (two would silently share the
//! requests: NATS spreads them over the queue group). A second ticketd on the same data directory
//! is refused by the log's own lock.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use async_nats::RequestErrorKind;
use tracing::info;

/// The file in the data directory that names the instance.
const FILE: &str = "instance-id";

/// The instance id of the data directory `dir`, made (a fresh uuid v7) and kept at its first start.
pub fn id(dir: &Path) -> anyhow::Result<String> {
    let file = dir.join(FILE);
    match std::fs::read_to_string(&file) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    }
    let id = uuid::Uuid::now_v7().to_string();
    ticket_log::durable::write_file(&file, format!("{id}\n").as_bytes())
        .with_context(|| format!("cannot write {}", file.display()))?;
    info!(instance = %id, file = %file.display(), "instance id made");
    Ok(id)
}

/// Asks who serves the API on this NATS account (`$SRV.PING.tickets`): nobody, or refuses.
pub async fn refuse_if_served(client: &async_nats::Client, own: &str) -> anyhow::Result<()> {
    let subject = format!("$SRV.PING.{}", ticket_nats::SERVICE_NAME);
    let answer = tokio::time::timeout(Duration::from_secs(10), client.request(subject.clone(), "".into())).await;
    let message = match answer {
        Ok(Ok(message)) => message,
        Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => return Ok(()),
        Ok(Err(e)) => bail!("cannot ask who else serves the API ({subject}): {e}"),
        Err(_) => bail!("cannot ask who else serves the API: no answer to {subject} within 10 s"),
    };
    let ping: serde_json::Value = serde_json::from_slice(&message.payload).unwrap_or_default();
    let other = ping["metadata"][ticket_nats::INSTANCE_METADATA].as_str().unwrap_or("unknown").to_owned();
    let same = if other == own { " (the same instance id: a copy of this data directory)" } else { "" };
    bail!(
        "another ticketd (instance {other}{same}, service {}) already serves {} on this NATS account: \
         one deployment is one account; stop the other, or give this one its own account",
        ping["id"].as_str().unwrap_or("?"),
        ticket_nats::SERVICE_NAME
    )
}
