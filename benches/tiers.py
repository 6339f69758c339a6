#!/usr/bin/env python3
"""Tier benchmark: what a retention policy costs a daily backup, and how
well it fills its quota.

One chat history (benches/e2e.py's) is backed up daily into two cairn
repositories side by side, in the same run: one without a policy, one with
`init --tier free --quota Q` (a quota smaller than the history, so the plan
leaves out the oldest media, and every run forgets and prunes). Prints the
medians of the first and daily backups of each, their ratio, and the tiered
repository's size against its quota after every run.

Usage: python3 benches/tiers.py [--media-mb 400] [--days 6] [--quota-mb 150]
       [--repo-dir /dev/shm] [--cairn BINARY]   (`just bench-tiers`).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402  (the history)


def cairn(binary, env, *args):
    start = time.perf_counter()
    out = subprocess.run([binary, *args], env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, out.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media-mb", type=int, default=400)
    parser.add_argument("--days", type=int, default=6)
    parser.add_argument("--quota-mb", type=int, default=150)
    parser.add_argument("--repo-dir", default=None)
    parser.add_argument("--cairn", default=os.path.join("target", "release", "cairn"))
    args = parser.parse_args()
    binary = os.path.abspath(args.cairn)
    with tempfile.TemporaryDirectory(dir=args.repo_dir) as work:
        source = os.path.join(work, "chat")
        history = e2e.History(source, args.media_mb, seed=7)
        history.create()
        repos = {}
        for name, extra in [("none", []), ("free", ["--tier", "free", "--quota", "%dMB" % args.quota_mb])]:
            env = dict(os.environ)
            env.update(
                CAIRN_REPOSITORY=os.path.join(work, "repo-" + name),
                CAIRN_KEY_FILE=os.path.join(work, name + ".key"),
            )
            subprocess.run([binary, "init", *extra], env=env, check=True, capture_output=True)
            repos[name] = env
        times = {"none": [], "free": []}
        sizes = []
        for day in range(args.days + 1):
            if day > 0:
                history.day()
            for name in ("none", "free") if day % 2 == 0 else ("free", "none"):
                wall, out = cairn(binary, repos[name], "backup", "--json", source)
                times[name].append(wall)
                if name == "free":
                    summary = json.loads(out.strip().splitlines()[-1])
                    r = summary["retention"]
                    left = {}
                    for item in summary["left_out"]:
                        left[item["reason"]] = left.get(item["reason"], 0) + 1
                    sizes.append((day, r["repo_bytes"], r["quota_bytes"], r["n_passes"], left))
        first = {n: t[0] for n, t in times.items()}
        daily = {n: statistics.median(t[1:]) for n, t in times.items()}
        print("| backup | no policy s | free tier s | tier/none |")
        print("| --- | --- | --- | --- |")
        print("| first | %.3f | %.3f | %.2f |" % (first["none"], first["free"], first["free"] / first["none"]))
        print("| daily (median of %d) | %.3f | %.3f | %.2f |" % (
            args.days, daily["none"], daily["free"], daily["free"] / daily["none"]))
        print()
        print("| day | repository MB | quota MB | filled | passes | left out |")
        print("| --- | --- | --- | --- | --- | --- |")
        for day, used, quota, passes, left in sizes:
            print("| %d | %.1f | %.1f | %.1f%% | %d | %s |" % (
                day, used / 1e6, quota / 1e6, 100.0 * used / quota, passes,
                ", ".join("%d %s" % (n, k) for k, n in sorted(left.items())) or "-"))


if __name__ == "__main__":
    main()
