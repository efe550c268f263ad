"""A read a row policy filters, once kept copies of the caller's rows
serve it, is dealt to several endpoints in runs of rows: Veil's client
reads them in parallel and puts a plain scan back in the files' order."""

import threading
import time

import pyarrow as pa
import pytest

import veil
from conftest import Server


@pytest.fixture(scope="module")
def dealing(tmp_path_factory):
    """The demo with small endpoints and runs: alice's rows are dealt."""
    tmp = tmp_path_factory.mktemp("veil-dealt")
    Server(tmp).stop()
    cfg = tmp / "veil.toml"
    text = cfg.read_text()
    assert "rows_per_endpoint = 40000" in text
    cfg.write_text(text.replace("rows_per_endpoint = 40000", "rows_per_endpoint = 3000\nbatch_size = 1000", 1))
    s = Server(tmp)
    yield s
    s.stop()


def _info(conn, filter=None):
    return conn._info(veil.client._scan("clinical.trials", None, filter, None))


def _dealt(conn):
    """GetFlightInfo once alice's kept copies serve (the first read builds
    them in the background)."""
    for _ in range(300):
        info = _info(conn)
        if len(info.endpoints) > 1:
            return info
        time.sleep(0.05)
    pytest.fail("alice's read was never dealt (no kept copy within 15 s)")


def test_dealt_endpoints_come_back_in_the_files_order(dealing):
    with veil.connect(dealing.address, dealing.token("alice")) as conn:
        assert len(_info(conn).endpoints) == 1, "no kept copy yet: one endpoint"
        first = conn.scan_as_arrow("clinical.trials")
        ids = first.column("participant_id").to_pylist()
        assert len(ids) > 3000 and ids == sorted(ids), "one stream, in the files' order"

        info = _dealt(conn)
        assert veil._proto.dealt_rows(info.app_metadata) == 1000
        assert info.total_records == -1
        whole = conn.scan_as_arrow("clinical.trials")
        streamed = pa.Table.from_batches(list(conn.scan_batches("clinical.trials", buffer=1)), schema=whole.schema)
        frame = conn.scan_as_pandas("clinical.trials")
    with veil.connect(dealing.address, dealing.token("alice"), max_workers=1) as serial:
        one_by_one = serial.scan_as_arrow("clinical.trials")
    # The same rows and values in the same order, however read.
    assert whole.equals(first)
    assert streamed.equals(first)
    assert one_by_one.equals(first)
    assert frame["participant_id"].tolist() == ids


def test_a_dealt_sql_query_of_columns_keeps_the_files_order(dealing):
    query = "SELECT participant_id, upper(state) AS s FROM clinical.trials"
    with veil.connect(dealing.address, dealing.token("alice")) as conn:
        ids = conn.scan_as_arrow("clinical.trials").column("participant_id").to_pylist()
        _dealt(conn)
        info = conn._info(veil.client._sql(query))
        assert len(info.endpoints) > 1
        assert veil._proto.dealt_rows(info.app_metadata) == 1000
        got = conn.sql_as_arrow(query)
    assert got.column("participant_id").to_pylist() == ids


def test_a_filtered_dealt_scan_has_every_row_once(dealing):
    with veil.connect(dealing.address, dealing.token("alice")) as conn:
        everything = conn.scan_as_arrow("clinical.trials").column("participant_id").to_pylist()
        _dealt(conn)
        where = "participant_id % 3 <> 0"
        info = _info(conn, where)
        assert len(info.endpoints) > 1
        # Runs thinned by the filter: endpoint order, no run length.
        assert veil._proto.dealt_rows(info.app_metadata) == 0
        got = conn.scan_as_arrow("clinical.trials", filter=where).column("participant_id").to_pylist()
        streamed = [
            i
            for b in conn.scan_batches("clinical.trials", filter=where)
            for i in b.column(b.schema.get_field_index("participant_id")).to_pylist()
        ]
    assert sorted(got) == [i for i in everything if i % 3 != 0]
    assert streamed == got, "streamed in the same order as the whole table"


def test_streaming_a_dealt_read_with_fewer_workers_than_endpoints(dealing):
    """Runs are taken from every endpoint in turn: a stream of more
    endpoints than `max_workers`, one batch ahead, still flows (it hung
    when only `max_workers` endpoints were read at once)."""
    with veil.connect(dealing.address, dealing.token("alice")) as conn:
        ids = conn.scan_as_arrow("clinical.trials").column("participant_id").to_pylist()
        assert len(_dealt(conn).endpoints) > 2
    streamed = []

    def read():
        with veil.connect(dealing.address, dealing.token("alice"), max_workers=2) as narrow:
            for b in narrow.scan_batches("clinical.trials", buffer=1):
                streamed.extend(b.column("participant_id").to_pylist())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(60)
    assert not reader.is_alive(), f"the stream stopped after {len(streamed)} rows"
    assert streamed == ids
