//! Differential privacy (issue "Differential privacy"): what an answer
//! costs when it is kept (planning the query, finding the answer, the
//! user's view recorded), in process and as a client's round trip over
//! Flight on loopback; and a fresh answer (the exact bounded aggregates
//! plus noise) against the same aggregate run through DataFusion directly
//! on the same parquet file.
//!
//! `cargo bench -p veil-benches --bench dp` (rows: `VEIL_DP_BENCH_ROWS`,
//! default 10,000,000; the file is generated once per run).

use criterion::{Criterion, criterion_group, criterion_main};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use veil::engine::Command;
use veil_benches::DemoEngine;
use veil_proto::SqlCommand;

const STATES: [&str; 10] = ["CA", "NY", "TX", "FL", "WA", "IL", "MA", "CO", "GA", "OR"];
const DIAGNOSES: [&str; 6] = [
    "hypertension",
    "type 2 diabetes",
    "asthma",
    "migraine",
    "arthritis",
    "none",
];

/// `rows` visits, one per participant, in 1M-row batches.
fn write_visits(path: &std::path::Path, rows: usize) {
    use arrow::array::{ArrayRef, Float64Array, Int32Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    use rand::{Rng, SeedableRng};
    let schema = Arc::new(Schema::new(vec![
        Field::new("participant_id", DataType::Int64, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("diagnosis", DataType::Utf8, false),
        Field::new("age", DataType::Int32, false),
        Field::new("amount", DataType::Float64, false),
    ]));
    let mut w = veil::demo::parquet_writer(
        std::fs::File::create(path).expect("file"),
        Arc::clone(&schema),
    )
    .expect("writer");
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let mut start = 0usize;
    while start < rows {
        let n = (rows - start).min(1_000_000);
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(
                (start..start + n).map(|i| i as i64),
            )),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|_| STATES[rng.random_range(0..STATES.len())]),
            )),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|_| DIAGNOSES[rng.random_range(0..DIAGNOSES.len())]),
            )),
            Arc::new(Int32Array::from_iter_values(
                (0..n).map(|_| rng.random_range(18..90)),
            )),
            Arc::new(Float64Array::from_iter_values(
                (0..n).map(|_| rng.random_range(5_000..500_000) as f64 / 100.0),
            )),
        ];
        w.write(&RecordBatch::try_new(Arc::clone(&schema), arrays).expect("batch"))
            .expect("write");
        start += n;
    }
    w.close().expect("close");
}

fn config(data: &std::path::Path, file: &std::path::Path) -> String {
    format!(
        r#"roots = [{data:?}]
[auth]
audience = "veil"
default_issuer = "bench"

[[auth.keys]]
issuer = "bench"
algorithm = "HS256"
secret_file = "jwt.secret"

[[users]]
name = "alice"
groups = ["analysts"]

[[datasets]]
name = "lab.visits"
format = "parquet"
location = {file:?}
owners = ["owner"]

[[policies]]
name = "visits-for-everyone"
dataset = "lab.visits"
subscription = {{ anyone = true }}

[[policies]]
name = "visits-dp"
dataset = "lab.visits"
[policies.differential_privacy]
privacy_unit = "participant_id"
epsilon = 1.0
latency_tolerance = "24h"
groupable = ["diagnosis"]
columns.age = {{ lower = 0, upper = 100 }}
columns.amount = {{ lower = 0, upper = 5000, scale = 100 }}
public_groups = {{ diagnosis = ["hypertension", "type 2 diabetes", "asthma", "migraine", "arthritis", "none"] }}
"#
    )
}

/// The bench's token key (HS256, hex).
const SECRET: &str = "6a1f0e3c9b2d4a5e8f7061b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6";

const AGGREGATE: &str =
    "SELECT diagnosis, COUNT(*) AS n, SUM(age) AS s, AVG(amount) AS a FROM lab.visits";

fn dp(c: &mut Criterion) {
    let rows: usize = std::env::var("VEIL_DP_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let file = data.join("visits.parquet");
    write_visits(&file, rows);
    let text = config(&data, &file);
    veil::secrets::write_private_file(&dir.path().join("jwt.secret"), SECRET).expect("secret");
    let bench = runtime.block_on(DemoEngine::from_config_text(dir, &text));
    let alice = bench.user("bench", "alice");
    let run = |query: String| {
        let engine = Arc::clone(&bench.engine);
        let alice = Arc::clone(&alice);
        async move {
            let scope = engine.scope(&alice).await.expect("scope");
            let cmd = Command::Sql(SqlCommand {
                query,
                ..Default::default()
            });
            let planned = engine.plan(&scope, &cmd, None, None).await.expect("plans");
            let stream = planned.execute().expect("executes");
            let batches: Vec<arrow::record_batch::RecordBatch> =
                futures::TryStreamExt::try_collect(stream)
                    .await
                    .expect("answers");
            assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 6);
        }
    };
    let kept = format!("{AGGREGATE} WHERE age > 0 GROUP BY diagnosis");
    runtime.block_on(run(kept.clone()));
    let mut group = c.benchmark_group("dp");
    group.bench_function("kept answer, in process (plan + serve)", |b| {
        b.to_async(&runtime).iter(|| run(kept.clone()))
    });
    // A fresh draw each time: another spelling is another answer.
    let n = AtomicU64::new(1);
    group.sample_size(10);
    group.bench_function(
        format!("fresh answer, COUNT/SUM/AVG GROUP BY over {rows} rows"),
        |b| {
            b.to_async(&runtime).iter(|| {
                let i = n.fetch_add(1, Ordering::Relaxed);
                run(format!("{AGGREGATE} WHERE age > -{i} GROUP BY diagnosis"))
            })
        },
    );
    let ctx = datafusion_session(&runtime, &file);
    group.bench_function(
        format!("exact query through DataFusion directly, {rows} rows"),
        |b| {
            b.to_async(&runtime).iter(|| async {
                let df = ctx
                    .sql(
                        &format!("{AGGREGATE} WHERE age > 0 GROUP BY diagnosis")
                            .replace("lab.visits", "visits"),
                    )
                    .await
                    .expect("plans");
                let out = df.collect().await.expect("runs");
                assert_eq!(out.iter().map(|b| b.num_rows()).sum::<usize>(), 6);
            })
        },
    );
    group.finish();
    // A client's round trip over Flight on loopback (GetFlightInfo and
    // DoGet, each planning the query) for a kept answer.
    let mut group = c.benchmark_group("dp-flight");
    let server_dir = tempfile::tempdir().expect("tempdir");
    let (address, token, running) = runtime.block_on(serve(server_dir.path(), &text, &data));
    let conn = runtime.block_on(async {
        let conn = veil_client::Connection::connect(&address, &token)
            .await
            .expect("connects");
        conn.sql(&kept).await.expect("first draw");
        conn
    });
    group.bench_function("kept answer, client round trip over loopback", |b| {
        b.to_async(&runtime)
            .iter(|| async { conn.sql(&kept).await.expect("answers") })
    });
    group.finish();
    runtime.block_on(running.stop()).expect("stops");
}

/// A server for `text` in `dir` (the data stays where `text` names it).
async fn serve(
    dir: &std::path::Path,
    text: &str,
    _data: &std::path::Path,
) -> (String, String, veil::server::Running) {
    let path = dir.join("veil.toml");
    std::fs::write(&path, text).expect("config");
    veil::secrets::write_private_file(&dir.join("jwt.secret"), SECRET).expect("secret");
    let cfg = veil::config::Config::load(&path).expect("config");
    let minter =
        veil::auth::jwt::TokenMinter::from_config(&cfg.auth, &cfg.base_dir).expect("minter");
    let token = minter
        .mint("alice", &[], &Default::default(), 3600)
        .expect("token");
    let running = veil::server::start(
        cfg,
        veil::server::ServeOptions {
            listen: Some("127.0.0.1:0".into()),
            insecure: false,
        },
    )
    .await
    .expect("starts");
    (format!("grpc://{}", running.addr), token, running)
}

fn datafusion_session(
    runtime: &tokio::runtime::Runtime,
    file: &std::path::Path,
) -> datafusion::prelude::SessionContext {
    let ctx = datafusion::prelude::SessionContext::new();
    runtime
        .block_on(ctx.register_parquet(
            "visits",
            file.to_str().expect("utf-8 path"),
            Default::default(),
        ))
        .expect("registers");
    ctx
}

criterion_group!(benches, dp);
criterion_main!(benches);
