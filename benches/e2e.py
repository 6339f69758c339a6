#!/usr/bin/env python3
"""End-to-end benchmark: cairn against restic and borg on the same data, same run.

Builds a deterministic, seeded chat-app history (a real SQLite message database
edited every day, photos, videos, voice notes, forwarded duplicates, deletions),
then backs up day 0 and several daily changes with every tool, restores the last
day, verifies it byte for byte, and prints a table with ratios to restic. Also
prints the primitives' ceiling (`cargo run -p cairn-benches --bin ceiling`) and,
with --small-files, the time of a no-change re-run over that many small files.

Usage: python3 benches/e2e.py [--media-mb 1000] [--days 5] [--small-files 100000]
       (`just bench-e2e`). restic and borg are used when installed.
"""

import argparse
import hashlib
import json
import multiprocessing
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSWORD = "benchmark-password-not-secret"
WORDS = ("hey see you at the station lol photo tonight ok thanks dinner running late "
         "call me when free love it where are we meeting tomorrow").split()


# ---------------------------------------------------------------- the history

class History:
    """A chat app's data directory that changes a little every day."""

    def __init__(self, root, media_mb, seed):
        self.root = root
        self.rng = random.Random(seed)
        self.media_bytes = media_mb * 1_000_000
        self.next_media = 0
        self.next_msg = 0

    def _media(self, kind, size):
        name = {"photo": "IMG_%06d.jpg", "video": "VID_%06d.mp4", "voice": "PTT_%06d.opus"}[kind]
        folder = os.path.join(self.root, "media", kind + "s")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, name % self.next_media)
        self.next_media += 1
        with open(path, "wb") as f:
            f.write(self.rng.randbytes(size))
        return size

    def _new_media(self, budget):
        """Photos, voice notes and the odd video until `budget` bytes."""
        used = 0
        while used < budget:
            r = self.rng.random()
            if r < 0.08:
                used += self._media("video", self.rng.randint(8_000_000, 40_000_000))
            elif r < 0.70:
                used += self._media("photo", self.rng.randint(300_000, 3_000_000))
            else:
                used += self._media("voice", self.rng.randint(20_000, 400_000))
        return used

    def _messages(self, db, n):
        rows = []
        for _ in range(n):
            self.next_msg += 1
            body = " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(3, 40)))
            rows.append((self.next_msg, self.rng.randint(1, 300), 1_700_000_000 + self.next_msg * 37, body))
        db.executemany("INSERT INTO messages VALUES (?, ?, ?, ?)", rows)

    def create(self):
        os.makedirs(os.path.join(self.root, "db"), exist_ok=True)
        db = sqlite3.connect(os.path.join(self.root, "db", "msgstore.db"))
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, chat INTEGER, ts INTEGER, body TEXT)")
        db.execute("CREATE INDEX by_chat ON messages (chat, ts)")
        # About 64 MB of messages for a 1 GB media history.
        self._messages(db, max(20_000, self.media_bytes // 2_500))
        db.commit()
        db.close()
        self._new_media(self.media_bytes)
        with open(os.path.join(self.root, "settings.json"), "w") as f:
            f.write('{"theme": "dark", "backup": "daily"}\n')

    def day(self):
        """One day: new and edited messages, ~1% new media, a forward, deletions."""
        db = sqlite3.connect(os.path.join(self.root, "db", "msgstore.db"))
        self._messages(db, 2_000)
        for _ in range(200):  # edits and deletions scattered over the history
            victim = self.rng.randint(1, self.next_msg)
            if self.rng.random() < 0.5:
                db.execute("UPDATE messages SET body = ? WHERE id = ?", ("(edited) " + self.rng.choice(WORDS), victim))
            else:
                db.execute("DELETE FROM messages WHERE id = ?", (victim,))
        db.commit()
        db.close()
        added = self._new_media(self.media_bytes // 100)
        photos = os.path.join(self.root, "media", "photos")
        names = sorted(os.listdir(photos))
        src = os.path.join(photos, self.rng.choice(names))
        shutil.copyfile(src, os.path.join(photos, "FWD_%06d.jpg" % self.next_media))
        self.next_media += 1
        voices = os.path.join(self.root, "media", "voices")
        for name in self.rng.sample(sorted(os.listdir(voices)), 2):  # disappearing messages
            os.remove(os.path.join(voices, name))
        return added


def tree_digest(root):
    """path -> sha256 of content (files) or link target (symlinks)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                out[rel] = "link:" + os.readlink(path)
                continue
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
            out[rel] = h.hexdigest()
    return out


def tree_bytes(root):
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                total += os.path.getsize(path)
    return total


def du(path):
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def drop_caches():
    """Best effort: read benchmarks from a cold cache when we are allowed to."""
    try:
        subprocess.run(["sync"], check=False)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def _spawner(conn):
    """Runs commands for the parent. Forked at start-up while the benchmark is
    still small: a child's peak RSS (ru_maxrss) includes the memory of the
    process that forked it, so commands must not be forked from the big parent."""
    while True:
        job = conn.recv()
        if job is None:
            return
        cmd, env, cwd = job
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        stderr = proc.stderr.read().decode(errors="replace")
        _, status, usage = os.wait4(proc.pid, 0)
        proc.stderr.close()
        conn.send((time.perf_counter() - started, usage.ru_maxrss / 1024.0,
                   os.waitstatus_to_exitcode(status), stderr[-2000:]))


SPAWNER = None


def start_spawner():
    global SPAWNER
    parent, child = multiprocessing.get_context("fork").Pipe()
    proc = multiprocessing.get_context("fork").Process(target=_spawner, args=(child,), daemon=True)
    proc.start()
    SPAWNER = parent


def run(cmd, env=None, cwd=None):
    """Runs a command; returns (seconds, peak RSS in MiB)."""
    SPAWNER.send((cmd, env, cwd))
    seconds, rss, code, stderr = SPAWNER.recv()
    if code != 0:
        sys.exit("command failed: %s\n%s" % (" ".join(cmd), stderr))
    return seconds, rss


# ---------------------------------------------------------------- the tools

REPO_DIR = None


class Tool:
    def __init__(self, name, work):
        self.name = name
        self.repo = os.path.join(REPO_DIR or work, "repo-" + name)
        shutil.rmtree(self.repo, ignore_errors=True)
        self.env = dict(os.environ)


class Cairn(Tool):
    def __init__(self, work, binary):
        super().__init__("cairn", work)
        self.binary = binary
        self.key = os.path.join(work, "cairn.key")
        self.env.update(CAIRN_REPOSITORY=self.repo, CAIRN_KEY_FILE=self.key)

    def init(self):
        run([self.binary, "init", "--key-file", self.key], self.env)

    def backup(self, path):
        return run([self.binary, "backup", path], self.env)

    def restore(self, target):
        return run([self.binary, "restore", "latest", "--target", target], self.env)


class Restic(Tool):
    def __init__(self, work):
        super().__init__("restic", work)
        self.env.update(RESTIC_REPOSITORY=self.repo, RESTIC_PASSWORD=PASSWORD,
                        RESTIC_CACHE_DIR=os.path.join(work, "restic-cache"))

    def init(self):
        run(["restic", "init"], self.env)

    def backup(self, path):
        return run(["restic", "backup", "--quiet", path], self.env)

    def restore(self, target):
        return run(["restic", "restore", "latest", "--target", target], self.env)


class Borg(Tool):
    def __init__(self, work):
        super().__init__("borg", work)
        self.day = 0
        self.env.update(BORG_PASSPHRASE=PASSWORD, BORG_REPO=self.repo,
                        BORG_BASE_DIR=os.path.join(work, "borg-base"),
                        BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes")

    def init(self):
        run(["borg", "init", "--encryption=repokey-blake2"], self.env)

    def backup(self, path):
        self.day += 1
        return run(["borg", "create", "::day%d" % self.day, path], self.env)

    def restore(self, target):
        os.makedirs(target, exist_ok=True)
        return run(["borg", "extract", "::day%d" % self.day], self.env, cwd=target)


def restored_root(tool, target, source):
    """Where a tool put the restored copy of `source`."""
    if isinstance(tool, Cairn):
        return os.path.join(target, os.path.basename(source))
    return os.path.join(target, source.lstrip("/"))


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--media-mb", type=int, default=1000, help="day-0 media size (default 1000)")
    ap.add_argument("--days", type=int, default=5, help="daily backups after day 0 (default 5)")
    ap.add_argument("--small-files", type=int, default=0, help="also time a no-change re-run over this many small files")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--dir", help="work directory (default: a temporary one under /var/tmp)")
    ap.add_argument("--tools", default="cairn,restic,borg")
    ap.add_argument("--repo-dir", help="where the repositories live (e.g. /dev/shm to take the disk out)")
    args = ap.parse_args()
    global REPO_DIR
    REPO_DIR = args.repo_dir
    start_spawner()

    subprocess.run(["cargo", "build", "--release", "-q", "-p", "cairn-cli", "-p", "cairn-benches"], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target", "release", "cairn")
    ceiling = json.loads(subprocess.run([os.path.join(ROOT, "target", "release", "ceiling")],
                                        check=True, capture_output=True, text=True).stdout)

    work = args.dir or tempfile.mkdtemp(prefix="cairn-e2e-", dir="/var/tmp")
    os.makedirs(work, exist_ok=True)
    source = os.path.join(work, "chat")
    tools = []
    for name in args.tools.split(","):
        if name == "cairn":
            tools.append(Cairn(work, binary))
        elif name == "restic" and shutil.which("restic"):
            tools.append(Restic(work))
        elif name == "borg" and shutil.which("borg"):
            tools.append(Borg(work))
        elif name in ("restic", "borg"):
            print("note: %s is not installed; skipped" % name)
    cold = drop_caches()
    print("repositories in %s" % (args.repo_dir or work))
    print("machine: %d cores; ceiling %s MiB/s (chunk %s, hash %s, seal %s MiB/s per core); caches %s" % (
        ceiling["cores"], ceiling["ceiling_mib_s"], ceiling["chunk_mib_s"], ceiling["hash_mib_s"],
        ceiling["seal_mib_s"], "dropped before each run" if cold else "warm (not root)"))

    history = History(source, args.media_mb, args.seed)
    history.create()
    for t in tools:
        t.init()
    results = {t.name: {"daily": [], "stored": [], "rss": []} for t in tools}
    day0_bytes = tree_bytes(source)
    print("day 0: %.0f MB" % (day0_bytes / 1e6))
    for day in range(args.days + 1):
        if day > 0:
            added = history.day()
            print("day %d: +%.1f MB media, 2000 new messages, 200 edits/deletions" % (day, added / 1e6))
        for t in tools:
            before = du(t.repo)
            drop_caches()
            seconds, rss = t.backup(source)
            r = results[t.name]
            r["rss"].append(rss)
            if day == 0:
                r["first_s"] = seconds
            else:
                r["daily"].append(seconds)
                r["stored"].append(du(t.repo) - before)
    expected = tree_digest(source)
    total = tree_bytes(source)
    for t in tools:
        target = os.path.join(work, "restore-" + t.name)
        shutil.rmtree(target, ignore_errors=True)
        drop_caches()
        seconds, rss = t.restore(target)
        got = tree_digest(restored_root(t, target, source))
        if got != expected:
            sys.exit("%s restore differs from the source!" % t.name)
        results[t.name]["restore_s"] = seconds
        results[t.name]["rss"].append(rss)
        results[t.name]["repo"] = du(t.repo)
        shutil.rmtree(target)

    base = results.get("restic")
    rows = [
        ("first backup MB/s", lambda r: day0_bytes / 1e6 / r["first_s"], True),
        ("daily backup s (median)", lambda r: statistics.median(r["daily"]) if r["daily"] else float("nan"), False),
        ("stored per day MB (median)", lambda r: statistics.median(r["stored"]) / 1e6 if r["stored"] else float("nan"), False),
        ("restore MB/s", lambda r: total / 1e6 / r["restore_s"], True),
        ("peak RSS MiB", lambda r: max(r["rss"]), False),
        ("repository MB", lambda r: r["repo"] / 1e6, False),
    ]
    print()
    header = "%-28s" % "" + "".join("%12s" % t.name for t in tools)
    if base:
        header += "".join("%14s" % ("%s/restic" % t.name) for t in tools if t.name != "restic")
    print(header)
    for label, f, _ in rows:
        line = "%-28s" % label + "".join("%12.2f" % f(results[t.name]) for t in tools)
        if base:
            line += "".join("%14.2f" % (f(results[t.name]) / f(base)) for t in tools if t.name != "restic")
        print(line)
    if "cairn" in results:
        rate = day0_bytes / 1e6 / results["cairn"]["first_s"] / 1.048576
        print("\ncairn first backup: %.0f MiB/s = %.0f%% of the %s MiB/s ceiling" % (
            rate, 100 * rate / ceiling["ceiling_mib_s"], ceiling["ceiling_mib_s"]))

    if args.small_files:
        small = os.path.join(work, "small")
        rng = random.Random(args.seed + 1)
        for i in range(args.small_files):
            d = os.path.join(small, "d%03d" % (i % 1000))
            if i < 1000:
                os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "f%06d" % i), "wb") as f:
                f.write(rng.randbytes(rng.randint(10, 2000)))
        print("\nno-change re-run over %d small files (second backup of an unchanged tree):" % args.small_files)
        for t in tools:
            t.backup(small)
            runs = [t.backup(small)[0] for _ in range(3)]
            print("  %-8s %.2f s (median of 3)" % (t.name, statistics.median(runs)))
    for t in tools:
        shutil.rmtree(t.repo, ignore_errors=True)
    if not args.dir:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
