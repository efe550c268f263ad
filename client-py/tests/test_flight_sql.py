"""Flight SQL with the real drivers from PyPI (ADBC, and polars over it):
governed exactly like Veil's own client."""

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import polars as pl
import pyarrow as pa
import pytest
from adbc_driver_flightsql import DatabaseOptions

import veil


def uri(server):
    address = server.address
    return address if "://" in address else f"grpc://{address}"


def adbc(server, user):
    return flight_sql.connect(
        uri(server),
        db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {server.token(user)}"},
        # Veil has no transactions: every query reads the data as it is.
        autocommit=True,
    )


def own(server, user):
    return veil.connect(server.address, server.token(user))


def by_id(table):
    return table.sort_by("participant_id")


def test_a_query_reads_the_same_rows_and_masks_as_veils_client(server):
    with adbc(server, "alice") as conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM clinical.trials")
        through_adbc = cur.fetch_arrow_table()
    with own(server, "alice") as conn:
        through_veil = conn.scan_as_arrow("clinical.trials")
    assert through_adbc.num_rows == through_veil.num_rows > 0
    assert set(through_adbc.column("state").to_pylist()) == {"CA"}
    assert all(len(s) == 32 for s in through_adbc.column("ssn").to_pylist())
    assert by_id(through_adbc).equals(by_id(through_veil))


def test_placeholders_bind_as_values(server):
    with adbc(server, "bob") as conn, conn.cursor() as cur:
        cur.execute("SELECT participant_id FROM clinical.trials WHERE age > ? AND state = ?", parameters=(80, "CA"))
        bound = cur.fetch_arrow_table()
        cur.execute("SELECT participant_id FROM clinical.trials WHERE age > 80 AND state = 'CA'")
        literal = by_id(cur.fetch_arrow_table())
        # A string parameter is a value, never SQL: this matches nothing.
        cur.execute("SELECT count(*) AS n FROM clinical.trials WHERE state = ?", parameters=("CA' OR '1'='1",))
        injected = cur.fetch_arrow_table()
    assert 0 < bound.num_rows < 120_000
    assert by_id(bound).equals(literal)
    assert injected.column("n").to_pylist() == [0]


def test_partitions_read_back_the_whole_result(server):
    with adbc(server, "alice") as conn, conn.cursor() as cur:
        partitions, schema = cur.adbc_execute_partitions("SELECT participant_id, ssn FROM clinical.trials")
        assert len(partitions) >= 1
        parts = []
        for p in partitions:
            cur.adbc_read_partition(p)
            parts.append(cur.fetch_arrow_table())
        cur.execute("SELECT participant_id, ssn FROM clinical.trials")
        whole = cur.fetch_arrow_table()
    assert all(p.schema.equals(schema) for p in parts)
    assert by_id(pa.concat_tables(parts)).equals(by_id(whole))


def _tables(objects):
    """{(schema, table): [column names]} from adbc_get_objects."""
    found = {}
    for catalog in objects:
        for db_schema in catalog["catalog_db_schemas"] or []:
            for table in db_schema["db_schema_tables"] or []:
                columns = [c["column_name"] for c in table["table_columns"] or []]
                found[(db_schema["db_schema_name"], table["table_name"])] = columns
    return found


def _columns(objects, schema, table):
    for catalog in objects:
        for db_schema in catalog["catalog_db_schemas"] or []:
            for t in db_schema["db_schema_tables"] or []:
                if (db_schema["db_schema_name"], t["table_name"]) == (schema, table):
                    return t["table_columns"] or []
    return []


def test_metadata_shows_only_what_the_reader_may_read(server):
    with adbc(server, "alice") as conn:
        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        assert [c["catalog_name"] for c in objects] == ["veil"]
        tables = _tables(objects)
        schema = conn.adbc_get_table_schema("trials", db_schema_filter="clinical", catalog_filter="veil")
        assert conn.adbc_get_table_types() == ["TABLE"]
    assert "ssn" in tables[("clinical", "trials")]
    # Each column's SQL type name, as BI tools show it.
    types = {c["column_name"]: c["xdbc_type_name"] for c in _columns(objects, "clinical", "trials")}
    assert types["participant_id"] == "BIGINT" and types["ssn"] == "VARCHAR", types
    assert ("veil", "audit") not in tables
    with own(server, "alice") as c:
        # The policy-applied schema, exactly as a read serves it.
        assert schema.equals(c.scan_as_arrow("clinical.trials", limit=1).schema)
    with adbc(server, "carol") as conn:
        hidden = _tables(conn.adbc_get_objects(depth="all").read_all().to_pylist())
        assert ("clinical", "trials") not in hidden
        with pytest.raises(adbc_driver_manager.Error) as trials:
            conn.adbc_get_table_schema("trials", db_schema_filter="clinical")
        with pytest.raises(adbc_driver_manager.Error) as nothing:
            conn.adbc_get_table_schema("nothing", db_schema_filter="clinical")
        assert str(trials.value).replace("trials", "X") == str(nothing.value).replace("nothing", "X")


def test_a_hidden_dataset_answers_like_a_missing_one(server):
    messages = []
    with adbc(server, "carol") as conn, conn.cursor() as cur:
        for name in ("trials", "nothing"):
            with pytest.raises(adbc_driver_manager.Error) as e:
                cur.execute(f"SELECT * FROM clinical.{name}")
            messages.append(str(e.value).replace(name, "X"))
    assert messages[0] == messages[1]
    assert "not found" in messages[0]


def test_preparing_plans_the_query_at_once(server):
    with adbc(server, "alice") as conn, conn.cursor() as cur:
        # A constant the planner cannot fold fails the prepare itself, in
        # plain words with a hint, not the statement's first execution.
        with pytest.raises(adbc_driver_manager.Error) as e:
            cur.adbc_prepare("SELECT participant_id FROM clinical.trials WHERE age > CAST('abc' AS INT)")
        assert "Cannot cast string 'abc'" in str(e.value)
        assert "compare numbers with numbers" in str(e.value)
        assert "Optimizer rule" not in str(e.value)
        # A statement with placeholders still prepares.
        cur.adbc_prepare("SELECT participant_id FROM clinical.trials WHERE age > ?")


def test_writes_are_refused_with_a_reason(server):
    with adbc(server, "bob") as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error, match="SELECT"):
            cur.execute("DELETE FROM clinical.trials")
        with pytest.raises(adbc_driver_manager.Error, match="read-only"):
            cur.adbc_ingest("copy", pa.table({"a": [1]}), mode="create")


def test_passwords_are_refused_with_a_hint_to_use_a_token(server):
    with pytest.raises(adbc_driver_manager.Error, match="token"):
        conn = flight_sql.connect(uri(server), db_kwargs={"username": "alice", "password": "secret"})
        with conn.cursor() as cur:
            cur.execute("SELECT 1")


def test_polars_reads_over_adbc(server):
    with adbc(server, "alice") as conn:
        frame = pl.read_database("SELECT participant_id, state, ssn FROM clinical.trials", connection=conn)
    assert frame.height > 0
    assert frame["state"].unique().to_list() == ["CA"]
    assert frame["ssn"].str.len_chars().eq(32).all()


def test_flight_sql_reads_are_audited(server):
    with adbc(server, "alice") as conn, conn.cursor() as cur:
        cur.execute("SELECT participant_id FROM clinical.trials WHERE age = 47")
        cur.fetch_arrow_table()
        conn.adbc_get_objects(depth="tables").read_all()
    with own(server, "dave") as conn:
        audit = conn.scan_as_pandas("veil.audit", filter="user = 'alice'")
    reads = audit[(audit["action"] == "read.start") & (audit["dataset"] == "clinical.trials")]
    assert len(reads) >= 1
    assert audit["action"].isin(["prepare"]).any()
    assert audit["message"].str.contains("Flight SQL CommandGetTables").any()
