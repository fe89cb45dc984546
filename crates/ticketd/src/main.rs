//! `ticketd`: see `ticketd --help`. The binary is glue; the daemon lives in the library.

/// mimalloc: the read models, the log and the timer allocate and free many small values on
/// several threads, where the system allocator spends much of a rebuild in its locks (issue 13).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ticketd::main()
}
