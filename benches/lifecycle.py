#!/usr/bin/env python3
"""Forget and prune benchmark: cairn against restic, rustic and borg, same data, same run.

A chat history (benches/e2e.py's) is backed up on day 0 and for several days
after; then the user deletes a large share of the old media (a cleared
chat), one more backup runs, every snapshot but the newest is forgotten,
and the repository is pruned. Prints, per tool: the prune's wall and CPU
time, peak memory, the repository size before and after, and the space
given back; the newest snapshot is then restored and verified byte for byte.

Usage: python3 benches/lifecycle.py [--media-mb 600] [--days 6] [--delete 0.4]
       [--repo-dir /dev/shm] [--cairn BINARY]   (`just bench-lifecycle`).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402  (the history, the tools and the process runner)


def binary_of(tool):
    if tool.name == "cairn":
        return tool.binary
    return {"restic": "restic", "rustic": e2e.RUSTIC}[tool.name]


def forget_all_but_newest(tool):
    if tool.name == "borg":
        return e2e.run(["borg", "prune", "--keep-last", "1"], tool.env)
    return e2e.run([binary_of(tool), "forget", "--keep-last", "1"], tool.env)


def prune(tool):
    if tool.name == "borg":
        return e2e.run(["borg", "compact"], tool.env)
    if tool.name == "rustic":
        # rustic keeps what it condemns for 23 hours by default; cairn
        # deletes at once when no other writer runs.
        return e2e.run([e2e.RUSTIC, "prune", "--instant-delete"], tool.env)
    return e2e.run([binary_of(tool), "prune"], tool.env)


def clear_old_media(root, share):
    """Deletes `share` of the photos and videos, oldest first (a cleared chat)."""
    removed = 0
    for kind in ("photos", "videos"):
        folder = os.path.join(root, "media", kind)
        names = sorted(os.listdir(folder))
        for name in names[: int(len(names) * share)]:
            path = os.path.join(folder, name)
            removed += os.path.getsize(path)
            os.remove(path)
    return removed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--media-mb", type=int, default=600)
    ap.add_argument("--days", type=int, default=6, help="daily backups after day 0 (default 6)")
    ap.add_argument("--delete", type=float, default=0.4, help="share of photos and videos deleted (default 0.4)")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--tools", default="cairn,restic,rustic,borg")
    ap.add_argument("--repo-dir", help="where the repositories live (e.g. /dev/shm)")
    ap.add_argument("--cairn", help="the cairn binary to use (default: build this checkout)")
    args = ap.parse_args()
    e2e.REPO_DIR = args.repo_dir
    e2e.start_spawner()
    if not args.cairn:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "cairn-cli"], cwd=e2e.ROOT, check=True)
    binary = args.cairn or os.path.join(e2e.ROOT, "target", "release", "cairn")

    work = tempfile.mkdtemp(prefix="cairn-lifecycle-", dir="/var/tmp")
    tools = []
    for name in args.tools.split(","):
        if name != "cairn" and not e2e.installed(name):
            print("note: %s is not installed; skipped" % name)
            continue
        tools.append({"cairn": lambda: e2e.Cairn(work, binary), "restic": lambda: e2e.Restic(work),
                      "rustic": lambda: e2e.Rustic(work), "borg": lambda: e2e.Borg(work)}[name]())
    source = os.path.join(work, "chat")
    history = e2e.History(source, args.media_mb, args.seed)
    history.create()
    for t in tools:
        t.reset()
        t.init()
        t.backup(source)
    for _ in range(args.days):
        history.day()
        for t in tools:
            t.backup(source)
    removed = clear_old_media(source, args.delete)
    for t in tools:
        t.backup(source)
    print("history: %.0f MB of media on day 0, %d daily backups, then %.0f MB of old media deleted "
          "and every snapshot but the newest forgotten" % (args.media_mb, args.days, removed / 1e6))
    expected = e2e.tree_digest(source)

    rows = []
    for t in tools:
        forget_all_but_newest(t)
        e2e.drop_caches()
        before = e2e.du(t.repo)
        r = prune(t)
        after = e2e.du(t.repo)
        target = os.path.join(work, "restore-" + t.name)
        shutil.rmtree(target, ignore_errors=True)
        t.restore(target)
        if e2e.tree_digest(t.restored_root(target, source)) != expected:
            sys.exit("%s restored something else after its prune" % t.name)
        shutil.rmtree(target)
        rows.append((t.name, r, before, after))

    peers = [r.wall for name, r, _, _ in rows if name != "cairn"]
    best = min(peers) if peers else None
    print("%-8s %10s %10s %10s %10s %12s %12s %10s" % (
        "tool", "prune s", "user s", "sys s", "RSS MiB", "before MB", "after MB", "freed MB"))
    for name, r, before, after in rows:
        print("%-8s %10.2f %10.2f %10.2f %10.0f %12.1f %12.1f %10.1f" % (
            name, r.wall, r.user, r.sys, r.rss, before / 1e6, after / 1e6, (before - after) / 1e6))
    cairn = next((r for n, r, _, _ in rows if n == "cairn"), None)
    if cairn and best:
        print("cairn prune is %.2fx faster than the fastest peer" % (best / cairn.wall))
    for t in tools:
        t.reset()
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
