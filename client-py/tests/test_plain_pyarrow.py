"""A plain pyarrow.flight client (not Veil's) with tokens from `veil token`."""

import pyarrow as pa
import pyarrow.flight as flight
import pytest


def client(server, user):
    c = flight.FlightClient(server.address)
    opts = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer " + server.token(user).encode())])
    return c, opts


def read(c, opts, descriptor):
    info = c.get_flight_info(descriptor, opts)
    tables = [c.do_get(ep.ticket, opts).read_all() for ep in info.endpoints]
    return info, tables


def test_lists_and_reads_with_policies(server):
    c, opts = client(server, "alice")
    names = sorted(".".join(p.decode() for p in i.descriptor.path) for i in c.list_flights(options=opts))
    assert names == ["clinical.sites", "clinical.trials"]
    info, tables = read(c, opts, flight.FlightDescriptor.for_path("clinical", "trials"))
    assert len(info.endpoints) >= 1
    assert info.total_records == -1
    rows = sum(t.num_rows for t in tables)
    states = set()
    for t in tables:
        states |= set(t.column("state").to_pylist())
        assert all(len(s) == 32 for s in t.column("ssn").to_pylist())
        assert str(t.schema.field("ssn").type) == "string"
    assert states == {"CA"} and rows > 0

    b, bopts = client(server, "bob")
    info, tables = read(b, bopts, flight.FlightDescriptor.for_path("clinical", "trials"))
    assert len(info.endpoints) > 1, "large scans are split into several endpoints"
    assert sum(t.num_rows for t in tables) == 120_000 == info.total_records
    assert tables[0].column("ssn")[0].as_py().count("-") == 2


def test_outsiders_cannot_tell_the_dataset_exists(server):
    c, opts = client(server, "carol")
    names = [".".join(p.decode() for p in i.descriptor.path) for i in c.list_flights(options=opts)]
    assert names == ["clinical.sites"]
    with pytest.raises(pa.lib.ArrowKeyError) as hidden:
        c.get_flight_info(flight.FlightDescriptor.for_path("clinical", "trials"), opts)
    with pytest.raises(pa.lib.ArrowKeyError) as missing:
        c.get_flight_info(flight.FlightDescriptor.for_path("clinical", "nothing"), opts)
    h = str(hidden.value).split(". gRPC")[0].replace("trials", "X")
    m = str(missing.value).split(". gRPC")[0].replace("nothing", "X")
    assert h == m


def test_bad_tokens_are_unauthenticated(server):
    c = flight.FlightClient(server.address)
    for header in [b"Bearer nope", b"Basic abc", b""]:
        opts = flight.FlightCallOptions(headers=[(b"authorization", header)])
        with pytest.raises(flight.FlightUnauthenticatedError):
            list(c.list_flights(options=opts))
    with pytest.raises(flight.FlightUnauthenticatedError):
        list(c.list_flights())
