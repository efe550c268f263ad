//! k-anonymized reads of a file dataset split into endpoints like any scan:
//! each part still counts over the whole dataset (a combination seen once
//! in each of two files is not suppressed), the endpoints of one scan share
//! a single count, later reads reuse it, and no kept count outlives what it
//! was counted from: other row policies, a changed file.

use super::tests::{demo_engine_with, principal};
use super::*;

const PEOPLE: [(&str, &str); 3] = [
    ("a.csv", "1,Female,Ohio,34\n2,Female,Florida,41\n"),
    ("b.csv", "3,Female,Florida,67\n4,Female,Arkansas,29\n"),
    ("c.csv", "5,Male,Florida,52\n6,Female,Ohio,70\n"),
];

const EXTRA: &str = r#"
[[datasets]]
name = "census.people"
format = "csv"
location = "data/census"
owners = ["dave"]

[[policies]]
name = "people-for-everyone"
dataset = "census.people"
subscription = { anyone = true }

[[policies]]
name = "joint"
dataset = "census.people"
columns = ["gender", "state"]
mask = { k_anonymity = { k = 2 } }

[[policies]]
name = "under-69-except-dave"
dataset = "census.people"
row_filter = { where = "age < 69" }
except = { users = ["dave"] }
"#;

fn write(dir: &std::path::Path, file: &str, rows: &str) {
    std::fs::write(
        dir.join("data/census").join(file),
        format!("id,gender,state,age\n{rows}"),
    )
    .unwrap();
}

/// Every endpoint of a scan, read at once; the rows as sorted lines of
/// `id gender state`.
async fn read_parts(engine: &Arc<Engine>, who: &Arc<Principal>) -> (usize, Vec<String>) {
    let scope = engine.scope(who).await.unwrap();
    let scan = census_scan();
    let command = Command::Scan(scan.clone());
    let whole = engine.plan(&scope, &command, None, None).await.unwrap();
    let layout = engine.layout(&scope, &scan, &whole).await.unwrap();
    let reads = layout.parts.into_iter().map(|part| {
        let (engine, scope, command) = (Arc::clone(engine), Arc::clone(&scope), command.clone());
        async move {
            let q = engine.plan(&scope, &command, part, None).await.unwrap();
            datafusion::physical_plan::common::collect(q.execute().unwrap())
                .await
                .unwrap()
        }
    });
    let parts = futures::future::join_all(reads).await;
    let n = parts.len();
    let whole_rows = datafusion::physical_plan::common::collect(whole.execute().unwrap())
        .await
        .unwrap();
    let lines = |batches: &[datafusion::arrow::record_batch::RecordBatch]| {
        use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
        let options = FormatOptions::default().with_null("-");
        let mut out = Vec::new();
        for b in batches {
            let columns: Vec<ArrayFormatter> = b
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
                .collect();
            for r in 0..b.num_rows() {
                let values: Vec<String> = columns.iter().map(|c| c.value(r).to_string()).collect();
                out.push(values.join(" "));
            }
        }
        out.sort();
        out
    };
    let from_parts = lines(&parts.concat());
    assert_eq!(
        from_parts,
        lines(&whole_rows),
        "the parts make up the whole read"
    );
    (n, from_parts)
}

/// A scan of the census's id, gender and state.
fn census_scan() -> ScanCommand {
    ScanCommand {
        dataset: "census.people".into(),
        columns: vec!["id".into(), "gender".into(), "state".into()],
        ..Default::default()
    }
}

/// The dataset and k-anonymity of [`EXTRA`], its row policy replaced by
/// `policies`.
fn with_row_policies(policies: &str) -> String {
    let (base, _) = EXTRA.split_once("[[policies]]\nname = \"under-69").unwrap();
    format!("{base}{policies}")
}

/// The demo with the census files, one endpoint per file, and `extra`.
async fn census(dir: &std::path::Path, extra: &str) -> (Arc<Engine>, Arc<Snapshot>) {
    let config = crate::demo::prepare(dir).unwrap();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("rows_per_endpoint = 40000", "rows_per_endpoint = 1");
    std::fs::write(&config, text).unwrap();
    std::fs::create_dir_all(dir.join("data/census")).unwrap();
    for (file, rows) in PEOPLE {
        write(dir, file, rows);
    }
    let (engine, snap) = demo_engine_with(dir, extra).await;
    (Arc::new(engine), snap)
}

/// Row policies that plan alike but keep different rows (samples of
/// different shares: the share is not in the plan's text) never share
/// counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_are_not_shared_by_samples_of_different_shares() {
    let dir = tempfile::tempdir().unwrap();
    let extra = with_row_policies(
        r#"
[[policies]]
name = "all-of-them-for-alice"
dataset = "census.people"
row_filter = { sample = 99.999, column = "id" }
except = { users = ["dave", "bob"] }

[[policies]]
name = "one-percent-for-bob"
dataset = "census.people"
row_filter = { sample = 1, column = "id" }
except = { users = ["dave", "alice"] }
"#,
    );
    let (engine, snap) = census(dir.path(), &extra).await;
    // bob counts first (his sample keeps next to nothing); alice's sample
    // keeps every row, so she sees what dave sees.
    let bob = read_parts(&engine, &principal(&snap, "bob")).await.1;
    assert!(bob.len() < 6, "{bob:?}");
    let alice = read_parts(&engine, &principal(&snap, "alice")).await.1;
    let dave = read_parts(&engine, &principal(&snap, "dave")).await.1;
    assert_eq!(alice, dave);
    assert_eq!(engine.kept_counts.runs(), 3, "one count each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k_anonymized_parts_share_one_count_of_the_whole_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, snap) = census(dir.path(), EXTRA).await;
    let counted = || engine.kept_counts.runs();
    let (dave, alice) = (principal(&snap, "dave"), principal(&snap, "alice"));

    // Female Ohio occurs once in a.csv and once in c.csv: counted over the
    // whole dataset it is kept; a part counting itself would null it.
    let dave_sees: Vec<String> = [
        "1 Female Ohio",
        "2 Female Florida",
        "3 Female Florida",
        "4 - -",
        "5 - -",
        "6 Female Ohio",
    ]
    .map(String::from)
    .to_vec();
    let (endpoints, rows) = read_parts(&engine, &dave).await;
    assert_eq!(
        endpoints, 3,
        "a k-anonymized file dataset splits like a scan"
    );
    assert_eq!(rows, dave_sees);
    assert_eq!(
        counted(),
        1,
        "three endpoints and the whole read, one count"
    );
    assert_eq!(read_parts(&engine, &dave).await.1, dave_sees);
    assert_eq!(counted(), 1, "a repeated read reuses the count");

    // Another row policy counts other rows: its own count. Without row 6,
    // Female Ohio is alone. (One endpoint: a read a row policy filters is
    // never cut by files, and no kept copy holds k-anonymized rows.)
    let (endpoints, rows) = read_parts(&engine, &alice).await;
    assert_eq!(endpoints, 1);
    assert_eq!(
        rows,
        [
            "1 - -",
            "2 Female Florida",
            "3 Female Florida",
            "4 - -",
            "5 - -"
        ]
        .map(String::from)
    );
    assert_eq!(counted(), 2);
    assert_eq!(
        read_parts(&engine, &dave).await.1,
        dave_sees,
        "dave's count stays his"
    );
    assert_eq!(counted(), 2);

    // A changed file is counted afresh: a second Male Florida keeps both.
    write(
        dir.path(),
        "c.csv",
        "5,Male,Florida,52\n6,Female,Ohio,70\n7,Male,Florida,20\n",
    );
    let (_, rows) = read_parts(&engine, &dave).await;
    assert_eq!(
        rows,
        [
            "1 Female Ohio",
            "2 Female Florida",
            "3 Female Florida",
            "4 - -",
            "5 Male Florida",
            "6 Female Ohio",
            "7 Male Florida",
        ]
        .map(String::from)
    );
    assert_eq!(counted(), 3);
}

/// A reader that leaves while its read counts for others too (the
/// endpoints of a scan share one count) fails nobody else: a read that was
/// waiting for that count counts instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_leaving_mid_count_fails_no_other_reader() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    // A row policy slow to evaluate (a second or so per file, each file a
    // call): the count is still running when the first reader leaves.
    let extra = with_row_policies(
        r#"
[[policies]]
name = "slow-to-count"
dataset = "census.people"
row_filter = { where = "levenshtein(repeat(state, 1500), repeat(gender, 1500)) >= 0" }
"#,
    );
    let (engine, snap) = census(dir.path(), &extra).await;
    let dave = principal(&snap, "dave");
    let scope = engine.scope(&dave).await.unwrap();
    let scan = census_scan();
    let command = Command::Scan(scan.clone());
    // Parts by file, as a ticket may name them (a layout never cuts a
    // read a row policy filters by files).
    let d = scope.readable("census.people").unwrap().clone();
    let files = scope
        .listing(&engine.stores, &d)
        .await
        .unwrap()
        .files
        .clone();
    let parts: Vec<Option<ScanPart>> = files
        .iter()
        .map(|f| {
            Some(ScanPart {
                files: vec![veil_proto::FileSlice {
                    path: f.path.clone(),
                    ..Default::default()
                }],
                siblings: files.len() as u32,
                ..Default::default()
            })
        })
        .collect();
    assert!(parts.len() > 1, "{} parts", parts.len());
    let first = engine
        .plan(&scope, &command, parts[0].clone(), None)
        .await
        .unwrap();
    let second = engine
        .plan(&scope, &command, parts[1].clone(), None)
        .await
        .unwrap();
    // The first part's read starts the shared count...
    let mut leaving = first.execute().unwrap();
    let started = tokio::time::timeout(std::time::Duration::from_millis(300), leaving.next());
    assert!(started.await.is_err(), "still counting");
    // ... the second waits for it, and the first's reader leaves.
    let staying = tokio::spawn(datafusion::physical_plan::common::collect(
        second.execute().unwrap(),
    ));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    drop(leaving);
    let rows = staying
        .await
        .unwrap()
        .expect("the reader that stayed is answered");
    assert!(rows.iter().map(|b| b.num_rows()).sum::<usize>() > 0);
    assert_eq!(
        engine.kept_counts.runs(),
        2,
        "counted again by the reader that stayed"
    );
}
