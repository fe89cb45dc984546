//! `ticketd`: see `ticketd --help`. The binary is glue; the daemon lives in the library.

fn main() -> std::process::ExitCode {
    ticketd::main()
}
