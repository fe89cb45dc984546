//! The key space of the log tree. One tree holds every index so that one atomic sled batch
//! writes an append's events, indexes, command record, outbox entries and head together.
//!
//! | key | value |
//! |---|---|
//! | `e` position (u64 BE) | `LogRecord` (envelope + hash chain) |
//! | `s` ticket (16 bytes) version (u64 BE) | position (u64 BE) |
//! | `i` command id (UTF-8) | `CommandRecord` (the command, its policy, its positions) |
//! | `m` name | metadata: `head`, `hash`, `format`, `published` (the outbox watermark), `published-sequence` (the event stream's sequence at the last event published), `clock` (`wall` or `simulated`), `sealed` (the last position moved to the archive) |
//!
//! Records of positions up to `sealed` are in the archive (`archive.redb`), under the same keys.

use ticket_domain::{CommandId, TicketId};

pub const EVENT: u8 = b'e';
pub const STREAM: u8 = b's';
pub const COMMAND_ID: u8 = b'i';

pub const META_HEAD: &[u8] = b"mhead";
pub const META_HASH: &[u8] = b"mhash";
pub const META_FORMAT: &[u8] = b"mformat";
pub const META_PUBLISHED: &[u8] = b"mpublished";
pub const META_PUBLISHED_SEQUENCE: &[u8] = b"mpublished-sequence";
pub const META_CLOCK: &[u8] = b"mclock";
pub const META_SEALED: &[u8] = b"msealed";

/// The on-disk layout version; a different one is refused at open.
pub const FORMAT: u32 = 1;

pub fn positional(prefix: u8, position: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = prefix;
    key[1..].copy_from_slice(&position.to_be_bytes());
    key
}

pub fn stream_prefix(ticket: TicketId) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = STREAM;
    key[1..].copy_from_slice(ticket.as_uuid().as_bytes());
    key
}

pub fn stream(ticket: TicketId, version: u64) -> [u8; 25] {
    let mut key = [0u8; 25];
    key[..17].copy_from_slice(&stream_prefix(ticket));
    key[17..].copy_from_slice(&version.to_be_bytes());
    key
}

pub fn command_id(id: &CommandId) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.as_str().len());
    key.push(COMMAND_ID);
    key.extend_from_slice(id.as_str().as_bytes());
    key
}

/// The u64 at the end of a key or in a value; `None` if there are not 8 bytes.
pub fn trailing_u64(bytes: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = bytes.get(bytes.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}
