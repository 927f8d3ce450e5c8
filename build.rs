//! Two build steps:
//! - records the git commit the binary is built from, so a running server can say which code it
//!   is (a Docker build has no `.git`: it passes `GIT_COMMIT` as a build argument instead);
//! - generates the gRPC Open Inference Protocol's messages and service trait from
//!   `proto/open_inference.proto` (src/grpc). protox parses the file in Rust, so no `protoc`
//!   binary is needed on a developer's machine, in CI or in the image build.
use std::process::Command;

const PROTO: &str = "proto/open_inference.proto";

fn main() {
    generate_grpc();
    record_git_commit();
}

fn generate_grpc() {
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors =
        protox::compile([PROTO], ["proto"]).unwrap_or_else(|e| panic!("cannot parse {PROTO}: {e}"));
    tonic_prost_build::configure()
        .build_client(false)
        .build_transport(false)
        // Tensor bytes as `Bytes`: decoded as slices of the request buffer, not copied again.
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .compile_fds(descriptors)
        .unwrap_or_else(|e| panic!("cannot generate code from {PROTO}: {e}"));
}

fn record_git_commit() {
    println!("cargo:rerun-if-env-changed=GIT_COMMIT");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let commit = std::env::var("GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=FERRUM_BUILD_GIT_COMMIT={commit}");
}
