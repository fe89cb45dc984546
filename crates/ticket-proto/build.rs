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
    // Well-known types come from pbjson-types, which gives them serde impls, so every message
    // has the canonical proto3 JSON form (for exports and `--json` output).
    let descriptor_bytes = prost::Message::encode_to_vec(&descriptors);
    // Maps as BTreeMap: their encoding and JSON come out in key order, the same every time.
    prost_build::Config::new()
        .btree_map(["."])
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(descriptors)?;
    pbjson_build::Builder::new().register_descriptors(&descriptor_bytes)?.btree_map(["."]).build(&[".ticket"])?;
    Ok(())
}
