//! Compiles proto/*.proto with protox (pure Rust, so no system `protoc`), generates the tonic
//! code, and writes the encoded file descriptor set that tonic-reflection serves.

use std::path::PathBuf;

use prost::Message;

const PROTO_FILES: [&str; 2] = ["proto/percy.proto", "proto/raft.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(PROTO_FILES, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("percy_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
