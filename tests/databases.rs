//! Datasets backed by the machine's PostgreSQL and MariaDB/MySQL: every
//! common type read value by value, masks and row filters compared with
//! the same query run in the database by hand, and sources that fail
//! (unreachable, credentials refused, a statement timeout, a connection
//! dropped mid-stream) answered with a precise status, audited, and never
//! presented as a complete result.
//!
//! PostgreSQL: `VEIL_TEST_POSTGRES_URL` (default `host=127.0.0.1 port=5432
//! user=postgres dbname=test`), skipped with `VEIL_TEST_SKIP_POSTGRES=1`.
//! MySQL/MariaDB: `VEIL_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306/test`), skipped with `VEIL_TEST_SKIP_MYSQL=1`.

use std::path::Path;
use std::str::FromStr;

use arrow::record_batch::RecordBatch;
use mysql_async::prelude::Queryable;
use tonic::Code;
use veil_client::Scan;
use veil_tests::TestServer;
use veil_tests::mysql::{self, mysql_url};
use veil_tests::pg::{self, postgres_url};

/// Append `text` to the demo's config before the server starts.
fn append(dir: &Path, text: &str) {
    let path = dir.join("veil.toml");
    let mut config = std::fs::read_to_string(&path).unwrap();
    config.push_str(text);
    std::fs::write(&path, config).unwrap();
}

/// A `[[connections]]` entry for the test's PostgreSQL.
fn pg_connection(name: &str, url: &str, extra: &str) -> String {
    let c = tokio_postgres::Config::from_str(url).unwrap();
    let host = match &c.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        #[allow(unreachable_patterns)]
        _ => "127.0.0.1".into(),
    };
    format!(
        "\n[[connections]]\nname = \"{name}\"\nkind = \"postgres\"\nhost = \"{host}\"\nport = {}\nuser = \"{}\"\ndatabase = \"{}\"\n{extra}\n",
        c.get_ports().first().copied().unwrap_or(5432),
        c.get_user().unwrap_or("postgres"),
        c.get_dbname().unwrap_or("test"),
    )
}

fn my_connection(name: &str, db: &mysql::Database, extra: &str) -> String {
    format!(
        "\n[[connections]]\nname = \"{name}\"\nkind = \"mysql\"\nhost = \"{}\"\nport = {}\nuser = \"{}\"\ndatabase = \"{}\"\n{extra}\n",
        db.host, db.port, db.user, db.name
    )
}

async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL");
    tokio::spawn(conn);
    client
}

/// Every value of `column`, as Arrow displays it.
fn shown(batches: &[RecordBatch], column: &str) -> Vec<String> {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let mut out = vec![];
    for b in batches {
        let c = b
            .column_by_name(column)
            .unwrap_or_else(|| panic!("no column {column}"));
        let opts = FormatOptions::default().with_null("NULL");
        let f = ArrayFormatter::try_new(c.as_ref(), &opts).unwrap();
        for i in 0..c.len() {
            out.push(f.value(i).to_string());
        }
    }
    out
}

fn data_type(batches: &[RecordBatch], column: &str) -> String {
    batches[0]
        .schema()
        .field_with_name(column)
        .unwrap()
        .data_type()
        .to_string()
}

#[tokio::test]
async fn postgres_types_read_value_by_value() {
    let Some(url) = postgres_url() else { return };
    let schema = pg::Schema::create(&url).await;
    let s = &schema.name;
    let db = pg_client(&url).await;
    db.batch_execute(&format!(
        r#"CREATE SCHEMA {s};
        CREATE TABLE {s}.everything (
            id integer PRIMARY KEY, small smallint, big bigint, price numeric(10,2),
            anynum numeric, ratio real, score double precision, label text, code varchar(10),
            fixed char(4), flag boolean, born date, seen timestamp, at timestamptz, tod time,
            uid uuid, doc jsonb, tags text[], nums integer[], raw bytea);
        COMMENT ON TABLE {s}.everything IS 'every common type';
        COMMENT ON COLUMN {s}.everything.price IS 'price in EUR';
        INSERT INTO {s}.everything VALUES
          (1, -5, 9007199254740993, 1234.56, 3.14159265358979, 1.5, 2.25, 'héllo ''q''', 'abc',
           'ab', true, '2024-02-29', '2024-02-29 13:14:15.123456', '2024-02-29 13:14:15.5+02',
           '23:59:59.999999', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{"k": [1, 2]}}',
           ARRAY['x','y',NULL], ARRAY[1,NULL,3], '\x00ff'),
          (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, NULL, NULL),
          (3, 32767, -9223372036854775808, -0.01, -1e-20, '-0'::real, 1e300, '', 'a b',
           'abcd', false, '0001-01-01', '1970-01-01 00:00:00', '2262-04-11 23:47:16.854775+00',
           '00:00:00', '00000000-0000-0000-0000-000000000000', 'null', ARRAY[]::text[],
           ARRAY[]::integer[], '');"#
    ))
    .await
    .unwrap();
    let config = pg_connection("shop", &url, "")
        + &format!(
            "\n[[datasets]]\nname = \"shop.everything\"\nconnection = \"shop\"\ntable = \"{s}.everything\"\nowners = [\"dave\"]\n"
        );
    let server = TestServer::demo_with(|dir| append(dir, &config)).await;
    let dave = server.connect("dave").await;

    let b = dave
        .sql("SELECT * FROM shop.everything ORDER BY id")
        .await
        .unwrap();
    let expect = |column: &str, ty: &str, values: [&str; 3]| {
        assert_eq!(data_type(&b, column), ty, "{column}'s type");
        assert_eq!(shown(&b, column), values, "{column}");
    };
    expect("id", "Int32", ["1", "2", "3"]);
    expect("small", "Int16", ["-5", "NULL", "32767"]);
    expect(
        "big",
        "Int64",
        ["9007199254740993", "NULL", "-9223372036854775808"],
    );
    expect("price", "Decimal128(10, 2)", ["1234.56", "NULL", "-0.01"]);
    expect(
        "anynum",
        "Utf8",
        ["3.14159265358979", "NULL", "-0.00000000000000000001"],
    );
    expect("ratio", "Float32", ["1.5", "NULL", "-0.0"]);
    expect("score", "Float64", ["2.25", "NULL", "1e300"]);
    expect("label", "Utf8", ["héllo 'q'", "NULL", ""]);
    expect("code", "Utf8", ["abc", "NULL", "a b"]);
    // char(n) as the database returns it: padded.
    expect("fixed", "Utf8", ["ab  ", "NULL", "abcd"]);
    expect("flag", "Boolean", ["true", "NULL", "false"]);
    expect("born", "Date32", ["2024-02-29", "NULL", "0001-01-01"]);
    expect(
        "seen",
        "Timestamp(µs)",
        ["2024-02-29T13:14:15.123456", "NULL", "1970-01-01T00:00:00"],
    );
    expect(
        "at",
        "Timestamp(µs, \"UTC\")",
        [
            "2024-02-29T11:14:15.500Z",
            "NULL",
            "2262-04-11T23:47:16.854775Z",
        ],
    );
    expect("tod", "Time64(µs)", ["23:59:59.999999", "NULL", "00:00:00"]);
    expect(
        "uid",
        "Utf8",
        [
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "NULL",
            "00000000-0000-0000-0000-000000000000",
        ],
    );
    expect("doc", "Utf8", [r#"{"k": [1, 2]}"#, "NULL", "null"]);
    expect("tags", "List(Utf8)", ["[x, y, NULL]", "NULL", "[]"]);
    expect("nums", "List(Int32)", ["[1, NULL, 3]", "NULL", "[]"]);
    expect("raw", "Binary", ["00ff", "NULL", ""]);

    // The dictionary came from the database: comments, key, nullability.
    let d = dave.describe("shop.everything").await.unwrap();
    assert_eq!(d.description, "every common type");
    let price = d.columns.iter().find(|c| c.name == "price").unwrap();
    assert_eq!(price.description, "price in EUR");
    let id = b[0].schema().field_with_name("id").unwrap().clone();
    assert!(!id.is_nullable(), "a primary key is not null");
    server.stop().await;
    schema.drop_now().await;
}

/// The people table both databases get: 300 rows over three states.
const PEOPLE_ROWS: i64 = 300;

fn people_policies(dataset: &str) -> String {
    format!(
        r#"
[[policies]]
name = "people-for-analysts"
dataset = "{dataset}"
subscription = {{ groups = ["analysts"] }}

[[policies]]
name = "people-of-my-state"
dataset = "{dataset}"
row_filter = {{ column = "state", attribute = "state" }}
except = {{ groups = ["privileged"] }}
"#
    )
}

/// What each user gets through Veil is what the database answers by hand
/// under the same rules; a filter on a masked column compares with the
/// mask.
async fn masks_and_row_filters_match(
    server: &TestServer,
    dataset: &str,
    by_hand: impl AsyncFn(&str) -> Vec<(i64, String, i64)>,
) {
    let alice = server.connect("alice").await;
    let b = alice
        .sql(&format!(
            "SELECT id, email, state, age FROM {dataset} WHERE age > 40 ORDER BY id"
        ))
        .await
        .unwrap();
    let expected = by_hand("state = 'CA' AND age > 40").await;
    assert!(!expected.is_empty());
    let ids: Vec<String> = expected.iter().map(|r| r.0.to_string()).collect();
    assert_eq!(shown(&b, "id"), ids, "alice's rows are CA's, age > 40");
    assert!(shown(&b, "state").iter().all(|s| s == "CA"));
    let ages: Vec<String> = expected.iter().map(|r| r.2.to_string()).collect();
    assert_eq!(shown(&b, "age"), ages);
    // Masked: no raw address, and equal addresses hash alike.
    let emails = shown(&b, "email");
    for (e, raw) in emails.iter().zip(&expected) {
        assert_ne!(e, &raw.1);
        assert!(!e.contains('@'), "{e}");
    }
    // A filter on the masked column compares with the mask: no row.
    let raw = &expected[0].1;
    let b = alice
        .sql(&format!("SELECT id FROM {dataset} WHERE email = '{raw}'"))
        .await
        .unwrap();
    assert_eq!(veil_tests::row_count(&b), 0);
    // ... and with the hash it finds the row.
    let b = alice
        .sql(&format!(
            "SELECT id FROM {dataset} WHERE email = '{}'",
            emails[0]
        ))
        .await
        .unwrap();
    assert_eq!(shown(&b, "id"), [expected[0].0.to_string()]);

    // A scan with a filter and a limit, on the unmasked columns.
    let b = alice
        .scan(
            dataset,
            Scan::default()
                .with_columns(&["id", "age"])
                .with_filter("age BETWEEN 30 AND 35")
                .with_limit(4),
        )
        .await
        .unwrap();
    let n = veil_tests::row_count(&b);
    let all = by_hand("state = 'CA' AND age BETWEEN 30 AND 35").await;
    assert_eq!(n, all.len().min(4));

    // bob (privileged) sees every row, unmasked.
    let bob = server.connect("bob").await;
    let b = bob
        .sql(&format!("SELECT count(*) AS n FROM {dataset}"))
        .await
        .unwrap();
    assert_eq!(shown(&b, "n"), [PEOPLE_ROWS.to_string()]);
    let b = bob
        .sql(&format!(
            "SELECT id, email FROM {dataset} WHERE email = '{raw}'"
        ))
        .await
        .unwrap();
    assert_eq!(shown(&b, "id"), [expected[0].0.to_string()]);

    // carol isn't subscribed: the dataset doesn't exist for her.
    let carol = server.connect("carol").await;
    let e = carol
        .sql(&format!("SELECT id FROM {dataset}"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound), "{e}");
}

#[tokio::test]
async fn postgres_masks_and_row_filters_match_the_database() {
    let Some(url) = postgres_url() else { return };
    let schema = pg::Schema::create(&url).await;
    let s = schema.name.clone();
    let db = pg_client(&url).await;
    db.batch_execute(&format!(
        "CREATE SCHEMA {s};
         CREATE TABLE {s}.people (id bigint PRIMARY KEY, email varchar(100), state text, age integer);
         INSERT INTO {s}.people SELECT i, 'p' || i || '@example.com',
           (ARRAY['CA','NY','TX'])[1 + i % 3], 20 + i % 50 FROM generate_series(1, {PEOPLE_ROWS}) i;"
    ))
    .await
    .unwrap();
    let config = pg_connection("crm", &url, "")
        + &format!(
            "\n[[datasets]]\nname = \"crm.people\"\nconnection = \"crm\"\ntable = \"{s}.people\"\nowners = [\"dave\"]\ncolumns.email = {{ tags = [\"PII.email\"] }}\n"
        )
        + &people_policies("crm.people");
    let server = TestServer::demo_with(|dir| append(dir, &config)).await;
    masks_and_row_filters_match(&server, "crm.people", async |condition: &str| {
        db.query(
            &format!("SELECT id, email, age FROM {s}.people WHERE {condition} ORDER BY id"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), i64::from(r.get::<_, i32>(2))))
        .collect()
    })
    .await;
    server.stop().await;
    schema.drop_now().await;
}

#[tokio::test]
async fn mysql_types_read_value_by_value() {
    let Some(url) = mysql_url() else { return };
    let db = mysql::Database::create(&url).await;
    let mut c = db.conn().await;
    c.query_drop(
        r#"CREATE TABLE everything (
            id INT PRIMARY KEY, tiny TINYINT, small SMALLINT, medium MEDIUMINT, big BIGINT,
            ubig BIGINT UNSIGNED, price DECIMAL(10,2), ratio FLOAT, score DOUBLE, label VARCHAR(20),
            body TEXT, fixed CHAR(4), flag BOOLEAN, born DATE, seen DATETIME(6), at TIMESTAMP(6) NULL,
            tod TIME, yr YEAR, doc JSON, kind ENUM('a','b'), raw VARBINARY(4)
        ) COMMENT = 'every common type'"#,
    )
    .await
    .unwrap();
    c.query_drop(
        r#"INSERT INTO everything VALUES
          (1, -128, -5, 8388607, 9007199254740993, 18446744073709551615, 1234.56, 1.5, 2.25,
           'héllo ''q''', 'long text', 'ab', TRUE, '2024-02-29', '2024-02-29 13:14:15.123456',
           '2024-02-29 11:14:15.5', '23:59:59', 2024, '{"k": [1, 2]}', 'b', X'00ff'),
          (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, NULL, NULL)"#,
    )
    .await
    .unwrap();
    drop(c);
    let config = my_connection("shop", &db, "")
        + &format!(
            "\n[[datasets]]\nname = \"shop.everything\"\nconnection = \"shop\"\ntable = \"{}.everything\"\nowners = [\"dave\"]\n",
            db.name
        );
    let server = TestServer::demo_with(|dir| append(dir, &config)).await;
    let dave = server.connect("dave").await;
    let b = dave
        .sql("SELECT * FROM shop.everything ORDER BY id")
        .await
        .unwrap();
    let expect = |column: &str, ty: &str, values: [&str; 2]| {
        assert_eq!(data_type(&b, column), ty, "{column}'s type");
        assert_eq!(shown(&b, column), values, "{column}");
    };
    expect("id", "Int32", ["1", "2"]);
    expect("tiny", "Int8", ["-128", "NULL"]);
    expect("small", "Int16", ["-5", "NULL"]);
    expect("medium", "Int32", ["8388607", "NULL"]);
    expect("big", "Int64", ["9007199254740993", "NULL"]);
    expect("ubig", "UInt64", ["18446744073709551615", "NULL"]);
    expect("price", "Decimal128(10, 2)", ["1234.56", "NULL"]);
    expect("ratio", "Float32", ["1.5", "NULL"]);
    expect("score", "Float64", ["2.25", "NULL"]);
    expect("label", "Utf8", ["héllo 'q'", "NULL"]);
    expect("body", "Utf8", ["long text", "NULL"]);
    expect("fixed", "Utf8", ["ab", "NULL"]);
    // BOOLEAN is TINYINT(1) in MySQL: served as the integer it holds.
    expect("flag", "Int8", ["1", "NULL"]);
    expect("born", "Date32", ["2024-02-29", "NULL"]);
    expect(
        "seen",
        "Timestamp(µs)",
        ["2024-02-29T13:14:15.123456", "NULL"],
    );
    expect(
        "at",
        "Timestamp(µs, \"UTC\")",
        ["2024-02-29T11:14:15.500Z", "NULL"],
    );
    expect("tod", "Utf8", ["23:59:59", "NULL"]);
    expect("yr", "Int16", ["2024", "NULL"]);
    expect("kind", "Utf8", ["b", "NULL"]);
    expect("raw", "Binary", ["00ff", "NULL"]);
    let doc = shown(&b, "doc");
    assert!(doc[0].replace(' ', "") == r#"{"k":[1,2]}"#, "{}", doc[0]);
    let d = dave.describe("shop.everything").await.unwrap();
    assert_eq!(d.description, "every common type");
    let id = b[0].schema().field_with_name("id").unwrap().clone();
    assert!(!id.is_nullable(), "a primary key is not null");
    server.stop().await;
    db.drop_now().await;
}

#[tokio::test]
async fn mysql_masks_and_row_filters_match_the_database() {
    let Some(url) = mysql_url() else { return };
    let db = mysql::Database::create(&url).await;
    let mut c = db.conn().await;
    c.query_drop(
        "CREATE TABLE people (id BIGINT PRIMARY KEY, email VARCHAR(100), state VARCHAR(2), age INT)",
    )
    .await
    .unwrap();
    let states = ["CA", "NY", "TX"];
    let rows: Vec<String> = (1..=PEOPLE_ROWS)
        .map(|i| {
            format!(
                "({i}, 'p{i}@example.com', '{}', {})",
                states[(i % 3) as usize],
                20 + i % 50
            )
        })
        .collect();
    c.query_drop(format!("INSERT INTO people VALUES {}", rows.join(",")))
        .await
        .unwrap();
    let config = my_connection("crm", &db, "")
        + &format!(
            "\n[[datasets]]\nname = \"crm.people\"\nconnection = \"crm\"\ntable = \"{}.people\"\nowners = [\"dave\"]\ncolumns.email = {{ tags = [\"PII.email\"] }}\n",
            db.name
        )
        + &people_policies("crm.people");
    let server = TestServer::demo_with(|dir| append(dir, &config)).await;
    let conn = tokio::sync::Mutex::new(c);
    masks_and_row_filters_match(&server, "crm.people", async |condition: &str| {
        let mut c = conn.lock().await;
        c.query::<(i64, String, i64), _>(format!(
            "SELECT id, email, age FROM people WHERE {condition} ORDER BY id"
        ))
        .await
        .unwrap()
    })
    .await;
    server.stop().await;
    db.drop_now().await;
}

/// The audit's statuses for `dataset`'s reads, as dave (an auditor) sees them.
async fn read_statuses(server: &TestServer, dataset: &str) -> Vec<String> {
    let dave = server.connect("dave").await;
    let b = dave
        .scan(
            "veil.audit",
            Scan::default()
                .with_columns(&["action", "status"])
                .with_filter(format!("dataset = '{dataset}'")),
        )
        .await
        .unwrap();
    veil_tests::strings(&b, "status")
        .into_iter()
        .flatten()
        .collect()
}

/// A database that times out, refuses Veil's user, drops a connection
/// mid-stream or can't be reached: each gets its status, a message naming
/// the connection (never a password), an audit record, and never a
/// shortened result presented as complete.
#[tokio::test]
async fn postgres_failures_are_precise_and_audited() {
    use futures::StreamExt;
    let Some(url) = postgres_url() else { return };
    let schema = pg::Schema::create(&url).await;
    let s = schema.name.clone();
    let db = pg_client(&url).await;
    db.batch_execute(&format!(
        "CREATE SCHEMA {s};
         CREATE TABLE {s}.big (id bigint PRIMARY KEY, pad text);
         INSERT INTO {s}.big SELECT i, repeat('x', 60) FROM generate_series(1, 400000) i;"
    ))
    .await
    .unwrap();
    let pg = tokio_postgres::Config::from_str(&url).unwrap();
    let target: std::net::SocketAddr = format!(
        "127.0.0.1:{}",
        pg.get_ports().first().copied().unwrap_or(5432)
    )
    .parse()
    .unwrap();
    let proxy = veil_tests::proxy::Proxy::start(target).await;
    let through_proxy = pg_connection("flaky", &url, "").replace(
        &format!("port = {}", target.port()),
        &format!("port = {}", proxy.port),
    );
    let config = through_proxy
        + &pg_connection(
            "slow",
            &url,
            "statement_timeout_secs = 1\npassword_file = \"pw.txt\"",
        )
        + &pg_connection("stranger", &url, "").replace(
            &format!("user = \"{}\"", pg.get_user().unwrap_or("postgres")),
            "user = \"veil_no_such_role\"",
        )
        + &format!(
            "\n[[datasets]]\nname = \"crm.big\"\nconnection = \"flaky\"\ntable = \"{s}.big\"\nowners = [\"dave\"]\n\n[[datasets]]\nname = \"crm.slow\"\nconnection = \"slow\"\nquery = \"SELECT 1 AS x FROM pg_sleep(3)\"\nowners = [\"dave\"]\n"
        );
    let server = TestServer::demo_with(|dir| {
        append(dir, &config);
        // A password file (trust authentication ignores it): read, never shown.
        std::fs::write(dir.join("pw.txt"), "hunter2-secret\n").unwrap();
    })
    .await;
    let dave = server.connect("dave").await;

    // A statement past its time limit.
    let e = dave.sql("SELECT * FROM crm.slow").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::DeadlineExceeded), "{e}");
    let m = e.to_string();
    assert!(
        m.contains("'slow'") && m.contains("statement_timeout_secs"),
        "{m}"
    );
    assert!(!m.contains("hunter2"), "{m}");
    assert!(
        read_statuses(&server, "crm.slow")
            .await
            .iter()
            .any(|s| s == "deadline_exceeded")
    );

    // Credentials refused: registration says so, naming the connection.
    let e = dave
        .register_dataset(veil_proto::RegisterDatasetRequest {
            name: "crm.other".into(),
            connection: "stranger".into(),
            table: format!("{s}.big"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::Unavailable), "{e}");
    assert!(
        e.to_string()
            .contains("'stranger' refused Veil's credentials"),
        "{e}"
    );

    // A connection dropped while rows stream: the stream ends with an
    // error, never as a complete answer.
    let info = dave.scan_info("crm.big", &Scan::default()).await.unwrap();
    assert_eq!(info.endpoint.len(), 1);
    let channel =
        tonic::transport::Endpoint::from_shared(server.address.replacen("grpc://", "http://", 1))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut flight = arrow_flight::FlightClient::new(channel);
    flight
        .add_header("authorization", &format!("Bearer {}", server.token("dave")))
        .unwrap();
    // The database goes away once about a tenth of the result has left it
    // (400000 rows of about 70 bytes): mid-stream, whatever the timing.
    proxy.cut_after(2800000);
    let mut stream = flight
        .do_get(info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap();
    let mut rows = 0;
    let mut failed = None;
    while let Some(next) = stream.next().await {
        match next {
            Ok(b) => rows += b.num_rows(),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let e =
        failed.unwrap_or_else(|| panic!("the stream ended cleanly after {rows} of 400000 rows"));
    assert!(rows < 400_000, "{rows}");
    let text = e.to_string();
    assert!(
        text.contains("Unavailable") || text.contains("unavailable"),
        "{text}"
    );
    assert!(text.contains("'flaky'"), "{text}");

    // Unreachable: the proxy is gone, so is the database.
    let e = dave.sql("SELECT count(*) FROM crm.big").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::Unavailable), "{e}");
    assert!(e.to_string().contains("'flaky' can't be reached"), "{e}");
    let statuses = read_statuses(&server, "crm.big").await;
    assert!(statuses.iter().any(|s| s == "unavailable"), "{statuses:?}");

    // Nothing of the password reached the server log or the audit.
    let audit = dave.audit_tail(500).await.unwrap().join("\n");
    assert!(!audit.contains("hunter2"));
    server.stop().await;
    schema.drop_now().await;
}

#[tokio::test]
async fn mysql_statement_timeout_is_deadline_exceeded() {
    let Some(url) = mysql_url() else { return };
    let db = mysql::Database::create(&url).await;
    let config = my_connection("slow", &db, "statement_timeout_secs = 1")
        + "\n[[datasets]]\nname = \"crm.slow\"\nconnection = \"slow\"\nquery = \"SELECT 1 AS x FROM (SELECT 1 AS y) AS t WHERE SLEEP(3) = 0\"\nowners = [\"dave\"]\n";
    let server = TestServer::demo_with(|dir| append(dir, &config)).await;
    let dave = server.connect("dave").await;
    let e = dave.sql("SELECT * FROM crm.slow").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::DeadlineExceeded), "{e}");
    assert!(e.to_string().contains("'slow'"), "{e}");
    server.stop().await;
    db.drop_now().await;
}

/// Ids of every row the endpoints of `info` return, read one by one.
async fn ids_by_endpoint(
    conn: &veil_client::Connection,
    info: &arrow_flight::FlightInfo,
    column: &str,
) -> Vec<Vec<i64>> {
    let mut out = vec![];
    for ep in &info.endpoint {
        let b = conn.read_ticket(ep.ticket.clone().unwrap()).await.unwrap();
        out.push(
            shown(&b, column)
                .iter()
                .map(|v| v.parse().unwrap())
                .collect(),
        );
    }
    out
}

/// A table is read as several endpoints by ranges of its key: every row
/// exactly once, a ticket read again returns the same rows; without an
/// integer key (or with a limit) it is one endpoint.
async fn reads_split_by_key_ranges(server: &TestServer) {
    let dave = server.connect("dave").await;
    let info = dave
        .scan_info("crm.keyed", &Scan::default().with_columns(&["id"]))
        .await
        .unwrap();
    assert_eq!(info.endpoint.len(), 3, "100000 rows at 40000 per endpoint");
    let parts = ids_by_endpoint(&dave, &info, "id").await;
    let mut all: Vec<i64> = parts.iter().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=100_000).collect::<Vec<i64>>(), "every row once");
    assert!(parts.iter().all(|p| !p.is_empty()));
    let again = ids_by_endpoint(&dave, &info, "id").await;
    assert_eq!(again, parts, "a ticket read again returns the same rows");

    // A SQL query over one dataset splits the same way.
    let info = dave
        .flight_info(veil_client::sql_descriptor(
            "SELECT id FROM crm.keyed WHERE id % 2 = 0",
        ))
        .await
        .unwrap();
    assert_eq!(info.endpoint.len(), 3);
    let n: usize = ids_by_endpoint(&dave, &info, "id")
        .await
        .iter()
        .map(Vec::len)
        .sum();
    assert_eq!(n, 50_000);

    // A declared partition column splits a table without a key.
    let info = dave
        .scan_info("crm.declared", &Scan::default())
        .await
        .unwrap();
    assert!(info.endpoint.len() > 1);
    let mut all: Vec<i64> = ids_by_endpoint(&dave, &info, "v")
        .await
        .into_iter()
        .flatten()
        .collect();
    all.sort_unstable();
    assert_eq!(all.len(), 100_000);

    // No integer key, or a limit: one endpoint.
    let info = dave
        .scan_info("crm.unkeyed", &Scan::default())
        .await
        .unwrap();
    assert_eq!(info.endpoint.len(), 1);
    let info = dave
        .scan_info("crm.keyed", &Scan::default().with_limit(10))
        .await
        .unwrap();
    assert_eq!(info.endpoint.len(), 1);

    // Under a row policy: one endpoint, whatever the table's keys. Ranges
    // cut from the whole table would show, by how many there are and how
    // the caller's rows fall into them, where the hidden rows' keys lie.
    for policy in [
        serde_json::json!({"name": "keyed-open", "dataset": "crm.keyed", "subscription": {"anyone": true}}),
        serde_json::json!({"name": "keyed-rows", "dataset": "crm.keyed",
            "row_filter": {"where": "v < 3"}, "except": {"users": ["dave"]}}),
    ] {
        dave.create_policy(&policy.to_string()).await.unwrap();
    }
    let alice = server.connect("alice").await;
    let info = alice
        .scan_info("crm.keyed", &Scan::default().with_columns(&["id"]))
        .await
        .unwrap();
    assert_eq!(info.endpoint.len(), 1, "a row policy filters alice's read");
    let seen: usize = ids_by_endpoint(&alice, &info, "id")
        .await
        .iter()
        .map(Vec::len)
        .sum();
    assert_eq!(seen, (1..=100_000).filter(|i| i % 7 < 3).count());
    let info = dave
        .scan_info("crm.keyed", &Scan::default().with_columns(&["id"]))
        .await
        .unwrap();
    assert_eq!(
        info.endpoint.len(),
        3,
        "dave is excepted: key ranges as before"
    );
    for name in ["keyed-rows", "keyed-open"] {
        dave.delete_policy(name).await.unwrap();
    }
}

fn split_datasets(schema: &str) -> String {
    format!(
        r#"
[[datasets]]
name = "crm.keyed"
connection = "crm"
table = "{schema}.keyed"
owners = ["dave"]

[[datasets]]
name = "crm.unkeyed"
connection = "crm"
table = "{schema}.unkeyed"
owners = ["dave"]

[[datasets]]
name = "crm.declared"
connection = "crm"
table = "{schema}.unkeyed"
partition_column = "v"
owners = ["dave"]
"#
    )
}

#[tokio::test]
async fn postgres_reads_split_by_key_ranges() {
    let Some(url) = postgres_url() else { return };
    let schema = pg::Schema::create(&url).await;
    let s = schema.name.clone();
    let db = pg_client(&url).await;
    db.batch_execute(&format!(
        "CREATE SCHEMA {s};
         CREATE TABLE {s}.keyed (id bigint PRIMARY KEY, v integer);
         INSERT INTO {s}.keyed SELECT i, i % 7 FROM generate_series(1, 100000) i;
         CREATE TABLE {s}.unkeyed (v integer, label text);
         INSERT INTO {s}.unkeyed SELECT i, 'x' FROM generate_series(1, 100000) i;
         ANALYZE {s}.keyed; ANALYZE {s}.unkeyed;"
    ))
    .await
    .unwrap();
    let config = pg_connection("crm", &url, "") + &split_datasets(&s);
    let server = TestServer::demo_with(|dir| append(dir, &config)).await;
    reads_split_by_key_ranges(&server).await;
    server.stop().await;
    schema.drop_now().await;
}

#[tokio::test]
async fn mysql_reads_split_by_key_ranges() {
    let Some(url) = mysql_url() else { return };
    let db = mysql::Database::create(&url).await;
    let mut c = db.conn().await;
    c.query_drop("CREATE TABLE keyed (id BIGINT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    c.query_drop("CREATE TABLE unkeyed (v INT, label VARCHAR(4))")
        .await
        .unwrap();
    for chunk in (1..=100_000i64).collect::<Vec<_>>().chunks(10_000) {
        let keyed: Vec<String> = chunk.iter().map(|i| format!("({i},{})", i % 7)).collect();
        let unkeyed: Vec<String> = chunk.iter().map(|i| format!("({i},'x')")).collect();
        c.query_drop(format!("INSERT INTO keyed VALUES {}", keyed.join(",")))
            .await
            .unwrap();
        c.query_drop(format!("INSERT INTO unkeyed VALUES {}", unkeyed.join(",")))
            .await
            .unwrap();
    }
    c.query_drop("ANALYZE TABLE keyed, unkeyed").await.unwrap();
    drop(c);
    let config = my_connection("crm", &db, "") + &split_datasets(&db.name);
    let server = TestServer::demo_with(|dir| append(dir, &config)).await;
    reads_split_by_key_ranges(&server).await;
    server.stop().await;
    db.drop_now().await;
}

/// An accelerated dataset is served from its local copy while the copy is
/// fresh (even with the database gone and Veil restarted), through the same masks and row
/// filters; refreshes (full, then incremental) are audited, reads say what
/// served them, and a copy past its freshness bound is never served.
#[tokio::test]
async fn postgres_acceleration_serves_a_fresh_copy_and_never_a_stale_one() {
    let Some(url) = postgres_url() else { return };
    let schema = pg::Schema::create(&url).await;
    let s = schema.name.clone();
    let db = pg_client(&url).await;
    db.batch_execute(&format!(
        "CREATE SCHEMA {s};
         CREATE TABLE {s}.people (id bigint PRIMARY KEY, email text, state text, age integer,
                                  updated_at timestamptz NOT NULL);
         INSERT INTO {s}.people SELECT i, 'p' || i || '@example.com',
           (ARRAY['CA','NY','TX'])[1 + i % 3], 20 + i % 50,
           TIMESTAMPTZ '2026-01-01 00:00:00+00' + i * INTERVAL '1 second'
           FROM generate_series(1, {PEOPLE_ROWS}) i;"
    ))
    .await
    .unwrap();
    let pg = tokio_postgres::Config::from_str(&url).unwrap();
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let proxy = veil_tests::proxy::Proxy::start(format!("127.0.0.1:{port}").parse().unwrap()).await;
    let config = pg_connection("crm", &url, "")
        .replace(&format!("port = {port}"), &format!("port = {}", proxy.port));
    let server = TestServer::demo_with(|dir| append(dir, &config)).await;
    let dave = server.connect("dave").await;
    dave.register_dataset(veil_proto::RegisterDatasetRequest {
        name: "crm.people".into(),
        connection: "crm".into(),
        table: format!("{s}.people"),
        ..Default::default()
    })
    .await
    .unwrap();
    dave.set_column_tags("crm.people", "email", &["PII.email".to_string()])
        .await
        .unwrap();
    for policy in [
        r#"{"name": "people-for-analysts", "dataset": "crm.people", "subscription": {"groups": ["analysts"]}}"#,
        r#"{"name": "people-of-my-state", "dataset": "crm.people", "row_filter": {"column": "state", "attribute": "state"}, "except": {"groups": ["privileged"]}}"#,
    ] {
        dave.create_policy(policy).await.unwrap();
    }
    // Only database datasets, with a usable incremental column.
    let e = dave
        .accelerate(veil_proto::AccelerateRequest {
            dataset: "crm.people".into(),
            max_staleness_secs: 3600,
            incremental_column: "email".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument), "{e}");
    let e = dave
        .accelerate(veil_proto::AccelerateRequest {
            dataset: "clinical.trials".into(),
            max_staleness_secs: 3600,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::FailedPrecondition), "{e}");
    let m = dave
        .accelerate(veil_proto::AccelerateRequest {
            dataset: "crm.people".into(),
            max_staleness_secs: 3600,
            incremental_column: "updated_at".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(m.contains("accelerated"), "{m}");
    let m = dave.refresh("crm.people").await.unwrap();
    assert!(m.contains("(full): 300 rows"), "{m}");

    // A row added and one changed: the incremental refresh brings both.
    db.batch_execute(&format!(
        "INSERT INTO {s}.people VALUES (1000, 'new@example.com', 'CA', 33, now());
         UPDATE {s}.people SET age = 99, updated_at = now() WHERE id = 3;"
    ))
    .await
    .unwrap();
    let m = dave.refresh("crm.people").await.unwrap();
    assert!(m.contains("(incremental): 301 rows"), "{m}");
    // Nothing new since: the refresh keeps the copy as it is (it failed
    // to merge an empty change: found by an outside review).
    let m = dave.refresh("crm.people").await.unwrap();
    assert!(m.contains("(incremental): 301 rows"), "{m}");

    // The database goes away, and Veil restarts: reads are served from
    // the copy it kept, governed.
    proxy.cut();
    let server = server.restart().await;
    let dave = server.connect("dave").await;
    let alice = server.connect("alice").await;
    let b = alice
        .sql("SELECT id, email, state, age FROM crm.people WHERE age > 40 ORDER BY id")
        .await
        .unwrap();
    let want: Vec<String> = db
        .query(
            &format!("SELECT id FROM {s}.people WHERE state = 'CA' AND age > 40 ORDER BY id"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, i64>(0).to_string())
        .collect();
    assert_eq!(shown(&b, "id"), want);
    assert!(shown(&b, "state").iter().all(|s| s == "CA"));
    assert!(shown(&b, "email").iter().all(|e| !e.contains('@')));
    let bob = server.connect("bob").await;
    let b = bob
        .sql("SELECT age FROM crm.people WHERE id = 3")
        .await
        .unwrap();
    assert_eq!(shown(&b, "age"), ["99"]);
    let b = bob
        .sql("SELECT count(*) AS n FROM crm.people")
        .await
        .unwrap();
    assert_eq!(shown(&b, "n"), ["301"]);

    // A scan (GetFlightInfo, then DoGet per endpoint) from the copy too.
    dave.scan("crm.people", Scan::default()).await.unwrap();
    // Audited: the refreshes, and what served each read.
    let audit = dave
        .scan(
            "veil.audit",
            Scan::default()
                .with_columns(&["action", "status", "rows", "message"])
                .with_filter("dataset = 'crm.people'"),
        )
        .await
        .unwrap();
    let actions = veil_tests::strings(&audit, "action");
    let messages = veil_tests::strings(&audit, "message");
    assert_eq!(
        actions
            .iter()
            .filter(|a| a.as_deref() == Some("accelerate.refresh"))
            .count(),
        3
    );
    // Said by the plan, and by each endpoint's start and end records
    // (every DoGet plans again: what served that read).
    for (action, starts) in [
        ("plan", ""),
        ("read.start", "part 1/"),
        ("read.end", "part 1/"),
        ("read.start", "direct read"),
    ] {
        assert!(
            actions.iter().zip(&messages).any(|(a, m)| {
                a.as_deref() == Some(action)
                    && m.as_deref().is_some_and(|m| {
                        m.starts_with(starts) && m.contains("served from its accelerated copy")
                    })
            }),
            "{action} {starts}: {messages:?}"
        );
    }

    // A copy past its bound is never served: the read goes to the
    // (gone) database and fails.
    dave.accelerate(veil_proto::AccelerateRequest {
        dataset: "crm.people".into(),
        max_staleness_secs: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let e = bob
        .sql("SELECT count(*) FROM crm.people")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::Unavailable), "{e}");

    // The copy's folder can't be registered as a dataset.
    let copies = server.dir.path().join("accelerated");
    let e = dave
        .register_dataset(veil_proto::RegisterDatasetRequest {
            name: "crm.copies".into(),
            format: "parquet".into(),
            location: std::fs::canonicalize(&copies)
                .unwrap()
                .display()
                .to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(e.code(), Some(Code::PermissionDenied)), "{e}");
    server.stop().await;
    schema.drop_now().await;
}

/// What reaches the database's wire (what its statement log would show):
/// the row policy, never a reader's filter under it (nor a masked column's
/// value), for PostgreSQL and MySQL alike.
async fn masked_filters_never_reach_the_database(
    server: &TestServer,
    proxy: &veil_tests::proxy::Proxy,
    raw_email: &str,
) {
    let alice = server.connect("alice").await;
    proxy.clear();
    let b = alice
        .sql(&format!(
            "SELECT id FROM crm.people WHERE email = '{raw_email}' AND age = 41"
        ))
        .await
        .unwrap();
    assert_eq!(
        veil_tests::row_count(&b),
        0,
        "the raw value matches no hash"
    );
    let sent = proxy.sent();
    // Under alice's row policy the database returns the rows the policy
    // selects: her own filter (even on an unmasked column) stays in Veil.
    assert!(
        !sent.contains("\"age\" =") && !sent.contains("`age` ="),
        "the reader's filter went in: {sent}"
    );
    assert!(sent.contains("CA"), "the row policy went in");
    assert!(
        !sent.contains(raw_email),
        "a masked column's value reached the database"
    );
    assert!(
        !sent.contains("\"email\" =")
            && !sent.contains("`email` =")
            && !sent.contains("email LIKE"),
        "a filter on a masked column reached the database: {sent}"
    );
    // Functions over a masked column stay in Veil too.
    proxy.clear();
    alice
        .sql(&format!(
            "SELECT id FROM crm.people WHERE upper(email) = upper('{raw_email}') OR email LIKE 'p1%'"
        ))
        .await
        .unwrap();
    assert!(!proxy.sent().contains(raw_email));
    assert!(!proxy.sent().contains("p1%"));
}

#[tokio::test]
async fn postgres_masked_filters_never_reach_the_database() {
    let Some(url) = postgres_url() else { return };
    let schema = pg::Schema::create(&url).await;
    let s = schema.name.clone();
    let db = pg_client(&url).await;
    db.batch_execute(&format!(
        "CREATE SCHEMA {s};
         CREATE TABLE {s}.people (id bigint PRIMARY KEY, email varchar(100), state text, age integer);
         INSERT INTO {s}.people SELECT i, 'p' || i || '@example.com',
           (ARRAY['CA','NY','TX'])[1 + i % 3], 20 + i % 50 FROM generate_series(1, {PEOPLE_ROWS}) i;"
    ))
    .await
    .unwrap();
    let pg = tokio_postgres::Config::from_str(&url).unwrap();
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let proxy = veil_tests::proxy::Proxy::start(format!("127.0.0.1:{port}").parse().unwrap()).await;
    let config = pg_connection("crm", &url, "")
        .replace(&format!("port = {port}"), &format!("port = {}", proxy.port))
        + &format!(
            "\n[[datasets]]\nname = \"crm.people\"\nconnection = \"crm\"\ntable = \"{s}.people\"\nowners = [\"dave\"]\ncolumns.email = {{ tags = [\"PII.email\"] }}\n"
        )
        + &people_policies("crm.people");
    let server = TestServer::demo_with(|dir| append(dir, &config)).await;
    masked_filters_never_reach_the_database(&server, &proxy, "p3@example.com").await;
    server.stop().await;
    schema.drop_now().await;
}

#[tokio::test]
async fn mysql_masked_filters_never_reach_the_database() {
    let Some(url) = mysql_url() else { return };
    let db = mysql::Database::create(&url).await;
    let mut c = db.conn().await;
    c.query_drop(
        "CREATE TABLE people (id BIGINT PRIMARY KEY, email VARCHAR(100), state VARCHAR(2), age INT)",
    )
    .await
    .unwrap();
    let rows: Vec<String> = (1..=PEOPLE_ROWS)
        .map(|i| {
            format!(
                "({i}, 'p{i}@example.com', '{}', {})",
                ["CA", "NY", "TX"][(i % 3) as usize],
                20 + i % 50
            )
        })
        .collect();
    c.query_drop(format!("INSERT INTO people VALUES {}", rows.join(",")))
        .await
        .unwrap();
    drop(c);
    let proxy =
        veil_tests::proxy::Proxy::start(format!("{}:{}", db.host, db.port).parse().unwrap()).await;
    let config = my_connection("crm", &db, "").replace(
        &format!("port = {}", db.port),
        &format!("port = {}", proxy.port),
    ) + &format!(
        "\n[[datasets]]\nname = \"crm.people\"\nconnection = \"crm\"\ntable = \"{}.people\"\nowners = [\"dave\"]\ncolumns.email = {{ tags = [\"PII.email\"] }}\n",
        db.name
    ) + &people_policies("crm.people");
    let server = TestServer::demo_with(|dir| append(dir, &config)).await;
    masked_filters_never_reach_the_database(&server, &proxy, "p3@example.com").await;
    server.stop().await;
    db.drop_now().await;
}

/// MySQL/MariaDB failing: a connection dropped while rows stream ends the
/// stream with an error, and a database that can't be reached (or refuses
/// Veil's user) is UNAVAILABLE naming the connection.
#[tokio::test]
async fn mysql_failures_are_precise() {
    use futures::StreamExt;
    let Some(url) = mysql_url() else { return };
    let db = mysql::Database::create(&url).await;
    let mut c = db.conn().await;
    c.query_drop("CREATE TABLE big (id BIGINT PRIMARY KEY, pad VARCHAR(80))")
        .await
        .unwrap();
    for chunk in (1..=200_000i64).collect::<Vec<_>>().chunks(20_000) {
        let rows: Vec<String> = chunk
            .iter()
            .map(|i| format!("({i}, REPEAT('x', 60))"))
            .collect();
        c.query_drop(format!("INSERT INTO big VALUES {}", rows.join(",")))
            .await
            .unwrap();
    }
    drop(c);
    let proxy =
        veil_tests::proxy::Proxy::start(format!("{}:{}", db.host, db.port).parse().unwrap()).await;
    let config = my_connection("flaky", &db, "").replace(
        &format!("port = {}", db.port),
        &format!("port = {}", proxy.port),
    ) + &my_connection("stranger", &db, "").replace(
        &format!("user = \"{}\"", db.user),
        "user = \"veil_no_such_user\"",
    ) + &format!(
        "\n[[datasets]]\nname = \"crm.big\"\nconnection = \"flaky\"\ntable = \"{}.big\"\nowners = [\"dave\"]\n",
        db.name
    );
    let server = TestServer::demo_with(|dir| append(dir, &config)).await;
    let dave = server.connect("dave").await;

    let e = dave
        .register_dataset(veil_proto::RegisterDatasetRequest {
            name: "crm.other".into(),
            connection: "stranger".into(),
            table: format!("{}.big", db.name),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::Unavailable), "{e}");
    assert!(
        e.to_string()
            .contains("'stranger' refused Veil's credentials"),
        "{e}"
    );

    let info = dave
        .scan_info("crm.big", &Scan::default().with_limit(1_000_000))
        .await
        .unwrap();
    let channel =
        tonic::transport::Endpoint::from_shared(server.address.replacen("grpc://", "http://", 1))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut flight = arrow_flight::FlightClient::new(channel);
    flight
        .add_header("authorization", &format!("Bearer {}", server.token("dave")))
        .unwrap();
    // The database goes away once about a tenth of the result has left it
    // (200000 rows of about 70 bytes): mid-stream, whatever the timing.
    proxy.cut_after(1400000);
    let mut stream = flight
        .do_get(info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap();
    let mut rows = 0;
    let mut failed = None;
    while let Some(next) = stream.next().await {
        match next {
            Ok(b) => rows += b.num_rows(),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let e =
        failed.unwrap_or_else(|| panic!("the stream ended cleanly after {rows} of 200000 rows"));
    assert!(rows < 200_000, "{rows}");
    assert!(e.to_string().contains("'flaky'"), "{e}");

    let e = dave.sql("SELECT count(*) FROM crm.big").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::Unavailable), "{e}");
    assert!(e.to_string().contains("'flaky' can't be reached"), "{e}");
    server.stop().await;
    db.drop_now().await;
}

/// Registering through the connection `untrusted` (a server certificate
/// its `ca_file` didn't sign) fails as a server that can't be reached.
async fn untrusted_is_refused(dave: &veil_client::Connection) {
    let e = dave
        .register_dataset(veil_proto::RegisterDatasetRequest {
            name: "ops.other".into(),
            connection: "untrusted".into(),
            query: "SELECT 1 AS x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::Unavailable), "{e}");
    assert!(
        e.to_string().contains("'untrusted' can't be reached"),
        "{e}"
    );
}

/// `tls = "require"`: the session is encrypted (PostgreSQL's own view of
/// Veil's session says so) and the server's certificate is checked: one
/// not signed by `ca_file` is refused.
///
/// Needs the PostgreSQL at VEIL_TEST_POSTGRES_URL to serve TLS with the
/// certificate VEIL_TEST_POSTGRES_CA (default: Debian's snakeoil certificate,
/// for `localhost`); VEIL_TEST_SKIP_POSTGRES_TLS=1 skips.
#[tokio::test]
async fn postgres_tls_is_encrypted_and_verified() {
    let Some(url) = postgres_url() else { return };
    if std::env::var("VEIL_TEST_SKIP_POSTGRES_TLS").is_ok_and(|v| v == "1") {
        eprintln!("VEIL_TEST_SKIP_POSTGRES_TLS=1: skipping the TLS test");
        return;
    }
    let ca = std::env::var("VEIL_TEST_POSTGRES_CA")
        .unwrap_or_else(|_| "/etc/ssl/certs/ssl-cert-snakeoil.pem".into());
    assert!(
        Path::new(&ca).exists(),
        "this test needs PostgreSQL serving TLS and its certificate at {ca} (VEIL_TEST_POSTGRES_CA); or set VEIL_TEST_SKIP_POSTGRES_TLS=1"
    );
    let as_localhost = |name: &str, extra: &str| {
        pg_connection(name, &url, extra).replace("host = \"127.0.0.1\"", "host = \"localhost\"")
    };
    // Some other authority's certificate: it signed nothing this server has.
    let other = std::fs::read_dir("/etc/ssl/certs")
        .ok()
        .and_then(|d| {
            d.flatten().map(|e| e.path()).find(|p| {
                p.extension().is_some_and(|x| x == "pem")
                    && !p.to_string_lossy().contains("snakeoil")
                    && std::fs::canonicalize(p).ok() != std::fs::canonicalize(&ca).ok()
            })
        })
        .expect("another certificate authority's PEM under /etc/ssl/certs");
    let config = as_localhost("secure", &format!("tls = \"require\"\nca_file = \"{ca}\""))
        + &as_localhost(
            "untrusted",
            &format!("tls = \"require\"\nca_file = \"{}\"", other.display()),
        )
        + "\n[[datasets]]\nname = \"ops.session\"\nconnection = \"secure\"\nquery = \"SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()\"\nowners = [\"dave\"]\n";
    let server = TestServer::demo_with(|dir| append(dir, &config)).await;
    let dave = server.connect("dave").await;
    let b = dave.sql("SELECT ssl FROM ops.session").await.unwrap();
    assert_eq!(shown(&b, "ssl"), ["true"], "Veil's session is encrypted");
    untrusted_is_refused(&dave).await;
    server.stop().await;
}

/// A MariaDB of this test's own that serves TLS only
/// (`require_secure_transport`), with a certificate from an authority made
/// for the test; stopped when dropped. The machine's MariaDB may serve no
/// TLS at all, so this one is started from the installed `mariadbd`.
struct TlsMariaDb {
    dir: tempfile::TempDir,
    port: u16,
    child: std::process::Child,
}

impl TlsMariaDb {
    /// `None` when VEIL_TEST_SKIP_MYSQL_TLS=1.
    async fn start() -> Option<Self> {
        if std::env::var("VEIL_TEST_SKIP_MYSQL_TLS").is_ok_and(|v| v == "1") {
            eprintln!("VEIL_TEST_SKIP_MYSQL_TLS=1: skipping the MySQL TLS test");
            return None;
        }
        let run = |program: &str, args: &[&str], cwd: &Path| {
            let out = std::process::Command::new(program)
                .args(args)
                .current_dir(cwd)
                .output()
                .unwrap_or_else(|e| {
                    panic!(
                        "this test runs `{program}` ({e}); install MariaDB's server and OpenSSL, or set VEIL_TEST_SKIP_MYSQL_TLS=1"
                    )
                });
            assert!(
                out.status.success(),
                "{program} {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for ca in ["ca", "other"] {
            run(
                "openssl",
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.pem"),
                    "-subj",
                    &format!("/CN=veil-test-{ca}"),
                ],
                d,
            );
        }
        run(
            "openssl",
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
            d,
        );
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        run(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
            d,
        );
        let datadir = d.join("data");
        run(
            "mariadb-install-db",
            &[
                "--no-defaults",
                "--user=root",
                &format!("--datadir={}", datadir.display()),
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            d,
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("mariadbd")
            .args([
                "--no-defaults".to_string(),
                "--user=root".into(),
                format!("--datadir={}", datadir.display()),
                format!("--port={port}"),
                "--bind-address=127.0.0.1".into(),
                format!("--socket={}", d.join("sock").display()),
                format!("--pid-file={}", d.join("pid").display()),
                "--skip-grant-tables".into(),
                format!("--ssl-ca={}", d.join("ca.pem").display()),
                format!("--ssl-cert={}", d.join("server.pem").display()),
                format!("--ssl-key={}", d.join("server.key").display()),
                "--require-secure-transport=ON".into(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(d.join("mariadbd.log")).unwrap())
            .spawn()
            .expect("mariadbd starts (or set VEIL_TEST_SKIP_MYSQL_TLS=1)");
        let server = Self { dir, port, child };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "mariadbd did not listen within 30 s: {}",
                std::fs::read_to_string(server.dir.path().join("mariadbd.log")).unwrap_or_default()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Some(server)
    }

    fn connection(&self, name: &str, ca: &str) -> String {
        format!(
            "\n[[connections]]\nname = \"{name}\"\nkind = \"mysql\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"root\"\ndatabase = \"mysql\"\ntls = \"require\"\nca_file = \"{}\"\n",
            self.port,
            self.dir.path().join(format!("{ca}.pem")).display()
        )
    }
}

impl Drop for TlsMariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tls = "require"` on a MySQL/MariaDB connection: the session is
/// encrypted (the server serves nothing else, and its own status names the
/// cipher of Veil's session) and the server's certificate is checked: one
/// not signed by `ca_file` is refused.
#[tokio::test]
async fn mysql_tls_is_encrypted_and_verified() {
    let Some(db) = TlsMariaDb::start().await else {
        return;
    };
    let config = db.connection("secure", "ca")
        + &db.connection("untrusted", "other")
        + "\n[[datasets]]\nname = \"ops.session\"\nconnection = \"secure\"\nquery = \"SELECT VARIABLE_VALUE AS cipher FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher'\"\nowners = [\"dave\"]\n";
    let server = TestServer::demo_with(|dir| append(dir, &config)).await;
    let dave = server.connect("dave").await;
    let b = dave.sql("SELECT cipher FROM ops.session").await.unwrap();
    let cipher = shown(&b, "cipher");
    assert!(
        cipher.len() == 1 && cipher[0].starts_with("TLS"),
        "Veil's session is encrypted: {cipher:?}"
    );
    untrusted_is_refused(&dave).await;
    server.stop().await;
}
