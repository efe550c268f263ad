"""Direct reads (README, "Direct reads"): a DoGet whose ticket carries the
command plans and streams it in one call, governed and audited exactly as
GetFlightInfo followed by DoGet; a read in several parts is declined and the
client falls back to the endpoints."""

import warnings

import pyarrow as pa
import pyarrow.flight as flight
import pytest

import veil
from veil import _proto
from veil.client import _DIRECT


def connect(server, user):
    return veil.connect(server.address, server.token(user))


def raw(server, user):
    client = flight.FlightClient(server.address)
    options = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer " + server.token(user).encode())])
    return client, options


def direct_ticket(query):
    return flight.Ticket(_DIRECT + _proto.encode_sql(query))


def two_calls(server, user, query):
    """The same query through GetFlightInfo and its endpoints."""
    client, options = raw(server, user)
    info = client.get_flight_info(flight.FlightDescriptor.for_command(_proto.encode_sql(query)), options)
    tables = [client.do_get(ep.ticket, options).read_all() for ep in info.endpoints]
    return pa.concat_tables(tables) if tables else info.schema.empty_table()


def audit(server, where):
    with connect(server, "dave") as auditor:
        return auditor.scan_as_pandas("veil.audit", filter=where)


def test_a_direct_read_answers_as_two_calls_do_masks_and_row_policy_included(server):
    # alice: a row policy and masks apply.
    queries = [
        "SELECT state, count(*) AS n FROM clinical.trials GROUP BY state ORDER BY state",
        "SELECT ssn, state FROM clinical.trials ORDER BY ssn LIMIT 20",
    ]
    client, options = raw(server, "alice")
    for q in queries:
        direct = client.do_get(direct_ticket(q), options).read_all()
        assert direct.num_rows > 0
        assert direct.equals(two_calls(server, "alice", q)), q
        with connect(server, "alice") as conn:
            assert conn.sql_as_arrow(q).equals(direct), q


def last_seq(server):
    with connect(server, "dave") as auditor:
        return int(auditor.sql("SELECT max(seq) AS s FROM veil.audit")["s"][0])


def test_sql_reads_in_one_call_audited_as_a_read_without_a_plan_event(server):
    before = last_seq(server)
    with connect(server, "alice") as conn:
        assert conn.sql("SELECT count(*) AS n FROM clinical.trials")["n"][0] > 0
    rows = audit(server, f"user = 'alice' AND seq > {before}")
    assert sorted(rows["action"]) == ["read.end", "read.start"], rows[["action", "message"]]
    assert all(m.startswith("direct read ") for m in rows["message"])
    assert set(rows["status"]) == {"ok"}
    assert set(rows["dataset"]) == {"clinical.trials"}


def test_a_read_in_parts_is_declined_and_the_client_reads_its_endpoints(server):
    query = "SELECT * FROM clinical.trials"
    client, options = raw(server, "bob")
    with pytest.raises((flight.FlightError, pa.ArrowException)) as e:
        client.do_get(direct_ticket(query), options).read_all()
    assert "[READ_IN_PARTS]" in str(e.value)
    assert "GetFlightInfo" in str(e.value)
    with connect(server, "bob") as conn:
        table = conn.sql_as_arrow(query)
    assert table.num_rows == 120_000
    assert table.sort_by("participant_id").equals(two_calls(server, "bob", query).sort_by("participant_id"))
    declined = audit(server, "user = 'bob' AND action = 'plan' AND message LIKE 'direct read declined:%'")
    assert len(declined) >= 2
    # A row policy applies to alice: her read is one part (README,
    # `row_policy_endpoints`), served directly, with no row-policy warning
    # when it returns rows.
    before = last_seq(server)
    with connect(server, "alice") as conn, warnings.catch_warnings():
        warnings.simplefilter("error")
        assert conn.sql_as_arrow(query).num_rows > 0
    rows = audit(server, f"user = 'alice' AND seq > {before}")
    assert sorted(rows["action"]) == ["read.end", "read.start"], rows[["action", "message"]]


def test_what_you_may_not_read_answers_as_what_does_not_exist(server):
    client, options = raw(server, "carol")
    answers = []
    for name in ("clinical.trials", "clinical.nothing"):
        with pytest.raises((flight.FlightError, pa.ArrowException)) as e:
            client.do_get(direct_ticket(f"SELECT count(*) FROM {name}"), options).read_all()
        answers.append(str(e.value).replace(name, "X"))
    assert answers[0] == answers[1]
    assert "not found" in answers[0]


def test_a_malformed_direct_ticket_is_refused_and_audited(server):
    client, options = raw(server, "alice")
    for body in (b"", b"\x00\x01garbage", _proto.encode_describe("clinical.trials")):
        with pytest.raises((flight.FlightError, pa.ArrowException)) as e:
            client.do_get(flight.Ticket(_DIRECT + body), options).read_all()
        assert "unknown command" in str(e.value)
    rows = audit(server, "user = 'alice' AND action = 'read.start' AND status = 'invalid_argument'")
    assert sum("unknown command" in m for m in rows["message"]) >= 3


def test_no_rows_under_a_row_policy_warns(server):
    query = "SELECT state, age FROM clinical.trials WHERE age > 0 ORDER BY age LIMIT 5"
    client, options = raw(server, "erin")
    # A stock client reads the empty stream as it is: nothing but batches.
    assert client.do_get(direct_ticket(query), options).read_all().num_rows == 0
    with connect(server, "erin") as conn:
        with pytest.warns(veil.RowPolicyWarning, match="row policy on clinical.trials"):
            assert conn.sql(query).empty
    with connect(server, "bob") as conn, warnings.catch_warnings():
        # No row policy applies to bob: no warning.
        warnings.simplefilter("error")
        assert conn.sql("SELECT age FROM clinical.trials WHERE age > 1000 LIMIT 1").empty


def test_a_read_refused_before_it_starts_is_one_start_event(server):
    # README, "Audit": a read refused before it starts is one event with
    # its status and no read.end: at DoGet (a direct read) a read.start, a
    # query's without a dataset.
    def counts():
        events = audit(server, "user = 'carol' AND action IN ('read.start', 'read.end')")
        refused = events[(events["action"] == "read.start") & (events["status"] == "not_found")]
        without_dataset = refused["dataset"].fillna("") == ""
        return int(without_dataset.sum()), int((events["action"] == "read.end").sum())

    refused_before, ends_before = counts()
    with connect(server, "carol") as conn:
        with pytest.raises(veil.NotFound):
            conn.sql("SELECT count(*) FROM clinical.nothing")
        with pytest.raises(veil.NotFound):
            conn.sql("SELECT count(*) FROM clinical.trials")  # hidden from carol
    refused_after, ends_after = counts()
    assert refused_after == refused_before + 2
    assert ends_after == ends_before, "nothing was served, so no read.end"
    # Refused while planning (GetFlightInfo: a scan), the one event is the
    # plan, naming the dataset as written; no read.start, no read.end.
    def plans():
        return audit(server, "user = 'carol' AND action = 'plan' AND status = 'not_found'")

    plans_before, starts_before = len(plans()), len(audit(server, "user = 'carol' AND action = 'read.start'"))
    with connect(server, "carol") as conn:
        for name in ("clinical.nothing", "clinical.trials"):
            with pytest.raises(veil.NotFound):
                conn.scan_as_arrow(name)
    after = plans()
    assert len(after) == plans_before + 2
    assert set(after["dataset"].tail(2)) == {"clinical.nothing", "clinical.trials"}
    assert len(audit(server, "user = 'carol' AND action = 'read.start'")) == starts_before
    assert counts()[1] == ends_before
