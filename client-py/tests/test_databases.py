"""A PostgreSQL table as a Veil dataset, from the notebook: registered with
the Python verb, read through masks and row filters, and compared with the
same query run in the database by hand (through ADBC's PostgreSQL driver).

PostgreSQL comes from VEIL_TEST_POSTGRES_URL, as the Rust tests read it (a
libpq string, default "host=127.0.0.1 port=5432 user=postgres dbname=test",
or a postgresql:// URI); VEIL_TEST_SKIP_POSTGRES=1 skips.
"""

import os
import uuid
from decimal import Decimal

import pytest

import veil
from conftest import Server

PG_URI = os.environ.get("VEIL_TEST_POSTGRES_URL", "host=127.0.0.1 port=5432 user=postgres dbname=test")


def pg_parts():
    """host, port, user, database of PG_URI (either form)."""
    if "://" in PG_URI:
        from urllib.parse import urlparse

        u = urlparse(PG_URI)
        return u.hostname or "127.0.0.1", u.port or 5432, u.username or "postgres", (u.path or "/test").lstrip("/")
    kv = dict(part.split("=", 1) for part in PG_URI.split())
    return kv.get("host", "127.0.0.1"), int(kv.get("port", 5432)), kv.get("user", "postgres"), kv.get("dbname", "test")


@pytest.fixture(scope="module")
def pg():
    if os.environ.get("VEIL_TEST_SKIP_POSTGRES") == "1":
        pytest.skip("VEIL_TEST_SKIP_POSTGRES=1")
    import adbc_driver_postgresql.dbapi as pgdb

    try:
        conn = pgdb.connect(PG_URI)
    except Exception as e:  # the driver's own error types vary by version
        pytest.fail(
            f"this test needs PostgreSQL at {PG_URI} (VEIL_TEST_POSTGRES_URL): {e}. "
            "Start it, point VEIL_TEST_POSTGRES_URL at it, or set VEIL_TEST_SKIP_POSTGRES=1"
        )
    schema = f"veil_py_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
        cur.execute(
            f"""CREATE TABLE {schema}.orders (
                id bigint PRIMARY KEY, email text, state text, total numeric(10,2),
                placed timestamptz)"""
        )
        cur.execute(f"COMMENT ON COLUMN {schema}.orders.total IS 'order total, USD'")
        cur.execute(
            f"""INSERT INTO {schema}.orders
                SELECT i, 'c' || i || '@example.com', (ARRAY['CA','NY','TX'])[1 + i % 3],
                       (i * 7 % 1000) + 0.25, TIMESTAMPTZ '2026-01-01 00:00:00+00' + i * INTERVAL '1 hour'
                FROM generate_series(1, 500) i"""
        )
    conn.commit()
    yield conn, schema
    with conn.cursor() as cur:
        cur.execute(f"DROP SCHEMA {schema} CASCADE")
    conn.commit()
    conn.close()


def by_hand(pg, sql):
    conn, _ = pg
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table().to_pandas()


def shop_connection():
    """The config's `shop` connection to the test PostgreSQL."""
    host, port, user, database = pg_parts()
    return f"""
[[connections]]
name = "shop"
kind = "postgres"
host = "{host}"
port = {port}
user = "{user}"
database = "{database}"
"""


@pytest.fixture(scope="module")
def db_server(tmp_path_factory, pg):
    s = Server(tmp_path_factory.mktemp("veil-db"), extra_config=shop_connection())
    yield s
    s.stop()


def connect(server, user):
    return veil.connect(server.address, token=server.token(user))


def test_a_registered_table_reads_through_its_policies(pg, db_server):
    _, schema = pg
    dave = connect(db_server, "dave")
    msg = dave.register_dataset("shop.orders", connection="shop", table=f"{schema}.orders")
    assert "registered shop.orders with 5 columns" in msg
    d = dave.describe("shop.orders")
    total = next(c for c in d["columns"] if c["name"] == "total")
    assert total["description"] == "order total, USD"
    dave.set_column_tags("shop.orders", "email", ["PII.email"])
    dave.create_policy({"name": "orders-for-analysts", "dataset": "shop.orders", "subscription": {"groups": ["analysts"]}})
    dave.create_policy(
        {
            "name": "orders-of-my-state",
            "dataset": "shop.orders",
            "row_filter": {"column": "state", "attribute": "state"},
            "except": {"groups": ["privileged"]},
        }
    )

    # alice (CA): her state's rows, e-mails hashed, a filter of her own.
    alice = connect(db_server, "alice")
    got = alice.scan_as_pandas("shop.orders", filter="total > 500").sort_values("id").reset_index(drop=True)
    want = by_hand(pg, f"SELECT id, email, state, total FROM {schema}.orders WHERE state = 'CA' AND total > 500 ORDER BY id")
    assert list(got["id"]) == list(want["id"])
    assert set(got["state"]) == {"CA"}
    assert [Decimal(str(x)) for x in got["total"]] == [Decimal(str(x)) for x in want["total"]]
    assert not any(a == b for a, b in zip(got["email"], want["email"]))
    assert got["placed"].dt.tz is not None

    # Aggregates over SQL agree with the database's.
    n = alice.sql("SELECT count(*) AS n, sum(total) AS s FROM shop.orders")
    want = by_hand(pg, f"SELECT count(*) AS n, sum(total) AS s FROM {schema}.orders WHERE state = 'CA'")
    assert int(n["n"][0]) == int(want["n"][0])
    assert Decimal(str(n["s"][0])) == Decimal(str(want["s"][0]))

    # bob (privileged): everything, unmasked.
    bob = connect(db_server, "bob")
    everything = bob.scan_as_pandas("shop.orders", columns=["id", "email"])
    assert len(everything) == 500
    assert "c1@example.com" in set(everything["email"])


def test_registration_errors_say_what_to_do(pg, db_server):
    _, schema = pg
    dave = connect(db_server, "dave")
    with pytest.raises(veil.FailedPrecondition, match="no database connection named 'nope'"):
        dave.register_dataset("shop.x", connection="nope", table=f"{schema}.orders")
    with pytest.raises(veil.InvalidArgument, match="does not exist"):
        dave.register_dataset("shop.y", connection="shop", table=f"{schema}.missing")
    with pytest.raises(ValueError, match="exactly one"):
        dave.register_dataset("shop.z", connection="shop", table="a.b", query="SELECT 1")
    # A query is a governor's to register: alice may not.
    alice = connect(db_server, "alice")
    with pytest.raises(veil.VeilError):
        alice.register_dataset("shop.q", connection="shop", query="SELECT 1 AS x")


def test_an_accelerated_dataset_serves_its_copy(pg, db_server):
    _, schema = pg
    dave = connect(db_server, "dave")
    try:
        dave.register_dataset("shop.fast", connection="shop", table=f"{schema}.orders")
    except veil.AlreadyExists:
        pass
    with pytest.raises(ValueError, match="max_staleness_secs"):
        dave.accelerate("shop.fast")
    msg = dave.accelerate("shop.fast", max_staleness_secs=3600, incremental_column="placed")
    assert "accelerated" in msg
    assert "refreshed (full): 500 rows" in dave.refresh("shop.fast")
    got = dave.scan_as_pandas("shop.fast", filter="state = 'NY'")
    want = by_hand(pg, f"SELECT id FROM {schema}.orders WHERE state = 'NY'")
    assert sorted(got["id"]) == sorted(want["id"])
    import json

    tail = "\n".join(json.dumps(e) for e in dave.audit_tail(50))
    assert "accelerate.refresh" in tail
    assert "served from its accelerated copy" in tail
    assert "no longer accelerated" in dave.accelerate("shop.fast", off=True)


def test_an_owner_bound_by_differential_privacy_learns_no_row_count(pg, tmp_path_factory):
    # An owner without GOVERNANCE whom a differential privacy policy binds
    # may refresh the copy, but neither the refresh's answer nor discovery
    # (refused) says how many rows the dataset holds; a governor's refresh
    # does.
    _, schema = pg
    s = Server(
        tmp_path_factory.mktemp("veil-dp-owner"),
        extra_config=shop_connection()
        + f"""
[[users]]
name = "owen"
groups = ["shop-owners"]

[[datasets]]
name = "shop.counted"
connection = "shop"
table = "{schema}.orders"
owners = ["owen"]
accelerate = {{ max_staleness_secs = 3600, refresh_secs = 0 }}

[[policies]]
name = "counted-dp"
dataset = "shop.counted"
except = {{ groups = ["privileged"] }}
[policies.differential_privacy]
privacy_unit = "id"
epsilon = 1.0
latency_tolerance = "1h"
""",
    )
    try:
        import re

        owen = connect(s, "owen")
        with pytest.raises(veil.PermissionDenied, match="only through differential privacy"):
            owen.discover("shop.counted")
        done = owen.refresh("shop.counted")
        assert "shop.counted refreshed" in done and not re.search(r"\d+ rows", done), done
        dave = connect(s, "dave")
        assert "500 rows" in dave.refresh("shop.counted")
        assert dave.discover("shop.counted")["sampled_rows"] == 500
    finally:
        s.stop()


def test_a_reload_keeps_a_database_datasets_comments(pg, tmp_path_factory):
    # A config dataset over a table: where the config gives no description
    # the database's comment is the description, at start and after every
    # reload (which changes nothing when nothing changed, and follows a
    # comment changed in the database).
    conn, schema = pg
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {schema}.notes (id bigint PRIMARY KEY, body text, kind text)")
        cur.execute(f"COMMENT ON TABLE {schema}.notes IS 'field notes'")
        cur.execute(f"COMMENT ON COLUMN {schema}.notes.body IS 'free text'")
        cur.execute(f"COMMENT ON COLUMN {schema}.notes.kind IS 'note kind'")
    conn.commit()
    s = Server(
        tmp_path_factory.mktemp("veil-comments"),
        extra_config=shop_connection()
        + f"""
[[datasets]]
name = "shop.notes"
connection = "shop"
table = "{schema}.notes"
owners = ["dave"]
columns.body = {{ tags = ["PII"] }}
columns.kind = {{ description = "the config's words" }}
""",
    )
    try:
        dave = connect(s, "dave")

        def described():
            d = dave.describe("shop.notes")
            return d["description"], {c["name"]: c["description"] for c in d["columns"]}

        want = ("field notes", {"id": "", "body": "free text", "kind": "the config's words"})
        assert described() == want
        done = dave.reload()
        assert "shop.notes" not in done, done
        assert described() == want
        with conn.cursor() as cur:
            cur.execute(f"COMMENT ON COLUMN {schema}.notes.body IS 'free text, redacted'")
        conn.commit()
        assert "shop.notes" in dave.reload()
        assert described()[1]["body"] == "free text, redacted"
    finally:
        s.stop()
