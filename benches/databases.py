#!/usr/bin/env python3
"""Database datasets, end to end: the same PostgreSQL table read several
ways, measured side by side in one run.

  1. adbc direct        the ADBC PostgreSQL driver, SELECT * of the table into
                        Arrow (no Veil)
  2. adbc rls view      the ADBC PostgreSQL driver as a role the table's
                        row-level security restricts (9 of 10 states), reading
                        a security_invoker view that masks like Veil does:
                        keyed SHA-256 of email and ssn, a regex on name, dob
                        truncated to the year
  3. veil unmasked      scan_as_arrow of the table's Veil dataset, for a user
                        no policy restricts
  4. veil masked        the same dataset for a user under the same masks and
                        row filter, enforced by Veil
  5. veil accelerated   the dataset served from its accelerated copy (masked)
  6. veil files         the same rows as a local parquet dataset (masked), the
                        reference for 5

Goals (issue 20): 4 at least 2.5x faster than 2; 3 at least 0.8x of 1; 5
within 10% of 6.

Then load: 16 notebook readers read a smaller table over and over for
--load-secs, without and with acceleration: reads served per second by
Veil, and statements per second the database ran (transactions of the
bench database, pg_stat_database) -- what acceleration keeps off it.

    python benches/databases.py --veil-bin target/release/veil --rows 2000000

Needs pyarrow, adbc-driver-postgresql, and the `veil` client; PostgreSQL at
--pg (default postgresql://postgres@127.0.0.1:5432/test) with trust
authentication for the role it creates (bench_reader).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import veil

STATES = ["CA", "NY", "TX", "FL", "WA", "IL", "MA", "CO", "GA", "WY"]
VISIBLE = STATES[:9]

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
rows_per_endpoint = {per_endpoint}
max_endpoints = {endpoints}

[[connections]]
name = "pg"
kind = "postgres"
host = "{host}"
port = {port}
user = "{user}"
database = "{database}"
max_connections = {endpoints}

[[datasets]]
name = "bench.people"
connection = "pg"
table = "veil_bench.people"
owners = ["owner"]
columns.email = {{ tags = ["PII"] }}
columns.ssn = {{ tags = ["PII"] }}

[[datasets]]
name = "bench.people_fast"
connection = "pg"
table = "veil_bench.people"
owners = ["owner"]
columns.email = {{ tags = ["PII"] }}
columns.ssn = {{ tags = ["PII"] }}
accelerate = {{ max_staleness_secs = 86400 }}

[[datasets]]
name = "bench.people_files"
format = "parquet"
location = "{file}"
owners = ["owner"]
columns.email = {{ tags = ["PII"] }}
columns.ssn = {{ tags = ["PII"] }}

[[datasets]]
name = "bench.small"
connection = "pg"
table = "veil_bench.small"
owners = ["owner"]

[[datasets]]
name = "bench.small_fast"
connection = "pg"
table = "veil_bench.small"
owners = ["owner"]
accelerate = {{ max_staleness_secs = 86400 }}

[[users]]
name = "plain"
groups = ["readers", "exempt"]

[[users]]
name = "masked"
groups = ["readers"]
attributes = {{ state = [{visible}] }}

[[policies]]
name = "readers-small"
dataset = "bench.small"
subscription = {{ groups = ["readers"] }}

[[policies]]
name = "readers-small-fast"
dataset = "bench.small_fast"
subscription = {{ groups = ["readers"] }}

[[policies]]
name = "hash-pii"
tags = ["PII"]
mask = "hash"
except = {{ groups = ["exempt"] }}
{per_dataset}
"""

PER_DATASET = """
[[policies]]
name = "rows-{n}"
dataset = "{d}"
row_filter = {{ column = "state", attribute = "state" }}
except = {{ groups = ["exempt"] }}

[[policies]]
name = "regex-name-{n}"
dataset = "{d}"
columns = ["name"]
mask = {{ regex = {{ pattern = '\\\\d+$', replacement = "XXX" }} }}
except = {{ groups = ["exempt"] }}

[[policies]]
name = "round-dob-{n}"
dataset = "{d}"
columns = ["dob"]
mask = {{ round = {{ unit = "year" }} }}
except = {{ groups = ["exempt"] }}

[[policies]]
name = "sub-{n}"
dataset = "{d}"
subscription = {{ groups = ["readers"] }}
"""


def generate(rows, seed=7):
    rng = np.random.default_rng(seed)
    ids = np.arange(1, rows + 1, dtype=np.int64)
    state = np.array(STATES)[rng.integers(0, len(STATES), rows)]
    name = np.char.add("person ", ids.astype(str))
    email = np.char.add(np.char.add("p", ids.astype(str)), "@example.com")
    ssn = np.char.add("900-12-", (ids % 10000).astype(str))
    dob = (np.datetime64("1950-01-01") + rng.integers(0, 20000, rows).astype("timedelta64[D]")).astype("datetime64[D]")
    amount = pa.array(np.round(rng.random(rows) * 1000, 2)).cast(pa.decimal128(12, 2))
    return pa.table(
        {"id": ids, "name": name, "email": email, "ssn": ssn, "state": state, "dob": dob, "amount": amount}
    )


def timed(fn, repeat):
    times, rows = [], 0
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
        rows = result.num_rows
        del result
    return statistics.median(times), rows


def transactions(cur, database):
    cur.execute(f"SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '{database}'")
    return int(cur.fetchone()[0])


def load(conn_factory, dataset, clients, seconds):
    """`clients` threads reading `dataset` for `seconds`; returns reads."""
    stop = time.monotonic() + seconds
    counts = [0] * clients
    errors = []

    def reader(i):
        conn = conn_factory()
        while time.monotonic() < stop:
            try:
                conn.scan_as_arrow(dataset)
                counts[i] += 1
            except Exception as e:  # recorded, not fatal to the run
                errors.append(e)
                return

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        print(f"  {len(errors)} reader(s) failed, first: {errors[0]}", flush=True)
    return sum(counts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--small-rows", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--endpoints", type=int, default=4)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--load-secs", type=float, default=20.0)
    ap.add_argument("--veil-bin", default=os.environ.get("VEIL_BIN", "target/release/veil"))
    ap.add_argument("--pg", default=os.environ.get("VEIL_BENCH_POSTGRES_URI", "postgresql://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()

    import adbc_driver_postgresql.dbapi as pgdb
    from urllib.parse import urlparse

    u = urlparse(args.pg)
    database = (u.path or "/test").lstrip("/")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="veil-dbbench-"))
    data, state = work / "data", work / "state"
    data.mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)

    table = generate(args.rows)
    file = data / f"people-{args.rows}.parquet"
    if not file.exists():
        pq.write_table(table, file, row_group_size=64 * 1024)
    admin = pgdb.connect(args.pg)
    with admin.cursor() as cur:
        print(f"loading {args.rows:,} rows into PostgreSQL ...", flush=True)
        cur.execute("DROP SCHEMA IF EXISTS veil_bench CASCADE")
        cur.execute("CREATE SCHEMA veil_bench")
        cur.adbc_ingest("people", table, mode="create", db_schema_name="veil_bench")
        cur.adbc_ingest("small", table.slice(0, args.small_rows), mode="create", db_schema_name="veil_bench")
        cur.execute("ALTER TABLE veil_bench.people ADD PRIMARY KEY (id)")
        cur.execute("ALTER TABLE veil_bench.small ADD PRIMARY KEY (id)")
        cur.execute("ANALYZE veil_bench.people")
        cur.execute("ANALYZE veil_bench.small")
        # The database's own way: row-level security and a masking view.
        cur.execute("DO $$ BEGIN CREATE ROLE bench_reader LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
        cur.execute("ALTER TABLE veil_bench.people ENABLE ROW LEVEL SECURITY")
        visible = ", ".join(f"'{s}'" for s in VISIBLE)
        cur.execute(f"CREATE POLICY by_state ON veil_bench.people FOR SELECT TO bench_reader USING (state IN ({visible}))")
        cur.execute(
            """CREATE VIEW veil_bench.people_masked WITH (security_invoker = true) AS
               SELECT id,
                      regexp_replace(name, '\\d+$', 'XXX') AS name,
                      encode(sha256(convert_to('bench-key' || email, 'UTF8')), 'hex') AS email,
                      encode(sha256(convert_to('bench-key' || ssn, 'UTF8')), 'hex') AS ssn,
                      state,
                      date_trunc('year', dob)::date AS dob,
                      amount
               FROM veil_bench.people"""
        )
        cur.execute("GRANT USAGE ON SCHEMA veil_bench TO bench_reader")
        cur.execute("GRANT SELECT ON veil_bench.people, veil_bench.people_masked TO bench_reader")
    admin.commit()

    (state / "jwt.secret").write_text(os.urandom(32).hex())
    per_dataset = "".join(
        PER_DATASET.format(n=i, d=d) for i, d in enumerate(["bench.people", "bench.people_fast", "bench.people_files"])
    )
    cfg = state / "veil.toml"
    cfg.write_text(
        CONFIG.format(
            data=data, state=state, file=file, host=u.hostname or "127.0.0.1", port=u.port or 5432,
            user=u.username or "postgres", database=database, endpoints=args.endpoints,
            per_endpoint=max(1, -(-args.rows // args.endpoints)),
            visible=", ".join(f'"{s}"' for s in VISIBLE), per_dataset=per_dataset,
        )
    )
    addr = state / "address"
    proc = subprocess.Popen([args.veil_bin, "serve", "--config", str(cfg)], stderr=open(state / "veil.log", "wb"))
    try:
        deadline = time.monotonic() + 120
        while not addr.exists() or not addr.read_text().strip():
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"veil did not start; see {state / 'veil.log'}")
            time.sleep(0.05)
        address = addr.read_text().strip()
        token = lambda user: subprocess.run(
            [args.veil_bin, "token", "--config", str(cfg), "--user", user], check=True, capture_output=True, text=True
        ).stdout.strip()
        plain = veil.connect(address, token("plain"))
        masked = veil.connect(address, token("masked"))
        owner = veil.connect(address, token("owner"))
        for d in ["bench.people_fast", "bench.small_fast"]:
            print(" ", owner.refresh(d), flush=True)

        direct = pgdb.connect(args.pg)
        reader = pgdb.connect(f"postgresql://bench_reader@{u.hostname or '127.0.0.1'}:{u.port or 5432}/{database}")

        def adbc(conn, sql):
            def read():
                with conn.cursor() as cur:
                    cur.execute(sql)
                    return cur.fetch_arrow_table()

            return read

        paths = [
            ("adbc direct (SELECT * FROM the table)", adbc(direct, "SELECT * FROM veil_bench.people")),
            ("adbc rls view (masks + row security in PostgreSQL)", adbc(reader, "SELECT * FROM veil_bench.people_masked")),
            ("veil unmasked", lambda: plain.scan_as_arrow("bench.people")),
            ("veil masked (same masks + row filter)", lambda: masked.scan_as_arrow("bench.people")),
            ("veil accelerated, masked", lambda: masked.scan_as_arrow("bench.people_fast")),
            ("veil files, masked", lambda: masked.scan_as_arrow("bench.people_files")),
        ]
        results = {}
        print(f"\n{args.rows:,} rows, median of {args.repeat}:")
        for name, fn in paths:
            fn()  # warm
            t, rows = timed(fn, args.repeat)
            results[name] = t
            print(f"  {name:<55} {t:8.3f} s  {rows:>10,} rows  {rows / t / 1e6:6.2f} M rows/s", flush=True)
        names = [p[0] for p in paths]
        print("\nratios:")
        print(f"  veil masked vs rls view: {results[names[1]] / results[names[3]]:.2f}x faster (goal >= 2.5x)")
        print(f"  veil unmasked vs adbc direct: {results[names[0]] / results[names[2]]:.2f}x (goal >= 0.8x)")
        print(f"  accelerated vs files: {results[names[4]] / results[names[5]]:.2f}x the time (goal within 10%)")

        with direct.cursor() as cur:
            print(f"\nload: {args.clients} readers of {args.small_rows:,} rows for {args.load_secs:.0f} s each:")
            for dataset in ["bench.small", "bench.small_fast"]:
                before = transactions(cur, database)
                direct.commit()
                t = time.perf_counter()
                reads = load(lambda: veil.connect(address, token("plain")), dataset, args.clients, args.load_secs)
                elapsed = time.perf_counter() - t
                after = transactions(cur, database)
                direct.commit()
                print(
                    f"  {dataset:<18} {reads / elapsed:8.1f} reads/s served, "
                    f"{(after - before) / elapsed:8.1f} database transactions/s",
                    flush=True,
                )
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
