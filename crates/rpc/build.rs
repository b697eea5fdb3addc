//! Generates the tonic/prost code for every contract in `proto/tern/v1`.
//!
//! Uses the vendored `protoc` so a fresh machine needs nothing installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let dir = "../../proto";
    let files = ["admin", "delivery", "mailbox", "queue", "submission"]
        .map(|name| format!("{dir}/tern/v1/{name}.proto"));
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    tonic_prost_build::configure().compile_protos(&files, &[dir.to_string()])?;
    Ok(())
}
