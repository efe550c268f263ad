//! A MySQL/MariaDB database of its own per test, on loopback.
//!
//! The server comes from `VEIL_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306/test`). `VEIL_TEST_SKIP_MYSQL=1` skips these
//! tests; otherwise an unreachable server fails them with that advice.

use mysql_async::prelude::Queryable;

const DEFAULT_URL: &str = "mysql://root@127.0.0.1:3306/test";

pub fn mysql_url() -> Option<String> {
    if std::env::var("VEIL_TEST_SKIP_MYSQL").is_ok_and(|v| v == "1") {
        eprintln!("VEIL_TEST_SKIP_MYSQL=1: skipping a MySQL test");
        return None;
    }
    Some(std::env::var("VEIL_TEST_MYSQL_URL").unwrap_or_else(|_| DEFAULT_URL.into()))
}

/// A fresh database; dropped by [`Database::drop_now`].
#[derive(Debug)]
pub struct Database {
    pub url: String,
    pub name: String,
    pub host: String,
    pub port: u16,
    pub user: String,
}

impl Database {
    pub async fn create(url: &str) -> Database {
        let mut conn = connect(url).await;
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
        conn.query_drop(format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let opts = mysql_async::Opts::from_url(url).unwrap();
        Database {
            url: url.into(),
            name,
            host: opts.ip_or_hostname().to_string(),
            port: opts.tcp_port(),
            user: opts.user().unwrap_or("root").to_string(),
        }
    }

    /// A connection to this database.
    pub async fn conn(&self) -> mysql_async::Conn {
        let mut c = connect(&self.url).await;
        c.query_drop(format!("USE {}", self.name)).await.unwrap();
        c.query_drop("SET time_zone = '+00:00'").await.unwrap();
        c
    }

    pub async fn drop_now(self) {
        if let Ok(mut c) = mysql_async::Conn::from_url(&self.url).await {
            let _ = c
                .query_drop(format!("DROP DATABASE IF EXISTS {}", self.name))
                .await;
        }
    }
}

async fn connect(url: &str) -> mysql_async::Conn {
    mysql_async::Conn::from_url(url).await.unwrap_or_else(|e| {
        panic!(
            "this test needs MySQL or MariaDB at '{url}' (VEIL_TEST_MYSQL_URL): {e}. \
             Start it, point VEIL_TEST_MYSQL_URL at it, or set VEIL_TEST_SKIP_MYSQL=1"
        )
    })
}
