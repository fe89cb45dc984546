//! Snapshots of ticket state: bincode, rebuildable, versioned by format. A snapshot that is
//! missing, of another format or unreadable is ignored and the state is rebuilt from the log.

use ticket_domain::TicketState;

/// Bump when the shape of `TicketState` changes: older snapshots are then rebuilt.
pub const SNAPSHOT_FORMAT: u32 = 2;

pub fn encode_snapshot(state: &TicketState) -> Option<Vec<u8>> {
    let mut bytes = SNAPSHOT_FORMAT.to_be_bytes().to_vec();
    bincode::serde::encode_into_std_write(state, &mut bytes, bincode::config::standard()).ok()?;
    Some(bytes)
}

/// `None` when the bytes are of another format or do not decode.
pub fn decode_snapshot(bytes: &[u8]) -> Option<TicketState> {
    let (format, body) = bytes.split_first_chunk::<4>()?;
    if u32::from_be_bytes(*format) != SNAPSHOT_FORMAT {
        return None;
    }
    let (state, read) = bincode::serde::decode_from_slice(body, bincode::config::standard()).ok()?;
    (read == body.len()).then_some(state)
}

#[cfg(test)]
mod tests;
