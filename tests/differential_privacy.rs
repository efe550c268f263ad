//! Differential privacy through the real server: a `differential_privacy`
//! policy on the demo's `clinical.trials` for everyone but the privileged.
//! What the wire shows (one endpoint, no row count, a receipt on request),
//! every raw path refused, budgets, the audit, policy writes checked, and
//! two nodes sharing one PostgreSQL store answering alike.

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::{FlightClient, FlightData, FlightDescriptor, Ticket};
use futures::TryStreamExt;
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;
use veil_client::{ClientError, Scan};
use veil_tests::TestServer;

const DP: &str = r#"
[[policies]]
name = "trials-dp"
dataset = "clinical.trials"
except = { groups = ["privileged"] }
[policies.differential_privacy]
privacy_unit = "participant_id"
epsilon = 1.0
delta = 1e-6
latency_tolerance = "24h"
groupable = ["state", "diagnosis"]
columns.age = { lower = 0, upper = 100 }
public_groups = { diagnosis = ["hypertension", "type 2 diabetes", "asthma", "migraine", "arthritis", "none"] }
budget = { user_epsilon = 4, dataset_epsilon = 50, period = "30d" }
"#;

fn with_dp(dir: &std::path::Path) {
    let config = dir.join("veil.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(DP);
    std::fs::write(&config, text).unwrap();
}

async fn flight(server: &TestServer, user: &str) -> FlightClient {
    let channel = Channel::from_shared(server.address.replace("grpc://", "http://"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = FlightClient::new(channel);
    c.add_header("authorization", &format!("Bearer {}", server.token(user)))
        .unwrap();
    c
}

fn sql(query: &str, receipt: bool) -> FlightDescriptor {
    FlightDescriptor::new_cmd(veil_proto::Named::to_any_bytes(&veil_proto::SqlCommand {
        query: query.into(),
        privacy_receipt: receipt,
        ..Default::default()
    }))
}

/// Read a DP answer: its batches and the receipt that ends the stream
/// (a `FlightData` with only `app_metadata`, which arrow-rs's decoder
/// doesn't take: the messages are read raw and the rest decoded).
async fn answer(
    c: &mut FlightClient,
    query: &str,
) -> Result<(Vec<RecordBatch>, serde_json::Value), tonic::Status> {
    let info = c
        .get_flight_info(sql(query, true))
        .await
        .map_err(|e| match e {
            arrow_flight::error::FlightError::Tonic(s) => *s,
            other => tonic::Status::internal(other.to_string()),
        })?;
    assert_eq!(info.total_records, -1, "no exact count for a DP answer");
    assert_eq!(info.endpoint.len(), 1);
    let ticket: Ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut request = tonic::Request::new(ticket);
    *request.metadata_mut() = c.metadata().clone();
    let messages: Vec<FlightData> = c
        .inner_mut()
        .do_get(request)
        .await?
        .into_inner()
        .try_collect()
        .await?;
    let mut receipt = serde_json::Value::Null;
    let mut data = Vec::new();
    for m in messages {
        if m.data_header.is_empty() && !m.app_metadata.is_empty() {
            receipt = serde_json::from_slice(&m.app_metadata).unwrap();
        } else {
            data.push(Ok(m));
        }
    }
    let batches = FlightRecordBatchStream::new_from_flight_data(futures::stream::iter(data))
        .try_collect()
        .await
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    Ok((batches, receipt))
}

fn count(batches: &[RecordBatch], col: usize) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| b.column(col).as_primitive::<Int64Type>().values().to_vec())
        .collect()
}

#[tokio::test]
async fn answers_are_one_endpoint_without_a_count_and_come_with_a_receipt() {
    let server = TestServer::demo_with(with_dp).await;
    let mut alice = flight(&server, "alice").await;
    let q = "SELECT diagnosis, COUNT(*) AS n FROM clinical.trials GROUP BY diagnosis ORDER BY diagnosis";
    let (first, receipt) = answer(&mut alice, q).await.unwrap();
    assert_eq!(count(&first, 1).len(), 6, "every public key is answered");
    assert_eq!(receipt["epsilon"], 1.0);
    assert_eq!(receipt["charged"], 1.0);
    assert_eq!(receipt["spent"], 1.0);
    assert_eq!(receipt["remaining"], 3.0);
    assert_eq!(receipt["unit"], "epsilon");
    assert!(receipt["resets_at_ms"].as_i64().unwrap() > 0);
    // Asked again: the same noisy answer, free.
    let (again, receipt) = answer(&mut alice, q).await.unwrap();
    assert_eq!(count(&first, 1), count(&again, 1));
    assert_eq!(receipt["charged"], 0.0);
    // Without asking for a receipt the stream holds the batches alone
    // (what JDBC, ADBC and Spark read).
    let conn = server.connect("alice").await;
    let plain = conn.sql(q).await.unwrap();
    assert_eq!(count(&plain, 1), count(&first, 1));
    // Budgets: alice's spending and the dataset's.
    let budgets: Vec<serde_json::Value> = conn
        .dp_budget(Some("clinical.trials"))
        .await
        .unwrap()
        .iter()
        .map(|s| serde_json::from_str(s).unwrap())
        .collect();
    let mine = budgets.iter().find(|b| b["ledger"] == "you").unwrap();
    assert_eq!(mine["spent"], 1.0);
    assert_eq!(mine["budget"], 4.0);
    // Alice sees her own ledger only: the dataset's would tell her when
    // someone else had asked first.
    assert_eq!(budgets.len(), 1, "{budgets:?}");
    // The audit keeps the query, what was spent and whether it was
    // drawn; dave (AUDIT) reads it.
    let dave = server.connect("dave").await;
    let tail = dave.audit_tail(200).await.unwrap().join("\n");
    assert!(tail.contains("differential privacy"), "{tail}");
    assert!(tail.contains("drawn (cache miss)") && tail.contains("served from the cache"));
    // The dataset is named once (the answer is planned, then rebuilt from
    // its accepted shape: two reads of it), and a δ of nothing reads 0.
    let events: Vec<serde_json::Value> = dave
        .audit_tail(200)
        .await
        .unwrap()
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    for e in &events {
        let dataset = e["dataset"].as_str().unwrap_or("");
        assert!(!dataset.contains(','), "{e}");
    }
    assert!(
        events.iter().any(|e| e["action"] == "read.end"
            && e["dataset"] == "clinical.trials"
            && e["message"]
                .as_str()
                .unwrap_or("")
                .contains("differential privacy")),
        "{tail}"
    );
    assert!(tail.contains("and delta 0 charged"), "{tail}");
    // dave, an owner-level auditor, sees the dataset's ledger and every
    // user's.
    let all: Vec<serde_json::Value> = dave
        .dp_budget(None)
        .await
        .unwrap()
        .iter()
        .map(|s| serde_json::from_str(s).unwrap())
        .collect();
    let dataset = all.iter().find(|b| b["ledger"] == "dataset").unwrap();
    assert_eq!(dataset["spent"], 1.0);
    assert_eq!(dataset["remaining"], 49.0);
    assert!(
        all.iter().any(|b| b["ledger"]["subject"] == "alice"),
        "{all:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn every_raw_path_is_refused_and_budgets_end_averaging() {
    let server = TestServer::demo_with(with_dp).await;
    let conn = server.connect("alice").await;
    let denied = |r: Result<Vec<RecordBatch>, ClientError>, code: &str| match r {
        Err(ClientError::Status(s)) => {
            assert!(s.message().contains(code), "{code}: {s:?}");
            s.code()
        }
        other => panic!("{code}: {other:?}"),
    };
    assert_eq!(
        denied(
            conn.scan("clinical.trials", Scan::default().with_limit(5))
                .await,
            "[DP_ROW_LEVEL]"
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        denied(
            conn.sql("SELECT * FROM clinical.trials").await,
            "[DP_ROW_LEVEL]"
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        denied(
            conn.sql("SELECT MAX(age) FROM clinical.trials").await,
            "[DP_FUNCTION]"
        ),
        Code::InvalidArgument
    );
    denied(
        conn.sql("EXPLAIN SELECT COUNT(*) FROM clinical.trials")
            .await,
        "only read-only SELECT",
    );
    // bob (exempt) reads rows; his ticket is useless to alice.
    let bob = server.connect("bob").await;
    let info = bob
        .scan_info("clinical.trials", &Scan::default().with_limit(5))
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    assert!(conn.read_ticket(ticket).await.is_err());
    // Averaging: four ways of asking one count; the budget of 4 pays for
    // four, the fifth is refused with what is left and when it resets.
    let mut c = flight(&server, "alice").await;
    for q in [
        "SELECT COUNT(*) FROM clinical.trials WHERE age > 40",
        "SELECT COUNT(*) FROM clinical.trials WHERE age >= 41",
        "SELECT COUNT(*) FROM clinical.trials WHERE NOT age <= 40",
        "SELECT COUNT(*) FROM clinical.trials WHERE age > 40 AND age < 500",
    ] {
        answer(&mut c, q).await.unwrap();
    }
    let e = answer(
        &mut c,
        "SELECT COUNT(*) FROM clinical.trials WHERE age > 40.5",
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("[DP_BUDGET]") && e.message().contains("resets at"));
    server.stop().await;
}

#[tokio::test]
async fn a_privacy_unit_is_checked_when_the_policy_is_written() {
    let server = TestServer::demo().await;
    let dave = server.connect("dave").await;
    let policy = |unit: &str, force: bool| {
        serde_json::json!({
            "name": "dp-written",
            "dataset": "clinical.trials",
            "differential_privacy": {
                "privacy_unit": unit,
                "epsilon": 0.5,
                "latency_tolerance": "1h",
                "force": force,
            }
        })
        .to_string()
    };
    let e = dave
        .create_policy(&policy("state", false))
        .await
        .unwrap_err();
    let ClientError::Status(s) = e else {
        panic!("{e:?}")
    };
    assert_eq!(s.code(), Code::FailedPrecondition);
    assert!(
        s.message().contains("% distinct values in a sample of") && s.message().contains("force"),
        "{}",
        s.message()
    );
    // Forced, it is accepted; the real unit needs no force.
    dave.create_policy(&policy("state", true)).await.unwrap();
    dave.delete_policy("dp-written").await.unwrap();
    dave.create_policy(&policy("participant_id", false))
        .await
        .unwrap();
    // A bad parameter is refused with what is wrong.
    let bad = serde_json::json!({
        "name": "dp-bad", "dataset": "clinical.trials",
        "differential_privacy": {"privacy_unit": "participant_id", "epsilon": -1, "latency_tolerance": "1h"}
    });
    let e = dave.create_policy(&bad.to_string()).await.unwrap_err();
    assert!(e.to_string().contains("epsilon"), "{e}");
    // The Gaussian mechanism needs δ.
    let gauss = serde_json::json!({
        "name": "dp-gauss", "dataset": "clinical.trials",
        "differential_privacy": {"privacy_unit": "participant_id", "epsilon": 1, "mechanism": "gaussian", "latency_tolerance": "1h"}
    });
    let e = dave.create_policy(&gauss.to_string()).await.unwrap_err();
    assert!(e.to_string().contains("delta"), "{e}");
    // explain shows what alice gets.
    let explained = dave
        .explain(veil_proto::ExplainRequest {
            user: Some(veil_proto::UserRef {
                issuer: String::new(),
                subject: "alice".into(),
            }),
            dataset: "clinical.trials".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        explained.contains("differential_privacy") && explained.contains("participant_id"),
        "{explained}"
    );
    server.stop().await;
}

/// Two Veil servers sharing one PostgreSQL store (and master key): an
/// answer drawn on one is the answer on the other, and budgets are one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sharing_a_store_give_one_answer_and_one_ledger() {
    let Some(url) = veil_tests::pg::postgres_url() else {
        return;
    };
    let schema = veil_tests::pg::Schema::create(&url).await;
    let store = format!(
        "\n[store]\nbackend = \"postgres\"\nurl = \"{url}\"\nschema = \"{}\"\npool_size = 4\n",
        schema.name
    );
    let a = TestServer::demo_with(|dir| {
        with_dp(dir);
        let config = dir.join("veil.toml");
        let text = std::fs::read_to_string(&config).unwrap() + &store;
        std::fs::write(config, text).unwrap();
    })
    .await;
    // Node B: the same files (master key, data), its own node id.
    let text = std::fs::read_to_string(&a.config_path)
        .unwrap()
        .replace("data_dir = \".\"", "data_dir = \".\"\nnode_id = \"node-b\"");
    let b_config = a.dir.path().join("b.toml");
    std::fs::write(&b_config, text).unwrap();
    let cfg = veil::config::Config::load(&b_config).unwrap();
    let b = veil::server::start(
        cfg,
        veil::server::ServeOptions {
            listen: Some("127.0.0.1:0".into()),
            insecure: false,
        },
    )
    .await
    .unwrap();
    let b_address = format!("http://{}", b.addr);
    let q = "SELECT diagnosis, COUNT(*) AS n FROM clinical.trials GROUP BY diagnosis ORDER BY diagnosis";
    let mut on_a = flight(&a, "alice").await;
    let (from_a, r) = answer(&mut on_a, q).await.unwrap();
    assert_eq!(r["charged"], 1.0);
    let channel = Channel::from_shared(b_address)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut on_b = FlightClient::new(channel);
    on_b.add_header("authorization", &format!("Bearer {}", a.token("alice")))
        .unwrap();
    let (from_b, r) = answer(&mut on_b, q).await.unwrap();
    assert_eq!(
        count(&from_a, 1),
        count(&from_b, 1),
        "one draw for every node"
    );
    assert_eq!(r["charged"], 0.0, "seen on node A: free on node B");
    assert_eq!(r["spent"], 1.0);
    b.stop().await.unwrap();
    a.stop().await;
    schema.drop_now().await;
    let _ = Message::encoded_len(&veil_proto::DpBudgetRequest::default());
}
