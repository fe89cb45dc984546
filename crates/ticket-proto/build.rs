//! Compiles `proto/ticket/v1/*.proto` with protox (a Rust protobuf compiler, so no system
//! `protoc` is needed) and generates the Rust types with prost-build.

use std::path::PathBuf;

const FILES: [&str; 6] = [
    "ticket/v1/common.proto",
    "ticket/v1/errors.proto",
    "ticket/v1/events.proto",
    "ticket/v1/commands.proto",
    "ticket/v1/queries.proto",
    "ticket/v1/log.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    for file in FILES {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let descriptors = protox::compile(FILES, [&root])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
