#!/usr/bin/env python3
"""End-to-end benchmark: cairn against restic, rustic and borg on the same data, same run.

Two workloads, each backed up on day 0 and then after several days of changes,
restored on the last day and verified byte for byte:

- chat: a messaging app's history (a real SQLite message database edited in
  place every day, photos, videos, voice notes, forwarded duplicates,
  deletions);
- files: a tree of many small files (an app cache, a source tree, a home
  directory): most under 8 KiB, a long tail into megabytes, compressible text
  and incompressible data, empty files, duplicates, symlinks, directories many
  levels deep; each day edits, appends to, adds, moves and deletes a few
  hundred files.

Prints one table per workload with ratios to the best peer. Also prints the
primitives' ceiling (`cargo run -p cairn-benches --bin ceiling`).

Usage: python3 benches/e2e.py [--workloads chat,files] [--media-mb 1000]
       [--files 100000] [--days 5] [--repo-dir /dev/shm]   (`just bench-e2e`).
restic, rustic and borg are used when installed.
"""

import argparse
import hashlib
import json
import math
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
        return "+%.1f MB media, 2000 new messages, 200 edits or deletions, 1 forward, 2 voice notes deleted" % (added / 1e6)


class FileTree:
    """Many small files, as an app cache, a source tree or a home directory holds
    them: log-normal sizes (median ~1.5 KiB, most under 8 KiB) with a tail of
    large files, about half compressible text and half incompressible data, a
    few empty files, duplicates and symlinks, directories up to 12 deep."""

    TEXT = (".c", ".h", ".rs", ".py", ".md", ".txt", ".json", ".html", ".xml", ".log")
    BINARY = (".png", ".jpg", ".webp", ".so", ".o", ".bin", ".pyc", ".zip")

    def __init__(self, root, n_files, seed):
        self.root = root
        self.n_files = n_files
        self.rng = random.Random(seed)
        vocab = ["".join(self.rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(self.rng.randint(2, 10)))
                 for _ in range(5000)] + ["{", "}", "(", ")", ";", "=", "\n", "    ", "return", "if", "for"]
        # Zipf-distributed words, as in natural text and code (compresses ~2.5x).
        self.rng.shuffle(vocab)
        weights = [1.0 / (rank + 1) for rank in range(len(vocab))]
        self.corpus = " ".join(self.rng.choices(vocab, weights=weights, k=800_000)).encode()
        self.dirs = []
        self.files = []
        self.serial = 0

    def _size(self):
        r = self.rng.random()
        if r < 0.02:
            return 0
        if r < 0.022:  # the tail: 64 KiB to 32 MiB, log-uniform
            return int(math.exp(self.rng.uniform(math.log(64 << 10), math.log(32 << 20))))
        return min(int(self.rng.lognormvariate(math.log(1500), 1.4)), 4 << 20)

    def _content(self, path, size):
        self.serial += 1
        if path.endswith(self.TEXT):
            head = ("// %s rev %d\n" % (os.path.basename(path), self.serial)).encode()
            at = self.rng.randrange(0, len(self.corpus) - size - 1) if size < len(self.corpus) - 1 else 0
            return (head + self.corpus[at:at + size])[:max(size, len(head))]
        return self.rng.randbytes(size)

    def _new_path(self, folder):
        ext = self.rng.choice(self.TEXT if self.rng.random() < 0.55 else self.BINARY)
        self.serial += 1
        return os.path.join(folder, "f%07d%s" % (self.serial, ext))

    def _write(self, path, size=None):
        data = self._content(path, self._size() if size is None else size)
        with open(path, "wb") as f:
            f.write(data)
        return len(data)

    def create(self):
        os.makedirs(self.root)
        self.dirs = [(self.root, 0)]
        for i in range(max(1, self.n_files // 14)):
            parent, depth = self.rng.choice(self.dirs[-200:] if self.rng.random() < 0.7 else self.dirs)
            if depth >= 12:
                parent, depth = self.root, 0
            path = os.path.join(parent, "%s%d" % (self.rng.choice(("src", "lib", "cache", "res", "docs", "tmp", "v")), i))
            os.makedirs(path)
            self.dirs.append((path, depth + 1))
        # Skewed: a few directories hold thousands of files (thumbnail caches).
        weights = [self.rng.paretovariate(1.2) for _ in self.dirs]
        for folder, _ in self.rng.choices(self.dirs, weights=weights, k=self.n_files):
            r = self.rng.random()
            if r < 0.03 and self.files:  # an identical copy (licences, vendored files)
                src = self.rng.choice(self.files)
                dst = os.path.join(folder, "copy%07d_%s" % (self.serial, os.path.basename(src)))
                self.serial += 1
                shutil.copyfile(src, dst)
                self.files.append(dst)
            elif r < 0.035 and self.files:
                link = os.path.join(folder, "link%07d" % self.serial)
                self.serial += 1
                os.symlink(os.path.relpath(self.rng.choice(self.files), folder), link)
            else:
                path = self._new_path(folder)
                self._write(path)
                self.files.append(path)

    def day(self):
        """Edits 150 files in place, appends to 150, adds 500, moves 20, deletes 100."""
        changed = 0
        for path in self.rng.sample(self.files, 300):
            if not os.path.exists(path):
                continue
            with open(path, "r+b") as f:
                size = os.fstat(f.fileno()).st_size
                if self.rng.random() < 0.5 and size > 0:
                    f.seek(self.rng.randrange(size))
                    f.write(self._content(path, self.rng.randint(1, 200))[-200:])
                else:
                    f.seek(0, 2)
                    f.write(self._content(path, self.rng.randint(10, 2000)))
            changed += 1
        for _ in range(500):
            folder, _ = self.rng.choice(self.dirs)
            path = self._new_path(folder)
            self._write(path)
            self.files.append(path)
        for path in self.rng.sample(self.files, 20):
            if os.path.exists(path):
                moved = self._new_path(os.path.dirname(path))
                os.rename(path, moved)
                self.files.append(moved)
        for path in self.rng.sample(self.files, 100):
            if os.path.exists(path):
                os.remove(path)
        self.files = [p for p in self.files if os.path.exists(p)]
        return "%d files edited or appended to, 500 added, 20 moved, 100 deleted" % changed


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
        conn.send((Run(time.perf_counter() - started, usage.ru_utime, usage.ru_stime, usage.ru_maxrss / 1024.0),
                   os.waitstatus_to_exitcode(status), stderr[-2000:]))


class Run:
    """One command's wall time, CPU time (user, kernel) and peak RSS in MiB."""

    def __init__(self, wall, user, sys_, rss):
        self.wall, self.user, self.sys, self.rss = wall, user, sys_, rss


SPAWNER = None


def start_spawner():
    global SPAWNER
    parent, child = multiprocessing.get_context("fork").Pipe()
    proc = multiprocessing.get_context("fork").Process(target=_spawner, args=(child,), daemon=True)
    proc.start()
    SPAWNER = parent


def run(cmd, env=None, cwd=None):
    """Runs a command; returns its Run."""
    SPAWNER.send((cmd, env, cwd))
    result, code, stderr = SPAWNER.recv()
    if code != 0:
        sys.exit("command failed: %s\n%s" % (" ".join(cmd), stderr))
    return result


# ---------------------------------------------------------------- the tools

REPO_DIR = None


class Tool:
    def __init__(self, name, work):
        self.name = name
        self.work = work
        self.repo = os.path.join(REPO_DIR or work, "repo-" + name)
        self.env = dict(os.environ)

    def reset(self):
        shutil.rmtree(self.repo, ignore_errors=True)

    def restored_root(self, target, source):
        """Where the restored copy of `source` is."""
        return os.path.join(target, source.lstrip("/"))


class Cairn(Tool):
    def __init__(self, work, binary):
        super().__init__("cairn", work)
        self.binary = binary
        self.key = os.path.join(work, "cairn.key")
        self.env.update(CAIRN_REPOSITORY=self.repo, CAIRN_KEY_FILE=self.key)

    def reset(self):
        super().reset()
        if os.path.exists(self.key):
            os.remove(self.key)

    def init(self):
        run([self.binary, "init", "--key-file", self.key], self.env)

    def backup(self, path):
        return run([self.binary, "backup", path], self.env)

    def restore(self, target):
        return run([self.binary, "restore", "latest", "--target", target], self.env)

    def restored_root(self, target, source):
        return os.path.join(target, os.path.basename(source))


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


class Rustic(Tool):
    def __init__(self, work):
        super().__init__("rustic", work)
        self.env.update(RUSTIC_REPOSITORY=self.repo, RUSTIC_PASSWORD=PASSWORD,
                        RUSTIC_CACHE_DIR=os.path.join(work, "rustic-cache"), RUSTIC_NO_PROGRESS="true")

    def init(self):
        run([RUSTIC, "init"], self.env)

    def backup(self, path):
        return run([RUSTIC, "backup", path], self.env)

    def restore(self, target):
        return run([RUSTIC, "restore", "latest", target], self.env)


class Borg(Tool):
    def __init__(self, work):
        super().__init__("borg", work)
        self.day = 0
        self.env.update(BORG_PASSPHRASE=PASSWORD, BORG_REPO=self.repo,
                        BORG_BASE_DIR=os.path.join(work, "borg-base"),
                        BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes")

    def reset(self):
        super().reset()
        shutil.rmtree(os.path.join(self.work, "borg-base"), ignore_errors=True)
        self.day = 0

    def init(self):
        run(["borg", "init", "--encryption=repokey-blake2"], self.env)

    def backup(self, path):
        self.day += 1
        return run(["borg", "create", "::day%d" % self.day, path], self.env)

    def restore(self, target):
        os.makedirs(target, exist_ok=True)
        return run(["borg", "extract", "::day%d" % self.day], self.env, cwd=target)


RUSTIC = shutil.which("rustic") or os.path.expanduser("~/.cargo/bin/rustic")


def installed(name):
    if name == "rustic":
        return os.path.exists(RUSTIC)
    return shutil.which(name) is not None


# ---------------------------------------------------------------- one workload

def bench_workload(label, source, build, change, days, tools, work):
    """Backs up `source` on day 0 and after each of `days` changes, restores the
    last day, verifies it, and returns per-tool results."""
    build()
    for t in tools:
        t.reset()
        t.init()
    results = {t.name: {"daily": [], "stored": [], "rss": []} for t in tools}
    day0_bytes = tree_bytes(source)
    n_files = count_files(source)
    print("\n== %s: day 0: %d files, %.0f MB" % (label, n_files, day0_bytes / 1e6))
    for day in range(days + 1):
        if day > 0:
            print("   day %d: %s" % (day, change()))
        for t in tools:
            before = du(t.repo)
            drop_caches()
            r = t.backup(source)
            res = results[t.name]
            res["rss"].append(r.rss)
            if day == 0:
                res["first"] = r
            else:
                res["daily"].append(r.wall)
                res["stored"].append(du(t.repo) - before)
    # A re-run with nothing changed: the metadata walk alone.
    for t in tools:
        results[t.name]["nochange"] = t.backup(source).wall
    expected = tree_digest(source)
    total = tree_bytes(source)
    for t in tools:
        target = os.path.join(work, "restore-" + t.name)
        shutil.rmtree(target, ignore_errors=True)
        drop_caches()
        r = t.restore(target)
        if tree_digest(t.restored_root(target, source)) != expected:
            sys.exit("%s restore of %s differs from the source!" % (t.name, label))
        results[t.name]["restore"] = r
        results[t.name]["rss"].append(r.rss)
        results[t.name]["repo"] = du(t.repo)
        shutil.rmtree(target)
    for res in results.values():
        res["bytes"], res["day0_bytes"], res["n_files"] = total, day0_bytes, n_files
    print_table(label, tools, results)
    return results


ROWS = [
    # label, value, higher is better
    ("first backup MB/s", lambda r: r["day0_bytes"] / 1e6 / r["first"].wall, True),
    ("first backup CPU s (user+sys)", lambda r: r["first"].user + r["first"].sys, False),
    ("daily backup s (median)", lambda r: statistics.median(r["daily"]) if r["daily"] else float("nan"), False),
    ("no-change re-run s", lambda r: r["nochange"], False),
    ("stored per day MB (median)", lambda r: statistics.median(r["stored"]) / 1e6 if r["stored"] else float("nan"), False),
    ("restore MB/s", lambda r: r["bytes"] / 1e6 / r["restore"].wall, True),
    ("restore s", lambda r: r["restore"].wall, False),
    ("restore CPU user s", lambda r: r["restore"].user, False),
    ("restore CPU sys s", lambda r: r["restore"].sys, False),
    ("peak RSS MiB", lambda r: max(r["rss"]), False),
    ("repository MB", lambda r: r["repo"] / 1e6, False),
]


def print_table(label, tools, results):
    peers = [t.name for t in tools if t.name != "cairn"]
    header = "%-32s" % label + "".join("%10s" % t.name for t in tools)
    if "cairn" in results:
        header += "".join("%14s" % ("cairn/" + p) for p in peers)
        if peers:
            header += "%12s" % "vs best"
    print(header)
    for name, f, higher in ROWS:
        values = {t.name: f(results[t.name]) for t in tools}
        line = "%-32s" % name + "".join("%10.2f" % values[t.name] for t in tools)
        if "cairn" in values:
            # Ratios as speed-ups: > 1 means cairn is better.
            ratio = (lambda p: values["cairn"] / values[p]) if higher else (lambda p: values[p] / values["cairn"])
            line += "".join("%14.2f" % ratio(p) for p in peers)
            if peers:
                line += "%12.2f" % min(ratio(p) for p in peers)
        print(line)
    print("(ratios are speed-ups or savings: > 1 means cairn is better; 'vs best' is against the best peer)")


def count_files(root):
    return sum(len(files) for _, _, files in os.walk(root))


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="chat,files", help="chat, files or both (default)")
    ap.add_argument("--media-mb", type=int, default=1000, help="chat: day-0 media size (default 1000)")
    ap.add_argument("--files", type=int, default=100_000, help="files: number of files (default 100000)")
    ap.add_argument("--days", type=int, default=5, help="daily backups after day 0 (default 5)")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--dir", help="work directory (default: a temporary one under /var/tmp)")
    ap.add_argument("--tools", default="cairn,restic,rustic,borg")
    ap.add_argument("--repo-dir", help="where the repositories live (e.g. /dev/shm to take the disk out)")
    ap.add_argument("--cairn", help="the cairn binary to use (default: build this checkout)")
    args = ap.parse_args()
    global REPO_DIR
    REPO_DIR = args.repo_dir
    start_spawner()

    subprocess.run(["cargo", "build", "--release", "-q", "-p", "cairn-cli", "-p", "cairn-benches"], cwd=ROOT, check=True)
    binary = args.cairn or os.path.join(ROOT, "target", "release", "cairn")
    ceiling = json.loads(subprocess.run([os.path.join(ROOT, "target", "release", "ceiling")],
                                        check=True, capture_output=True, text=True).stdout)

    work = args.dir or tempfile.mkdtemp(prefix="cairn-e2e-", dir="/var/tmp")
    os.makedirs(work, exist_ok=True)
    tools = []
    for name in args.tools.split(","):
        if not installed(name) and name != "cairn":
            print("note: %s is not installed; skipped" % name)
            continue
        tools.append({"cairn": lambda: Cairn(work, binary), "restic": lambda: Restic(work),
                      "rustic": lambda: Rustic(work), "borg": lambda: Borg(work)}[name]())
    cold = drop_caches()
    print("repositories in %s" % (args.repo_dir or work))
    print("machine: %d cores; ceiling %s MiB/s (chunk %s, hash %s, seal %s MiB/s per core); caches %s" % (
        ceiling["cores"], ceiling["ceiling_mib_s"], ceiling["chunk_mib_s"], ceiling["hash_mib_s"],
        ceiling["seal_mib_s"], "dropped before each run" if cold else "warm (not root)"))

    for workload in args.workloads.split(","):
        if workload == "chat":
            source = os.path.join(work, "chat")
            shutil.rmtree(source, ignore_errors=True)
            history = History(source, args.media_mb, args.seed)
            results = bench_workload("chat history", source, history.create, history.day, args.days, tools, work)
            if "cairn" in results:
                r = results["cairn"]
                rate = r["day0_bytes"] / 1e6 / r["first"].wall / 1.048576
                print("cairn first backup: %.0f MiB/s = %.0f%% of the %s MiB/s ceiling" % (
                    rate, 100 * rate / ceiling["ceiling_mib_s"], ceiling["ceiling_mib_s"]))
        elif workload == "files":
            source = os.path.join(work, "files")
            shutil.rmtree(source, ignore_errors=True)
            tree = FileTree(source, args.files, args.seed + 1)
            results = bench_workload("small files", source, tree.create, tree.day, args.days, tools, work)
            if "cairn" in results:
                r = results["cairn"]["first"]
                print("cairn first backup: %.1f us of CPU per file (user %.2f s, sys %.2f s)" % (
                    1e6 * (r.user + r.sys) / results["cairn"]["n_files"], r.user, r.sys))
        else:
            sys.exit("unknown workload %r" % workload)
    for t in tools:
        t.reset()
    if not args.dir:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
