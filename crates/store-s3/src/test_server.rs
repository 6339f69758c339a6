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

/// `len` bytes of incompressible, deterministic noise (xorshift64 from
/// `seed`, which must not be 0), for tests' files.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// What a [`Proxy`] does to the requests it passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Passes everything.
    None,
    /// Holds each request this long before it goes on: one round trip of
    /// latency per request, as over a distant link.
    Latency(std::time::Duration),
    /// Answers the next `n` requests with `503 SlowDown` (S3's throttling)
    /// without passing them; `u32::MAX` for every request.
    SlowDown(u32),
    /// Cuts the next `times` connections on which the server sends more
    /// than `bytes` bytes, after those bytes (a link that drops
    /// mid-transfer); connections open already count too.
    CutAfter {
        /// Bytes from the server before the cut.
        bytes: u64,
        /// Connections still to cut.
        times: u32,
    },
    /// Passes `n` more requests, then goes [`Fault::Down`] (a server
    /// killed mid-operation).
    DownAfter(u32),
    /// Closes every connection at once, sending nothing.
    Down,
}

/// A TCP proxy on a loopback port in front of a [`Server`], which injects
/// a [`Fault`] (latency, throttling, dropped connections, a server that
/// goes down); settable while running. A request is what the client sends
/// after the server last spoke on its connection.
pub struct Proxy {
    endpoint: String,
    fault: std::sync::Arc<std::sync::Mutex<Fault>>,
    counts: std::sync::Arc<std::sync::Mutex<cairn_store::Counts>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    addr: std::net::SocketAddr,
}

impl Proxy {
    /// Starts one in front of `endpoint` (`http://127.0.0.1:PORT`).
    ///
    /// # Panics
    /// When the loopback port cannot be had or the endpoint is not a
    /// loopback address.
    #[allow(clippy::expect_used)]
    pub fn start(endpoint: &str, fault: Fault) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let upstream: std::net::SocketAddr = endpoint
            .trim_start_matches("http://")
            .parse()
            .expect("a loopback endpoint");
        assert!(upstream.ip().is_loopback(), "loopback only");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let fault = Arc::new(Mutex::new(fault));
        let counts = Arc::new(Mutex::new(cairn_store::Counts::default()));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (fault, counts, stop) = (fault.clone(), counts.clone(), stop.clone());
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let (fault, counts) = (fault.clone(), counts.clone());
                    std::thread::spawn(move || proxy_connection(client, upstream, &fault, &counts));
                }
            });
        }
        Self {
            endpoint: format!("http://{addr}"),
            fault,
            counts,
            stop,
            addr,
        }
    }

    /// Its endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Changes what it does from the next request on.
    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    /// The requests that reached it since the last call, by kind (as the
    /// server sees them, whoever the client), and the bytes of the
    /// requests and answers it passed.
    pub fn take_counts(&self) -> cairn_store::Counts {
        std::mem::take(&mut *self.counts.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// What it does now (a countdown shows what is left of it).
    pub fn fault(&self) -> Fault {
        *self.fault.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Wakes the accepting thread so it sees the flag.
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

/// The reply to a throttled request.
fn slow_down() -> Vec<u8> {
    let body = "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code>\
                <Message>Please reduce your request rate.</Message></Error>";
    format!(
        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What the client side decides for a new request.
enum Verdict {
    Pass(Option<std::time::Duration>),
    SlowDown,
    Close,
}

fn verdict(fault: &std::sync::Mutex<Fault>) -> Verdict {
    let mut fault = fault.lock().unwrap_or_else(|e| e.into_inner());
    match *fault {
        Fault::None | Fault::CutAfter { .. } => Verdict::Pass(None),
        Fault::Latency(delay) => Verdict::Pass(Some(delay)),
        Fault::SlowDown(0) => {
            *fault = Fault::None;
            Verdict::Pass(None)
        }
        Fault::SlowDown(n) => {
            if n != u32::MAX {
                *fault = Fault::SlowDown(n - 1);
            }
            Verdict::SlowDown
        }
        Fault::DownAfter(0) | Fault::Down => {
            *fault = Fault::Down;
            Verdict::Close
        }
        Fault::DownAfter(n) => {
            *fault = Fault::DownAfter(n - 1);
            Verdict::Pass(None)
        }
    }
}

/// Counts a request by the first bytes the client sent for it.
fn count_request(counts: &std::sync::Mutex<cairn_store::Counts>, head: &[u8]) {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut counts = counts.lock().unwrap_or_else(|e| e.into_inner());
    let method = line.split(' ').next().unwrap_or_default();
    let target = line.split(' ').nth(1).unwrap_or_default();
    let query = target.split_once('?').map_or("", |(_, q)| q);
    match method {
        "GET"
            if query
                .split('&')
                .any(|p| p.starts_with("list-type=") || p.starts_with("prefix=")) =>
        {
            counts.lists += 1;
        }
        "GET" => counts.gets += 1,
        "HEAD" => counts.sizes += 1,
        "DELETE" => counts.deletes += 1,
        _ => counts.puts += 1,
    }
}

fn proxy_connection(
    client: std::net::TcpStream,
    upstream: std::net::SocketAddr,
    fault: &std::sync::Arc<std::sync::Mutex<Fault>>,
    counts: &std::sync::Arc<std::sync::Mutex<cairn_store::Counts>>,
) {
    use std::io::{Read, Write};
    use std::net::Shutdown;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    if *fault.lock().unwrap_or_else(|e| e.into_inner()) == Fault::Down {
        return;
    }
    let Ok(server) = std::net::TcpStream::connect(upstream) else {
        return;
    };
    // Set when the server speaks: the client's next bytes are a new request.
    let server_spoke = Arc::new(AtomicBool::new(true));
    let (Ok(mut client_reader), Ok(mut server_writer)) = (client.try_clone(), server.try_clone())
    else {
        return;
    };
    let (mut server_reader, mut client_writer) = (server, client);
    let downstream = {
        let server_spoke = server_spoke.clone();
        let fault = fault.clone();
        let counts = counts.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut sent = 0u64;
            loop {
                let n = match server_reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                // The fault as it is now: a cut is decided chunk by chunk.
                let cut = {
                    let mut fault = fault.lock().unwrap_or_else(|e| e.into_inner());
                    match *fault {
                        Fault::CutAfter { bytes, times }
                            if times > 0 && sent + n as u64 > bytes =>
                        {
                            *fault = if times > 1 {
                                Fault::CutAfter {
                                    bytes,
                                    times: times - 1,
                                }
                            } else {
                                Fault::None
                            };
                            Some(bytes)
                        }
                        _ => None,
                    }
                };
                if let Some(limit) = cut {
                    let keep = usize::try_from(limit.saturating_sub(sent)).unwrap_or(0);
                    let _ = client_writer.write_all(&buf[..keep.min(n)]);
                    break;
                }
                sent += n as u64;
                counts.lock().unwrap_or_else(|e| e.into_inner()).bytes_read += n as u64;
                server_spoke.store(true, Ordering::Release);
                if client_writer.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = client_writer.shutdown(Shutdown::Both);
            let _ = server_reader.shutdown(Shutdown::Both);
        })
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match client_reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if server_spoke.swap(false, Ordering::AcqRel) {
            count_request(counts, &buf[..n]);
            match verdict(fault) {
                Verdict::Pass(None) => {}
                Verdict::Pass(Some(delay)) => std::thread::sleep(delay),
                Verdict::SlowDown => {
                    let _ = client_reader.write_all(&slow_down());
                    break;
                }
                Verdict::Close => break,
            }
        }
        counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bytes_written += n as u64;
        if server_writer.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = server_writer.shutdown(Shutdown::Both);
    let _ = client_reader.shutdown(Shutdown::Both);
    let _ = downstream.join();
}
