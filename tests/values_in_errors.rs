//! No data value reaches the audit trail or the server log through an error.
//!
//! bob may read raw SSNs, so his own error messages may quote them; but the
//! audit (`veil.audit`, readable by AUDIT holders who may not read
//! `clinical.trials` raw) and the log (read by operators) must not. A corpus
//! of value-echoing failures (casts, regular expressions, arithmetic
//! overflow, date parsing, out-of-range arguments, division, a source value
//! that doesn't parse; DataFusion as Veil builds it has no JSON functions) runs through scans, SQL and streams that fail after
//! serving batches; then every audit field and every log line is searched
//! for the raw values.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use aho_corasick::AhoCorasick;
use veil_client::Scan;
use veil_tests::{TestServer, raw_trials, strings};

/// Every log line this test binary's servers write, at debug level.
fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&buf);
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info,veil=debug"))
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&writer)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber per binary");
        buf
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Values that must appear nowhere but in bob's own answers: every SSN (with
/// and without dashes), e-mail and name of the raw data.
struct Secrets {
    /// All of them at once (thousands of values over thousands of audit
    /// fields and log lines: one search per text, not one per value).
    finder: AhoCorasick,
}

impl Secrets {
    fn of_raw_data() -> Self {
        let raw = raw_trials();
        let mut values = Vec::new();
        for column in ["ssn", "email", "name"] {
            for v in strings(&raw, column).into_iter().flatten() {
                if column == "ssn" {
                    values.push(v.replace('-', ""));
                }
                values.push(v);
            }
        }
        Self {
            finder: AhoCorasick::new(&values).expect("the values make a matcher"),
        }
    }

    /// Does `text` hold one of the values as a value: not inside a longer
    /// run of letters and digits (a nine-digit SSN can turn up by chance
    /// inside a MAC or a timestamp; a quoted value stands apart).
    fn quoted(&self, text: &str) -> bool {
        self.finder.find_overlapping_iter(text).any(|m| {
            let before = text[..m.start()].chars().next_back();
            let after = text[m.end()..].chars().next();
            !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
        })
    }
}

#[test]
fn a_value_counts_only_standing_apart() {
    let secrets = Secrets {
        finder: AhoCorasick::new(["123456789", "ann@example.org"]).unwrap(),
    };
    assert!(secrets.quoted("cannot parse '123456789' as a number"));
    assert!(secrets.quoted("123456789"));
    assert!(secrets.quoted("x 9123456789 and 123456789."));
    assert!(secrets.quoted("mail ann@example.org failed"));
    assert!(!secrets.quoted("mac 0123456789ab"));
    assert!(!secrets.quoted("t=1234567890"));
    assert!(!secrets.quoted("nothing here"));
}

/// Filters over bob's raw columns that fail on a value and quote it.
/// `participant_id > 70000` lets the first batches stream before the failure.
const FAILING_FILTERS: &[(&str, &str)] = &[
    (
        "cast",
        "CAST(CASE WHEN participant_id > 70000 THEN ssn ELSE '1' END AS BIGINT) > 0",
    ),
    ("cast at once", "CAST(ssn AS BIGINT) > 0"),
    ("cast a name", "CAST(name AS DOUBLE) > 0"),
    ("regex", "regexp_like('a', concat(ssn, '('))"),
    (
        "regex replace",
        "regexp_replace(email, concat('(', name), 'x') = 'x'",
    ),
    ("timestamp parse", "to_timestamp(ssn) IS NOT NULL"),
    ("date parse", "to_date(email) IS NOT NULL"),
    (
        "out of range",
        "chr(CAST(replace(ssn, '-', '') AS BIGINT) * 1000) = 'x'",
    ),
    ("division", "participant_id / (age - age) > 0"),
    (
        "decimal overflow",
        "CAST(replace(ssn, '-', '') AS DECIMAL(38, 0)) * CAST(1e30 AS DECIMAL(38,0)) > 0",
    ),
    (
        "make_date",
        "make_date(2020, CAST(substr(ssn, 1, 3) AS INT), 1) IS NOT NULL",
    ),
    ("to_char", "to_char(to_date(ssn), '%Y') IS NOT NULL"),
    ("arrow_cast", "arrow_cast(ssn, 'Int32') > 0"),
    ("cast to boolean", "CAST(email AS BOOLEAN)"),
    (
        "decimal",
        "CAST(replace(ssn, '-', '') AS DECIMAL(3, 0)) > 0",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_quote_values_to_the_caller_only() {
    let logs = log_buffer();
    let server = TestServer::demo().await;
    let bob = server.connect("bob").await;
    let secrets = Secrets::of_raw_data();
    let quoted = |m: &str| secrets.quoted(m);

    let mut failures = 0;
    let mut quoting = 0;
    for (what, filter) in FAILING_FILTERS {
        // As a scan (GetFlightInfo plans it, DoGet streams and fails).
        let scan = bob
            .scan("clinical.trials", Scan::default().with_filter(*filter))
            .await;
        // As SQL.
        let sql = bob
            .sql(&format!(
                "SELECT participant_id FROM clinical.trials WHERE {filter}"
            ))
            .await;
        for r in [scan, sql] {
            let e = r.expect_err(what);
            failures += 1;
            if quoted(&e.to_string()) {
                quoting += 1;
            }
        }
    }
    // The corpus is worth something only if upstream messages do quote.
    assert!(
        quoting >= 6,
        "only {quoting} of {failures} errors quoted a value"
    );

    // A source value that doesn't parse, below the barrier.
    let dave = server.connect("dave").await;
    let audit = dave
        .sql("SELECT * FROM veil.audit ORDER BY seq")
        .await
        .expect("dave reads the audit");
    let mut fields = 0;
    for batch in &audit {
        for (i, field) in batch.schema().fields().iter().enumerate() {
            let text = arrow::compute::cast(batch.column(i), &arrow::datatypes::DataType::Utf8)
                .expect("text");
            let text = arrow::array::AsArray::as_string::<i32>(&text);
            for v in text.iter().flatten() {
                fields += 1;
                assert!(
                    !quoted(v),
                    "audit field {} holds a data value: {v}",
                    field.name()
                );
            }
        }
    }
    assert!(fields > 100, "the audit holds the failures");
    let failed_reads = strings(&audit, "status")
        .iter()
        .filter(|s| s.as_deref() == Some("invalid_argument"))
        .count();
    assert!(failed_reads >= FAILING_FILTERS.len(), "{failed_reads}");

    server.stop().await;
    let log = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    assert!(log.contains("read finished"), "the log was captured");
    for line in log.lines() {
        assert!(!quoted(line), "a log line holds a data value: {line}");
    }
}

/// A CSV value that doesn't parse as its column's type fails below the
/// policy barrier: neither the caller, the audit nor the log gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_values_that_fail_to_parse_stay_out_of_the_log() {
    let logs = log_buffer();
    let secret = "4242-SECRET-VALUE";
    let server = TestServer::demo().await;
    // The dictionary (beds: an integer) was derived at start; a row added
    // since holds text where it wants a number.
    let sites = server.dir.path().join("data/clinical/sites.csv");
    let mut text = std::fs::read_to_string(&sites).unwrap();
    text.push_str(&format!("ZZ,Hospital,{secret}\n"));
    std::fs::write(&sites, text).unwrap();
    let bob = server.connect("bob").await;
    let e = bob
        .scan("clinical.sites", Scan::default())
        .await
        .expect_err("the value doesn't parse");
    assert!(!e.to_string().contains(secret), "{e}");
    let dave = server.connect("dave").await;
    let audit = dave
        .sql("SELECT message, status FROM veil.audit")
        .await
        .unwrap();
    for m in strings(&audit, "message").into_iter().flatten() {
        assert!(!m.contains(secret), "{m}");
    }
    server.stop().await;
    let log = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    assert!(
        log.contains("below a policy barrier"),
        "the failure was logged"
    );
    assert!(!log.contains(secret), "the log quotes a source value");
}
