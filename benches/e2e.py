#!/usr/bin/env python3
"""End-to-end read benchmark: a generated parquet file into pandas, three ways,
measured side by side in one run:

  1. local      pyarrow.parquet.read_table(path).to_pandas()  (no Veil)
  2. reference  a minimal pyarrow.flight server serving the same table from
                memory (separate process), read with do_get().read_all().to_pandas()
  3. veil       veil.connect(...).scan_as_pandas("bench.people")
  4. governed   the same through Veil with a hash mask on two columns and a
                row filter keeping ~90% of rows (informational for now)
  5. k-anon     the same file as another dataset with k-anonymization over
                (state, age), k = 5 (goal: at most 2x the unmasked scan)
  6. fpe        the same file as another dataset with format-preserving
                masking (FF1) of ssn (goal: at most 1.5x the unmasked scan)

With --s3-server-bin (the tests' S3-compatible server, `veil-test-s3`), the
same file is also uploaded to a bucket on 127.0.0.1 and read from there:

  5. s3 local   pyarrow.parquet.read_table on pyarrow's S3FileSystem
  6. s3 veil    scan_as_pandas of a Veil dataset at s3://bench/...
  7. s3 veil governed

Prints medians, throughput ratios, and bytes sent by Veil (from its audit
record of the read) against the Arrow size of the result.

    python benches/e2e.py --veil-bin target/release/veil --rows 10000000

Needs pyarrow, pandas and the `veil` client (pip install ./client-py).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
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


def timed(fn, repeat):
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
        del result
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--veil-bin", default=os.environ.get("VEIL_BIN", "target/release/veil"))
    ap.add_argument("--workdir", default=None, help="keeps the generated file between runs")
    ap.add_argument("--endpoints", type=int, default=8)
    ap.add_argument("--s3-server-bin", default=None, help="veil-test-s3: also read the file from S3")
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
            roots=roots, state=state, file=path, endpoints=args.endpoints, per_endpoint=per_endpoint, s3_section=s3_section, s3_policies=s3_policies
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

        def local():
            return pq.read_table(path).to_pandas()

        def reference():
            return ref.do_get(fl.Ticket(b"x")).read_all().to_pandas()

        def through_veil():
            return plain.scan_as_pandas("bench.people")

        def through_veil_governed():
            return governed.scan_as_pandas("bench.people")

        paths = [
            ("local pq.read_table().to_pandas()", local),
            ("pyarrow.flight reference (from memory)", reference),
            ("veil scan_as_pandas", through_veil),
            ("veil scan_as_pandas, governed", through_veil_governed),
            ("veil k-anonymity (state, age), k=5", lambda: plain.scan_as_pandas("bench.people_k")),
            ("veil format-preserving ssn (FF1)", lambda: plain.scan_as_pandas("bench.people_fpe")),
        ]
        if s3 is not None:
            paths += [
                ("s3: pq.read_table(S3FileSystem).to_pandas()", lambda: pq.read_table(f"bench/{path.name}", filesystem=s3).to_pandas()),
                ("s3: veil scan_as_pandas", lambda: plain.scan_as_pandas("bench.people_s3")),
                ("s3: veil scan_as_pandas, governed", lambda: governed.scan_as_pandas("bench.people_s3")),
            ]
        # Warm the page cache and every path once.
        arrow_size = pq.read_table(path).nbytes
        for _, f in paths:
            f()
        results = {name: timed(f, args.repeat) for name, f in paths}
        table = plain.scan_as_arrow("bench.people")
        time.sleep(0.5)
        ends = [e for e in governed.audit_tail(2000) if e["action"] == "read.end" and e["subject"] == "plain"]
        last_query = ends[-1]["message"].split(" of query ")[-1]
        sent = sum(e["bytes"] for e in ends if e["message"].endswith(last_query))

        print()
        print(f"rows: {args.rows:,}   arrow size: {arrow_size / 1e6:,.0f} MB   file: {path.stat().st_size / 1e6:,.0f} MB   endpoints: {args.endpoints}")
        print(f"{'path':44} {'median s':>9} {'rows/s':>13} {'vs local':>9} {'vs ref':>7}")
        base_local = results["local pq.read_table().to_pandas()"]
        base_ref = results["pyarrow.flight reference (from memory)"]
        for name, t in results.items():
            print(f"{name:44} {t:9.3f} {args.rows / t:13,.0f} {base_local / t:9.2f} {base_ref / t:7.2f}")
        base_veil = results["veil scan_as_pandas"]
        for name in ("veil k-anonymity (state, age), k=5", "veil format-preserving ssn (FF1)"):
            print(f"{name}: {results[name] / base_veil:.2f}x the time of the unmasked Veil scan")
        print(f"veil bytes on the wire / arrow size of the result: {sent / table.nbytes:.3f} ({sent / 1e6:,.0f} MB / {table.nbytes / 1e6:,.0f} MB)")
        if s3 is not None:
            base_s3 = results["s3: pq.read_table(S3FileSystem).to_pandas()"]
            for name in ("s3: veil scan_as_pandas", "s3: veil scan_as_pandas, governed"):
                print(f"{name}: {base_s3 / results[name]:.2f}x the throughput of pyarrow reading S3 directly")
        print("(ratios are throughput relative to the column's baseline: > 1 is faster)")
    finally:
        veil_proc.terminate()
        ref_proc.terminate()
        if s3_proc is not None:
            s3_proc.terminate()


if __name__ == "__main__":
    main()
