//! Datasets in S3 read exactly like the same files on local disk, policies
//! included. The S3 server is real (s3s-fs on 127.0.0.1, SigV4), and Veil
//! talks to it with object_store's S3 client, as it would to AWS.

use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use prost::Message;
use tonic::Code;
use veil_client::{ClientError, Connection, Scan};
use veil_proto::{RegisterDatasetRequest, actions};
use veil_tests::s3::S3Server;
use veil_tests::{TestServer, row_count, strings};

/// Every row as one string, sorted: the same multiset of rows compares equal
/// whatever the endpoint, partition or batch order.
fn sorted_rows(batches: &[RecordBatch]) -> Vec<String> {
    let opts = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for b in batches {
        let formatters: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
            .collect();
        for i in 0..b.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|f| f.value(i).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    rows.sort();
    rows
}

fn code(e: &ClientError) -> Code {
    e.code()
        .unwrap_or_else(|| panic!("expected a status, got {e}"))
}

const TRIALS_COLUMNS: &str = r#"columns.name = { description = "Participant's full name", tags = ["PII.name"] }
columns.ssn = { description = "US Social Security number", tags = ["PII.ssn"] }
columns.email = { description = "Contact e-mail", tags = ["PII.email"] }
columns.ip_address = { description = "IP address of the enrolment form", tags = ["PII.ip"] }
columns.date_of_birth = { description = "Date of birth", tags = ["PHI.dob"] }
"#;

fn dataset(name: &str, format: &str, location: &str, hive: bool, extra: &str) -> String {
    format!(
        "\n[[datasets]]\nname = \"{name}\"\nformat = \"{format}\"\nlocation = \"{location}\"\nhive_partitioned = {hive}\nowners = [\"dave\"]\n{extra}"
    )
}

fn policy(name: &str, dataset: &str, body: &str) -> String {
    format!("\n[[policies]]\nname = \"{name}\"\ndataset = \"{dataset}\"\n{body}\n")
}

const EVENTS: &str = "{\"id\": 1, \"kind\": \"login\", \"user\": \"ana\"}\n{\"id\": 2, \"kind\": \"read\", \"user\": \"ben\"}\n{\"id\": 3, \"kind\": \"logout\", \"user\": \"ana\"}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_datasets_read_exactly_like_local_files() {
    // The demo's files (deterministic) go to the bucket ...
    let s3 = S3Server::start(&["lake", "other"]).await;
    let src = tempfile::tempdir().unwrap();
    veil::demo::prepare(src.path()).unwrap();
    let trials = src.path().join("data/clinical/trials.parquet");
    let sites = src.path().join("data/clinical/sites.csv");
    let events = src.path().join("events.json");
    std::fs::write(&events, EVENTS).unwrap();
    s3.upload("lake", "clinical/trials.parquet", &trials).await;
    s3.upload("lake", "clinical/sites.csv", &sites).await;
    s3.upload("lake", "hive/cohort=a/part-0.parquet", &trials)
        .await;
    s3.upload("lake", "hive/cohort=b/part-0.parquet", &trials)
        .await;
    // Bookkeeping keys are never data (a broken file here would fail reads).
    s3.upload("lake", "hive/_SUCCESS", &events).await;
    s3.upload("lake", "hive/cohort=a/.part-1.parquet.crc", &events)
        .await;
    s3.upload("lake", "events/2026/e.json", &events).await;
    s3.upload("other", "clinical/trials.parquet", &trials).await;

    // ... and the same files stay on local disk, registered side by side.
    let secret = src.path().join("s3.secret");
    let store_entry = s3.config_entry("lake", &secret);
    let server = TestServer::demo_with(move |dir| {
        let data = dir.join("data");
        for c in ["a", "b"] {
            let d = data.join(format!("hive/cohort={c}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::copy(data.join("clinical/trials.parquet"), d.join("part-0.parquet")).unwrap();
        }
        std::fs::create_dir_all(data.join("events/2026")).unwrap();
        std::fs::write(data.join("events/2026/e.json"), EVENTS).unwrap();
        let p = dir.join("veil.toml");
        let mut text = std::fs::read_to_string(&p).unwrap().replace(
            "roots = [\"data\"]",
            "roots = [\"data\", \"s3://lake/clinical\", \"s3://lake/hive\", \"s3://lake/events\"]",
        );
        text.push_str(&store_entry);
        text.push_str(&dataset(
            "remote.trials",
            "parquet",
            "s3://lake/clinical/trials.parquet",
            false,
            TRIALS_COLUMNS,
        ));
        text.push_str(&dataset("remote.sites", "csv", "s3://lake/clinical/sites.csv", false, ""));
        text.push_str(&dataset("remote.hive", "parquet", "s3://lake/hive", true, ""));
        text.push_str(&dataset("local.hive", "parquet", "data/hive", true, ""));
        text.push_str(&dataset("remote.events", "json", "s3://lake/events", false, ""));
        text.push_str(&dataset("local.events", "json", "data/events", false, ""));
        text.push_str(&policy(
            "remote-trials-for-analysts",
            "remote.trials",
            "subscription = { groups = [\"analysts\"] }",
        ));
        text.push_str(&policy(
            "remote-hide-ip",
            "remote.trials",
            "columns = [\"ip_address\"]\nmask = { constant = \"0.0.0.0\" }\nexcept = { groups = [\"privileged\"] }",
        ));
        text.push_str(&policy(
            "remote-rows-of-my-state",
            "remote.trials",
            "row_filter = { column = \"state\", attribute = \"state\" }\nexcept = { groups = [\"privileged\"] }",
        ));
        for d in ["remote.sites", "remote.hive", "local.hive", "remote.events", "local.events"] {
            text.push_str(&policy(&format!("{d}-for-anyone"), d, "subscription = { anyone = true }"));
        }
        std::fs::write(&p, text).unwrap();
    })
    .await;

    let bob = server.connect("bob").await;
    let alice = server.connect("alice").await;
    let everything = Scan::default();

    // A privileged reader sees identical rows, endpoint by endpoint.
    for (remote, local) in [
        ("remote.trials", "clinical.trials"),
        ("remote.sites", "clinical.sites"),
        ("remote.hive", "local.hive"),
        ("remote.events", "local.events"),
    ] {
        let info = bob.scan_info(remote, &everything).await.unwrap();
        let local_info = bob.scan_info(local, &everything).await.unwrap();
        assert_eq!(info.endpoint.len(), local_info.endpoint.len(), "{remote}");
        assert_eq!(info.total_records, local_info.total_records, "{remote}");
        assert_eq!(info.schema, local_info.schema, "{remote}: same dictionary");
        let r = bob.read_all(info).await.unwrap();
        let l = bob.read_all(local_info).await.unwrap();
        assert!(row_count(&r) > 0, "{remote}");
        assert_eq!(
            sorted_rows(&r),
            sorted_rows(&l),
            "{remote} reads like {local}"
        );
    }
    let hive = bob.scan("remote.hive", everything.clone()).await.unwrap();
    assert_eq!(
        row_count(&hive),
        2 * 120_000,
        "both partitions, no bookkeeping files"
    );
    let cohorts: std::collections::BTreeSet<_> =
        strings(&hive, "cohort").into_iter().flatten().collect();
    assert_eq!(cohorts.into_iter().collect::<Vec<_>>(), ["a", "b"]);
    let info = bob.scan_info("remote.trials", &everything).await.unwrap();
    assert!(
        info.endpoint.len() > 1,
        "remote scans are split at the source too"
    );

    // Policies apply the same way: an analyst sees her state, hashed PII,
    // a constant IP and no dates of birth.
    let cols = ["state", "ssn", "ip_address", "date_of_birth", "amount"];
    let r = alice
        .scan("remote.trials", Scan::default().with_columns(&cols))
        .await
        .unwrap();
    let l = alice
        .scan("clinical.trials", Scan::default().with_columns(&cols))
        .await
        .unwrap();
    assert_eq!(row_count(&r), row_count(&l));
    assert!(
        strings(&r, "state")
            .iter()
            .all(|s| s.as_deref() == Some("CA"))
    );
    assert!(
        strings(&r, "ssn")
            .iter()
            .flatten()
            .all(|s| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
    );
    assert!(
        strings(&r, "ip_address")
            .iter()
            .all(|s| s.as_deref() == Some("0.0.0.0"))
    );
    assert_eq!(
        r.iter()
            .map(|b| b.column_by_name("date_of_birth").unwrap().null_count())
            .sum::<usize>(),
        row_count(&r)
    );
    // Hashes are keyed per dataset: the same SSN hashes differently.
    let mut rs: Vec<_> = strings(&r, "ssn").into_iter().flatten().collect();
    let mut ls: Vec<_> = strings(&l, "ssn").into_iter().flatten().collect();
    rs.sort();
    ls.sort();
    assert_ne!(rs, ls);
    // carol is not an analyst: the remote dataset does not exist for her.
    let carol = server.connect("carol").await;
    assert_eq!(
        code(
            &carol
                .scan("remote.trials", everything.clone())
                .await
                .unwrap_err()
        ),
        Code::NotFound
    );
    // SQL joins across local and remote datasets.
    let joined = bob
        .sql("SELECT count(*) AS n FROM remote.trials t JOIN clinical.sites s ON t.state = s.state")
        .await
        .unwrap();
    assert_eq!(row_count(&joined), 1);

    // Runtime registration is confined to the remote roots.
    let dave = server.connect("dave").await;
    let register = |name: &str, location: &str| RegisterDatasetRequest {
        name: name.into(),
        format: "csv".into(),
        location: location.into(),
        ..Default::default()
    };
    dave.action(
        actions::REGISTER_DATASET,
        register("remote.sites2", "s3://lake/clinical/sites.csv").encode_to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(
        sorted_rows(
            &dave
                .scan("remote.sites2", everything.clone())
                .await
                .unwrap()
        ),
        sorted_rows(
            &bob.scan("clinical.sites", everything.clone())
                .await
                .unwrap()
        )
    );
    for (location, expected) in [
        ("s3://other/clinical/trials.parquet", Code::PermissionDenied),
        ("s3://lake/hive-not-a-root/x.csv", Code::PermissionDenied),
        ("s3://lake/clinical/../hive/x.csv", Code::InvalidArgument),
        ("gs://lake/clinical/sites.csv", Code::PermissionDenied),
    ] {
        let e = dave
            .action(
                actions::REGISTER_DATASET,
                register("remote.nope", location).encode_to_vec(),
            )
            .await
            .unwrap_err();
        assert_eq!(code(&e), expected, "{location}: {e}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_fails_reads_closed_with_a_clear_status() {
    // Listed on every read: a reused listing would let a read be served
    // from the file's kept copy without reaching the store (README).
    let (s3, server) = remote_sites(0).await;
    let alice: Connection = server.connect("alice").await;
    assert!(alice.scan("remote.sites", Scan::default()).await.is_ok());
    drop(s3);
    let e = alice
        .scan("remote.sites", Scan::default())
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::Unavailable, "{e}");
    assert!(e.to_string().contains("retry later"), "{e}");
    assert!(
        !e.to_string().contains("127.0.0.1"),
        "no store address leaks: {e}"
    );
    server.stop().await;
}

/// A remote file Veil holds a kept copy of is read from the copy while its
/// listing is reused (README, object stores): the same rows, even once the
/// store can't be reached; after the listing expires, the read fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_copy_serves_reads_only_while_the_listing_is_reused() {
    let (s3, server) = remote_sites(20).await;
    let alice: Connection = server.connect("alice").await;
    let listed = std::time::Instant::now();
    let first = alice.scan("remote.sites", Scan::default()).await.unwrap();
    // The copy is built in the background.
    let kept = server.dir.path().join("kept-masks");
    let copies = || {
        std::fs::read_dir(&kept)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
            .filter(|f| f.path().extension().is_some_and(|x| x == "arrow"))
            .count()
    };
    for _ in 0..100 {
        if copies() > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(copies(), 1, "one kept copy of the remote file");
    drop(s3);
    let again = alice.scan("remote.sites", Scan::default()).await.unwrap();
    assert!(
        listed.elapsed() < std::time::Duration::from_secs(20),
        "the listing was still reused"
    );
    assert_eq!(row_count(&again), row_count(&first));
    assert_eq!(strings(&again, "site"), strings(&first, "site"));
    // Once the listing expires, the store is asked again, and the read
    // fails closed.
    tokio::time::sleep(std::time::Duration::from_secs(21).saturating_sub(listed.elapsed())).await;
    let e = alice
        .scan("remote.sites", Scan::default())
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::Unavailable, "{e}");
    server.stop().await;
}

/// A demo server with `remote.sites`, the demo's sites CSV in an S3 bucket
/// on loopback (listings reused `listing_cache_secs`), readable by anyone.
async fn remote_sites(listing_cache_secs: u64) -> (S3Server, TestServer) {
    let s3 = S3Server::start(&["lake"]).await;
    let src = tempfile::tempdir().unwrap();
    veil::demo::prepare(src.path()).unwrap();
    s3.upload(
        "lake",
        "clinical/sites.csv",
        &src.path().join("data/clinical/sites.csv"),
    )
    .await;
    let secret = src.path().join("s3.secret");
    let entry =
        s3.config_entry("lake", &secret) + &format!("listing_cache_secs = {listing_cache_secs}\n");
    let server = TestServer::demo_with(move |dir| {
        let p = dir.join("veil.toml");
        let mut text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("roots = [\"data\"]", "roots = [\"data\", \"s3://lake\"]");
        text.push_str(&entry);
        text.push_str(&dataset(
            "remote.sites",
            "csv",
            "s3://lake/clinical/sites.csv",
            false,
            "",
        ));
        text.push_str(&policy(
            "remote-sites",
            "remote.sites",
            "subscription = { anyone = true }",
        ));
        std::fs::write(&p, text).unwrap();
    })
    .await;
    (s3, server)
}
