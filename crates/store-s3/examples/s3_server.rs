//! A loopback S3 server for benchmarks (`benches/s3.py`): the test server
//! (s3s-fs over a temporary directory, in `$TMPDIR`) behind the fault
//! proxy, which adds a latency to every request and counts requests as the
//! server sees them, whoever the client (cairn, restic).
//!
//! Prints one JSON line: `{"endpoint": …, "bucket": …, "access_key": …,
//! "secret_key": …}`. Then reads commands on stdin, one per line:
//! `latency MS` (from the next request on), `counts` (prints the requests
//! and bytes since the last `counts` as one JSON line), `speed MB` (the
//! server alone: puts MB of 16 MiB objects, 4 at once as a backup does,
//! then reads them back in 8 MiB ranges, 8 at once as a restore does, and
//! prints both rates in MB/s). Ends at EOF.
//!
//! `cargo run --release -p cairn-store-s3 --features test-server --example s3_server`

use std::io::{BufRead, Write};
use std::time::Duration;

use cairn_store::{Namespace, ObjectName, Store};
use cairn_store_s3::S3Store;
use cairn_store_s3::test_server::{ACCESS_KEY, BUCKET, Fault, Proxy, SECRET_KEY, Server};

fn main() {
    let server = Server::start();
    let proxy = Proxy::start(server.endpoint(), Fault::None);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{{\"endpoint\": \"{}\", \"bucket\": \"{BUCKET}\", \"access_key\": \"{ACCESS_KEY}\", \
         \"secret_key\": \"{SECRET_KEY}\"}}",
        proxy.endpoint()
    );
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("latency"), Some(ms)) => match ms.parse::<u64>() {
                Ok(0) => proxy.set(Fault::None),
                Ok(ms) => proxy.set(Fault::Latency(Duration::from_millis(ms))),
                Err(_) => eprintln!("s3_server: latency wants milliseconds"),
            },
            (Some("counts"), None) => {
                let c = proxy.take_counts();
                let _ = writeln!(
                    out,
                    "{{\"put\": {}, \"get\": {}, \"head\": {}, \"list\": {}, \"delete\": {}, \
                     \"bytes_up\": {}, \"bytes_down\": {}}}",
                    c.puts, c.gets, c.sizes, c.lists, c.deletes, c.bytes_written, c.bytes_read
                );
                let _ = out.flush();
            }
            (Some("speed"), Some(mb)) => {
                let Ok(mb) = mb.parse::<usize>() else {
                    eprintln!("s3_server: speed wants megabytes");
                    continue;
                };
                let (put, get) = speed(&server, &proxy, mb);
                let _ = writeln!(out, "{{\"put_mb_s\": {put:.1}, \"get_mb_s\": {get:.1}}}");
                let _ = out.flush();
            }
            _ => eprintln!("s3_server: unknown command {line:?}"),
        }
    }
}

/// Puts `mb` megabytes in 16 MiB objects, 4 at once, then reads them in
/// 8 MiB ranges, 8 at once, through the proxy; returns both rates in MB/s.
fn speed(server: &Server, proxy: &Proxy, mb: usize) -> (f64, f64) {
    const OBJECT: usize = 16 << 20;
    const RANGE: usize = 8 << 20;
    let mut config = server.config("speed-test");
    config.endpoint = Some(proxy.endpoint().to_owned());
    let Ok(store) = S3Store::new(&config) else {
        return (0.0, 0.0);
    };
    let n = (mb * 1_000_000).div_ceil(OBJECT).max(4);
    let bytes: Vec<u8> = (0..OBJECT).map(|i| (i * 7 + i / 4096) as u8).collect();
    let names: Vec<ObjectName> = (0..n)
        .filter_map(|i| {
            ObjectName::new(Namespace::Packs, &format!("{i:04x}{:x}", rand_suffix())).ok()
        })
        .collect();
    let total = (names.len() * OBJECT) as f64 / 1e6;
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for part in names.chunks(names.len().div_ceil(4)) {
            let (store, bytes) = (&store, &bytes);
            s.spawn(move || {
                for name in part {
                    let _ = store.put(name, bytes);
                }
            });
        }
    });
    let put = total / started.elapsed().as_secs_f64();
    let ranges: Vec<(usize, usize)> = (0..names.len())
        .flat_map(|i| (0..OBJECT / RANGE).map(move |r| (i, r * RANGE)))
        .collect();
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for part in ranges.chunks(ranges.len().div_ceil(8)) {
            let (store, names) = (&store, &names);
            s.spawn(move || {
                let mut buf = vec![0u8; RANGE];
                for &(i, offset) in part {
                    let _ = store.read_range_into(&names[i], offset as u64, &mut buf);
                }
            });
        }
    });
    let get = total / started.elapsed().as_secs_f64();
    for name in &names {
        let _ = store.delete(name);
    }
    (put, get)
}

/// A suffix so that repeated speed tests never collide.
fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
