//! The command service's metrics (the `metrics` facade: nothing is recorded unless the binary
//! installs a recorder, as `ticketd` does for its `/metrics` endpoint).

use std::time::Duration;

use crate::{CommandResult, ServiceError, ServiceErrorKind};

/// Counts a command by name and outcome (`accepted`, `duplicate`, or `refused` with the error
/// kind as `code`) and records how long it took.
pub(crate) fn command_done(command: &'static str, result: &Result<CommandResult, ServiceError>, took: Duration) {
    match result {
        Ok(r) => {
            let outcome = if r.duplicate { "duplicate" } else { "accepted" };
            metrics::counter!("ticketd_commands_total", "command" => command, "outcome" => outcome).increment(1);
        }
        Err(e) => {
            let kind = e.kind();
            let code = match kind {
                ServiceErrorKind::Rejected(rejected) => format!("{rejected:?}"),
                ServiceErrorKind::Conflict
                | ServiceErrorKind::Storage
                | ServiceErrorKind::Unavailable
                | ServiceErrorKind::Quarantined => format!("{kind:?}"),
            };
            metrics::counter!("ticketd_commands_total", "command" => command, "outcome" => "refused", "code" => code)
                .increment(1);
        }
    }
    metrics::histogram!("ticketd_command_duration_seconds", "command" => command).record(took.as_secs_f64());
}
