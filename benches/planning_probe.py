#!/usr/bin/env python3
"""Per-request cost against catalog size: GetFlightInfo and DoGet latency of
one 100-column dataset, end to end over Flight (authentication, the state
check, planning, layout, the audit record, tickets), in catalogs of growing
size, each in its own server:

  small       10 datasets x 100 columns, no masking policy
  large-none  100 datasets x 100 columns (10,000 tagged columns), no masking policy
  large       the same with 1,000 global masking policies, one per tag, each
              tag on 10 columns across the catalog (hash, null, constant,
              regex, rounding, date rounding in turn)

Each dataset is a 10-row parquet file, so DoGet measures the request, not the
read. Prints p50 and p90 in milliseconds over --repeat calls after a warm-up,
first for a reference: a minimal pyarrow Flight server (no authentication,
audit or policies) answering the same 100-column table from memory, with the
same client loop (--no-reference skips it).

    python benches/planning_probe.py --veil-bin target/release/veil --repeat 300

Needs pyarrow (pip install pyarrow).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as fl
import pyarrow.parquet as pq

MASKS = [
    'mask = "hash"',
    'mask = "null"',
    'mask = { constant = "REDACTED" }',
    'mask = { regex = { pattern = "[0-9]", replacement = "#" } }',
    'mask = { round = { digits = 0 } }',
]


def write_file(path: Path, columns: int):
    cols = {}
    for c in range(columns):
        kind = c % 4
        if kind == 0:
            cols[f"c{c}"] = pa.array([f"v{i}-{c}" for i in range(10)])
        elif kind == 1:
            cols[f"c{c}"] = pa.array(list(range(10)), type=pa.int64())
        elif kind == 2:
            cols[f"c{c}"] = pa.array([i * 1.5 for i in range(10)])
        else:
            cols[f"c{c}"] = pa.array([f"s{i}" for i in range(10)])
    pq.write_table(pa.table(cols), path)


def mask_for(tag: int, column: int) -> str:
    # Type-compatible masks: strings get any string mask; integers hash,
    # null or round to tens; floats hash, null or round to whole numbers.
    kind = column % 4
    if kind in (0, 3):
        return MASKS[tag % 4]
    if kind == 1:
        return [MASKS[0], MASKS[1], 'mask = { round = { digits = -1 } }'][tag % 3]
    return MASKS[[0, 1, 4][tag % 3]]


def config(work: Path, datasets: int, columns: int, policies: int) -> str:
    state = work / "state"
    lines = [
        f'roots = ["{work / "data"}"]',
        "[server]",
        'listen = "127.0.0.1:0"',
        f'data_dir = "{state}"',
        f'address_file = "{state}/address"',
        "[auth]",
        'audience = "veil"',
        "[[auth.keys]]",
        'issuer = "bench"',
        'algorithm = "HS256"',
        f'secret_file = "{state}/jwt.secret"',
        "",
        "[[users]]",
        'name = "reader"',
        'groups = ["readers"]',
        "",
    ]
    tag_of = {}
    for d in range(datasets):
        lines += [
            "[[datasets]]",
            f'name = "probe.d{d}"',
            'format = "parquet"',
            f'location = "{work / "data" / "probe.parquet"}"',
            'owners = ["owner"]',
        ]
        for c in range(columns):
            tag = (d * columns + c) % 1000
            tag_of[(d, c)] = tag
            lines.append(f'columns.c{c} = {{ tags = ["t{tag}"] }}')
        lines += [
            "",
            "[[policies]]",
            f'name = "read-d{d}"',
            f'dataset = "probe.d{d}"',
            'subscription = { groups = ["readers"] }',
            "",
        ]
    # One masking policy per tag; a tag's columns share the column position
    # modulo 4 (10,000 columns, 1,000 tags), so one mask fits all of them.
    for t in range(policies):
        column = t % columns
        lines += [
            "[[policies]]",
            f'name = "mask-t{t}"',
            f'tags = ["t{t}"]',
            mask_for(t, column),
            "",
        ]
    return "\n".join(lines) + "\n"


def p(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def measure(client, desc, ticket, options, repeat):
    """GetFlightInfo and DoGet in turn, 20 pairs to warm up, then `repeat`
    timed pairs; returns the two lists of seconds."""
    for _ in range(20):
        client.get_flight_info(desc, options)
        client.do_get(ticket, options).read_all()
    infos, gets = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        client.get_flight_info(desc, options)
        infos.append(time.perf_counter() - t)
        t = time.perf_counter()
        client.do_get(ticket, options).read_all()
        gets.append(time.perf_counter() - t)
    return infos, gets


def report(label, infos, gets, note=""):
    print(
        f"{label:44}  GetFlightInfo p50 {p(infos, 0.5):6.2f} ms p90 {p(infos, 0.9):6.2f} ms   "
        f"DoGet p50 {p(gets, 0.5):6.2f} ms p90 {p(gets, 0.9):6.2f} ms   {note}".rstrip(),
        flush=True,
    )


# The reference: a minimal pyarrow Flight server (no authentication, no
# audit, no policies) answering GetFlightInfo and DoGet for the same table
# from memory, in a process of its own. Prints its port.
REFERENCE_SERVER = """
import sys
import pyarrow.flight as fl
import pyarrow.parquet as pq

table = pq.read_table(sys.argv[1])


class Server(fl.FlightServerBase):
    def get_flight_info(self, context, descriptor):
        endpoint = fl.FlightEndpoint(b"x", [])
        return fl.FlightInfo(table.schema, descriptor, [endpoint], table.num_rows, table.nbytes)

    def do_get(self, context, ticket):
        return fl.RecordBatchStream(table)


server = Server("grpc://127.0.0.1:0")
print(server.port, flush=True)
server.serve()
"""


def probe_reference(columns: int, repeat: int):
    work = Path(tempfile.mkdtemp(prefix="veil-probe-ref-"))
    write_file(work / "probe.parquet", columns)
    proc = subprocess.Popen([sys.executable, "-c", REFERENCE_SERVER, str(work / "probe.parquet")], stdout=subprocess.PIPE, text=True)
    try:
        client = fl.FlightClient(f"grpc://127.0.0.1:{int(proc.stdout.readline())}")
        options = fl.FlightCallOptions()
        desc = fl.FlightDescriptor.for_path("probe")
        ticket = client.get_flight_info(desc, options).endpoints[0].ticket
        infos, gets = measure(client, desc, ticket, options, repeat)
        report(f"reference    pyarrow Flight, {columns:3} cols, from memory", infos, gets)
    finally:
        proc.terminate()
        proc.wait()


def probe(veil_bin: str, datasets: int, columns: int, policies: int, repeat: int, label: str):
    work = Path(tempfile.mkdtemp(prefix="veil-probe-"))
    (work / "data").mkdir()
    state = work / "state"
    state.mkdir()
    write_file(work / "data" / "probe.parquet", columns)
    (state / "jwt.secret").write_text(os.urandom(32).hex())
    cfg = state / "veil.toml"
    cfg.write_text(config(work, datasets, columns, policies))
    log = open(state / "veil.log", "wb")
    started = time.monotonic()
    proc = subprocess.Popen([veil_bin, "serve", "--config", str(cfg)], stderr=log)
    try:
        addr = state / "address"
        deadline = time.monotonic() + 300
        while not addr.exists() or not addr.read_text().strip():
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"veil did not start; see {state / 'veil.log'}")
            time.sleep(0.05)
        start_s = time.monotonic() - started
        token = subprocess.run(
            [veil_bin, "token", "--config", str(cfg), "--user", "reader"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        client = fl.FlightClient(addr.read_text().strip())
        options = fl.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])
        # The dataset in the middle of the catalog.
        desc = fl.FlightDescriptor.for_path("probe", f"d{datasets // 2}")
        info = client.get_flight_info(desc, options)
        ticket = info.endpoints[0].ticket
        rows = client.do_get(ticket, options).read_all()
        assert rows.num_rows == 10 and rows.num_columns == columns, (rows.num_rows, rows.num_columns)
        infos, gets = measure(client, desc, ticket, options, repeat)
        report(f"{label:12} {datasets:4} x {columns:3} cols, {policies:5} policies", infos, gets, f"(start {start_s:.1f} s)")
    finally:
        proc.terminate()
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--veil-bin", default=os.environ.get("VEIL_BIN", "target/release/veil"))
    ap.add_argument("--repeat", type=int, default=300)
    ap.add_argument("--only", choices=["small", "large-none", "large"], default=None)
    ap.add_argument("--no-reference", action="store_true", help="skip the in-memory pyarrow Flight server of the same table")
    args = ap.parse_args()
    if not args.no_reference:
        probe_reference(100, args.repeat)
    runs = [
        ("small", 10, 100, 0),
        ("large-none", 100, 100, 0),
        ("large", 100, 100, 1000),
    ]
    for label, d, c, pol in runs:
        if args.only in (None, label):
            probe(args.veil_bin, d, c, pol, args.repeat, label)


if __name__ == "__main__":
    main()
