//! Generates the Rust types of `veil/v1/veil.proto` at every build: protox
//! (a protobuf compiler in Rust) parses the file and prost-build writes the
//! types, so building Veil needs no `protoc`, and the types can't go stale.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO: &str = "veil/v1/veil.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let files = protox::compile([PROTO], ["."])?;
    prost_build::Config::new()
        // Sorted, so an encoded WhoAmI doesn't depend on hash order.
        .btree_map([".veil.v1.WhoAmI.attributes"])
        // `prost::Name` for every message: `Named` type URLs come from the file.
        .enable_type_names()
        .compile_fds(files)?;
    Ok(())
}
