//! Per-request planning: what every GetFlightInfo and DoGet pays before the
//! first batch. Each iteration builds the principal's session, compiles the
//! secure views of the datasets it touches (policy resolution, masks, row
//! filters under the barrier), and plans the query to a physical plan.
//!
//! A second group reproduces a large catalog (100 datasets of 100 columns,
//! 10,000 tagged columns, 1,000 global masking policies; and the same
//! without masking policies; and 10 datasets of 100 columns) and reports
//! what a `GetFlightInfo` plans (scope, plan, layout) and what a `DoGet`
//! plans (scope, plan of one endpoint's part at the ticket's clock)
//! separately: repeated requests, as a notebook makes them, and a first
//! request (a principal never seen, so nothing it could reuse is kept).
//!
//! `cargo bench -p veil-benches --bench planning`

use criterion::{Criterion, criterion_group, criterion_main};
use std::sync::Arc;
use veil::engine::Command;
use veil::model::identity::Principal;
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
        ..Default::default()
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

fn large_catalog(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let catalogs = [
        ("10x100 cols, no masks", 10, 100, 0),
        ("100x100 cols, no masks", 100, 100, 0),
        ("100x100 cols, 1000 masking policies", 100, 100, 1000),
    ];
    let mut group = c.benchmark_group("catalog");
    for (label, datasets, columns, policies) in catalogs {
        let engine = runtime.block_on(DemoEngine::generated(datasets, columns, policies));
        let scan = ScanCommand {
            dataset: format!("probe.d{}", datasets / 2),
            ..Default::default()
        };
        let command = Command::Scan(scan.clone());
        let reader = engine.reader();
        let flight_info = |who: Arc<Principal>| {
            let (engine, scan, command) = (&engine.engine, &scan, &command);
            async move {
                let scope = engine.scope(&who).await.expect("a scope");
                let planned = engine
                    .plan(&scope, command, None, None)
                    .await
                    .expect("plans");
                let layout = engine
                    .layout(&scope, scan, &planned)
                    .await
                    .expect("a layout");
                (planned, layout)
            }
        };
        // Fail loudly, not by measuring an error path.
        let (planned, layout) = runtime.block_on(flight_info(Arc::clone(&reader)));
        assert_eq!(planned.schema.fields().len(), columns);
        let part = layout.parts[0].clone();
        let at = Some(planned.planned_at);
        group.bench_function(format!("GetFlightInfo, {label}"), |b| {
            b.to_async(&runtime)
                .iter(|| flight_info(Arc::clone(&reader)))
        });
        group.bench_function(format!("DoGet, {label}"), |b| {
            b.to_async(&runtime).iter(|| async {
                let scope = engine.engine.scope(&reader).await.expect("a scope");
                engine
                    .engine
                    .plan(&scope, &command, part.clone(), at)
                    .await
                    .expect("plans")
            })
        });
        let mut n = 0u64;
        group.bench_function(format!("GetFlightInfo, first request, {label}"), |b| {
            b.to_async(&runtime).iter(|| {
                n += 1;
                flight_info(engine.reader_with_attribute(n))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, planning, large_catalog);
criterion_main!(benches);
