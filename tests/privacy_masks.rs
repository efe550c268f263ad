//! Privacy-preserving policies end to end, read like the seed document
//! (Immuta 2.8 policy documentation): k-anonymization jointly and
//! separately (the gender/state tables), counted after row policies and
//! before the user's filter; minimization as a stable sample.

use arrow::array::RecordBatch;
use serde_json::Value;
use std::path::Path;
use tonic::Code;
use veil_client::{Connection, Scan};
use veil_tests::{TestServer, row_count, strings};

/// The seed's table, with an id and an age.
const PEOPLE: &str = "id,gender,state,age\n\
1,Female,Ohio,34\n\
2,Female,Florida,41\n\
3,Female,Florida,67\n\
4,Female,Arkansas,29\n\
5,Male,Florida,52\n";

const ACCOUNTS: &str = "id,name,ssn,card,code\n\
1,Ana,123-45-6789,4111-1111-1111-1111,AB-12\n\
2,Ben,987-65-4321,5500-0000-0000-0004,CD-34\n\
3,Cy,123-45-6789,3400-0000-0000-009,EF-56\n";

const CONFIG: &str = r#"
[[datasets]]
name = "census.joint"
format = "csv"
location = "data/census/people.csv"
owners = ["dave"]

[[datasets]]
name = "census.separate"
format = "csv"
location = "data/census/people.csv"
owners = ["dave"]

[[datasets]]
name = "events.log"
format = "csv"
location = "data/events"
owners = ["dave"]

[[policies]]
name = "joint-for-everyone"
dataset = "census.joint"
subscription = { anyone = true }

[[policies]]
name = "separate-for-everyone"
dataset = "census.separate"
subscription = { anyone = true }

[[policies]]
name = "policy-a"
dataset = "census.joint"
columns = ["gender", "state"]
mask = { k_anonymity = { k = 2 } }

[[policies]]
name = "seniors-hidden-from-analysts"
dataset = "census.joint"
row_filter = { where = "age < 60" }
except = { groups = ["marketing", "data-owners"] }

[[datasets]]
name = "census.parts"
format = "csv"
location = "data/census/parts"
owners = ["dave"]

[[policies]]
name = "parts-for-everyone"
dataset = "census.parts"
subscription = { anyone = true }

[[policies]]
name = "parts-jointly"
dataset = "census.parts"
columns = ["gender", "state"]
mask = { k_anonymity = { k = 2 } }

[[policies]]
name = "policy-c"
dataset = "census.separate"
columns = ["gender"]
mask = { k_anonymity = { k = 2 } }

[[policies]]
name = "policy-d"
dataset = "census.separate"
columns = ["state"]
mask = { k_anonymity = { k = 2 } }

[[datasets]]
name = "bank.accounts"
format = "csv"
location = "data/bank/accounts.csv"
owners = ["dave"]

[[policies]]
name = "accounts-for-everyone"
dataset = "bank.accounts"
subscription = { anyone = true }

[[policies]]
name = "ssn-reversible"
dataset = "bank.accounts"
columns = ["ssn"]
mask = "reversible"
except = { groups = ["privileged"] }

[[policies]]
name = "cards-format-preserving"
dataset = "bank.accounts"
columns = ["card", "code"]
mask = "format_preserving"
except = { groups = ["privileged"] }

[[policies]]
name = "events-for-everyone"
dataset = "events.log"
subscription = { anyone = true }

[[policies]]
name = "ten-percent"
dataset = "events.log"
row_filter = { sample = 10, column = "event_id" }
except = { users = ["dave"] }
"#;

fn write_events(dir: &Path, file: &str, ids: std::ops::Range<u32>) {
    let mut text = String::from("event_id,kind\n");
    for i in ids {
        text.push_str(&format!("{i},k{}\n", i % 7));
    }
    std::fs::write(dir.join("data/events").join(file), text).unwrap();
}

async fn server() -> TestServer {
    TestServer::demo_with(|dir| {
        std::fs::create_dir_all(dir.join("data/census")).unwrap();
        std::fs::write(dir.join("data/census/people.csv"), PEOPLE).unwrap();
        // The same rows in two files: a plan of several partitions.
        std::fs::create_dir_all(dir.join("data/census/parts")).unwrap();
        let (head, tail) = PEOPLE.split_at(PEOPLE.find("\n4,").unwrap() + 1);
        std::fs::write(dir.join("data/census/parts/a.csv"), head).unwrap();
        let header = &PEOPLE[..=PEOPLE.find('\n').unwrap()];
        std::fs::write(
            dir.join("data/census/parts/b.csv"),
            format!("{header}{tail}"),
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("data/bank")).unwrap();
        std::fs::write(dir.join("data/bank/accounts.csv"), ACCOUNTS).unwrap();
        std::fs::create_dir_all(dir.join("data/events")).unwrap();
        write_events(dir, "part-0.csv", 0..2_000);
        let config = dir.join("veil.toml");
        let text = std::fs::read_to_string(&config)
            .unwrap()
            // A tiny cutoff, so the test data can exceed it.
            .replace("[engine]\n", "[engine]\nkanon_cardinality_cutoff = 3\n");
        std::fs::write(&config, format!("{text}{CONFIG}")).unwrap();
    })
    .await
}

async fn read(c: &Connection, dataset: &str, filter: &str) -> Vec<RecordBatch> {
    c.scan(dataset, Scan::default().with_filter(filter))
        .await
        .unwrap()
}

/// (id, gender, state) sorted by id.
fn rows(b: &[RecordBatch]) -> Vec<(i64, Option<String>, Option<String>)> {
    let mut v: Vec<_> = strings(b, "id")
        .into_iter()
        .zip(strings(b, "gender"))
        .zip(strings(b, "state"))
        .map(|((i, g), s)| (i.unwrap().parse::<i64>().unwrap(), g, s))
        .collect();
    v.sort();
    v
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

#[tokio::test]
async fn the_seed_tables_jointly_and_separately() {
    let server = server().await;
    // carol (marketing) is excepted from the row policy: all five rows.
    let carol = server.connect("carol").await;
    // Policy A: gender and state counted together, k = 2.
    assert_eq!(
        rows(&read(&carol, "census.joint", "").await),
        [
            (1, None, None),
            (2, s("Female"), s("Florida")),
            (3, s("Female"), s("Florida")),
            (4, None, None),
            (5, None, None),
        ]
    );
    // Policies C and D: each column counted on its own.
    assert_eq!(
        rows(&read(&carol, "census.separate", "").await),
        [
            (1, s("Female"), None),
            (2, s("Female"), s("Florida")),
            (3, s("Female"), s("Florida")),
            (4, s("Female"), None),
            (5, None, s("Florida")),
        ]
    );
    // Ages are untouched, and rows are all kept.
    assert_eq!(row_count(&read(&carol, "census.joint", "").await), 5);
}

#[tokio::test]
async fn sorts_and_windows_run_above_k_anonymization() {
    let server = server().await;
    let carol = server.connect("carol").await;
    let ids = |b: &[RecordBatch], c: &str| -> Vec<Option<String>> { strings(b, c) };
    // Over several partitions DataFusion pushed a sort below the policy
    // barrier and k-anonymization: the plan failed its sanity check, and
    // the error quoted the plan below the fence. Sorts stay above now.
    let out = carol
        .sql("SELECT id, row_number() OVER (ORDER BY id) AS r FROM census.parts ORDER BY id")
        .await
        .unwrap();
    assert_eq!(ids(&out, "r"), ["1", "2", "3", "4", "5"].map(s));
    let out = carol
        .sql("SELECT id FROM census.parts ORDER BY id DESC")
        .await
        .unwrap();
    assert_eq!(ids(&out, "id"), ["5", "4", "3", "2", "1"].map(s));
    // Ordering by a suppressed column orders by what the reader sees
    // (nulls), never by the raw values (Arkansas < Florida < Ohio).
    let out = carol
        .sql("SELECT id FROM census.parts ORDER BY state NULLS FIRST, id")
        .await
        .unwrap();
    assert_eq!(ids(&out, "id"), ["1", "4", "5", "2", "3"].map(s));
    let out = carol
        .sql("SELECT id, lag(state) OVER (ORDER BY id) AS prev, rank() OVER (ORDER BY state NULLS FIRST) AS k FROM census.parts ORDER BY id")
        .await
        .unwrap();
    assert_eq!(
        ids(&out, "prev"),
        [None, None, s("Florida"), s("Florida"), None]
    );
    assert_eq!(ids(&out, "k"), ["1", "4", "4", "1", "1"].map(s));
}

#[tokio::test]
async fn a_users_filter_cannot_shrink_a_group_but_row_policies_count_first() {
    let server = server().await;
    let carol = server.connect("carol").await;
    // Targeting the lone Ohio row, by id or by value, never reveals it.
    assert_eq!(
        rows(&read(&carol, "census.joint", "id = 1").await),
        [(1, None, None)]
    );
    assert_eq!(
        row_count(&read(&carol, "census.joint", "state = 'Ohio'").await),
        0
    );
    assert_eq!(
        rows(&read(&carol, "census.joint", "id = 2").await),
        [(2, s("Female"), s("Florida"))],
        "a large group keeps its values even when one row is asked for"
    );
    // SQL: grouping and filtering see the suppressed values only.
    let out = carol
        .sql("SELECT gender, state, count(*) AS n FROM census.joint WHERE id IN (1, 4, 5) GROUP BY gender, state")
        .await
        .unwrap();
    assert_eq!(strings(&out, "n"), [s("3")]);
    assert_eq!(strings(&out, "state"), [None]);
    let out = carol
        .sql("SELECT count(*) AS n FROM census.separate WHERE gender = 'Male'")
        .await
        .unwrap();
    assert_eq!(strings(&out, "n"), [s("0")]);

    // alice (analysts) gets the row policy age < 60 first: row 3 goes,
    // so Female/Florida is a group of one and is suppressed too.
    let alice = server.connect("alice").await;
    assert_eq!(
        rows(&read(&alice, "census.joint", "").await),
        [
            (1, None, None),
            (2, None, None),
            (4, None, None),
            (5, None, None),
        ]
    );
    // A conditional mask reading a k-anonymized column would reveal the
    // suppressed value by where it applies: reads fail closed instead.
    let dave = server.connect("dave").await;
    let ohio = serde_json::json!({
        "name": "ages-in-ohio", "dataset": "census.joint", "columns": ["age"],
        "mask": "null", "mask_where": "state = 'Ohio'",
    });
    dave.create_policy(&ohio.to_string()).await.unwrap();
    let e = carol
        .scan("census.joint", Scan::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::FailedPrecondition), "{e}");
    dave.delete_policy("ages-in-ohio").await.unwrap();
    // A k-anonymized read is one endpoint, counted once.
    let info = carol
        .scan_info("census.joint", &Scan::default())
        .await
        .unwrap();
    assert_eq!(info.endpoint.len(), 1);
}

#[tokio::test]
async fn describe_explain_profile_and_the_cardinality_cutoff() {
    let server = server().await;
    let dave = server.connect("dave").await;
    let d = dave.describe("census.joint").await.unwrap();
    let gender = d.columns.iter().find(|c| c.name == "gender").unwrap();
    assert!(gender.mask.contains("k-anonymity(k=2)"), "{}", gender.mask);

    let explained: Value = serde_json::from_str(
        &dave
            .explain(veil_proto::ExplainRequest {
                user: Some(veil_proto::UserRef {
                    issuer: String::new(),
                    subject: "carol".into(),
                }),
                dataset: "census.joint".into(),
                ..Default::default()
            })
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(explained["k_anonymity"][0]["policy"], "policy-a");
    assert_eq!(explained["k_anonymity"][0]["k"], 2);

    // The profile: 2 genders and 3 states (at the tiny cutoff of 3), four
    // combinations, the smallest seen once; k = 2 would null 60% of rows.
    let profile: Value = serde_json::from_str(
        &dave
            .profile_k_anonymity("census.joint", &["gender", "state"])
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(profile["rows"], 5);
    assert_eq!(profile["columns"][0]["distinct"], 2);
    assert_eq!(profile["columns"][1]["distinct"], 3);
    assert_eq!(profile["columns"][1]["eligible"], true);
    assert_eq!(profile["groups"], 4);
    assert_eq!(profile["current_k"], 1);
    assert_eq!(profile["suggested_k"], 2);
    assert_eq!(profile["suppressed_at_suggested_k"], 0.6);
    // A column named twice is the caller's mistake.
    let err = dave
        .profile_k_anonymity("census.joint", &["gender", "gender"])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    assert!(err.to_string().contains("named twice"), "{err}");
    // Only owners and governors profile.
    let err = server
        .connect("carol")
        .await
        .profile_k_anonymity("census.joint", &["gender"])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::PermissionDenied));

    // `id` has 5 distinct values, above the cutoff of 3: refused.
    let spec = serde_json::json!({
        "name": "by-id",
        "dataset": "census.joint",
        "columns": ["id"],
        "mask": {"k_anonymity": {"k": 2}},
    });
    let err = dave.create_policy(&spec.to_string()).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition), "{err}");
    assert!(
        err.to_string()
            .contains("more distinct values than the cutoff of 3"),
        "{err}"
    );
    // A conditional k-anonymization is refused, and k = 1 too.
    let spec = serde_json::json!({
        "name": "cond",
        "dataset": "census.joint",
        "columns": ["gender"],
        "mask": {"k_anonymity": {"k": 2}},
        "mask_where": "age > 3",
    });
    let err = dave.create_policy(&spec.to_string()).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    let spec = serde_json::json!({
        "name": "k1",
        "dataset": "census.joint",
        "columns": ["gender"],
        "mask": {"k_anonymity": {"k": 1}},
    });
    assert!(dave.create_policy(&spec.to_string()).await.is_err());
    // The cutoff is per column: gender is fine, age (5 values) is not.
    let spec = serde_json::json!({
        "name": "ages",
        "dataset": "census.separate",
        "columns": ["gender", "age"],
        "mask": {"k_anonymity": {"k": 2}},
    });
    let err = dave.create_policy(&spec.to_string()).await.unwrap_err();
    assert!(err.to_string().contains("'age'"), "{err}");
    // A permitted one applies from the next read: gender alone at k = 5
    // (4 women, 1 man) nulls every gender.
    let spec = serde_json::json!({
        "name": "gender-k5",
        "dataset": "census.joint",
        "columns": ["gender"],
        "mask": {"k_anonymity": {"k": 5}},
    });
    dave.create_policy(&spec.to_string()).await.unwrap();
    let carol = server.connect("carol").await;
    let out = read(&carol, "census.joint", "").await;
    assert!(strings(&out, "gender").iter().all(Option::is_none));
    assert_eq!(
        strings(&out, "state").iter().flatten().count(),
        2,
        "policy A still shows Florida twice"
    );
}

#[tokio::test]
async fn minimization_is_a_stable_sample_for_everyone() {
    let server = server().await;
    let ids = |b: &[RecordBatch]| -> Vec<u32> {
        let mut v: Vec<u32> = strings(b, "event_id")
            .into_iter()
            .map(|s| s.unwrap().parse().unwrap())
            .collect();
        v.sort();
        v
    };
    let alice = ids(&read(&server.connect("alice").await, "events.log", "").await);
    let carol = ids(&read(&server.connect("carol").await, "events.log", "").await);
    assert_eq!(alice, carol, "the same sample for every user");
    assert!(
        (120..280).contains(&alice.len()),
        "about 10% of 2000: {}",
        alice.len()
    );
    // dave is excepted: every row.
    let dave = read(&server.connect("dave").await, "events.log", "").await;
    assert_eq!(row_count(&dave), 2_000);
    // Rows arrive: earlier rows keep their place in (or out of) the sample.
    write_events(server.dir.path(), "part-1.csv", 2_000..4_000);
    let after = ids(&read(&server.connect("alice").await, "events.log", "").await);
    let before_part: Vec<u32> = after.iter().copied().filter(|i| *i < 2_000).collect();
    assert_eq!(before_part, alice, "appending keeps the sample stable");
    assert!(after.len() > alice.len(), "new rows join the sample");
    // A filter can't reach rows outside the sample.
    let out = read(
        &server.connect("alice").await,
        "events.log",
        "event_id >= 0",
    )
    .await;
    assert_eq!(ids(&out), after);
}

/// The column of `b` as strings, by id.
fn by_id(b: &[RecordBatch], column: &str) -> Vec<(String, Option<String>)> {
    let mut v: Vec<_> = strings(b, "id")
        .into_iter()
        .map(Option::unwrap)
        .zip(strings(b, column))
        .collect();
    v.sort();
    v
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[tokio::test]
async fn reversible_and_format_preserving_masks_with_unmask_requests() {
    let server = server().await;
    let alice = server.connect("alice").await;
    let out = read(&alice, "bank.accounts", "").await;
    // Reversible: tokens, deterministic within the column.
    let ssn = by_id(&out, "ssn");
    let token = ssn[0].1.clone().unwrap();
    assert!(token.starts_with("rv1."), "{token}");
    assert_eq!(
        ssn[2].1.as_deref(),
        Some(token.as_str()),
        "same value, same token"
    );
    assert_ne!(ssn[1].1.as_deref(), Some(token.as_str()));
    // Format-preserving: digits stay digits, separators stay put.
    let cards = by_id(&out, "card");
    let card = cards[0].1.clone().unwrap();
    assert_ne!(card, "4111-1111-1111-1111");
    assert_eq!(card.len(), 19);
    for (i, c) in card.chars().enumerate() {
        assert!(
            if i % 5 == 4 {
                c == '-'
            } else {
                c.is_ascii_digit()
            },
            "{card}"
        );
    }
    // Below FF1's minimum domain: filled, never raw.
    assert_eq!(
        by_id(&out, "code")
            .iter()
            .map(|(_, c)| c.clone().unwrap())
            .collect::<Vec<_>>(),
        ["XX-00", "XX-00", "XX-00"]
    );
    // A filter can't match the raw value through the mask.
    assert_eq!(
        row_count(&read(&alice, "bank.accounts", "ssn = '123-45-6789'").await),
        0
    );
    // bob (privileged) is exempt and reads the originals.
    let bob = server.connect("bob").await;
    let raw = read(&bob, "bank.accounts", "").await;
    assert_eq!(by_id(&raw, "ssn")[0].1.as_deref(), Some("123-45-6789"));

    // Values that could never be released are refused up front.
    let e = alice
        .request_unmask("bank.accounts", "ssn", &["rv1.AAAA".into()], "check")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument), "{e}");
    let e = alice
        .request_unmask("bank.accounts", "code", &["XX-00".into()], "check")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument), "{e}");
    let e = alice
        .request_unmask("bank.accounts", "name", &["Ana".into()], "check")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::FailedPrecondition), "{e}");

    // alice asks for the ssn of row 1 and the card of row 1.
    let request = json(
        &alice
            .request_unmask(
                "bank.accounts",
                "ssn",
                std::slice::from_ref(&token),
                "fraud case 17",
            )
            .await
            .unwrap(),
    );
    let id = request["id"].as_str().unwrap().to_string();
    assert_eq!(request["status"], "pending");
    // alice may not list the masking policy: its name and version are not
    // hers to see (a name can say what a policy protects).
    assert_eq!(request["unmask"]["policy"], "", "{request}");
    assert_eq!(request["unmask"]["policy_label"], "", "{request}");
    let mine = alice.list_unmask_requests(None, false).await.unwrap();
    assert_eq!(json(&mine[0])["unmask"]["policy"], "");
    // Not yet approved: nothing is released.
    let e = alice.unmask_result(&id).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::FailedPrecondition), "{e}");
    // The requester can't approve; nor can anyone the policy doesn't
    // exempt: carol (a reader) or dave (owner and governor).
    for (who, code) in [
        ("alice", Code::PermissionDenied),
        ("carol", Code::PermissionDenied),
        ("dave", Code::PermissionDenied),
    ] {
        let e = server
            .connect(who)
            .await
            .decide_unmask(&id, true, "")
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(code), "{who}: {e}");
    }
    // bob is exempt: he sees the request and approves it.
    let pending = bob.list_unmask_requests(None, false).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_ne!(
        json(&pending[0])["unmask"]["policy"],
        "",
        "a decider sees it"
    );
    assert!(
        server
            .connect("carol")
            .await
            .list_unmask_requests(None, false)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        json(&bob.decide_unmask(&id, true, "ok").await.unwrap())["status"],
        "approved"
    );
    // Only the requester gets the originals.
    let e = server
        .connect("carol")
        .await
        .unmask_result(&id)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound), "{e}");
    let released = json(&alice.unmask_result(&id).await.unwrap());
    assert_eq!(released["values"][0]["masked"], token.as_str());
    assert_eq!(released["values"][0]["value"], "123-45-6789");
    // An approved unmask request is not access: decided once.
    let e = bob.decide_unmask(&id, false, "").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::FailedPrecondition), "{e}");

    // Format-preserving values go through the same workflow; a denial
    // releases nothing.
    let req = json(
        &alice
            .request_unmask(
                "bank.accounts",
                "card",
                std::slice::from_ref(&card),
                "chargeback",
            )
            .await
            .unwrap(),
    );
    let card_id = req["id"].as_str().unwrap().to_string();
    bob.decide_unmask(&card_id, true, "").await.unwrap();
    let released = json(&alice.unmask_result(&card_id).await.unwrap());
    assert_eq!(released["values"][0]["value"], "4111-1111-1111-1111");
    let req = json(
        &alice
            .request_unmask(
                "bank.accounts",
                "card",
                &[cards[1].1.clone().unwrap()],
                "curious",
            )
            .await
            .unwrap(),
    );
    let denied = req["id"].as_str().unwrap().to_string();
    bob.decide_unmask(&denied, false, "no").await.unwrap();
    assert_eq!(
        alice.unmask_result(&denied).await.unwrap_err().code(),
        Some(Code::FailedPrecondition)
    );

    // Only values the requester was served can be asked for: a made-up
    // string in the right format is not a decryption oracle.
    let e = alice
        .request_unmask(
            "bank.accounts",
            "card",
            &["1234-5678-9012-3456".into()],
            "guess",
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument), "{e}");
    assert!(e.to_string().contains("you were served"), "{e}");
    // A release re-checks the policies: once a stricter mask applies, the
    // approved request releases nothing.
    let dave = server.connect("dave").await;
    let null_ssn = serde_json::json!({
        "name": "null-ssn", "dataset": "bank.accounts", "columns": ["ssn"], "mask": "null",
        "except": {"groups": ["privileged"]},
    });
    dave.create_policy(&null_ssn.to_string()).await.unwrap();
    let e = alice.unmask_result(&id).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::FailedPrecondition), "{e}");
    dave.delete_policy("null-ssn").await.unwrap();
    assert!(alice.unmask_result(&id).await.is_ok());

    // Requests, decisions and releases are audited, never with originals.
    let audit = server.connect("dave").await.audit_tail(500).await.unwrap();
    for action in [
        "admin.request_unmask",
        "admin.approve_unmask",
        "admin.deny_unmask",
        "admin.unmask_result",
    ] {
        assert!(audit.iter().any(|e| e.contains(action)), "{action}");
    }
    for e in &audit {
        assert!(
            !e.contains("123-45-6789") && !e.contains("4111-1111"),
            "{e}"
        );
    }
}
