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

/// Behind a row policy, the stream's batches are all of the session's
/// batch size but the last: cut where the file's row groups and kept
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
        assert!(whole.iter().all(|n| *n == 1000), "{sizes:?}");
        assert!(*last <= 1000);
        // In the file's order (its ids rise): partitions read at once
        // interleaved where row groups ended, hidden rows included.
        let ids: Vec<i64> = batches
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
            .collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
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
    assert!(whole.iter().all(|n| *n == 1000), "{sizes:?}");
    server.stop().await;
}
