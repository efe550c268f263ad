//! A PostgreSQL schema of its own per test, on loopback.
//!
//! PostgreSQL comes from `VEIL_TEST_POSTGRES_URL` (default
//! `host=127.0.0.1 port=5432 user=postgres dbname=test`).
//! `VEIL_TEST_SKIP_POSTGRES=1` skips these tests; otherwise an unreachable
//! server fails them with that advice.

const DEFAULT_URL: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

pub fn postgres_url() -> Option<String> {
    if std::env::var("VEIL_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
        eprintln!("VEIL_TEST_SKIP_POSTGRES=1: skipping a PostgreSQL test");
        return None;
    }
    Some(std::env::var("VEIL_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.into()))
}

/// A fresh schema; dropped by [`Schema::drop_now`].
#[derive(Debug)]
pub struct Schema {
    pub url: String,
    pub name: String,
}

impl Schema {
    pub async fn create(url: &str) -> Schema {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "this test needs PostgreSQL at '{url}' (VEIL_TEST_POSTGRES_URL): {e}. \
                     Start it, point VEIL_TEST_POSTGRES_URL at it, or set VEIL_TEST_SKIP_POSTGRES=1"
                )
            });
        tokio::spawn(conn);
        let name = format!(
            "veil_it_{}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos(),
            // Tests of one process started in the same clock tick.
            crate::unique_number()
        );
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
            .await
            .unwrap();
        Schema {
            url: url.into(),
            name,
        }
    }

    pub async fn drop_now(self) {
        if let Ok((client, conn)) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await
        {
            tokio::spawn(conn);
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
                .await;
        }
    }
}

/// A `[[connections]]` entry of Veil's config for the PostgreSQL at `url`.
pub fn connection_config(name: &str, url: &str) -> String {
    use std::str::FromStr;
    let c = tokio_postgres::Config::from_str(url).expect("a PostgreSQL URL");
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    format!(
        "\n[[connections]]\nname = \"{name}\"\nkind = \"postgres\"\nhost = \"{host}\"\nport = {}\nuser = \"{}\"\ndatabase = \"{}\"\n",
        c.get_ports().first().copied().unwrap_or(5432),
        c.get_user().unwrap_or("postgres"),
        c.get_dbname().unwrap_or("test"),
    )
}

/// The demo's `clinical.trials` rows (`veil::demo::trials_batch`, the
/// same seed) as the table `<schema>.trials`, created with the schema.
pub async fn load_trials(url: &str, schema: &str) {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Date32Type, Float64Type, Int32Type, Int64Type};
    use futures::SinkExt;
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL");
    tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.trials (
               participant_id bigint PRIMARY KEY, name text NOT NULL, ssn text NOT NULL,
               email text NOT NULL, ip_address text NOT NULL, state text NOT NULL,
               date_of_birth date, age integer NOT NULL, diagnosis text,
               amount double precision NOT NULL);"
        ))
        .await
        .unwrap();
    let b = veil::demo::trials_batch(veil::demo::DEMO_ROWS, 42);
    let text = |name: &str| b.column_by_name(name).unwrap().as_string::<i32>().clone();
    let (name, ssn, email, ip, state, diagnosis) = (
        text("name"),
        text("ssn"),
        text("email"),
        text("ip_address"),
        text("state"),
        text("diagnosis"),
    );
    let ids = b
        .column_by_name("participant_id")
        .unwrap()
        .as_primitive::<Int64Type>()
        .clone();
    let dob = b
        .column_by_name("date_of_birth")
        .unwrap()
        .as_primitive::<Date32Type>()
        .clone();
    let age = b
        .column_by_name("age")
        .unwrap()
        .as_primitive::<Int32Type>()
        .clone();
    let amount = b
        .column_by_name("amount")
        .unwrap()
        .as_primitive::<Float64Type>()
        .clone();
    let mut out = String::with_capacity(b.num_rows() * 120);
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
    for i in 0..b.num_rows() {
        let opt = |a: &arrow::array::StringArray| {
            if a.is_null(i) {
                "\\N".to_string()
            } else {
                a.value(i).to_string()
            }
        };
        let d = if dob.is_null(i) {
            "\\N".to_string()
        } else {
            (epoch + chrono::Duration::days(i64::from(dob.value(i)))).to_string()
        };
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{d}\t{}\t{}\t{:?}\n",
            ids.value(i),
            name.value(i),
            ssn.value(i),
            email.value(i),
            ip.value(i),
            state.value(i),
            age.value(i),
            opt(&diagnosis),
            amount.value(i),
        ));
    }
    let sink = client
        .copy_in::<_, bytes::Bytes>(&format!("COPY {schema}.trials FROM STDIN"))
        .await
        .unwrap();
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from(out)).await.unwrap();
    sink.as_mut().finish().await.unwrap();
}
