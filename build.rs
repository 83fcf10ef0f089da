//! Compiles the gNOI containerz protos in `proto/` (our own, wire-compatible with upstream) into
//! tonic server and client code. Needs `protoc` (Debian `protobuf-compiler`, installed by
//! `scripts/install-deps.sh`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Deploy content arrives as `Bytes` sliced from the receive buffer: no copy per chunk.
        .bytes(".gnoi.containerz.DeployRequest.content")
        .compile_protos(&["proto/gnoi/containerz/containerz.proto"], &["proto"])?;
    Ok(())
}
