#!/usr/bin/env python3
"""S3 benchmark: cairn over a loopback S3 server, with and without latency,
against the same backup to a local directory, and restic on the same server.

The server is `examples/s3_server.rs` of cairn-store-s3 (s3s-fs over a
directory in /dev/shm, behind a proxy that adds a delay to every request and
counts requests as the server sees them, for every client alike).

Two parts:

1. Speed (the chat history of e2e.py, day 0): first backup and restore of
   cairn to a local directory, to S3, and to S3 with --latency-ms per
   request; restic to S3 and S3 with latency. Each run is a fresh repository
   and a fresh server; medians over --runs.
2. Requests: --days daily backups of the chat history to S3 by cairn and by
   restic (each with its cache), requests of each day as the server counts
   them (open, backup, everything), printed for day 2 and the last day, and a
   cost model for a 100 GB history.

Usage: python3 benches/s3.py --cairn BIN --server BIN [--media-mb 500]
       [--runs 3] [--days 30] [--latency-ms 50] [--tools cairn,restic]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402  (the history, the digest, the command runner)

PASSWORD = e2e.PASSWORD
SHM = "/dev/shm"


class S3Server:
    """One s3_server process: a fresh bucket in /dev/shm until closed."""

    def __init__(self, binary):
        env = dict(os.environ, TMPDIR=SHM)
        self.proc = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=env, text=True, bufsize=1)
        self.info = json.loads(self.proc.stdout.readline())
        self.endpoint = self.info["endpoint"]

    def latency(self, ms):
        self.proc.stdin.write("latency %d\n" % ms)
        self.proc.stdin.flush()

    def counts(self):
        self.proc.stdin.write("counts\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)

    def env(self):
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": self.info["access_key"],
            "AWS_SECRET_ACCESS_KEY": self.info["secret_key"],
        }


class Cairn:
    name = "cairn"

    def __init__(self, binary, work, repo, extra_env):
        self.binary = binary
        self.key = os.path.join(work, "cairn.key")
        if os.path.exists(self.key):
            os.remove(self.key)
        cache = os.path.join(work, "cairn-cache")
        shutil.rmtree(cache, ignore_errors=True)
        self.env = dict(os.environ, CAIRN_REPOSITORY=repo, CAIRN_KEY_FILE=self.key,
                        CAIRN_CACHE_DIR=cache, **extra_env)

    def init(self):
        e2e.run([self.binary, "init"], self.env)

    def backup(self, path):
        return e2e.run([self.binary, "backup", path], self.env)

    def restore(self, target):
        return e2e.run([self.binary, "restore", "latest", "--target", target], self.env)

    def restored_root(self, target, source):
        return os.path.join(target, os.path.basename(source))


class Restic:
    name = "restic"

    def __init__(self, work, repo, extra_env):
        cache = os.path.join(work, "restic-cache")
        shutil.rmtree(cache, ignore_errors=True)
        self.env = dict(os.environ, RESTIC_REPOSITORY=repo, RESTIC_PASSWORD=PASSWORD,
                        RESTIC_CACHE_DIR=cache, **extra_env)

    def init(self):
        e2e.run(["restic", "init"], self.env)

    def backup(self, path):
        return e2e.run(["restic", "backup", "--quiet", path], self.env)

    def restore(self, target):
        return e2e.run(["restic", "restore", "latest", "--target", target], self.env)

    def restored_root(self, target, source):
        return os.path.join(target, source.lstrip("/"))


def make_tool(kind, args, work, server, prefix):
    """A tool writing to `server` (None: a local directory in /dev/shm)."""
    if server is None:
        repo = os.path.join(SHM, "s3bench-local-repo")
        shutil.rmtree(repo, ignore_errors=True)
        return Cairn(args.cairn, work, repo, {})
    if kind == "cairn":
        return Cairn(args.cairn, work, "s3://%s/%s" % (server.info["bucket"], prefix), server.env())
    return Restic(work, "s3:%s/%s/%s" % (server.endpoint, server.info["bucket"], prefix), server.env())


def server_alone(args):
    """The server's own rates (PUT and ranged GET through the proxy)."""
    rates = []
    for _ in range(args.runs):
        server = S3Server(args.server)
        server.proc.stdin.write("speed %d\n" % args.media_mb)
        server.proc.stdin.flush()
        rates.append(json.loads(server.proc.stdout.readline()))
        server.close()
    put = statistics.median(r["put_mb_s"] for r in rates)
    get = statistics.median(r["get_mb_s"] for r in rates)
    print("== the server alone (s3s-fs in /dev/shm behind the proxy; 16 MiB PUTs 4 at once, "
          "8 MiB ranged GETs 8 at once): PUT %.0f MB/s, GET %.0f MB/s" % (put, get))


def speed(args, work, source, expected, total):
    """First backup and restore: local, S3, S3 with latency; medians."""
    configs = [("cairn", "local", None)]
    for tool in args.tools:
        configs += [(tool, "s3", 0), (tool, "s3+%dms" % args.latency_ms, args.latency_ms)]
    results = {(t, c): {"backup": [], "restore": [], "backup_cpu": [], "restore_cpu": []}
               for t, c, _ in configs}
    target = os.path.join(SHM, "s3bench-restore")
    for run in range(args.runs):
        # Rotate the order so no configuration always runs first.
        order = configs[run % len(configs):] + configs[:run % len(configs)]
        for tool, label, latency in order:
            server = None
            if latency is not None:
                server = S3Server(args.server)
                server.latency(latency)
            t = make_tool(tool, args, work, server, "speed")
            t.init()
            e2e.drop_caches()
            b = t.backup(source)
            shutil.rmtree(target, ignore_errors=True)
            e2e.drop_caches()
            r = t.restore(target)
            if e2e.tree_digest(t.restored_root(target, source)) != expected:
                sys.exit("%s %s restore differs from the source!" % (tool, label))
            shutil.rmtree(target)
            results[(tool, label)]["backup"].append(total / 1e6 / b.wall)
            results[(tool, label)]["restore"].append(total / 1e6 / r.wall)
            results[(tool, label)]["backup_cpu"].append(b.user + b.sys)
            results[(tool, label)]["restore_cpu"].append(r.user + r.sys)
            if server:
                server.close()
            print("   run %d %-6s %-10s backup %7.1f MB/s  restore %7.1f MB/s" % (
                run + 1, tool, label, total / 1e6 / b.wall, total / 1e6 / r.wall), flush=True)
    shutil.rmtree(os.path.join(SHM, "s3bench-local-repo"), ignore_errors=True)
    med = {k: {m: statistics.median(v[m]) for m in v} for k, v in results.items()}
    print("\n== speed, %.0f MB chat history, day 0 (median of %d runs, MB/s)" % (total / 1e6, args.runs))
    print("%-8s %-10s %10s %10s %14s %14s" % ("tool", "where", "backup", "restore",
                                            "backup CPU s", "restore CPU s"))
    for (tool, label), m in med.items():
        print("%-8s %-10s %10.1f %10.1f %14.2f %14.2f" % (tool, label, m["backup"], m["restore"],
                                                         m["backup_cpu"], m["restore_cpu"]))
    lat = "s3+%dms" % args.latency_ms
    c = lambda label: med[("cairn", label)]
    print("cairn S3 / local:          backup %.2f  restore %.2f" % (
        c("s3")["backup"] / c("local")["backup"], c("s3")["restore"] / c("local")["restore"]))
    print("cairn S3+latency / S3:     backup %.2f  restore %.2f" % (
        c(lat)["backup"] / c("s3")["backup"], c(lat)["restore"] / c("s3")["restore"]))
    if "restic" in args.tools:
        r = lambda label: med[("restic", label)]
        print("restic S3+latency / S3:    backup %.2f  restore %.2f" % (
            r(lat)["backup"] / r("s3")["backup"], r(lat)["restore"] / r("s3")["restore"]))
        print("cairn / restic on S3+latency: backup %.2f  restore %.2f" % (
            c(lat)["backup"] / r(lat)["backup"], c(lat)["restore"] / r(lat)["restore"]))


def requests(args, work):
    """Daily backups to S3: requests per day as the server counts them."""
    out = {}
    for tool in args.tools:
        root = os.path.join(work, "req-history-" + tool)
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(root)
        history = e2e.History(root, args.requests_media_mb, args.seed)
        history.create()
        server = S3Server(args.server)
        t = make_tool(tool, args, work, server, "daily")
        t.init()
        t.backup(root)
        server.counts()
        days = []
        for day in range(1, args.days + 1):
            history.day()
            r = t.backup(root)
            c = server.counts()
            c["wall"] = r.wall
            days.append(c)
        # A run with nothing changed: the constant part.
        t.backup(root)
        nochange = server.counts()
        server.close()
        out[tool] = (days, nochange)
        shutil.rmtree(root)
    print("\n== requests per daily backup (%d MB chat history, +1%% media a day; as the server counts them)"
          % args.requests_media_mb)
    kinds = ("put", "get", "head", "list", "delete")
    print("%-8s %-10s" % ("tool", "day") + "".join("%8s" % k for k in kinds) + "%8s%12s%12s" % (
        "total", "MB up", "MB down"))
    for tool, (days, nochange) in out.items():
        for label, c in (("2", days[1]), (str(args.days), days[-1]), ("no change", nochange)):
            print("%-8s %-10s" % (tool, label) + "".join("%8d" % c[k] for k in kinds) + "%8d%12.2f%12.2f" % (
                sum(c[k] for k in kinds), c["bytes_up"] / 1e6, c["bytes_down"] / 1e6))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cairn", required=True, help="the cairn binary")
    ap.add_argument("--server", required=True, help="the s3_server example binary")
    ap.add_argument("--media-mb", type=int, default=500, help="speed: day-0 media (default 500)")
    ap.add_argument("--requests-media-mb", type=int, default=200, help="requests: day-0 media (default 200)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--latency-ms", type=int, default=50)
    ap.add_argument("--tools", default="cairn,restic")
    ap.add_argument("--parts", default="speed,requests")
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    args.tools = [t for t in args.tools.split(",") if t == "cairn" or shutil.which(t)]
    e2e.start_spawner()
    work = tempfile.mkdtemp(prefix="cairn-s3bench-", dir="/var/tmp")
    try:
        if "speed" in args.parts:
            source = os.path.join(work, "chat")
            os.makedirs(source)
            e2e.History(source, args.media_mb, args.seed).create()
            expected, total = e2e.tree_digest(source), e2e.tree_bytes(source)
            server_alone(args)
            speed(args, work, source, expected, total)
        if "requests" in args.parts:
            requests(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
