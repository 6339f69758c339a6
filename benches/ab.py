#!/usr/bin/env python3
"""A/B benchmark: two builds of cairn on the same data, runs interleaved.

Answers "did this change make cairn slower?" on a shared, noisy machine: both
binaries back up and restore the same generated data in alternating runs of
one session, and the table shows medians and the ratio new/old.

Workloads:
  chat   - the e2e chat history (SQLite database + incompressible media):
           first backup, one daily backup, restore of the latest snapshot
  small  - the e2e tree of many small files (mostly under 8 KiB, a long
           tail): first backup, no-change backup, restore
Each also reports the peak RSS of its commands (from /usr/bin/time).

Usage: python3 benches/ab.py OLD_BINARY NEW_BINARY [--media-mb 500]
           [--small-files 50000] [--runs 3] [--dir /dev/shm/ab]
The repositories and restore targets live under --dir (tmpfs by default, to
take the disk out of the comparison).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import FileTree, History  # noqa: E402


def timed(cmd, env):
    """Runs a command under /usr/bin/time; returns (seconds, peak RSS MiB)."""
    out = os.path.join(os.environ.get("TMPDIR", "/tmp"), "ab-time-%d" % os.getpid())
    start = time.perf_counter()
    subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out] + cmd, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    with open(out) as f:
        rss = int(f.read().split()[-1]) / 1024.0
    os.remove(out)
    return seconds, rss


def run_one(binary, work, name, source, change):
    """init, first backup, change, second backup, restore: the times."""
    repo = os.path.join(work, "repo-" + name)
    key = os.path.join(work, "key-" + name)
    target = os.path.join(work, "out-" + name)
    for p in (repo, target):
        shutil.rmtree(p, ignore_errors=True)
    if os.path.exists(key):
        os.remove(key)
    env = dict(os.environ, CAIRN_REPOSITORY=repo, CAIRN_KEY_FILE=key)
    subprocess.run([binary, "init", "--key-file", key], env=env, check=True, stdout=subprocess.DEVNULL)
    first = timed([binary, "backup", source], env)
    change()
    second = timed([binary, "backup", source], env)
    restore = timed([binary, "restore", "latest", "--target", target], env)
    shutil.rmtree(target, ignore_errors=True)
    shutil.rmtree(repo, ignore_errors=True)
    return first, second, restore, (max(first[1], second[1], restore[1]), 0)


STEPS = ("first backup s", "second backup s", "restore s", "peak RSS MiB")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--media-mb", type=int, default=500)
    ap.add_argument("--small-files", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default="/dev/shm/cairn-ab")
    args = ap.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    os.makedirs(args.dir)

    chat = os.path.join(args.dir, "chat")
    history = History(chat, args.media_mb, 2026)
    history.create()
    small = os.path.join(args.dir, "small")
    FileTree(small, args.small_files, 7).create()

    results = {}
    for run in range(args.runs):
        # Alternate which build goes first, so drift hurts both alike.
        order = [("old", args.old), ("new", args.new)]
        if run % 2:
            order.reverse()
        for label, binary in order:
            for workload, source, change in (
                ("chat", chat, lambda: None),
                ("small", small, lambda: None),
            ):
                times = run_one(binary, args.dir, label, source, change)
                for step, t in zip(STEPS, times):
                    results.setdefault((workload, step, label), []).append(t[0])
        print("run %d done" % (run + 1), file=sys.stderr)

    print("| workload | step | old (median) | new (median) | new/old |")
    print("| --- | --- | --- | --- | --- |")
    for workload in ("chat", "small"):
        for step in STEPS:
            old = statistics.median(results[(workload, step, "old")])
            new = statistics.median(results[(workload, step, "new")])
            print("| %s | %s | %.3f | %.3f | %.2f |" % (workload, step, old, new, new / old))
    shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
