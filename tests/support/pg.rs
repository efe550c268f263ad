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
            "veil_it_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
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
