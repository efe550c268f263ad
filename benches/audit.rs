//! Audit recording: what one durably recorded event adds to a request, and
//! how many events per second the store takes when many requests record at
//! once (group commit: one transaction per queued group).
//!
//! `cargo bench -p veil-benches --bench audit`
//!
//! SQLite runs in a temporary file (synchronous = FULL, WAL). PostgreSQL
//! comes from `VEIL_BENCH_POSTGRES_URL` (default
//! `host=127.0.0.1 port=5432 user=postgres dbname=test`), in a schema of its
//! own dropped at the end; `VEIL_BENCH_SKIP_POSTGRES=1` skips it.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;
use std::time::Duration;

use veil::audit::chain::AuditSealer;
use veil::audit::checkpoint::CheckpointSink;
use veil::audit::{AuditEventExt, AuditLog};
use veil::model::audit::AuditEvent;
use veil::secrets::{KeyPurpose, MasterKey};
use veil::store::Store;
use veil::store::postgres::{PostgresOptions, PostgresStore};
use veil::store::sqlite::SqliteStore;

/// Concurrent requests recording at once in the throughput case.
const CONCURRENT: u64 = 1000;

fn event() -> AuditEvent {
    let mut e = AuditEvent::new("read.start", None);
    e.issuer = "https://idp.example".into();
    e.subject = "alice".into();
    e.dataset = Some("clinical.trials".into());
    e.columns = vec!["name".into(), "ssn".into(), "state".into(), "age".into()];
    e.policies = vec!["hash-pii@3".into(), "state-rows@1".into()];
    e.masked_columns = vec!["name".into(), "ssn".into()];
    e.rows_filtered = true;
    e.query_fingerprint = "3f9a0c1b2d4e5f60718293a4".into();
    e
}

fn log_on(store: Arc<dyn Store>) -> AuditLog {
    AuditLog::start(
        store,
        AuditSealer::new(
            MasterKey::from_bytes([9; 32]).derive(KeyPurpose::AuditChain),
            "bench-node",
        ),
        CheckpointSink::log_only(),
        Duration::from_secs(3600),
    )
}

fn run(c: &mut Criterion, rt: &tokio::runtime::Runtime, backend: &str, log: &AuditLog) {
    let mut group = c.benchmark_group(format!("audit/{backend}"));
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("record one event (latency)", |b| {
        b.to_async(rt)
            .iter(|| async { log.record(event()).await.expect("recorded") })
    });
    group.throughput(Throughput::Elements(CONCURRENT));
    group.sample_size(10);
    group.bench_with_input(
        BenchmarkId::new("record concurrently (events/s)", CONCURRENT),
        &CONCURRENT,
        |b, n| {
            b.to_async(rt).iter(|| async {
                let tasks: Vec<_> = (0..*n)
                    .map(|_| {
                        let log = log.clone();
                        tokio::spawn(async move { log.record(event()).await })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("task").expect("recorded");
                }
            })
        },
    );
    group.finish();
}

fn audit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("veil.db")).expect("sqlite"));
    let log = rt.block_on(async { log_on(sqlite) });
    run(c, &rt, "sqlite", &log);
    rt.block_on(log.shutdown());

    if std::env::var("VEIL_BENCH_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
        return;
    }
    let url = std::env::var("VEIL_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into());
    let schema = format!("veil_bench_{}", std::process::id());
    let store = rt
        .block_on(PostgresStore::connect(&PostgresOptions {
            url: url.clone(),
            schema: schema.clone(),
            password: None,
            pool_size: 4,
        }))
        .unwrap_or_else(|e| {
            panic!(
                "the audit bench needs PostgreSQL at '{url}' (VEIL_BENCH_POSTGRES_URL): {}; or set VEIL_BENCH_SKIP_POSTGRES=1",
                e.message()
            )
        });
    let store = Arc::new(store);
    let log = rt.block_on(async { log_on(Arc::clone(&store) as Arc<dyn Store>) });
    run(c, &rt, "postgres", &log);
    rt.block_on(async {
        log.shutdown().await;
        store.drop_schema_for_tests().await;
    });
}

criterion_group!(benches, audit);
criterion_main!(benches);
