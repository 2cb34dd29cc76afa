//! Compiles `users/v1/users.proto` with protox (pure Rust, so no system `protoc`),
//! writes the encoded descriptor set for gRPC reflection, and generates the tonic
//! client and server from the same descriptors.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // protox's path prints no rerun-if-changed of its own.
    println!("cargo:rerun-if-changed=users");

    let fds = protox::compile(["users/v1/users.proto"], ["."])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("users_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
