#!/usr/bin/env python3
"""The two cut rules side by side: one cairn binary, two repositories of the
same chat history, one cut by FastCDC (`init --chunker fastcdc`) and one by
toeplitz-aes (the default), backed up in alternation day after day.

Answers "what does the PRF chunker cost in dedup and in time?": the bytes
each repository holds after the first backup and after every day (the
e2e History: a SQLite database edited in place, new media, a forward,
deletions), and the median first-backup and daily-backup times.

Usage: python3 benches/chunkers.py CAIRN_BINARY [--media-mb 500] [--days 10]
           [--runs 3] [--dir /dev/shm/chunkers]
           [--variants NAME="INIT ARGS" NAME="INIT ARGS"]
The default variants are fastcdc="--chunker fastcdc" and toeplitz-aes="";
any two sets of `cairn init` arguments compare the same way (e.g.
compressed="--compress-in-place" default=""), and a variant named
NAME@/path/to/cairn runs that binary instead (two builds on the same data).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import History  # noqa: E402

DEFAULT_VARIANTS = ['fastcdc=--chunker fastcdc', 'toeplitz-aes=']


def stored(path):
    """Bytes of every object in a repository (apparent sizes)."""
    return sum(os.lstat(os.path.join(d, n)).st_size for d, _, names in os.walk(path) for n in names)


def binary_of(default, name):
    """A variant's binary: its name's `@path`, else the default."""
    return name.split("@", 1)[1] if "@" in name else default


def backup(binary, env, source):
    start = time.perf_counter()
    subprocess.run([binary, "backup", source], env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def one_run(binary, work, media_mb, days, seed, variants):
    source = os.path.join(work, "chat")
    shutil.rmtree(source, ignore_errors=True)
    history = History(source, media_mb, seed)
    history.create()
    envs = {}
    for rule, init_args in variants.items():
        tag = rule.split("@", 1)[0]
        repo = os.path.join(work, "repo-" + tag)
        key = os.path.join(work, "key-" + tag)
        shutil.rmtree(repo, ignore_errors=True)
        if os.path.exists(key):
            os.remove(key)
        envs[rule] = dict(os.environ, CAIRN_REPOSITORY=repo, CAIRN_KEY_FILE=key)
        subprocess.run([binary_of(binary, rule), "init", "--key-file", key] + init_args.split(), env=envs[rule],
                       check=True, stdout=subprocess.DEVNULL)
    first = {rule: backup(binary_of(binary, rule), envs[rule], source) for rule in variants}
    sizes = [{rule: stored(envs[rule]["CAIRN_REPOSITORY"]) for rule in variants}]
    daily = {rule: [] for rule in variants}
    for _ in range(days):
        history.day()
        for rule in variants:
            daily[rule].append(backup(binary_of(binary, rule), envs[rule], source))
        sizes.append({rule: stored(envs[rule]["CAIRN_REPOSITORY"]) for rule in variants})
    return first, daily, sizes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--media-mb", type=int, default=500)
    ap.add_argument("--days", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default="/dev/shm/chunkers")
    ap.add_argument("--variants", nargs=2, default=DEFAULT_VARIANTS)
    args = ap.parse_args()
    variants = dict(v.split("=", 1) for v in args.variants)
    a_name, b_name = list(variants)
    os.makedirs(args.dir, exist_ok=True)
    firsts = {rule: [] for rule in variants}
    dailies = {rule: [] for rule in variants}
    sizes = None
    for run in range(args.runs):
        first, daily, sizes = one_run(args.binary, args.dir, args.media_mb, args.days, run + 1, variants)
        for rule in variants:
            firsts[rule].append(first[rule])
            dailies[rule].append(statistics.median(daily[rule]))
        print("run %d done" % (run + 1), file=sys.stderr)
    print("| step | %s (median s) | %s (median s) | %s/%s |" % (a_name, b_name, b_name, a_name))
    print("| --- | --- | --- | --- |")
    for step, values in (("first backup", firsts), ("daily backup", dailies)):
        a, b = statistics.median(values[a_name]), statistics.median(values[b_name])
        print("| %s | %.3f | %.3f | %.2f |" % (step, a, b, b / a))
    print()
    print("Repository bytes, last run:")
    print()
    print("| after | %s | %s | %s/%s |" % (a_name, b_name, b_name, a_name))
    print("| --- | --- | --- | --- |")
    for day, size in enumerate(sizes):
        a, b = size[a_name], size[b_name]
        print("| %s | %d | %d | %.4f |" % ("first backup" if day == 0 else "day %d" % day, a, b, b / a))
    grown = {rule: sizes[-1][rule] - sizes[0][rule] for rule in variants}
    print()
    print("Bytes added by %d days: %s %d, %s %d (ratio %.4f)"
          % (len(sizes) - 1, a_name, grown[a_name], b_name, grown[b_name],
             grown[b_name] / max(grown[a_name], 1)))
    shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
