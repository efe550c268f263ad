#!/usr/bin/env python3
"""End-to-end read benchmark: a generated parquet file into pandas, several ways,
measured side by side in one run:

  1. local      pyarrow.parquet.read_table(path).to_pandas()  (no Veil)
  2. reference  a minimal pyarrow.flight server serving the same table from
                memory (separate process), read with do_get().read_all().to_pandas()
  3. veil       veil.connect(...).scan_as_pandas("bench.people")
  4. governed   the same through Veil with a keyed hash mask on email and ssn,
                a regex mask on name (its trailing digits become XXX), dob
                rounded down to the year, and a row filter keeping ~90% of
                rows (informational for now)
  5. k-anon     the same file as another dataset with k-anonymization over
                (state, age), k = 5 (goal: at most 2x the unmasked scan)
  6. fpe        the same file as another dataset with format-preserving
                masking (FF1) of ssn (goal: at most 1.5x the unmasked scan)

With --s3-server-bin (the tests' S3-compatible server, `veil-test-s3`), the
same file is also uploaded to a bucket on 127.0.0.1 and read from there:

  7. s3 local   pyarrow.parquet.read_table on pyarrow's S3FileSystem
  8. s3 veil    scan_as_pandas of a Veil dataset at s3://bench/...
  9. s3 veil governed (the same masks and row filter as 4)

With --clients, the standard clients and the Python client's parallelism
(best with --arrow-only):

 10. veil serial       scan_as_arrow with max_workers=1: endpoints one by one
 11. veil sql          sql_as_arrow("SELECT * FROM bench.people")
 12. adbc              the ADBC Flight SQL driver (adbc-driver-flightsql):
                       the same SELECT, cursor.fetch_arrow_table()

With --arrow-only every path stops at the Arrow table (no to_pandas):
pq.read_table(path), do_get().read_all(), conn.scan_as_arrow(...).

Runs --repeat rounds; each round runs every path once in a shuffled order
(an untimed read, then the timed one), so the host's drift during a run
lands on every path alike. Prints medians, each round's ratios for the
goals (governed and unmasked, unmasked and reference, ...), throughput ratios, the server process's peak RSS during
each path's timed runs (Veil's, or the reference server's; Linux only:
VmHWM after resetting it through /proc/PID/clear_refs, else VmRSS sampled
every 10 ms) and its CPU time per read (user + system), and bytes sent by
Veil (from its audit record of the read) against the Arrow size of the
result.

    python benches/e2e.py --veil-bin target/release/veil --rows 10000000

Needs pyarrow, pandas and the `veil` client (pip install ./client-py).
"""

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import veil

STATES = np.array(["CA", "NY", "TX", "FL", "WA", "IL", "MA", "CO", "GA", "OR"])


def generate(path: Path, rows: int, seed: int = 7):
    rng = np.random.default_rng(seed)
    chunk = 1_000_000
    writer = None
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        ids = np.arange(start, start + n, dtype=np.int64)
        first = rng.integers(0, 5000, n)
        batch = pa.table(
            {
                "id": ids,
                "name": pa.array([f"name-{i}" for i in first]),
                "email": pa.array([f"user{i}@example.com" for i in ids]),
                "ssn": pa.array([f"{a:03d}-{b:02d}-{c:04d}" for a, b, c in zip(rng.integers(100, 900, n), rng.integers(10, 99, n), rng.integers(1000, 9999, n))]),
                "state": pa.array(STATES[rng.integers(0, len(STATES), n)]),
                "dob": pa.array(rng.integers(-15000, 15000, n).astype("int32"), type=pa.int32()).cast(pa.date32()),
                "amount": rng.random(n) * 1000,
                "age": rng.integers(18, 90, n).astype("int32"),
            }
        )
        if writer is None:
            writer = pq.ParquetWriter(path, batch.schema, compression="snappy")
        writer.write_table(batch, row_group_size=256 * 1024)
    writer.close()


CONFIG = """
roots = ["{data}"]
[server]
listen = "127.0.0.1:0"
data_dir = "{state}"
address_file = "{state}/address"
[auth]
audience = "veil"
[[auth.keys]]
issuer = "bench"
algorithm = "HS256"
secret_file = "{state}/jwt.secret"
[engine]
max_endpoints = {endpoints}
rows_per_endpoint = {per_endpoint}
{engine_extra}

[[datasets]]
name = "bench.people"
format = "parquet"
location = "{file}"
owners = ["owner"]
columns.email = {{ tags = ["PII"] }}
columns.ssn = {{ tags = ["PII"] }}

[[datasets]]
name = "bench.people_k"
format = "parquet"
location = "{file}"
owners = ["owner"]

[[datasets]]
name = "bench.people_fpe"
format = "parquet"
location = "{file}"
owners = ["owner"]

{s3_section}

[[users]]
name = "bench"
groups = ["readers"]
attributes = {{ state = ["CA", "NY", "TX", "FL", "WA", "IL", "MA", "CO", "GA"] }}
permissions = ["AUDIT"]

[[users]]
name = "plain"
groups = ["readers", "exempt"]

[[policies]]
name = "readers"
dataset = "bench.people"
subscription = {{ groups = ["readers"] }}

[[policies]]
name = "readers-k"
dataset = "bench.people_k"
subscription = {{ groups = ["readers"] }}

[[policies]]
name = "k-anonymous-state-age"
dataset = "bench.people_k"
columns = ["state", "age"]
mask = {{ k_anonymity = {{ k = 5 }} }}

[[policies]]
name = "readers-fpe"
dataset = "bench.people_fpe"
subscription = {{ groups = ["readers"] }}

[[policies]]
name = "fpe-ssn"
dataset = "bench.people_fpe"
columns = ["ssn"]
mask = "format_preserving"

[[policies]]
name = "hash-pii"
tags = ["PII"]
mask = "hash"
except = {{ groups = ["exempt"] }}

[[policies]]
name = "rows"
dataset = "bench.people"
row_filter = {{ column = "state", attribute = "state" }}
except = {{ groups = ["exempt"] }}

[[policies]]
name = "regex-name"
dataset = "bench.people"
columns = ["name"]
mask = {{ regex = {{ pattern = '\\d+$', replacement = "XXX" }} }}
except = {{ groups = ["exempt"] }}

[[policies]]
name = "round-dob"
dataset = "bench.people"
columns = ["dob"]
mask = {{ round = {{ unit = "year" }} }}
except = {{ groups = ["exempt"] }}
{s3_policies}
"""

S3_SECTION = """
[[object_stores]]
url = "s3://bench"
endpoint = "{endpoint}"
allow_http = true
region = "us-east-1"
access_key_id = "{access_key}"
secret_access_key_file = "{secret_file}"

[[datasets]]
name = "bench.people_s3"
format = "parquet"
location = "s3://bench/{key}"
owners = ["owner"]
columns.email = {{ tags = ["PII"] }}
columns.ssn = {{ tags = ["PII"] }}
"""

S3_POLICIES = """
[[policies]]
name = "readers-s3"
dataset = "bench.people_s3"
subscription = { groups = ["readers"] }

[[policies]]
name = "rows-s3"
dataset = "bench.people_s3"
row_filter = { column = "state", attribute = "state" }
except = { groups = ["exempt"] }

[[policies]]
name = "regex-name-s3"
dataset = "bench.people_s3"
columns = ["name"]
mask = { regex = { pattern = '\\d+$', replacement = "XXX" } }
except = { groups = ["exempt"] }

[[policies]]
name = "round-dob-s3"
dataset = "bench.people_s3"
columns = ["dob"]
mask = { round = { unit = "year" } }
except = { groups = ["exempt"] }
"""

FLIGHT_SERVER = textwrap.dedent(
    """
    import sys, pyarrow.flight as fl, pyarrow.parquet as pq
    table = pq.read_table(sys.argv[1])
    class S(fl.FlightServerBase):
        def do_get(self, context, ticket):
            return fl.RecordBatchStream(table)
    s = S("grpc://127.0.0.1:0")
    print(s.port, flush=True)
    s.serve()
    """
)


def timed_once(fn):
    """Seconds one call of fn takes (its result is dropped after the clock stops)."""
    t = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - t
    del result
    return elapsed


def per_round(runs, numerator, denominator):
    """The ratio numerator / denominator of each round's timed reads, as text."""
    return " ".join(f"{a / b:.2f}" for a, b in zip(runs[numerator], runs[denominator]))


def own_cpu_seconds():
    """User + system CPU time of this process so far, all its threads."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_seconds(pid):
    """User + system CPU time of a process so far (Linux /proc), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


def wait_idle(pid, limit=300.0):
    """Wait until a process uses under 5% of a core over a second (at most
    `limit` seconds); returns the seconds waited."""
    start = time.perf_counter()
    last = cpu_seconds(pid)
    if last is None:
        return 0.0
    while time.perf_counter() - start < limit:
        time.sleep(1.0)
        now = cpu_seconds(pid)
        if now - last < 0.05:
            break
        last = now
    return time.perf_counter() - start


def status_kib(pid, field):
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM), or None."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


class PeakRss:
    """Peak resident set size of another process between start() and stop().

    Linux: resets the process's high-water mark by writing 5 to
    /proc/PID/clear_refs and reads VmHWM afterwards ("clear_refs"); if that
    write is refused, samples VmRSS every 10 ms in a thread and keeps the
    largest ("sampled", which can miss a peak shorter than the interval).
    Elsewhere (no /proc) it measures nothing.
    """

    def __init__(self, pid):
        self.pid = pid
        self.method = None
        self._thread = None

    def start(self):
        self.method = None
        if not os.path.exists(f"/proc/{self.pid}/status"):
            return
        try:
            # A with block, so an error the kernel reports on the write
            # (raised when the buffered file is flushed) is caught here.
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
            self.method = "clear_refs"
            return
        except OSError:
            pass
        self.method = "sampled"
        self._peak = status_kib(self.pid, "VmRSS") or 0
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.01):
                try:
                    rss = status_kib(self.pid, "VmRSS")
                except OSError:
                    return
                if rss:
                    self._peak = max(self._peak, rss)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop(self):
        """The peak in MiB, or None if nothing was measured."""
        try:
            if self.method == "clear_refs":
                kib = status_kib(self.pid, "VmHWM")
            elif self.method == "sampled":
                self._stop.set()
                self._thread.join()
                kib = max(self._peak, status_kib(self.pid, "VmRSS") or 0)
            else:
                return None
        except OSError:
            return None
        return None if kib is None else kib / 1024


RSS_METHODS = {
    "clear_refs": "VmHWM after resetting it through /proc/PID/clear_refs",
    "sampled": "max of VmRSS sampled every 10 ms (clear_refs refused)",
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3, help="rounds: each runs every path (an untimed read, then a timed one) in a shuffled order")
    ap.add_argument("--seed", type=int, default=1, help="seeds the order of the paths in each round")
    ap.add_argument("--veil-bin", default=os.environ.get("VEIL_BIN", "target/release/veil"))
    ap.add_argument("--workdir", default=None, help="keeps the generated file between runs")
    ap.add_argument("--endpoints", type=int, default=8)
    ap.add_argument("--s3-server-bin", default=None, help="veil-test-s3: also read the file from S3")
    ap.add_argument("--rss-settle", type=float, default=11.0, help="seconds to wait before each Veil path, so its peak RSS is its own (Veil keeps freed pages 10 s)")
    ap.add_argument("--engine", action="append", default=[], metavar="KEY=VALUE", help="another [engine] setting for Veil (repeatable), e.g. batch_size=8192")
    ap.add_argument("--arrow-only", action="store_true", help="every path stops at the Arrow table (no to_pandas)")
    ap.add_argument("--clients", action="store_true", help="also: the Python client serial, its SQL read, and the ADBC Flight SQL driver")
    args = ap.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="veil-bench-"))
    data = work / "data"
    state = work / "state"
    data.mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    path = data / f"people-{args.rows}.parquet"
    if not path.exists():
        print(f"generating {args.rows:,} rows into {path} ...", flush=True)
        generate(path, args.rows)
    secret = state / "jwt.secret"
    if not secret.exists():
        secret.write_text(os.urandom(32).hex())
    cfg = state / "veil.toml"
    per_endpoint = max(1, -(-args.rows // args.endpoints))
    s3_proc, s3 = None, None
    s3_section = s3_policies = ""
    roots = f'"{data}"'
    if args.s3_server_bin:
        from pyarrow import fs as pafs

        s3_proc = subprocess.Popen([args.s3_server_bin, "bench"], stdout=subprocess.PIPE, text=True)
        endpoint, access_key, secret_key = s3_proc.stdout.readline().split()
        s3 = pafs.S3FileSystem(access_key=access_key, secret_key=secret_key, endpoint_override=endpoint.replace("http://", ""), scheme="http", region="us-east-1")
        key = path.name
        print(f"uploading {path.name} to s3://bench/{key} ...", flush=True)
        pafs.copy_files(str(path), f"bench/{key}", destination_filesystem=s3)
        (state / "s3.secret").write_text(secret_key)
        s3_section = S3_SECTION.format(endpoint=endpoint, access_key=access_key, secret_file=state / "s3.secret", key=key)
        s3_policies = S3_POLICIES
        roots += ', "s3://bench"'
    cfg.write_text(
        CONFIG.replace('roots = ["{data}"]', "roots = [{roots}]").format(
            roots=roots, state=state, file=path, endpoints=args.endpoints, per_endpoint=per_endpoint, s3_section=s3_section, s3_policies=s3_policies,
            # Every dataset's file gets a kept copy (decoded: about 2.5x the
            # parquet file); room for all of them, or reads evict each other's.
            engine_extra="\n".join(
                args.engine
                + ([] if any(e.startswith("kept_masks_max_mb") for e in args.engine) else ["kept_masks_max_mb = 16384"])
            ),
        )
    )
    addr_file = state / "address"
    if addr_file.exists():
        addr_file.unlink()
    veil_proc = subprocess.Popen([args.veil_bin, "serve", "--config", str(cfg)], stderr=open(state / "veil.log", "wb"))
    ref_proc = subprocess.Popen([sys.executable, "-c", FLIGHT_SERVER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not addr_file.exists() or not addr_file.read_text().strip():
            if veil_proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"veil did not start; see {state / 'veil.log'}")
            time.sleep(0.05)
        address = addr_file.read_text().strip()
        token = lambda user: subprocess.run([args.veil_bin, "token", "--config", str(cfg), "--user", user], check=True, capture_output=True, text=True).stdout.strip()
        ref_port = int(ref_proc.stdout.readline())

        import pyarrow.flight as fl

        ref = fl.FlightClient(f"grpc://127.0.0.1:{ref_port}")
        plain = veil.connect(address, token("plain"))
        governed = veil.connect(address, token("bench"))

        # --arrow-only: every path stops at the Arrow table.
        if args.arrow_only:
            pandas, scan_name, to_pandas = (lambda table: table), "scan_as_arrow", ""
        else:
            pandas, scan_name, to_pandas = (lambda table: table.to_pandas()), "scan_as_pandas", ".to_pandas()"
        scan = lambda conn, dataset: getattr(conn, scan_name)(dataset)

        def local():
            return pandas(pq.read_table(path))

        def reference():
            return pandas(ref.do_get(fl.Ticket(b"x")).read_all())

        # (name, read, the server process whose peak RSS is measured or None)
        name_local = f"local pq.read_table(){to_pandas}"
        name_ref = "pyarrow.flight reference (from memory)"
        name_veil = f"veil {scan_name}"
        name_governed = f"veil {scan_name}, governed"
        name_kanon = "veil k-anonymity (state, age), k=5"
        name_fpe = "veil format-preserving ssn (FF1)"
        paths = [
            (name_local, local, None),
            (name_ref, reference, ref_proc.pid),
            (name_veil, lambda: scan(plain, "bench.people"), veil_proc.pid),
            (name_governed, lambda: scan(governed, "bench.people"), veil_proc.pid),
            (name_kanon, lambda: scan(plain, "bench.people_k"), veil_proc.pid),
            (name_fpe, lambda: scan(plain, "bench.people_fpe"), veil_proc.pid),
        ]
        if args.clients:
            import adbc_driver_flightsql.dbapi as flight_sql
            from adbc_driver_flightsql import DatabaseOptions

            serial = veil.connect(address, token("plain"), max_workers=1)
            adbc = flight_sql.connect(address, db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token('plain')}"}, autocommit=True)
            select = "SELECT * FROM bench.people"

            def adbc_read():
                with adbc.cursor() as cur:
                    cur.execute(select)
                    return pandas(cur.fetch_arrow_table())

            name_serial = f"veil {scan_name}, max_workers=1"
            name_sql = "veil sql_as_arrow SELECT *" if args.arrow_only else "veil sql SELECT *"
            name_adbc = "adbc flight sql SELECT *"
            paths += [
                (name_serial, lambda: scan(serial, "bench.people"), veil_proc.pid),
                (name_sql, lambda: pandas(plain.sql_as_arrow(select)), veil_proc.pid),
                (name_adbc, adbc_read, veil_proc.pid),
            ]
        if s3 is not None:
            name_s3_local = f"s3: pq.read_table(S3FileSystem){to_pandas}"
            name_s3_veil = f"s3: veil {scan_name}"
            name_s3_governed = f"s3: veil {scan_name}, governed"
            paths += [
                (name_s3_local, lambda: pandas(pq.read_table(f"bench/{path.name}", filesystem=s3)), None),
                (name_s3_veil, lambda: scan(plain, "bench.people_s3"), veil_proc.pid),
                (name_s3_governed, lambda: scan(governed, "bench.people_s3"), veil_proc.pid),
            ]
        # Warm the page cache and every path once, then let Veil finish its
        # background work (kept masked copies, see the README's "Kept
        # masks") so it doesn't run during another path's timed runs.
        arrow_size = pq.read_table(path).nbytes
        for _, f, _ in paths:
            f()
        waited = wait_idle(veil_proc.pid)
        print(f"veil finished background work {waited:.1f} s after the warm-up", flush=True)
        # Rounds: each runs every path once, in an order shuffled per round
        # (seeded), so a drift of the host's speed during the run lands on
        # every path alike instead of on whichever paths ran at the time.
        # Each path reads once untimed and then once timed, back to back, so
        # the timed read starts from its own path's state (the client's heap,
        # the server's caches), not from the previous path's.
        # The server's peak RSS covers those two reads. It starts from the
        # RSS the path inherits: Veil's allocator keeps freed pages for 10 s
        # (so each Veil path first waits --rss-settle seconds), and the
        # reference server holds the whole table.
        runs = {name: [] for name, _, _ in paths}
        cpu_runs = {name: [] for name, _, _ in paths}
        client_runs = {name: [] for name, _, _ in paths}
        peaks, rss_methods = {}, set()
        rng = random.Random(args.seed)
        for _ in range(args.repeat):
            order = list(paths)
            rng.shuffle(order)
            for name, f, pid in order:
                rss = PeakRss(pid) if pid is not None else None
                if rss is not None:
                    if pid == veil_proc.pid:
                        time.sleep(args.rss_settle)
                    rss.start()
                f()  # the untimed read (its result is dropped at once)
                cpu_before = cpu_seconds(pid) if pid is not None else None
                client_before = own_cpu_seconds()
                runs[name].append(timed_once(f))
                client_runs[name].append(own_cpu_seconds() - client_before)
                cpu_after = cpu_seconds(pid) if pid is not None else None
                if cpu_before is not None and cpu_after is not None:
                    cpu_runs[name].append(cpu_after - cpu_before)
                if rss is not None:
                    peak = rss.stop()
                    if peak is not None:
                        peaks[name] = max(peaks.get(name, 0.0), peak)
                    if rss.method is not None:
                        rss_methods.add(rss.method)
        results = {name: statistics.median(times) for name, times in runs.items()}
        cpus = {name: statistics.mean(c) for name, c in cpu_runs.items() if c}
        client_cpus = {name: statistics.mean(c) for name, c in client_runs.items() if c}
        table = plain.scan_as_arrow("bench.people")
        time.sleep(0.5)
        ends = [e for e in governed.audit_tail(2000) if e["action"] == "read.end" and e["subject"] == "plain"]
        last_query = ends[-1]["message"].split(" of query ")[-1]
        sent = sum(e["bytes"] for e in ends if e["message"].endswith(last_query))

        print()
        mode = "arrow only (no to_pandas)" if args.arrow_only else "into pandas"
        print(f"rows: {args.rows:,}   arrow size: {arrow_size / 1e6:,.0f} MB   file: {path.stat().st_size / 1e6:,.0f} MB   endpoints: {args.endpoints}   mode: {mode}")
        print(f"{'path':44} {'median s':>9} {'rows/s':>13} {'vs local':>9} {'vs ref':>7} {'server peak RSS MiB':>19} {'server CPU s':>12} {'client CPU s':>12}")
        base_local = results[name_local]
        base_ref = results[name_ref]
        for name, t in results.items():
            peak = peaks.get(name)
            peak = f"{peak:19,.0f}" if peak is not None else " " * 19
            cpu = f"{cpus[name]:12.3f}" if name in cpus else " " * 12
            print(f"{name:44} {t:9.3f} {args.rows / t:13,.0f} {base_local / t:9.2f} {base_ref / t:7.2f} {peak} {cpu} {client_cpus[name]:12.3f}".rstrip())
        base_veil = results[name_veil]
        for name in (name_kanon, name_fpe, name_governed):
            print(f"{name}: {results[name] / base_veil:.2f}x the time of the unmasked Veil scan (per round: {per_round(runs, name, name_veil)})")
        print(f"{name_veil}: {base_ref / base_veil:.2f}x the throughput of the reference (per round: {per_round(runs, name_ref, name_veil)})")
        if args.clients:
            print(f"{name_veil}: {results[name_serial] / base_veil:.2f}x faster than reading its endpoints one by one (per round: {per_round(runs, name_serial, name_veil)})")
            print(
                f"{name_adbc}: {results[name_sql] / results[name_adbc]:.2f}x the throughput of the same SELECT through Veil's client "
                f"(per round: {per_round(runs, name_sql, name_adbc)}), {base_veil / results[name_adbc]:.2f}x that of its scan"
            )
        print(f"veil bytes on the wire / arrow size of the result: {sent / table.nbytes:.3f} ({sent / 1e6:,.0f} MB / {table.nbytes / 1e6:,.0f} MB)")
        if s3 is not None:
            base_s3 = results[name_s3_local]
            for name in (name_s3_veil, name_s3_governed):
                print(f"{name}: {base_s3 / results[name]:.2f}x the throughput of pyarrow reading S3 directly")
            print(f"{name_s3_governed}: {results[name_s3_governed] / results[name_s3_veil]:.2f}x the time of the unmasked Veil scan of S3")
        print("(ratios are throughput relative to the column's baseline: > 1 is faster)")
        methods = ", ".join(RSS_METHODS[m] for m in sorted(rss_methods)) or "not measured (no /proc)"
        print(f"(median of {args.repeat} rounds, each path once per round in a shuffled order, after an untimed read of the same path)")
        print(f"(server peak RSS over each path's reads, untimed and timed, in every round: {methods})")
        print("(server CPU s: the serving process's user + system CPU time per timed read, mean over the rounds;")
        print(" client CPU s: this process's, every thread's (the ADBC driver's Go runtime too), the same way)")
    finally:
        veil_proc.terminate()
        ref_proc.terminate()
        if s3_proc is not None:
            s3_proc.terminate()


if __name__ == "__main__":
    main()
