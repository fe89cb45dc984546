//! Tables and progress bars.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use indicatif::{ProgressBar, ProgressStyle};

pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    table
}

/// A progress bar on standard error (hidden when standard error is not a terminal).
pub fn progress(total: u64, message: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(message);
    bar
}

/// Writes a line to standard output. A closed pipe (`ticketctl history ... | head`) ends the
/// program quietly instead of panicking as `println!` would.
pub fn emit(line: &impl std::fmt::Display) -> Result<(), crate::Failure> {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{line}").map_err(|e| {
        if e.kind() == std::io::ErrorKind::BrokenPipe { crate::Failure::Quiet } else { crate::Failure::Data(e.into()) }
    })
}

pub fn print_json(value: &impl serde::Serialize) -> Result<(), crate::Failure> {
    emit(&serde_json::to_string_pretty(value)?)?;
    Ok(())
}
