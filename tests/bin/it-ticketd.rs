//! `ticketd` as the integration tests run it.

fn main() -> std::process::ExitCode {
    ticketd::main()
}
