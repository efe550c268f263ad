//! `veil-test-s3 BUCKET...`: the tests' S3-compatible server (s3s-fs over a
//! temporary folder, SigV4) as a process, for benches/e2e.py. Prints
//! `ENDPOINT ACCESS_KEY SECRET_KEY` on one line, then serves on 127.0.0.1
//! until interrupted. Not for production data: the folder is temporary.

use veil_tests::s3::{ACCESS_KEY, S3Server, SECRET_KEY};

#[tokio::main]
async fn main() {
    let buckets: Vec<String> = std::env::args().skip(1).collect();
    if buckets.is_empty() {
        eprintln!("usage: veil-test-s3 BUCKET...");
        std::process::exit(2);
    }
    let names: Vec<&str> = buckets.iter().map(String::as_str).collect();
    let server = S3Server::start(&names).await;
    println!("{} {ACCESS_KEY} {SECRET_KEY}", server.endpoint);
    let _ = tokio::signal::ctrl_c().await;
    drop(server);
}
