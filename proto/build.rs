//! Compiles proto/*.proto with protox (pure Rust, so no system `protoc`), generates the tonic
//! code, and writes the encoded file descriptor set that tonic-reflection serves.

use std::path::PathBuf;

use prost::Message;

const PROTO_FILES: [&str; 2] = ["proto/percy.proto", "proto/raft.proto"];
const PUBLIC_PROTO: &str = "proto/percy.proto";

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
    // Reflection lists the public API only: the internal service is not for clients.
    let public = protox::compile([PUBLIC_PROTO], ["proto"])?;
    std::fs::write(
        out_dir.join("percy_public_descriptor.bin"),
        public.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Undecodable requests are INVALID_ARGUMENT, not INTERNAL (src/codec.rs).
        .codec_path("crate::codec::StrictProstCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
