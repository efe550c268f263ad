//! The catalog's people and discovery: experts named in the dictionary, and
//! sensitive data discovery proposing column tags that owners accept (the
//! tag-driven policies then apply) or reject, without ever echoing a value.

use std::path::Path;
use tonic::Code;
use veil_client::{ClientError, Scan};
use veil_proto::UserRef;
use veil_tests::{TestServer, strings};

fn user(subject: &str) -> UserRef {
    UserRef {
        issuer: String::new(),
        subject: subject.into(),
    }
}

fn code(e: &ClientError) -> Code {
    e.code()
        .unwrap_or_else(|| panic!("expected a status, got {e}"))
}

/// A customer file whose headers are partly telling, partly opaque, and
/// the values written to it (to check none comes back).
fn write_customers(dir: &Path) -> Vec<String> {
    let first = [
        "Mary", "John", "Wei", "Priya", "Zoltan", "Fatima", "Carlos", "Ngozi",
    ];
    let last = [
        "Smith", "Garcia", "Chen", "Patel", "Kovacs", "Khan", "Nguyen", "Okonkwo",
    ];
    let mut csv = String::from("customer_id,contact,tel,card,ip,born,full_name,ssn,zip,notes\n");
    let mut values = Vec::new();
    for i in 0..300u64 {
        let email = format!(
            "{}.{}{i}@example.com",
            first[(i % 8) as usize],
            last[(i / 8 % 8) as usize]
        )
        .to_lowercase();
        let tel = format!("({}) 555-{:04}", 212 + i % 700, 1000 + i);
        // A Visa-like number with a valid Luhn check digit.
        let body = format!("4{:014}", 100_000_000 + i * 7919);
        let check = (0..10)
            .find(|c| luhn(&format!("{body}{c}")))
            .expect("a check digit");
        let card = format!("{body}{check}");
        let card = format!(
            "{} {} {} {}",
            &card[..4],
            &card[4..8],
            &card[8..12],
            &card[12..]
        );
        let ip = format!("10.{}.{}.{}", i % 200, (i * 7) % 250, 1 + i % 250);
        let born = format!("{}-{:02}-{:02}", 1940 + i % 60, 1 + i % 12, 1 + i % 28);
        let name = format!("{} {}", first[(i % 8) as usize], last[(i / 3 % 8) as usize]);
        let ssn = format!("{:03}-{:02}-{:04}", 100 + i % 500, 10 + i % 80, 1000 + i);
        let zip = format!("{:05}", 10_000 + i * 37);
        let customer_id = 500_000_000 + i * 104_729;
        csv.push_str(&format!(
            "{customer_id},{email},{tel},{card},{ip},{born},{name},{ssn},{zip},call back {}\n",
            i % 3
        ));
        values.extend([email, tel, card, ssn, name]);
    }
    std::fs::create_dir_all(dir.join("crm")).unwrap();
    std::fs::write(dir.join("crm/customers.csv"), csv).unwrap();
    values
}

fn luhn(d: &str) -> bool {
    let sum: u32 = d
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let x = u32::from(b - b'0');
            if i % 2 == 1 {
                if x * 2 > 9 { x * 2 - 9 } else { x * 2 }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// `(column, field)` of each entry of a report's `list`.
fn column_pairs(report: &serde_json::Value, list: &str, field: &str) -> Vec<(String, String)> {
    report[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["column"].as_str().unwrap().to_string(),
                p[field].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn proposals(report: &serde_json::Value) -> Vec<(String, String)> {
    column_pairs(report, "proposals", "tag")
}

#[tokio::test]
async fn discovery_proposes_tags_owners_decide_and_policies_follow() {
    let server = TestServer::demo().await;
    let data = server.dir.path().join("data");
    let written = write_customers(&data);
    let dave = server.connect("dave").await;
    dave.register_dataset(veil_proto::RegisterDatasetRequest {
        name: "crm.customers".into(),
        format: "csv".into(),
        location: data.join("crm/customers.csv").display().to_string(),
        ..Default::default()
    })
    .await
    .unwrap();

    // Only owners and governors run discovery; others learn nothing more
    // than a reader could.
    let erin = server.connect("erin").await;
    let e = erin.discover("crm.customers", 0, 0).await.unwrap_err();
    assert_eq!(code(&e), Code::NotFound, "{e}");
    let e = erin.discover("clinical.trials", 0, 0).await.unwrap_err();
    assert_eq!(code(&e), Code::PermissionDenied, "{e}");
    let e = dave.discover("veil.audit", 0, 0).await.unwrap_err();
    assert_eq!(code(&e), Code::FailedPrecondition, "{e}");
    let e = dave
        .discover("crm.customers", 200_000, 0)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");

    let text = dave.discover("crm.customers", 0, 0).await.unwrap();
    for v in &written {
        assert!(
            !text.contains(v.as_str()),
            "the report echoes a sampled value"
        );
    }
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["sampled_rows"], 300);
    let mut found = proposals(&report);
    found.sort();
    let expected: Vec<(String, String)> = [
        ("born", "PHI.dob"),
        ("card", "PII.credit_card"),
        ("contact", "PII.email"),
        ("full_name", "PII.name"),
        ("ip", "PII.ip.v4"),
        ("ssn", "PII.ssn"),
        ("tel", "PII.phone"),
        ("zip", "PII.postal_code"),
    ]
    .iter()
    .map(|(c, t)| (c.to_string(), t.to_string()))
    .collect();
    assert_eq!(found, expected, "{text}");
    for p in report["proposals"].as_array().unwrap() {
        let c = p["confidence"].as_u64().unwrap();
        assert!((50..=100).contains(&c), "{p}");
        assert!(!p["evidence"].as_str().unwrap().is_empty());
    }

    // Before the tag, the demo's hash-pii policy (tag PII) does not touch
    // the column; once accepted, the very next read is masked.
    let read = |dave: &veil_client::Connection| {
        let dave = dave.clone();
        async move {
            strings(
                &dave
                    .scan("crm.customers", Scan::default().with_columns(&["contact"]))
                    .await
                    .unwrap(),
                "contact",
            )
        }
    };
    let before = read(&dave).await;
    assert!(before.iter().all(|v| v.as_deref().unwrap().contains('@')));
    let ack = dave
        .decide_tag_proposal("crm.customers", "contact", "PII.email", true, None)
        .await
        .unwrap();
    assert!(ack.contains("PII.email"), "{ack}");
    let after = read(&dave).await;
    assert_eq!(after.len(), before.len());
    assert!(
        after.iter().all(|v| !v.as_deref().unwrap().contains('@')),
        "accepted PII.email must bring hash-pii into force"
    );
    let described = dave.describe("crm.customers").await.unwrap();
    let contact = described
        .columns
        .iter()
        .find(|c| c.name == "contact")
        .unwrap();
    assert_eq!(contact.tags, ["PII.email"]);
    assert!(!contact.mask.is_empty(), "{contact:?}");

    // Accepting under one's own taxonomy; rejecting for good.
    dave.decide_tag_proposal(
        "crm.customers",
        "full_name",
        "PII.name",
        true,
        Some("PII.person"),
    )
    .await
    .unwrap();
    let ack = dave
        .decide_tag_proposal("crm.customers", "tel", "PII.phone", false, None)
        .await
        .unwrap();
    assert!(ack.contains("rejected"), "{ack}");
    // Deciding again what was decided changes nothing and succeeds, so a
    // list of decisions can be retried.
    let ack = dave
        .decide_tag_proposal("crm.customers", "tel", "PII.phone", false, None)
        .await
        .unwrap();
    assert!(ack.contains("already rejected"), "{ack}");
    let ack = dave
        .decide_tag_proposal("crm.customers", "contact", "PII.email", true, None)
        .await
        .unwrap();
    assert!(ack.contains("already accepted"), "{ack}");
    let ack = dave
        .decide_tag_proposal(
            "crm.customers",
            "full_name",
            "PII.name",
            true,
            Some("PII.person"),
        )
        .await
        .unwrap();
    assert!(ack.contains("already accepted"), "{ack}");
    let e = dave
        .decide_tag_proposal("crm.customers", "zip", "PII.ssn", false, None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::NotFound, "{e}");
    let e = dave
        .decide_tag_proposal("crm.customers", "notes", "PII.ssn", true, None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::NotFound, "{e}");

    let again: serde_json::Value =
        serde_json::from_str(&dave.discover("crm.customers", 100, 90).await.unwrap()).unwrap();
    assert_eq!(again["sampled_rows"], 100);
    let pending: Vec<String> = proposals(&again).into_iter().map(|(c, _)| c).collect();
    assert!(!pending.contains(&"tel".to_string()), "{again}");
    assert!(!pending.contains(&"contact".to_string()), "{again}");
    let rejected = again["previously_rejected"].to_string();
    assert!(rejected.contains("tel"), "{again}");
    let tagged = again["already_tagged"].to_string();
    assert!(tagged.contains("contact"), "{again}");
    // Accepted as another tag: not proposed again, shown as tagged so.
    assert!(!pending.contains(&"full_name".to_string()), "{again}");
    assert!(
        again["already_tagged"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["column"] == "full_name" && t["tag"] == "PII.person"),
        "{again}"
    );
    let full_name = dave.describe("crm.customers").await.unwrap();
    let full_name = full_name
        .columns
        .iter()
        .find(|c| c.name == "full_name")
        .unwrap();
    assert_eq!(full_name.tags, ["PII.person"]);
    // A rejection can be overridden by accepting after all; odd tags are refused.
    for odd in ["PII .phone", "a,b", "x=y", "PII..phone"] {
        let e = dave
            .decide_tag_proposal("crm.customers", "tel", "PII.phone", true, Some(odd))
            .await
            .unwrap_err();
        assert_eq!(code(&e), Code::InvalidArgument, "{odd}: {e}");
    }
    dave.decide_tag_proposal("crm.customers", "tel", "PII.phone", true, None)
        .await
        .unwrap();
    let tel = dave.describe("crm.customers").await.unwrap();
    let tel = tel.columns.iter().find(|c| c.name == "tel").unwrap();
    assert_eq!(tel.tags, ["PII.phone"]);

    // Several decisions on the command line: one that fails doesn't stop
    // the others, the command fails naming it, and running it again once
    // fixed applies the rest without tripping on what was done.
    dave.discover("crm.customers", 0, 0).await.unwrap();
    let (bin, address, token) = (
        veil_tests::veil_bin(),
        server.address.clone(),
        server.token("dave"),
    );
    let run = move |args: &'static [&'static str]| {
        let (bin, address, token) = (bin.clone(), address.clone(), token.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(bin)
                    .args(args)
                    .env("VEIL_ADDRESS", address)
                    .env("VEIL_TOKEN", token)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let out = run(&[
        "discover",
        "crm.customers",
        "--accept",
        "ssn=PII.ssn",
        "--accept",
        "notes=PII.ssn",
        "--reject",
        "zip=PII.postal_code",
    ])
    .await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "{stdout}");
    assert!(stderr.contains("--accept notes=PII.ssn"), "{stderr}");
    assert!(stdout.contains("accepted: ssn tagged PII.ssn"), "{stdout}");
    assert!(stdout.contains("rejected: PII.postal_code"), "{stdout}");
    let out = run(&[
        "discover",
        "crm.customers",
        "--accept",
        "ssn=PII.ssn",
        "--reject",
        "zip=PII.postal_code",
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("already accepted") && stdout.contains("already rejected"),
        "{stdout}"
    );

    // The audit records who ran discovery and decided what, never values.
    let audit = dave.audit_tail(200).await.unwrap();
    let discover_events: Vec<&String> = audit
        .iter()
        .filter(|e| e.contains("\"admin.discover\""))
        .collect();
    assert!(discover_events.len() >= 2, "{audit:?}");
    assert!(
        audit
            .iter()
            .any(|e| e.contains("admin.decide_tag_proposal") && e.contains("rejected"))
    );
    for e in &audit {
        for v in &written {
            assert!(
                !e.contains(v.as_str()),
                "an audit event holds a sampled value: {e}"
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn experts_are_named_by_owners_and_shown_to_whoever_sees_the_dataset() {
    let server = TestServer::demo_with(|dir| {
        let path = dir.join("veil.toml");
        let config = std::fs::read_to_string(&path).unwrap().replacen(
            "owners = [\"dave\"]\ntags = [\"clinical\"]",
            "owners = [\"dave\"]\nexperts = [\"grace\"]\ntags = [\"clinical\"]",
            1,
        );
        assert!(config.contains("experts = [\"grace\"]"));
        std::fs::write(path, config).unwrap();
    })
    .await;
    let data = server.dir.path().join("data");
    let dave = server.connect("dave").await;
    let erin = server.connect("erin").await;

    // Declared in the config: shown to readers, changed only there.
    let trials = erin.describe("clinical.trials").await.unwrap();
    assert_eq!(trials.experts, ["grace"]);
    let e = dave
        .set_experts("clinical.trials", vec![user("erin")])
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::FailedPrecondition, "{e}");
    assert!(e.to_string().contains("experts = ["), "{e}");

    // A runtime dataset's owner names them.
    std::fs::create_dir_all(data.join("crm")).unwrap();
    std::fs::write(data.join("crm/plain.csv"), "a,b\n1,x\n2,y\n").unwrap();
    dave.register_dataset(veil_proto::RegisterDatasetRequest {
        name: "crm.plain".into(),
        format: "csv".into(),
        location: data.join("crm/plain.csv").display().to_string(),
        description: "plain numbers".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let ack = dave
        .set_experts("crm.plain", vec![user("erin"), user("frank"), user("erin")])
        .await
        .unwrap();
    assert!(ack.contains("erin") && ack.contains("frank"), "{ack}");
    assert_eq!(
        dave.describe("crm.plain").await.unwrap().experts,
        ["erin", "frank"]
    );
    let hits = dave.search("plain", 0).await.unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].experts, ["erin", "frank"]);

    // Being an expert grants nothing: erin still can't see it.
    let e = erin.describe("crm.plain").await.unwrap_err();
    assert_eq!(code(&e), Code::NotFound, "{e}");
    let e = erin.set_experts("crm.plain", vec![]).await.unwrap_err();
    assert_eq!(code(&e), Code::NotFound, "{e}");
    let e = dave
        .set_experts("crm.plain", vec![user(" spaced")])
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");
    let cleared = dave.set_experts("crm.plain", vec![]).await.unwrap();
    assert!(cleared.contains("cleared"), "{cleared}");
    assert!(dave.describe("crm.plain").await.unwrap().experts.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn concurrent_decisions_lose_nothing_and_errors_quote_no_value() {
    let server = TestServer::demo().await;
    let data = server.dir.path().join("data");
    std::fs::create_dir_all(data.join("wide")).unwrap();
    let columns: Vec<String> = (0..12).map(|i| format!("email_{i}")).collect();
    let mut csv = columns.join(",") + "\n";
    for r in 0..50 {
        let row: Vec<String> = (0..12).map(|c| format!("u{r}c{c}@example.org")).collect();
        csv.push_str(&(row.join(",") + "\n"));
    }
    std::fs::write(data.join("wide/wide.csv"), csv).unwrap();
    let dave = server.connect("dave").await;
    dave.register_dataset(veil_proto::RegisterDatasetRequest {
        name: "wide.emails".into(),
        format: "csv".into(),
        location: data.join("wide/wide.csv").display().to_string(),
        ..Default::default()
    })
    .await
    .unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&dave.discover("wide.emails", 0, 0).await.unwrap()).unwrap();
    assert_eq!(proposals(&report).len(), 12, "{report}");

    // Twelve accepts at once, with discovery running beside them: every
    // acknowledged tag is on its column afterwards.
    let accepts = columns.iter().map(|c| {
        let dave = dave.clone();
        let c = c.clone();
        async move {
            dave.decide_tag_proposal("wide.emails", &c, "PII.email", true, None)
                .await
        }
    });
    let rediscover = {
        let dave = dave.clone();
        async move { dave.discover("wide.emails", 10, 0).await }
    };
    let (results, _) = tokio::join!(futures::future::join_all(accepts), rediscover);
    let described = dave.describe("wide.emails").await.unwrap();
    for (c, r) in columns.iter().zip(&results) {
        let tags = &described
            .columns
            .iter()
            .find(|x| &x.name == c)
            .unwrap()
            .tags;
        match r {
            Ok(_) => assert_eq!(tags, &["PII.email"], "{c} was acknowledged but not tagged"),
            // Refused outright (the dataset kept changing): nothing claimed.
            Err(e) => assert_eq!(code(e), Code::Unavailable, "{e}"),
        }
    }

    // A value that doesn't parse as its column's type: the error says so
    // and quotes nothing from the file.
    std::fs::create_dir_all(data.join("bad")).unwrap();
    let mut csv = String::from("id,ssn_secret\n");
    for r in 0..40 {
        csv.push_str(&format!("{r},{}\n", 1000 + r));
    }
    std::fs::write(data.join("bad/bad.csv"), &csv).unwrap();
    dave.register_dataset(veil_proto::RegisterDatasetRequest {
        name: "bad.rows".into(),
        format: "csv".into(),
        location: data.join("bad/bad.csv").display().to_string(),
        ..Default::default()
    })
    .await
    .unwrap();
    csv.push_str("40,078-05-1120\n");
    std::fs::write(data.join("bad/bad.csv"), &csv).unwrap();
    let e = dave.discover("bad.rows", 0, 0).await.unwrap_err();
    assert_eq!(code(&e), Code::FailedPrecondition, "{e}");
    assert!(!e.to_string().contains("078-05-1120"), "{e}");
    assert!(e.to_string().contains("server log"), "{e}");
    for event in dave.audit_tail(50).await.unwrap() {
        assert!(!event.contains("078-05-1120"), "{event}");
    }
    server.stop().await;
}

#[tokio::test]
async fn messy_csv_headers_register_and_read() {
    let server = TestServer::demo().await;
    let data = server.dir.path().join("data/messy");
    std::fs::create_dir_all(&data).unwrap();
    let dave = server.connect("dave").await;
    let files = [
        (
            "trailing",
            "id ,e-mail address\n1,a@example.org\n2,b@example.org\n",
        ),
        (
            "quoted",
            "id,\"mail, work\"\n1,a@example.org\n2,b@example.org\n",
        ),
        (
            "escaped",
            "id,\"say \"\"hi\"\"\"\n1,a@example.org\n2,b@example.org\n",
        ),
        (
            "bom",
            "\u{feff}id,email\n1,a@example.org\n2,b@example.org\n",
        ),
    ];
    for (name, text) in files {
        let path = data.join(format!("{name}.csv"));
        std::fs::write(&path, text).unwrap();
        dave.register_dataset(veil_proto::RegisterDatasetRequest {
            name: format!("messy.{name}"),
            format: "csv".into(),
            location: path.display().to_string(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let rows = dave
            .preview(&format!("messy.{name}"), 5)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(veil_tests::row_count(&rows), 2, "{name}");
        dave.discover(&format!("messy.{name}"), 0, 0)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    server.stop().await;
}

/// A card number of `len` digits starting with `prefix`, with a valid
/// Luhn check digit.
fn card_number(prefix: &str, len: usize, seed: u64) -> String {
    let fill = len - prefix.len() - 1;
    let body = format!(
        "{prefix}{:0fill$}",
        seed.wrapping_mul(2_862_933_555_777_941_757) % 10u64.pow(fill as u32)
    );
    let check = (0..10)
        .find(|c| luhn(&format!("{body}{c}")))
        .expect("a check digit");
    format!("{body}{check}")
}

/// An export like the red team's: SSNs without dashes (CSV type inference
/// makes them integers, dropping leading zeros), card numbers as integers
/// under `payment`, dash-grouped Visa numbers under `cc_number`, beside
/// decoys of the same shapes and columns no kind can be in.
fn write_export(dir: &Path) -> Vec<String> {
    let mut csv = String::from(
        "id,social_sec_no,payment,cc_number,account_no,order_no,amount,tracking,phone_no,zip_cd,active,signup,notes\n",
    );
    let mut values = Vec::new();
    for i in 0..300u64 {
        // Areas 001-665: a tenth of them start with zeros.
        let ssn = format!(
            "{:03}{:02}{:04}",
            1 + i * 7 % 665,
            1 + i % 98,
            1 + i * 13 % 9998
        );
        let (prefix, len) = [("4", 16), ("51", 16), ("37", 15), ("6011", 16)][(i % 4) as usize];
        let payment = card_number(prefix, len, i + 1);
        let visa = card_number("4", 16, i + 1000);
        let cc = format!(
            "{}-{}-{}-{}",
            &visa[..4],
            &visa[4..8],
            &visa[8..12],
            &visa[12..]
        );
        let id = 100_000_000 + i * 2_999_993 % 899_999_999;
        let account = 2_000_000_000 + i * 19_999_999 % 7_999_999_999;
        let order = 1_000_000_000 + i * 7_777_777 % 8_999_999_999;
        let amount = format!("{}.{:02}", 10 + i * 37 % 5000, i % 100);
        let tracking = 1_000_000_000_000_000 + i * 2_718_281_828_459 % 8_999_999_999_999_999;
        let phone = format!(
            "{}{:02}{}{:02}{:04}",
            2 + i % 8,
            i % 100,
            2 + i % 7,
            i % 97,
            i * 31 % 10_000
        );
        let zip = format!("{:05}", 501 + i * 331 % 99_000);
        csv.push_str(&format!(
            "{id},{ssn},{payment},{cc},{account},{order},{amount},{tracking},{phone},{zip},{},2024-{:02}-{:02},\n",
            i % 2 == 0,
            1 + i % 12,
            1 + i % 28
        ));
        values.extend([
            ssn.trim_start_matches('0').to_string(),
            payment,
            visa,
            cc,
            phone,
        ]);
    }
    std::fs::create_dir_all(dir.join("export")).unwrap();
    std::fs::write(dir.join("export/customers.csv"), csv).unwrap();
    values
}

fn skipped_columns(report: &serde_json::Value) -> Vec<(String, String)> {
    column_pairs(report, "skipped", "reason")
}

#[tokio::test]
async fn discovery_finds_digit_kinds_in_number_columns_and_lists_every_column_it_skips() {
    let server = TestServer::demo().await;
    let data = server.dir.path().join("data");
    let written = write_export(&data);
    let dave = server.connect("dave").await;
    dave.register_dataset(veil_proto::RegisterDatasetRequest {
        name: "crm.export".into(),
        format: "csv".into(),
        location: data.join("export/customers.csv").display().to_string(),
        ..Default::default()
    })
    .await
    .unwrap();
    let types: std::collections::BTreeMap<String, String> = dave
        .describe("crm.export")
        .await
        .unwrap()
        .columns
        .into_iter()
        .map(|c| (c.name, c.data_type))
        .collect();
    for integer in ["social_sec_no", "payment", "phone_no", "zip_cd", "id"] {
        assert_eq!(types[integer], "Int64", "{integer}: {types:?}");
    }

    let text = dave.discover("crm.export", 0, 0).await.unwrap();
    for v in &written {
        assert!(
            !text.contains(v.as_str()),
            "the report echoes a sampled value"
        );
    }
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut found = proposals(&report);
    found.sort();
    let expected: Vec<(String, String)> = [
        ("cc_number", "PII.credit_card"),
        ("payment", "PII.credit_card"),
        ("phone_no", "PII.phone"),
        ("social_sec_no", "PII.ssn"),
        ("zip_cd", "PII.postal_code"),
    ]
    .iter()
    .map(|(c, t)| (c.to_string(), t.to_string()))
    .collect();
    assert_eq!(found, expected, "{text}");
    // Every column is examined or listed as skipped, with its type.
    let skipped = skipped_columns(&report);
    let names: Vec<&str> = skipped.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(names, ["active", "notes"], "{text}");
    assert!(skipped[0].1.starts_with("Boolean column"), "{text}");
    // CSV type inference makes a column of empty cells a Null column.
    assert!(skipped[1].1.starts_with("Null column"), "{text}");
    assert_eq!(
        report["columns_examined"].as_u64().unwrap() as usize + skipped.len(),
        types.len(),
        "{text}"
    );

    // Parquet: integers of every width, decimals, floats; types discovery
    // doesn't read are listed with their type.
    use arrow::array::{
        ArrayRef, BinaryArray, Decimal128Array, Float64Array, Int32Array, Int64Array, ListArray,
        UInt64Array,
    };
    use arrow::datatypes::{DataType, Field, Int32Type, Schema};
    use std::sync::Arc;
    let n = 200u64;
    let ssns: Vec<i64> = (0..n)
        .map(|i| {
            (1 + i * 7 % 665) as i64 * 1_000_000
                + (1 + i % 98) as i64 * 10_000
                + (1 + i * 13 % 9998) as i64
        })
        .collect();
    let cards: Vec<u64> = (0..n)
        .map(|i| card_number("51", 16, i + 7).parse().unwrap())
        .collect();
    let phones: Vec<i128> = (0..n)
        .map(|i| {
            format!(
                "{}{:02}{}{:02}{:04}",
                2 + i % 8,
                i % 100,
                2 + i % 7,
                i % 97,
                i * 31 % 10_000
            )
            .parse::<i128>()
            .unwrap()
                * 100
        })
        .collect();
    let zips: Vec<f64> = (0..n).map(|i| (501 + i * 331 % 99_000) as f64).collect();
    // Past 2^53 a float no longer holds every digit: not examined.
    let big: Vec<f64> = (0..n).map(|i| 6.011e18 + (i as f64) * 1e6).collect();
    let ids: Vec<i32> = (0..n)
        .map(|i| 100_000_000 + i as i32 * 4_999_999 % 899_999_999)
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("ssn_no", DataType::Int64, true),
        Field::new("ccNumber", DataType::UInt64, true),
        Field::new("tel_no", DataType::Decimal128(12, 2), true),
        Field::new("zipcode", DataType::Float64, true),
        Field::new("pan", DataType::Float64, true),
        Field::new("customer_id", DataType::Int32, true),
        Field::new("photo", DataType::Binary, true),
        Field::new(
            "scores",
            DataType::List(Arc::new(Field::new_list_field(DataType::Int32, true))),
            true,
        ),
    ]));
    let list = ListArray::from_iter_primitive::<Int32Type, _, _>(
        (0..n).map(|i| Some(vec![Some(i as i32)])),
    );
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ssns)),
        Arc::new(UInt64Array::from(cards)),
        Arc::new(
            Decimal128Array::from(phones)
                .with_precision_and_scale(12, 2)
                .unwrap(),
        ),
        Arc::new(Float64Array::from(zips)),
        Arc::new(Float64Array::from(big)),
        Arc::new(Int32Array::from(ids)),
        Arc::new(BinaryArray::from_iter_values(
            (0..n).map(|i| i.to_le_bytes()),
        )),
        Arc::new(list),
    ];
    let batch =
        arrow::record_batch::RecordBatch::try_new(std::sync::Arc::clone(&schema), columns).unwrap();
    std::fs::create_dir_all(data.join("typed")).unwrap();
    let file = std::fs::File::create(data.join("typed/part-0.parquet")).unwrap();
    let mut w = veil_tests::parquet_writer(file, schema);
    w.write(&batch).unwrap();
    w.close().unwrap();
    dave.register_dataset(veil_proto::RegisterDatasetRequest {
        name: "crm.typed".into(),
        format: "parquet".into(),
        location: data.join("typed").display().to_string(),
        ..Default::default()
    })
    .await
    .unwrap();
    let text = dave.discover("crm.typed", 0, 0).await.unwrap();
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut found = proposals(&report);
    found.sort();
    let expected: Vec<(String, String)> = [
        ("ccNumber", "PII.credit_card"),
        ("ssn_no", "PII.ssn"),
        ("tel_no", "PII.phone"),
        ("zipcode", "PII.postal_code"),
    ]
    .iter()
    .map(|(c, t)| (c.to_string(), t.to_string()))
    .collect();
    assert_eq!(found, expected, "{text}");
    let skipped = skipped_columns(&report);
    let names: Vec<&str> = skipped.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(names, ["photo", "scores", "pan"], "{text}");
    assert!(skipped[0].1.starts_with("Binary column"), "{text}");
    assert!(skipped[1].1.contains("nested"), "{text}");
    assert!(
        skipped[2].1.starts_with("Float64 column") && skipped[2].1.contains("2^53"),
        "{text}"
    );
    assert_eq!(report["columns_examined"], 5, "{text}");

    // The command line prints every skipped column with its reason.
    let (bin, address, token) = (
        veil_tests::veil_bin(),
        server.address.clone(),
        server.token("dave"),
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args(["discover", "crm.typed"])
            .env("VEIL_ADDRESS", address)
            .env("VEIL_TOKEN", token)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for line in [
        "not examined: photo (Binary column",
        "not examined: scores (",
        "not examined: pan (Float64 column",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
    server.stop().await;
}
