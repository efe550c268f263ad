//! Per-request planning: what every GetFlightInfo and DoGet pays before the
//! first batch. Each iteration builds the principal's session, compiles the
//! secure views of the datasets it touches (policy resolution, masks, row
//! filters under the barrier), and plans the query to a physical plan.
//!
//! `cargo bench -p veil-benches --bench planning`

use criterion::{Criterion, criterion_group, criterion_main};
use veil::engine::Command;
use veil_benches::DemoEngine;
use veil_proto::{ScanCommand, SqlCommand};

fn planning(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let demo = runtime.block_on(DemoEngine::new());
    let scan = |filter: &str| {
        Command::Scan(ScanCommand {
            dataset: "clinical.trials".into(),
            columns: vec![],
            filter: filter.into(),
            limit: None,
        })
    };
    let join = Command::Sql(SqlCommand {
        query: "SELECT s.site, count(*) AS n, avg(t.amount) AS a \
                FROM clinical.trials t JOIN clinical.sites s ON t.state = s.state \
                GROUP BY s.site"
            .into(),
    });
    let cases = [
        ("scan, no policy applies (bob)", "bob", scan("")),
        ("scan, masks + row filter (alice)", "alice", scan("")),
        (
            "scan with a filter, masks + row filter (alice)",
            "alice",
            scan("age > 60 AND amount < 100"),
        ),
        (
            "sql join + aggregate, masks + row filter (alice)",
            "alice",
            join,
        ),
    ];
    let mut group = c.benchmark_group("plan");
    for (name, user, command) in &cases {
        let principal = demo.principal(user);
        // Fail loudly, not by measuring an error path.
        runtime
            .block_on(async {
                let scope = demo.engine.scope(&principal).await?;
                demo.engine.plan(&scope, command, None, None).await
            })
            .expect("plans");
        group.bench_function(*name, |b| {
            b.to_async(&runtime).iter(|| async {
                // One request: its scope (the state read once), then the plan.
                let scope = demo.engine.scope(&principal).await.expect("a scope");
                demo.engine
                    .plan(&scope, command, None, None)
                    .await
                    .expect("plans")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, planning);
criterion_main!(benches);
