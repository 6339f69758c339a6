# The one list of developer tasks. `.ci/run` runs `just`-free equivalents of `ci`.

default:
    @just --list

# Format check, lints, tests: what CI runs.
ci:
    .ci/run

test:
    cargo test --workspace

lint:
    cargo fmt --check
    cargo clippy --workspace --all-targets -- -D warnings

# The README's main job.
demo:
    cargo run --release -- demo

# Criterion micro-benchmarks of chunking, hashing, sealing, packing, index lookups.
bench:
    cargo bench -p cairn-benches

# End-to-end benchmark: cairn vs restic, rustic and borg (when installed) on a
# generated chat history and a tree of 100,000 small files. Extra arguments go
# to the script, e.g. `just bench-e2e --repo-dir /dev/shm`.
bench-e2e *args:
    python3 benches/e2e.py --workloads chat,files --media-mb 1000 --files 100000 --days 3 {{args}}

# Forget and prune benchmark: cairn vs restic, rustic and borg after a user
# clears old media. Extra arguments go to the script.
bench-lifecycle *args:
    python3 benches/lifecycle.py {{args}}

# A daily backup under the free tier against one without a policy, and how
# well the tier fills its quota.
bench-tiers *args:
    python3 benches/tiers.py {{args}}

# Over S3: cairn to a local directory, to a loopback S3 server and to one
# with 50 ms per request, restic beside it; requests per daily backup.
bench-s3 *args:
    cargo build --release --bin cairn
    cargo build --release -p cairn-store-s3 --example s3_server
    python3 benches/s3.py --cairn target/release/cairn --server target/release/examples/s3_server {{args}}

# The primitives' throughput ceiling on this machine.
ceiling:
    cargo run --release -p cairn-benches --bin ceiling

# Each fuzz target for a few seconds (needs nightly and cargo-fuzz).
fuzz-smoke seconds="10":
    #!/usr/bin/env sh
    set -eu
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
    cd fuzz
    for target in $(cargo +nightly fuzz list); do
        echo "== $target"
        cargo +nightly fuzz run "$target" -- -max_total_time={{seconds}}
    done

# One fuzz target for as long as you like.
fuzz target:
    cd fuzz && cargo +nightly fuzz run {{target}}
