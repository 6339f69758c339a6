//! How the CLI shows progress: an `indicatif` bar on a terminal, JSON lines
//! with `--json` on a pipe, nothing otherwise. Counters are atomics updated from
//! the engine's threads; a ticker thread renders them.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output::err;

/// Counters shared with the engine.
#[derive(Default)]
struct Counters {
    files: AtomicU64,
    bytes_read: AtomicU64,
    bytes_unchanged: AtomicU64,
    bytes_new: AtomicU64,
    bytes_stored: AtomicU64,
    total_files: AtomicU64,
    total_bytes: AtomicU64,
}

/// The CLI's [`Progress`]: counts, and prints warnings to stderr.
pub struct CliProgress {
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    ticker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bar,
    JsonLines,
    Quiet,
}

impl CliProgress {
    /// Chooses the display: a bar when stderr is a terminal (and no `--json`),
    /// JSON lines on stdout when `--json` and stdout is a pipe.
    pub fn start(json: bool) -> Self {
        let mode = match (
            json,
            std::io::stdout().is_terminal(),
            std::io::stderr().is_terminal(),
        ) {
            (true, false, _) => Mode::JsonLines,
            (false, _, true) => Mode::Bar,
            _ => Mode::Quiet,
        };
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = (mode != Mode::Quiet).then(|| {
            let (counters, stop) = (counters.clone(), stop.clone());
            std::thread::spawn(move || tick(mode, &counters, &stop))
        });
        Self {
            counters,
            stop,
            ticker: Mutex::new(ticker),
        }
    }

    /// Stops the display (clears the bar).
    pub fn finish(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }

    /// Whether a total is known (the concurrent scan is wanted for an ETA).
    pub fn wants_totals(json: bool) -> bool {
        std::io::stderr().is_terminal() || (json && !std::io::stdout().is_terminal())
    }
}

fn tick(mode: Mode, c: &Counters, stop: &AtomicBool) {
    let started = Instant::now();
    let bar = (mode == Mode::Bar).then(|| {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let mut last_json = Instant::now();
    loop {
        let done = stop.load(Ordering::Relaxed);
        let files = c.files.load(Ordering::Relaxed);
        let processed =
            c.bytes_read.load(Ordering::Relaxed) + c.bytes_unchanged.load(Ordering::Relaxed);
        let stored = c.bytes_stored.load(Ordering::Relaxed);
        let total = c.total_bytes.load(Ordering::Relaxed);
        if let Some(bar) = &bar {
            if total > 0 {
                bar.set_length(total);
            }
            bar.set_position(processed);
            bar.set_message(format!(
                "{files} files, {} stored",
                indicatif::HumanBytes(stored)
            ));
        }
        if mode == Mode::JsonLines && (last_json.elapsed() >= Duration::from_millis(500) || done) {
            last_json = Instant::now();
            let elapsed = started.elapsed().as_secs_f64();
            let eta = (total > processed && processed > 0)
                .then(|| (total - processed) as f64 * elapsed / processed as f64);
            let line = serde_json::json!({
                "type": "progress",
                "seconds": elapsed,
                "files": files,
                "total_files": c.total_files.load(Ordering::Relaxed),
                "bytes_read": c.bytes_read.load(Ordering::Relaxed),
                "bytes_unchanged": c.bytes_unchanged.load(Ordering::Relaxed),
                "bytes_new": c.bytes_new.load(Ordering::Relaxed),
                "bytes_stored": stored,
                "total_bytes": total,
                "eta_seconds": eta,
            });
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
        }
        if done {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Progress for CliProgress {
    fn file(&self, _path: &Path, _size: u64) {
        self.counters.files.fetch_add(1, Ordering::Relaxed);
    }
    fn bytes(&self, bytes: u64) {
        self.counters.bytes_read.fetch_add(bytes, Ordering::Relaxed);
    }
    fn unchanged(&self, bytes: u64) {
        self.counters.files.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_unchanged
            .fetch_add(bytes, Ordering::Relaxed);
    }
    fn new_data(&self, bytes: u64) {
        self.counters.bytes_new.fetch_add(bytes, Ordering::Relaxed);
    }
    fn stored(&self, bytes: u64) {
        self.counters
            .bytes_stored
            .fetch_add(bytes, Ordering::Relaxed);
    }
    fn scanned(&self, n_files: u64, n_bytes: u64) {
        self.counters.total_files.store(n_files, Ordering::Relaxed);
        self.counters.total_bytes.store(n_bytes, Ordering::Relaxed);
    }
    fn warning(&self, message: &str) {
        err!("warning: {message}");
    }
    fn is_cancelled(&self) -> bool {
        INTERRUPTED.load(Ordering::Relaxed)
    }
}

impl Drop for CliProgress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Set by Ctrl-C (SIGINT) or SIGTERM: the running operation stops at its next
/// check and cleans up as after any failure (a restore removes its temporary
/// files and gives the target its mode back; a backup commits nothing).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs the handler: the first signal asks the operation to stop; a
/// second one ends the process at once.
pub fn stop_on_interrupt() {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ctrl-C asks the running operation to stop (through `is_cancelled`)
    /// instead of killing the process mid-restore.
    #[test]
    fn an_interrupt_cancels_instead_of_killing() {
        stop_on_interrupt();
        let progress = CliProgress::start(false);
        assert!(!progress.is_cancelled());
        rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::INT)
            .expect("signal");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !progress.is_cancelled() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(progress.is_cancelled());
        progress.finish();
    }
}
