//! Generates the wire types from `proto/` with protox (pure Rust, no system `protoc`).

use std::path::PathBuf;

const PROTO_FILES: &[&str] = &[
    "medledger/wire/v1/envelope.proto",
    "medledger/wire/v1/channels.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={}", proto_root.join(file).display());
    }
    let descriptors = protox::compile(PROTO_FILES, [&proto_root])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
