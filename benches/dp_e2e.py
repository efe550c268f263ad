"""A fresh differentially private answer against the same exact query, both
through Veil over Flight, on the file `e2e.py` generates (10M rows: id
unique, state, age, amount): a DP policy with `id` as the privacy unit,
public keys for `state`, bounds on `age` and `amount` (fixed point, cents).
Each round asks `SELECT state, COUNT(*), SUM(age), AVG(amount) ... WHERE
age > -i GROUP BY state` with a new `i` (so every DP answer is a fresh,
charged draw) as a DP reader and as an exempt reader (the exact answer),
and prints the medians and their ratio. Then the round trip of a kept
answer (`GetFlightInfo` then `DoGet` of the same question again, as a
client asks it) with pyarrow's Flight client, and through the Python
client's `sql_as_arrow` (one direct `DoGet`, README "Direct reads"): p50
and p90 over --kept-repeat calls each.

    python benches/dp_e2e.py --veil-bin target/release/veil \
        --parquet /tmp/vbench/data/people-10000000.parquet --repeat 9

With PAUSE=1 it waits after the warm-up (to attach `perf record -p PID`).
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.flight as flight

import veil
from veil import _proto

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--veil-bin", required=True)
ap.add_argument("--parquet", required=True, help="the file e2e.py generates (--workdir keeps it)")
ap.add_argument("--workdir")
ap.add_argument("--repeat", type=int, default=9)
ap.add_argument("--kept-repeat", type=int, default=500, help="kept-answer round trips (0: skip)")
args = ap.parse_args()
veil_bin, parquet, repeat = args.veil_bin, str(Path(args.parquet).resolve()), args.repeat
work = Path(args.workdir or tempfile.mkdtemp(prefix="veil-dp-bench-"))
state = work / "state"
state.mkdir(parents=True, exist_ok=True)
(state / "jwt.secret").write_text(os.urandom(32).hex())
cfg = state / "veil.toml"
cfg.write_text(f"""
roots = ["{Path(parquet).parent}"]
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

[[datasets]]
name = "bench.people"
format = "parquet"
location = "{parquet}"
owners = ["owner"]

[[users]]
name = "dp"
groups = ["readers"]
[[users]]
name = "plain"
groups = ["readers", "exempt"]

[[policies]]
name = "read"
dataset = "bench.people"
subscription = {{ groups = ["readers"] }}

[[policies]]
name = "people-dp"
dataset = "bench.people"
except = {{ groups = ["exempt"] }}
[policies.differential_privacy]
privacy_unit = "id"
epsilon = 1.0
latency_tolerance = "1h"
columns.age = {{ lower = 0, upper = 100 }}
columns.amount = {{ lower = 0, upper = 1000, scale = 100 }}
public_groups = {{ state = ["CA", "NY", "TX", "FL", "WA", "IL", "MA", "CO", "GA", "OR"] }}
""")
addr = state / "address"
if addr.exists():
    addr.unlink()
proc = subprocess.Popen([veil_bin, "serve", "--config", str(cfg)], stderr=open(state / "veil.log", "wb"))
try:
    while not addr.exists() or not addr.read_text().strip():
        if proc.poll() is not None:
            sys.exit((state / "veil.log").read_text())
        time.sleep(0.05)
    address = addr.read_text().strip()
    token = lambda u: subprocess.run([veil_bin, "token", "--config", str(cfg), "--user", u], check=True, capture_output=True, text=True).stdout.strip()
    dp, plain = veil.connect(address, token("dp")), veil.connect(address, token("plain"))
    print("server pid", proc.pid, flush=True)
    q = "SELECT state, COUNT(*) AS n, SUM(age) AS s, AVG(amount) AS a FROM bench.people WHERE age > {} GROUP BY state"
    # Warm: page cache, the unique-units check.
    plain.sql_as_arrow(q.format(-1000))
    dp.sql_as_arrow(q.format(-1000))
    if os.environ.get("PAUSE"):
        input("attach now, then press enter")
    times = {"exact": [], "dp": []}
    for i in range(repeat):
        for name, conn in (("exact", plain), ("dp", dp)):
            t = time.perf_counter()
            conn.sql_as_arrow(q.format(-1 - i))
            times[name].append(time.perf_counter() - t)
    e, d = statistics.median(times["exact"]), statistics.median(times["dp"])
    print(f"exact through Veil {e*1000:.0f} ms, fresh DP {d*1000:.0f} ms: {d/e:.2f}x")
    if args.kept_repeat:
        client = flight.FlightClient(address)
        options = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer " + token("dp").encode())])
        descriptor = flight.FlightDescriptor.for_command(_proto.encode_sql(q.format(-1000)))

        def round_trip():
            info = client.get_flight_info(descriptor, options)
            for endpoint in info.endpoints:
                client.do_get(endpoint.ticket, options).read_all()

        for _ in range(20):
            round_trip()
        if os.environ.get("PAUSE"):
            input("kept answers: attach now, then press enter")
        rt = []
        for _ in range(args.kept_repeat):
            t = time.perf_counter()
            round_trip()
            rt.append(time.perf_counter() - t)
        rt.sort()
        print(f"kept answer round trip (GetFlightInfo + DoGet): p50 {rt[len(rt) // 2] * 1000:.2f} ms, "
              f"p90 {rt[len(rt) * 9 // 10] * 1000:.2f} ms over {len(rt)} calls")
        # The Python client's own sql_as_arrow: one direct DoGet (README,
        # "Direct reads").
        kept = q.format(-1000)
        for _ in range(20):
            dp.sql_as_arrow(kept)
        rt = []
        for _ in range(args.kept_repeat):
            t = time.perf_counter()
            dp.sql_as_arrow(kept)
            rt.append(time.perf_counter() - t)
        rt.sort()
        print(f"kept answer round trip (the Python client's sql_as_arrow, one direct DoGet): "
              f"p50 {rt[len(rt) // 2] * 1000:.2f} ms, p90 {rt[len(rt) * 9 // 10] * 1000:.2f} ms over {len(rt)} calls")
finally:
    proc.terminate()
    proc.wait()
