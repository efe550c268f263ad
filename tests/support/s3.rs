//! A real S3-compatible server on 127.0.0.1 for tests: s3s-fs (the S3 API
//! over a temporary folder, with SigV4 authentication), spoken to over HTTP
//! by object_store's S3 client exactly as a production bucket would be.

use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use object_store::aws::AmazonS3Builder;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const ACCESS_KEY: &str = "veil-test";
pub const SECRET_KEY: &str = "veil-test-secret-key";
pub const REGION: &str = "us-east-1";

/// An S3 server; stops when dropped, closing its open connections.
#[derive(Debug)]
pub struct S3Server {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    _root: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

impl S3Server {
    /// Start with these (empty) buckets.
    pub async fn start(buckets: &[&str]) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        for b in buckets {
            std::fs::create_dir_all(root.path().join(b)).expect("bucket folder");
        }
        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs");
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, mut stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // Open connections end with the server (dropping the set aborts
            // them), so a stopped server is unreachable, not half-served.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let socket = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((socket, _)) => socket,
                        Err(_) => continue,
                    },
                    _ = &mut stopped => break,
                };
                let conn = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                connections.spawn(async move {
                    let _ = conn.await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Self {
            endpoint,
            _root: root,
            _stop: stop,
        }
    }

    /// An S3 client for `bucket` on this server.
    pub fn client(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_endpoint(&self.endpoint)
                .with_allow_http(true)
                .with_region(REGION)
                .with_access_key_id(ACCESS_KEY)
                .with_secret_access_key(SECRET_KEY)
                .build()
                .expect("s3 client"),
        )
    }

    /// Upload a local file to `bucket/key`.
    pub async fn upload(&self, bucket: &str, key: &str, file: &std::path::Path) {
        let bytes = std::fs::read(file).expect("read upload");
        self.client(bucket)
            .put(
                &object_store::path::Path::parse(key).expect("key"),
                bytes::Bytes::from(bytes).into(),
            )
            .await
            .expect("upload");
    }

    /// The `[[object_stores]]` entry (and secret file) a Veil config needs
    /// to read `bucket` here.
    pub fn config_entry(&self, bucket: &str, secret_file: &std::path::Path) -> String {
        std::fs::write(secret_file, SECRET_KEY).expect("secret file");
        format!(
            "\n[[object_stores]]\nurl = \"s3://{bucket}\"\nendpoint = \"{}\"\nallow_http = true\nregion = \"{REGION}\"\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key_file = \"{}\"\n",
            self.endpoint,
            secret_file.display()
        )
    }
}
