//! `ticketctl`: see `ticketctl --help`. The binary is glue; the commands live in the library.

fn main() -> std::process::ExitCode {
    ticketctl::main()
}
