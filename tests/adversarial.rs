//! Attempts to read around the policies over the demo's `clinical.trials`
//! as parquet files: the shared attacks (`adversarial/attacks.rs`) and
//! those about files.

#[path = "adversarial/attacks.rs"]
mod attacks;

use attacks::code;
use prost::Message;
use tonic::Code;
use veil_client::Scan;
use veil_tests::TestServer;

async fn demo() -> Option<TestServer> {
    Some(TestServer::demo().await)
}

#[tokio::test]
async fn a_source_that_dies_mid_read_fails_cleanly_without_detail() {
    let server = TestServer::demo().await;
    let data = server.dir.path().join("data/broken");
    std::fs::create_dir_all(&data).unwrap();
    veil::demo::write_trials(&data.join("a.parquet"), 50).unwrap();
    veil::demo::write_trials(&data.join("b.parquet"), 50).unwrap();
    let dave = server.connect("dave").await;
    let req = veil_proto::RegisterDatasetRequest {
        name: "ops.broken".into(),
        format: "parquet".into(),
        location: data.display().to_string(),
        ..Default::default()
    };
    dave.action(veil_proto::actions::REGISTER_DATASET, req.encode_to_vec())
        .await
        .unwrap();
    let info = dave
        .scan_info("ops.broken", &Scan::default())
        .await
        .unwrap();
    // The file is replaced by garbage between planning and reading.
    std::fs::write(
        data.join("b.parquet"),
        b"PAR1 this is not parquet, secret-marker-42 PAR1",
    )
    .unwrap();
    let mut errors = Vec::new();
    for ep in info.endpoint {
        if let Err(e) = dave.read_ticket(ep.ticket.unwrap()).await {
            errors.push(e);
        }
    }
    assert!(!errors.is_empty(), "reading the broken file fails");
    for e in errors {
        assert!(
            matches!(code(&e), Code::FailedPrecondition | Code::NotFound),
            "{e}"
        );
        let text = e.to_string();
        assert!(
            !text.contains("secret-marker")
                && !text.contains("b.parquet")
                && !text.contains(&server.dir.path().display().to_string()),
            "{text}"
        );
    }
    // Planning again reports the broken file without detail either.
    let e = dave.scan("ops.broken", Scan::default()).await.unwrap_err();
    assert!(!e.to_string().contains("b.parquet"), "{e}");
    assert!(dave.list_datasets().await.is_ok(), "the server is fine");
    server.stop().await;
}

#[tokio::test]
async fn endpoints_and_tickets_reveal_nothing_about_hidden_rows() {
    let server = TestServer::demo().await;
    let desc = veil_client::scan_descriptor("clinical.trials", &Scan::default());
    let alice = server
        .connect("alice")
        .await
        .flight_info(desc.clone())
        .await
        .unwrap();
    let erin = server
        .connect("erin")
        .await
        .flight_info(desc.clone())
        .await
        .unwrap();
    let bob = server.connect("bob").await.flight_info(desc).await.unwrap();
    assert_eq!(
        alice.endpoint.len(),
        erin.endpoint.len(),
        "same count whatever the caller may see"
    );
    // One: split by files and row groups, how the caller's rows fell into
    // several endpoints would show where hidden rows are and how many
    // (found by an outside review).
    assert_eq!(alice.endpoint.len(), 1, "a row policy filters alice's read");
    assert_eq!(alice.total_records, -1);
    assert!(
        bob.endpoint.len() >= 3,
        "unfiltered reads still split by size"
    );
    for ep in alice.endpoint.iter().chain(erin.endpoint.iter()) {
        let t = &ep.ticket.as_ref().unwrap().ticket;
        assert!(
            !t.windows(7).any(|w| w == b"parquet"),
            "ticket bodies are opaque"
        );
        assert!(!t.windows(5).any(|w| w == b"alice"));
    }
    server.stop().await;
}

/// Behind a row policy, the stream's batches are all of one size (a
/// quarter of the session's batch size) but the last: cut where the file's row groups and kept
/// blocks end, their sizes told how many rows each part hid (found by an
/// outside review, through endpoints; batches told the same).
#[tokio::test]
async fn a_filtered_read_comes_in_batches_of_one_size() {
    let server = TestServer::demo_with(|dir| {
        let cfg = dir.join("veil.toml");
        let text = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(
            &cfg,
            text.replacen("[engine]\n", "[engine]\nbatch_size = 1000\n", 1),
        )
        .unwrap();
    })
    .await;
    let alice = server.connect("alice").await;
    for scan in [Scan::default(), Scan::default().with_filter("age > 40")] {
        let batches = alice.scan("clinical.trials", scan).await.unwrap();
        let sizes: Vec<usize> = batches
            .iter()
            .map(|b| b.num_rows())
            .filter(|n| *n > 0)
            .collect();
        assert!(sizes.len() > 2, "{sizes:?}");
        let (last, whole) = sizes.split_last().unwrap();
        // A quarter of the batch size (engine::even_batches::piece_rows).
        assert!(whole.iter().all(|n| *n == 250), "{sizes:?}");
        assert!(*last <= 250);
        // In the file's order (its ids rise): partitions read at once
        // interleaved where row groups ended, hidden rows included.
        assert!(
            ids(&batches).windows(2).all(|w| w[0] < w[1]),
            "rows out of the file's order"
        );
    }
    let rows = alice
        .sql("SELECT participant_id, state FROM clinical.trials WHERE age > 30")
        .await
        .unwrap();
    let sizes: Vec<usize> = rows
        .iter()
        .map(|b| b.num_rows())
        .filter(|n| *n > 0)
        .collect();
    let (_, whole) = sizes.split_last().unwrap();
    assert!(whole.iter().all(|n| *n == 250), "{sizes:?}");
    server.stop().await;
}

/// The endpoints of a dataset's read as alice, once they are dealt (the
/// first read of a file builds its kept copy of her rows in the
/// background; until then a read is one endpoint).
async fn dealt_info(alice: &veil_client::Connection, dataset: &str) -> arrow_flight::FlightInfo {
    for _ in 0..300 {
        let info = alice.scan_info(dataset, &Scan::default()).await.unwrap();
        if info.endpoint.len() > 1 {
            return info;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the read of {dataset} was never dealt (no kept copy within 15 s)");
}

/// Each endpoint's batch sizes and participant ids, in order.
async fn read_dealt(
    alice: &veil_client::Connection,
    info: &arrow_flight::FlightInfo,
) -> Result<Vec<(Vec<usize>, Vec<i64>)>, veil_client::ClientError> {
    let mut out = Vec::new();
    for ep in &info.endpoint {
        let batches = alice.read_ticket(ep.ticket.clone().unwrap()).await?;
        out.push((
            batches
                .iter()
                .map(|b| b.num_rows())
                .filter(|n| *n > 0)
                .collect(),
            ids(&batches),
        ));
    }
    Ok(out)
}

fn ids(batches: &[arrow::record_batch::RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("participant_id")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect()
}

/// Behind a row policy, a read served from kept copies of the caller's
/// rows is dealt to several endpoints by position among those rows alone:
/// two datasets whose files differ only in rows the caller can't see (how
/// many, where, in which files) give the same endpoints, the same batches
/// and the same rows in each; the runs put back in order are the
/// one-stream answer; an endpoint whose copies went meanwhile is dealt the
/// same rows by the policy barrier; and a ticket whose files changed since
/// it was planned is refused, not dealt other rows.
#[tokio::test]
async fn a_dealt_read_depends_on_the_callers_rows_alone() {
    use arrow::array::{Array, AsArray};
    let server = TestServer::demo_with(|dir| {
        let cfg = dir.join("veil.toml");
        let text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replacen("[engine]\n", "[engine]\nbatch_size = 1000\n", 1)
            .replacen("rows_per_endpoint = 40000", "rows_per_endpoint = 3000", 1);
        std::fs::write(&cfg, text).unwrap();
    })
    .await;
    let raw = veil_tests::raw_trials().remove(0);
    let ca = {
        let state = raw.column_by_name("state").unwrap().as_string::<i32>();
        let keep: arrow::array::BooleanArray = (0..state.len())
            .map(|i| Some(state.is_valid(i) && state.value(i) == "CA"))
            .collect();
        arrow::compute::filter_record_batch(&raw, &keep).unwrap()
    };
    let write = |path: std::path::PathBuf, batch: &arrow::record_batch::RecordBatch| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut w =
            veil_tests::parquet_writer(std::fs::File::create(&path).unwrap(), batch.schema());
        w.write(batch).unwrap();
        w.close().unwrap();
    };
    let data = server.dir.path().join("data/dealt");
    // Every row, in three files of uneven sizes; alice's rows only, in one.
    write(data.join("all/a.parquet"), &raw.slice(0, 7_000));
    write(data.join("all/b.parquet"), &raw.slice(7_000, 90_000));
    write(
        data.join("all/c.parquet"),
        &raw.slice(97_000, raw.num_rows() - 97_000),
    );
    write(data.join("ca/only.parquet"), &ca);
    let dave = server.connect("dave").await;
    for (name, folder) in [("ops.dealt_all", "all"), ("ops.dealt_ca", "ca")] {
        let req = veil_proto::RegisterDatasetRequest {
            name: name.into(),
            format: "parquet".into(),
            location: data.join(folder).display().to_string(),
            ..Default::default()
        };
        dave.action(veil_proto::actions::REGISTER_DATASET, req.encode_to_vec())
            .await
            .unwrap();
        for policy in [
            serde_json::json!({"name": format!("{folder}-open"), "dataset": name,
                "subscription": {"anyone": true}}),
            serde_json::json!({"name": format!("{folder}-rows"), "dataset": name,
                "row_filter": {"where": "state = 'CA'"}, "except": {"users": ["dave"]}}),
        ] {
            dave.create_policy(&policy.to_string()).await.unwrap();
        }
    }
    let alice = server.connect("alice").await;
    // Before any copy: one endpoint, the rows in the files' order.
    let first = alice
        .scan_info("ops.dealt_all", &Scan::default())
        .await
        .unwrap();
    assert_eq!(first.endpoint.len(), 1);
    let one_stream = ids(&alice.read_all(first).await.unwrap());
    assert_eq!(one_stream.len(), ca.num_rows());
    assert_eq!(one_stream, ids(&[ca.clone()]), "alice's rows in order");

    let all = dealt_info(&alice, "ops.dealt_all").await;
    let only = dealt_info(&alice, "ops.dealt_ca").await;
    let expected = (ca.num_rows() as u64).div_ceil(3000).min(16) as usize;
    assert_eq!(all.endpoint.len(), expected);
    assert_eq!(only.endpoint.len(), expected);
    assert_eq!(all.total_records, -1);
    let dealt = read_dealt(&alice, &all).await.unwrap();
    assert_eq!(
        dealt,
        read_dealt(&alice, &only).await.unwrap(),
        "the same endpoints, batches and rows whatever the hidden rows"
    );
    // Every batch a quarter of a run but the last of all.
    let sizes: Vec<usize> = dealt.iter().flat_map(|(s, _)| s.clone()).collect();
    assert!(
        sizes.iter().filter(|n| **n != 250).count() <= 1,
        "{sizes:?}"
    );
    // Runs of 1,000 rows, round-robin: put back, the one-stream answer.
    let mut runs: Vec<std::collections::VecDeque<&[i64]>> = dealt
        .iter()
        .map(|(_, ids)| ids.chunks(1000).collect())
        .collect();
    let mut merged = Vec::new();
    'deal: loop {
        for r in runs.iter_mut() {
            match r.pop_front() {
                Some(run) => merged.extend_from_slice(run),
                None => break 'deal,
            }
        }
    }
    assert!(runs.iter().all(|r| r.is_empty()));
    assert_eq!(merged, one_stream);
    // Veil's client puts them back so (ReadNotes.dealt_rows).
    assert_eq!(ids(&alice.read_all(all.clone()).await.unwrap()), one_stream);

    // The copies go between planning and reading (deleted behind Veil's
    // back): each endpoint reads the files, and the barrier deals the rows.
    let again = dealt_info(&alice, "ops.dealt_all").await;
    let copies: Vec<_> = walk(&server.dir.path().join("kept-masks"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "arrow"))
        .collect();
    assert!(!copies.is_empty(), "kept copies under kept-masks");
    for copy in copies {
        std::fs::remove_file(copy).unwrap();
    }
    assert_eq!(read_dealt(&alice, &again).await.unwrap(), dealt);

    // A file changed since the read was planned: its tickets are refused.
    let planned = dealt_info(&alice, "ops.dealt_ca").await;
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(data.join("ca/only.parquet"), &ca);
    let e = read_dealt(&alice, &planned).await.unwrap_err();
    assert_eq!(code(&e), Code::FailedPrecondition, "{e}");
    assert!(e.to_string().contains("plan it again"), "{e}");
    server.stop().await;
}

/// Every file under `dir`, however deep.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
