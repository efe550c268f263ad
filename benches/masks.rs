//! Format-preserving encryption (FF1) of a column's values, the CPU cost the
//! `fpe` path of `e2e.py` pays per row: SSN-shaped values (one radix-10
//! chunk of 30 bits) and 16-digit card numbers, masked a batch at a time as
//! the mask does.
//!
//! `cargo bench -p veil-benches --bench masks`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

use arrow::array::StringArray;

use veil::policy::masks::format_preserving::FormatPreserving;
use veil::secrets::{KeyPurpose, MasterKey};

/// Values per batch: DataFusion's default batch size.
const BATCH: usize = 8192;

fn values(kind: &str) -> StringArray {
    (0..BATCH as u64)
        .map(|i| {
            let n = i.wrapping_mul(2_654_435_761);
            match kind {
                "ssn" => format!(
                    "{:03}-{:02}-{:04}",
                    n % 1000,
                    n / 1000 % 100,
                    n / 100_000 % 10_000
                ),
                _ => format!(
                    "4{:03} {:04} {:04} {:04}",
                    n % 1000,
                    n / 1000 % 10_000,
                    n / 10_000_000 % 10_000,
                    i % 10_000
                ),
            }
        })
        .map(Some)
        .collect()
}

fn fpe(c: &mut Criterion) {
    let key = MasterKey::from_bytes([7; 32]).derive(KeyPurpose::FormatPreserving {
        dataset_id: "bench",
        column: "ssn",
    });
    let mut group = c.benchmark_group("fpe");
    for kind in ["ssn", "card"] {
        let input = values(kind);
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_with_input(
            BenchmarkId::new("encrypt_array", kind),
            &input,
            |b, input| {
                b.iter(|| {
                    let masked = FormatPreserving::new(&key)
                        .encrypt_array(input)
                        .expect("a batch masks");
                    black_box(masked.value_data().len())
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, fpe);
criterion_main!(benches);
