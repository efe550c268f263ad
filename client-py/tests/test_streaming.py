"""The Python client reads Arrow natively, streams, reads endpoints in
parallel in order, reports progress, and says plainly what went wrong."""

import socket

import polars as pl
import pyarrow as pa
import pytest

import veil


def connect(server, user, **kwargs):
    return veil.connect(server.address, server.token(user), **kwargs)


def test_batches_come_in_endpoint_order_and_match_the_table(server):
    with connect(server, "bob") as conn:
        info = conn._info(veil.client._scan("clinical.trials", None, None, None))
        assert len(info.endpoints) > 1, "the demo splits bob's scan into endpoints"
        streamed = pa.Table.from_batches(list(conn.scan_batches("clinical.trials", buffer=1)))
        whole = conn.scan_as_arrow("clinical.trials")
    with connect(server, "bob", max_workers=1) as serial:
        one_by_one = serial.scan_as_arrow("clinical.trials")
    assert streamed.num_rows == whole.num_rows == 120_000
    # Same rows in the same order, whatever the parallelism.
    assert streamed.equals(whole)
    assert one_by_one.equals(whole)


def test_stopping_early_cancels_the_rest(server):
    with connect(server, "bob") as conn:
        it = conn.scan_batches("clinical.trials", buffer=1)
        first = next(it)
        assert 0 < first.num_rows < 120_000
        it.close()
        # The connection still works after a cancelled read.
        assert conn.scan_as_arrow("clinical.trials", limit=3).num_rows == 3
    with connect(server, "dave") as auditor:
        ends = auditor.scan_as_pandas(
            "veil.audit", filter="user = 'bob' AND action = 'read.end' AND status = 'cancelled'"
        )
    assert len(ends) >= 1


def test_progress_reports_rows_against_the_total_when_known(server):
    seen = []
    with connect(server, "bob") as conn:
        table = conn.scan_as_arrow("clinical.trials", progress=lambda rows, total: seen.append((rows, total)))
    assert seen[-1] == (table.num_rows, 120_000)
    assert [r for r, _ in seen] == sorted(r for r, _ in seen)
    seen.clear()
    with connect(server, "alice") as conn:
        # A row policy applies: the total isn't known in advance.
        conn.scan_as_arrow("clinical.trials", progress=lambda rows, total: seen.append((rows, total)))
    assert seen and all(total is None for _, total in seen)


def test_a_progress_line_without_tqdm(server, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    with connect(server, "bob") as conn:
        conn.scan_as_arrow("clinical.sites", progress=True)
    assert "rows" in capsys.readouterr().err


def test_polars_and_a_single_column_name(server):
    with connect(server, "alice") as conn:
        frame = conn.scan_as_polars("clinical.trials", columns=["participant_id", "ssn"])
        table = conn.scan_as_arrow("clinical.trials", columns=["participant_id", "ssn"])
        ages = conn.scan_as_arrow("clinical.trials", columns="age")
        two = conn.scan_as_arrow("clinical.trials", columns="state, age")
        counted = conn.sql_as_polars("SELECT count(*) AS n FROM clinical.trials")
    assert isinstance(frame, pl.DataFrame)
    assert frame.sort("participant_id").equals(pl.from_arrow(table).sort("participant_id"))
    assert ages.column_names == ["age"]
    assert two.column_names == ["state", "age"]
    assert counted["n"].to_list() == [table.num_rows]


def test_addresses_a_newcomer_might_write(server):
    hostport = server.address.split("://", 1)[1]
    with pytest.raises(veil.InvalidAddress, match="grpc://"):
        veil.connect("http://" + hostport, server.token("alice"))
    with veil.connect(hostport, server.token("alice")) as conn:
        assert conn.address == "grpc://" + hostport
        assert "clinical.trials" in conn.list_datasets()
    # Without a port gRPC would try 443 and say nothing of it.
    for no_port in ("grpc://127.0.0.1", "127.0.0.1", "grpc+tls://veil.example:", "grpc://[::1]", "grpc://h:port"):
        with pytest.raises(veil.InvalidAddress, match="has no port: write grpc(\\+tls)?://[^ ]+:PORT .*8815") as e:
            veil.connect(no_port, "a-token")
        assert e.value.code == "invalid_address" and no_port in e.value.message
    for bad_port in ("grpc://127.0.0.1:99999", "127.0.0.1:0"):
        with pytest.raises(veil.InvalidAddress, match="outside 1-65535"):
            veil.connect(bad_port, "a-token")
    # A column named twice is said to be so (it is not unknown).
    with veil.connect(hostport, server.token("alice")) as conn:
        with pytest.raises(veil.InvalidArgument, match="'state' is named twice"):
            conn.scan_as_arrow("clinical.trials", columns=["state", "age", "state"])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_server_that_is_not_there_or_speaks_no_tls(server):
    with veil.connect(f"grpc://127.0.0.1:{_free_port()}", "a-token") as conn:
        with pytest.raises(veil.CannotConnect, match="check that the server runs there"):
            conn.list_datasets()
    hostport = server.address.split("://", 1)[1]
    with veil.connect("grpc+tls://" + hostport, server.token("alice")) as conn:
        with pytest.raises(veil.CannotConnect, match="grpc\\+tls:// needs a server with TLS"):
            conn.list_datasets()


class _Chunk:
    def __init__(self, data=None, app_metadata=None):
        self.data, self.app_metadata = data, app_metadata


class _Reader:
    """A stream of chunks as pyarrow's reader gives them, recording the
    order it is read in and whether it was cancelled."""

    def __init__(self, name, chunks, log, fail_at=None):
        self.name, self.chunks, self.log, self.fail_at = name, list(chunks), log, fail_at
        self.cancelled = False

    def read_chunk(self):
        if self.fail_at is not None and len(self.log) >= self.fail_at:
            raise pa.ArrowInvalid("the stream broke")
        if not self.chunks:
            raise StopIteration
        self.log.append(self.name)
        return self.chunks.pop(0)

    def cancel(self):
        self.cancelled = True


def test_a_whole_read_takes_streams_in_turn_and_keeps_endpoint_order():
    from veil import _stream

    batch = lambda v: pa.record_batch({"v": [v]})
    log, opened = [], []
    parts = {0: [batch(0), batch(1)], 1: [batch(2)], 2: [batch(3), batch(4), batch(5)], 3: [batch(6)]}

    def open_reader(endpoint, index):
        assert endpoint == f"e{index}"
        opened.append(index)
        chunks = list(parts[index])
        if index == 2:
            chunks.insert(1, _Chunk(app_metadata=pa.py_buffer(b"receipt")))
        return _Reader(index, [c if isinstance(c, _Chunk) else _Chunk(c) for c in chunks], log)

    seen, metadata = [], []
    got = _stream.collect(open_reader, [f"e{i}" for i in range(4)], 2, seen.append, metadata.append)
    # Endpoint order whatever the order of reading; two streams at a time,
    # read in turn, the next opened when one ends.
    assert [b.column(0)[0].as_py() for b in got] == list(range(7))
    assert log[:3] == [0, 1, 0] and opened == [0, 1, 2, 3]
    assert len(seen) == 7 and metadata == [b"receipt"]


def test_a_failing_stream_fails_the_whole_read_and_cancels_the_others():
    from veil import _stream

    log, readers = [], []

    def open_reader(endpoint, index):
        chunks = [_Chunk(pa.record_batch({"v": [i]})) for i in range(5)]
        readers.append(_Reader(index, chunks, log, fail_at=4 if index == 1 else None))
        return readers[-1]

    with pytest.raises(pa.ArrowInvalid):
        _stream.collect(open_reader, ["a", "b", "c"], 3)
    assert readers[0].cancelled and readers[2].cancelled


def test_a_tls_connection_never_sends_its_token_to_a_plaintext_location():
    import pyarrow.flight as flight

    conn = veil.connect("grpc+tls://127.0.0.1:1", "a-token")
    try:
        plaintext = flight.FlightEndpoint(b"t", ["grpc://127.0.0.1:2"])
        with pytest.raises(veil.CannotConnect, match="not TLS, and this connection is"):
            conn._client_for(plaintext)
        # A TLS location beside it is used; "reuse" means this connection.
        both = flight.FlightEndpoint(b"t", ["grpc://127.0.0.1:2", "grpc+tls://127.0.0.1:3"])
        assert conn._client_for(both) is not conn._client
        reuse = flight.FlightEndpoint(b"t", ["grpc://127.0.0.1:2", "arrow-flight-reuse-connection://?"])
        assert conn._client_for(reuse) is conn._client
    finally:
        conn.close()
    with veil.connect("grpc://127.0.0.1:1", "a-token") as plain:
        assert plain._client_for(flight.FlightEndpoint(b"t", ["grpc://127.0.0.1:2"])) is not plain._client
