//! An S3 server on a loopback port for tests (s3s-fs: S3 over a temporary
//! directory), behind the `test-server` feature. Nothing but loopback is
//! reached.

use std::net::TcpListener;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;

use crate::S3Config;

/// The test server's credentials and bucket.
pub const ACCESS_KEY: &str = "cairn-test-access";
/// The test server's secret key.
pub const SECRET_KEY: &str = "cairn-test-secret-0123456789";
/// The test server's bucket.
pub const BUCKET: &str = "cairn-test";

/// An S3 server on a loopback port, serving a temporary directory, until
/// dropped.
pub struct Server {
    endpoint: String,
    _root: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    /// Starts one.
    ///
    /// # Panics
    /// When the loopback port, the directory or the runtime cannot be had.
    #[allow(clippy::expect_used)]
    pub fn start() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join(BUCKET)).expect("bucket");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let service = {
            let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs");
            let mut builder = s3s::service::S3ServiceBuilder::new(fs);
            builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
            builder.build()
        };
        runtime.spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let service = service.clone();
                tokio::spawn(async move {
                    let _ = ConnBuilder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Self {
            endpoint,
            _root: root,
            _runtime: runtime,
        }
    }

    /// Its endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A config for a repository at `prefix` in its bucket.
    pub fn config(&self, prefix: &str) -> S3Config {
        S3Config {
            bucket: BUCKET.into(),
            prefix: prefix.into(),
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(SECRET_KEY.into()),
            session_token: None,
        }
    }
}
