"""Connections to Veil over Arrow Flight."""

import contextlib
import datetime
import json
import os
import re
import sys
import threading
import warnings
import pyarrow as pa
import pyarrow.flight as flight

from . import _proto, _stream
from .errors import (
    CannotConnect,
    InvalidAddress,
    InvalidArgument,
    MaskedColumnWarning,
    RowPolicyWarning,
    Unauthenticated,
    Unavailable,
)
from .errors import translate as _translate

DEFAULT_ADDRESS = "grpc://127.0.0.1:8815"
_REUSE = "arrow-flight-reuse-connection://?"

# A ticket that carries its command: the server plans and streams the read
# in one call (README, "Direct reads"), or answers with this code when the
# read has several parts, which GetFlightInfo lists.
_DIRECT = b"veil.direct.v1:"
_IN_PARTS = "[READ_IN_PARTS]"


_SCHEMES = ("grpc://", "grpc+tcp://", "grpc+tls://", "grpc+unix://")

# What gRPC says when nothing (or nothing speaking the same transport)
# answers: the server is down, the port is wrong, or TLS is on one side only.
_CONNECT_FAILURES = (
    "failed to connect",
    "connection refused",
    "connect failed",
    "socket closed",
    "handshake",
    "ssl",
    "tls",
    "connection reset",
    "name resolution",
    "dns resolution",
    "resolving",
    "deadline",
    "end of tcp stream",
)


def _address(address):
    """The Flight URI for `address`: `host:port` means `grpc://host:port`;
    anything but a gRPC scheme, or a TCP address without a port, is refused
    with what to write instead."""
    given = address = address.strip()
    if "://" not in address:
        address = "grpc://" + address
    scheme, rest = address.split("://", 1)
    if not address.startswith(_SCHEMES):
        raise InvalidAddress(
            f"'{address}' is not a Flight address ({scheme}:// is not spoken): "
            f"use grpc://{rest} for a server without TLS, or grpc+tls://{rest} with TLS"
        )
    if scheme != "grpc+unix":
        authority = rest.split("/", 1)[0]
        if authority.startswith("["):  # [IPv6]:port
            host, _, port = authority.partition("]")
            host, port = host + "]", port[1:] if port.startswith(":") else ""
        else:
            host, _, port = authority.partition(":")
        if not port.isdigit():
            raise InvalidAddress(f"'{given}' has no port: write {scheme}://{host}:PORT (the demo listens on 8815)")
        if not 0 < int(port) < 65536:
            raise InvalidAddress(f"'{given}' has port {port}, outside 1-65535: write {scheme}://{host}:PORT (the demo listens on 8815)")
    return address


class Connection:
    """A connection to Veil. Use `veil.connect()`; closes as a context manager."""

    def __init__(self, address=None, token=None, tls_root_certs=None, max_workers=8):
        self.address = _address(address or os.environ.get("VEIL_ADDRESS") or DEFAULT_ADDRESS)
        token = token or os.environ.get("VEIL_TOKEN")
        if not token:
            raise Unauthenticated(
                "no token: pass token=... or set VEIL_TOKEN (for the demo: `veil token --user alice`)"
            )
        self._tls_root_certs = tls_root_certs
        self._client = flight.FlightClient(self.address, tls_root_certs=tls_root_certs)
        self._options = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer " + token.encode())])
        self._max_workers = max_workers
        self._others = {}
        self._lanes = []
        self._lanes_lock = threading.Lock()

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (flight.FlightError, pa.ArrowException) as e:
            raise self._translate(e) from None

    def _translate(self, err):
        e = _translate(err)
        lowered = e.message.lower()
        if isinstance(e, Unavailable) and "certificate verify failed" in lowered:
            return CannotConnect(
                f"the TLS certificate of the server at {self.address} is not trusted: pass the CA's certificate, "
                f"veil.connect(..., tls_root_certs=open('ca.pem', 'rb').read()). gRPC said: {e.message}"
            )
        if isinstance(e, Unavailable) and any(w in lowered for w in _CONNECT_FAILURES):
            tls = self.address.startswith("grpc+tls://")
            return CannotConnect(
                f"could not reach Veil at {self.address}: check that the server runs there and that the scheme matches "
                f"({'grpc+tls:// needs a server with TLS; use grpc:// for one without' if tls else 'grpc:// is for a server without TLS; use grpc+tls:// for one with TLS'}). "
                f"gRPC said: {e.message}"
            )
        return e

    # -- lifecycle -------------------------------------------------------
    def close(self):
        for c in list(self._others.values()) + self._lanes:
            c.close()
        self._others.clear()
        self._lanes.clear()
        self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- catalog -----------------------------------------------------------
    def list_datasets(self, requestable=False):
        """Names (`schema.name`) of the datasets you may read; with
        `requestable=True`, those open on request that you may not read yet
        (ask with `request_access`)."""
        criteria = b"requestable" if requestable else b""
        infos = self._call(lambda: list(self._client.list_flights(criteria, options=self._options)))
        return sorted(".".join(p.decode() if isinstance(p, bytes) else p for p in i.descriptor.path) for i in infos)

    def describe(self, name):
        """The dataset's dictionary as you see it: description, owners,
        experts (whom to ask about the data), tags, and columns with types,
        descriptions, tags and masks."""
        body = _proto.encode_describe(name)
        return _proto.decode_description(self._action("veil.describe", body)[0])

    def search(self, query, limit=None):
        """Datasets you can see whose name, description, tags, owners, experts or columns
        contain every word of `query`, best first: a list of dicts with
        name, description, access (read, or request), matches (where the
        words matched), owners, experts and tags."""
        if limit is not None and limit < 1:
            raise InvalidArgument("limit must be at least 1")
        body = _proto.encode_search(query, limit)
        return [_proto.decode_search_hit(b) for b in self._action("veil.search", body)]

    def preview(self, name, rows=10):
        """A few rows of a dataset as you may read them (policies applied)."""
        return self.scan_as_pandas(name, limit=rows)

    def schema(self, name, columns=None, filter=None):
        """The policy-applied Arrow schema of a scan."""
        return self._call(self._client.get_schema, _scan(name, columns, filter, None), self._options).schema

    def whoami(self):
        return _proto.decode_whoami(self._action("veil.whoami", b"")[0])

    # -- reads -------------------------------------------------------------
    def scan_batches(self, name, columns=None, filter=None, limit=None, progress=None, buffer=4):
        """Read a dataset through your policies as an iterator of
        `pyarrow.RecordBatch`es, yielded while the scan runs: the first
        batch arrives before the last is read, and at most `buffer` batches
        per endpoint wait in memory. Endpoints are read in parallel (up to
        `max_workers`) and yielded in order. Stop early and the rest is
        cancelled. `progress`: True for a progress bar (tqdm), or a
        function called with (rows so far, total rows or None)."""
        return self._batches(_scan(name, columns, filter, limit), progress, buffer, name)

    def scan_as_arrow(self, name, columns=None, filter=None, limit=None, progress=None):
        """Read a dataset through your policies into an Arrow table
        (hand it to duckdb, polars or pandas without a copy)."""
        return self._read(_scan(name, columns, filter, limit), progress, name)

    def scan_as_pandas(self, name, columns=None, filter=None, limit=None, types_mapper=None, progress=None):
        """Read a dataset through your policies into a pandas DataFrame.

        `types_mapper=pandas.ArrowDtype` keeps Arrow types and is much faster
        for large string columns.
        """
        table = self.scan_as_arrow(name, columns=columns, filter=filter, limit=limit, progress=progress)
        return _to_pandas(table, types_mapper)

    def scan_as_polars(self, name, columns=None, filter=None, limit=None, progress=None):
        """Read a dataset through your policies into a polars DataFrame."""
        return _to_polars(self.scan_as_arrow(name, columns=columns, filter=filter, limit=limit, progress=progress))

    def sql_batches(self, query, progress=None, buffer=4):
        """One read-only SELECT, as an iterator of record batches (see
        `scan_batches`)."""
        return self._batches(_sql(query), progress, buffer, "query")

    def sql_as_arrow(self, query, progress=None, privacy=False):
        """One read-only SELECT, as an Arrow table. With `privacy=True`,
        returns `(table, receipt)`: see `sql`."""
        if not privacy:
            return self._read(_sql(query), progress, "query", direct=True)
        receipts = []
        table = self._read(_sql(query, privacy_receipt=True), progress, "query", receipts.append, direct=True)
        return table, _receipt(receipts)

    def sql(self, query, types_mapper=None, progress=None, privacy=False):
        """One read-only SELECT over the datasets you may read, as pandas.

        On a dataset under differential privacy the answer carries noise.
        With `privacy=True`, returns `(frame, receipt)`: the receipt is a
        dict of what the answer cost you (`epsilon` the query spent,
        `charged` to you now: 0 for an answer you had seen, `spent` this
        period, `budget`, `remaining`, `resets_at` and `window_ends_at` as
        UTC datetimes, `unit`: "epsilon", or "rho" for the Gaussian
        mechanism, `budget_epsilon`: the budget in ε as the policy writes
        it; `delta_charged`, `delta_spent`, `delta_budget` and
        `delta_remaining`: the δ of releasing group keys the policy doesn't
        list), or None when the
        query read no such dataset."""
        if not privacy:
            return _to_pandas(self.sql_as_arrow(query, progress=progress), types_mapper)
        table, receipt = self.sql_as_arrow(query, progress=progress, privacy=True)
        return _to_pandas(table, types_mapper), receipt

    def sql_as_polars(self, query, progress=None):
        return _to_polars(self.sql_as_arrow(query, progress=progress))

    def dp_budget(self, dataset=None):
        """Differential privacy budgets: for each dataset under such a
        policy that you may read, your spending in the current period
        (owners, governors and auditors also see the dataset's and every
        user's), as a list of dicts."""
        body = _proto.encode_dp_budget(dataset or "")
        return [_timestamps(json.loads(b)) for b in self._action("veil.dp_budget", body)]

    # -- admin ---------------------------------------------------------------
    def set_user_disabled(self, subject, disabled=True, issuer=""):
        return _proto.decode_ack(self._action("veil.set_user_disabled", _proto.encode_set_user_disabled(subject, disabled, issuer))[0])

    def grant(self, subject, permission, issuer=""):
        return _proto.decode_ack(self._action("veil.grant_permission", _proto.encode_permission(subject, permission, issuer))[0])

    def revoke(self, subject, permission, issuer=""):
        return _proto.decode_ack(self._action("veil.revoke_permission", _proto.encode_permission(subject, permission, issuer))[0])

    def put_user(self, subject, groups=(), attributes=None, issuer=""):
        """Create or replace a user's directory entry (needs USER_ADMIN).
        ``attributes`` maps a key to a value or a list of values."""
        body = _proto.encode_put_user(subject, groups, attributes, issuer)
        return _proto.decode_ack(self._action("veil.put_user", body)[0])

    def delete_user(self, subject, issuer=""):
        """Delete a runtime directory entry (needs USER_ADMIN)."""
        return _proto.decode_ack(self._action("veil.delete_user", _proto.encode_delete_user(subject, issuer))[0])

    def list_users(self):
        """The directory as a list of dicts (needs USER_ADMIN)."""
        return [_proto.decode_user_entry(b) for b in self._action("veil.list_users", b"")]

    def reload(self):
        """Ask the server to re-read its config file (needs GOVERNANCE)."""
        return _proto.decode_ack(self._action("veil.reload", b"")[0])

    def audit_tail(self, limit=100):
        import json

        body = _proto.encode_audit_tail(limit)
        return [json.loads(b) for b in self._action("veil.audit_tail", body)]

    # -- internals -------------------------------------------------------------
    # -- policies ------------------------------------------------------------
    def create_policy(self, spec):
        """Create a policy: a dict (or JSON text) with the fields of a
        `[[policies]]` entry. Who may depends on its scope (README)."""
        body = _proto.encode_policy_write(_policy_json(spec))
        return _proto.decode_ack(self._action("veil.create_policy", body)[0])

    def update_policy(self, spec, expected_version=None):
        """Replace a runtime policy; with `expected_version`, only if nobody
        changed it since you read it."""
        body = _proto.encode_policy_write(_policy_json(spec), expected_version)
        return _proto.decode_ack(self._action("veil.update_policy", body)[0])

    def delete_policy(self, name, expected_version=None):
        body = _proto.encode_delete_policy(name, expected_version)
        return _proto.decode_ack(self._action("veil.delete_policy", body)[0])

    def list_policies(self, dataset=None):
        """Policies you govern or that apply to datasets you own (and, for
        data owners, every global policy), as dicts (name, id, version,
        origin, scope, spec)."""
        body = _proto.encode_list_policies(dataset or "")
        return [json.loads(b) for b in self._action("veil.list_policies", body)]

    def explain(self, user, dataset, groups=(), attributes=None, issuer=""):
        """What `user` gets from `dataset`, and why (governors and owners)."""
        body = _proto.encode_explain(user, dataset, groups, attributes, issuer)
        return json.loads(self._action("veil.explain", body)[0])

    def profile_k_anonymity(self, dataset, columns):
        """Profile columns of a dataset you own (or govern) for
        k-anonymization: rows, distinct values per column (against the
        cutoff), the data's current k and a suggested k."""
        body = _proto.encode_profile_k_anonymity(dataset, list(columns))
        return json.loads(self._action("veil.profile_k_anonymity", body)[0])

    def register_dataset(
        self,
        name,
        format=None,
        location=None,
        description="",
        hive_partitioned=False,
        *,
        connection=None,
        table=None,
        query=None,
        partition_column=None,
    ):
        """Register a dataset you own (needs CREATE_DATA_SOURCE, and the
        name's schema granted to you by your `veil.schemas` attribute unless
        you hold GOVERNANCE): either files under one of the server's roots
        (`format` and `location`, an absolute path as the server sees it, or
        s3://bucket/key), or a database relation: `connection` (a connection
        the server's config declares) and a `table` ("schema.table"; for
        MySQL "database.table") or, for governors, a `query` ("SELECT ...").
        A database dataset's columns, types, comments and primary key are
        read from the database; its reads split over endpoints by key ranges
        of `partition_column` (an integer column; default: a primary key of
        one integer column)."""
        if connection is None and (format is None or location is None):
            raise InvalidArgument("register files (format=, location=) or a database relation (connection=, table= or query=)")
        if connection is not None and (table is None) == (query is None):
            raise InvalidArgument("a database dataset reads either a table or a query: pass exactly one of table=, query=")
        body = _proto.encode_register_dataset(
            name,
            format or "",
            location or "",
            description,
            hive_partitioned,
            connection or "",
            table or "",
            query or "",
            partition_column or "",
        )
        return _proto.decode_ack(self._action("veil.register_dataset", body)[0])

    def accelerate(self, dataset, max_staleness_secs=None, refresh_secs=0, incremental_column=None, off=False):
        """Keep a local copy of a database dataset you own and serve reads
        from it while it is at most `max_staleness_secs` old, refreshing it
        every `refresh_secs` (0: only on demand, see `refresh`), by
        `incremental_column` if given; `off=True` stops."""
        if not off and not max_staleness_secs:
            raise InvalidArgument("max_staleness_secs is required (how old a copy may be served), or off=True")
        body = _proto.encode_accelerate(dataset, off, int(refresh_secs), int(max_staleness_secs or 0), incremental_column or "")
        return _proto.decode_ack(self._action("veil.accelerate", body)[0])

    def refresh(self, dataset):
        """Refresh an accelerated dataset's local copy now."""
        return _proto.decode_ack(self._action("veil.refresh", _proto.encode_refresh(dataset))[0])

    def drop_dataset(self, name):
        """Drop a dataset you registered at run time (the files stay)."""
        return _proto.decode_ack(self._action("veil.drop_dataset", _proto.encode_drop_dataset(name))[0])

    def set_description(self, dataset, description, column=None):
        """Set a dataset's description, or a column's."""
        body = _proto.encode_set_description(dataset, column or "", description)
        return _proto.decode_ack(self._action("veil.set_description", body)[0])

    def set_column_tags(self, dataset, column, tags):
        """Set a column's tags (an empty list clears them)."""
        body = _proto.encode_set_column_tags(dataset, column, list(tags))
        return _proto.decode_ack(self._action("veil.set_column_tags", body)[0])

    def set_experts(self, dataset, experts, issuer=""):
        """Name the people to ask about a dataset you own (replaces the
        list; an empty list clears it). Being an expert grants nothing."""
        body = _proto.encode_set_experts(dataset, list(experts), issuer)
        return _proto.decode_ack(self._action("veil.set_experts", body)[0])

    # -- sensitive data discovery ------------------------------------------
    def discover(self, dataset, sample_rows=None, min_confidence=None):
        """Sample a dataset you own (or govern) and propose column tags.

        Returns the report: ``proposals`` (column, tag, kind, confidence in
        percent, evidence), ``already_tagged``, ``previously_rejected`` and
        ``skipped`` columns. No sampled value is ever returned. Decide with
        `accept_tag` or `reject_tag`."""
        if sample_rows is not None and not 1 <= sample_rows <= 100_000:
            raise InvalidArgument("sample_rows must be from 1 to 100000")
        if min_confidence is not None and not 1 <= min_confidence <= 100:
            raise InvalidArgument("min_confidence is a percentage, 1 to 100")
        body = _proto.encode_discover(dataset, sample_rows, min_confidence)
        return json.loads(self._action("veil.discover", body)[0])

    def accept_tag(self, dataset, column, tag, tag_as=""):
        """Accept a proposed tag: the column gets it (or `tag_as`), and
        policies on that tag apply from the next request."""
        body = _proto.encode_decide_tag_proposal(dataset, column, tag, True, tag_as)
        return _proto.decode_ack(self._action("veil.decide_tag_proposal", body)[0])

    def reject_tag(self, dataset, column, tag):
        """Reject a proposed tag: discovery won't propose it again."""
        body = _proto.encode_decide_tag_proposal(dataset, column, tag, False)
        return _proto.decode_ack(self._action("veil.decide_tag_proposal", body)[0])

    # -- unmask requests -----------------------------------------------------
    def request_unmask(self, dataset, column, values, reason):
        """Ask to see the originals of masked values (from a reversible or
        format-preserving mask) of `column`, with a reason; returns the
        request. Someone the masking policy exempts decides."""
        body = _proto.encode_request_unmask(dataset, column, list(values), reason)
        return json.loads(self._action("veil.request_unmask", body)[0])

    def approve_unmask(self, request_id, note=""):
        body = _proto.encode_decide_access(request_id, note)
        return json.loads(self._action("veil.approve_unmask", body)[0])

    def deny_unmask(self, request_id, note=""):
        body = _proto.encode_decide_access(request_id, note)
        return json.loads(self._action("veil.deny_unmask", body)[0])

    def list_unmask_requests(self, dataset=None, all=False):
        """Unmask requests you may decide, and your own (pending only unless `all`)."""
        body = _proto.encode_list_access_requests(dataset or "", all)
        return [json.loads(b) for b in self._action("veil.list_unmask_requests", body)]

    def unmask_result(self, request_id):
        """The originals of your approved unmask request:
        ``{masked value: original}`` (values that can't be unmasked map to None)."""
        body = _proto.encode_unmask_result(request_id)
        out = json.loads(self._action("veil.unmask_result", body)[0])
        return {v["masked"]: v.get("value") for v in out["values"]}

    # -- access requests -----------------------------------------------------
    def request_access(self, dataset, reason):
        """Ask to read a dataset that is open on request; returns the request."""
        body = _proto.encode_request_access(dataset, reason)
        return json.loads(self._action("veil.request_access", body)[0])

    def approve_access(self, request_id, note=""):
        body = _proto.encode_decide_access(request_id, note)
        return json.loads(self._action("veil.approve_access", body)[0])

    def deny_access(self, request_id, note=""):
        body = _proto.encode_decide_access(request_id, note)
        return json.loads(self._action("veil.deny_access", body)[0])

    def list_access_requests(self, dataset=None, all=False):
        """Requests you may decide, and your own (pending only unless `all`)."""
        body = _proto.encode_list_access_requests(dataset or "", all)
        return [json.loads(b) for b in self._action("veil.list_access_requests", body)]

    def revoke_access(self, dataset, user, note="", issuer=""):
        """Withdraw `user`'s approved access; their next read is refused."""
        body = _proto.encode_revoke_access(dataset, user, note, issuer)
        return json.loads(self._action("veil.revoke_access", body)[0])

    def _action(self, name, body):
        results = self._call(lambda: list(self._client.do_action(flight.Action(name, body), self._options)))
        return [r.body.to_pybytes() for r in results]

    def _client_for(self, endpoint):
        plaintext = []
        for loc in endpoint.locations:
            uri = loc.uri.decode() if isinstance(loc.uri, bytes) else str(loc.uri)
            if uri and uri != _REUSE:
                if self.address.startswith("grpc+tls://") and not uri.startswith("grpc+tls://"):
                    # Over TLS, the token never goes to a plaintext location.
                    plaintext.append(uri)
                    continue
                with self._lanes_lock:
                    if uri not in self._others:
                        self._others[uri] = flight.FlightClient(uri, tls_root_certs=self._tls_root_certs)
                    return self._others[uri]
        reuse = any((l.uri.decode() if isinstance(l.uri, bytes) else str(l.uri)) == _REUSE for l in endpoint.locations)
        if plaintext and not reuse:
            raise CannotConnect(
                f"the endpoint's locations {', '.join(plaintext)} are not TLS, and this connection is: "
                "the token is not sent there (ask the operator to list grpc+tls:// locations)"
            )
        return self._client

    def _open(self, endpoint, index=0):
        client = self._client_for(endpoint)
        if client is self._client:
            client = self._lane(index)
        return self._call(client.do_get, endpoint.ticket, self._options)

    def _lane(self, index):
        """The connection endpoint `index` of a read is read over: one per
        endpoint read at once (up to `max_workers`), so the server writes
        them in parallel rather than through one connection."""
        k = index % max(1, self._max_workers)
        if k == 0:
            return self._client
        with self._lanes_lock:  # reader threads ask at once
            while len(self._lanes) < k:
                self._lanes.append(flight.FlightClient(self.address, tls_root_certs=self._tls_root_certs))
            return self._lanes[k - 1]

    def _info(self, descriptor):
        return self._call(self._client.get_flight_info, descriptor, self._options)

    def _batches(self, descriptor, progress, buffer, what):
        if buffer is not None and buffer < 1:
            raise InvalidArgument("buffer is at least 1 batch per endpoint")
        info = self._info(descriptor)
        return self._stream(info, progress, buffer, what)

    @contextlib.contextmanager
    def _reading(self, progress, total, what, notes, command):
        """One read's progress report, its Flight errors as Veil's, and
        the warnings when it returned no rows (`notes`: a function giving
        the plan's notes, asked only then; `command`: the read's)."""
        report = _stream.Progress(progress, total, what)
        try:
            yield report
        except (flight.FlightError, pa.ArrowException) as e:
            raise self._translate(e) from None
        finally:
            report.close()
        if report.rows == 0:
            filtered, masked = _proto.decode_read_notes(notes())
            _warn_masked(masked, _proto.expression_of(command))
            _warn_row_policy(filtered)

    def _stream(self, info, progress, buffer, what, on_metadata=None):
        with self._reading(
            progress, info.total_records, what, lambda: info.app_metadata, info.descriptor.command
        ) as report:
            runs = _proto.dealt_rows(info.app_metadata)
            for batch in _stream.batches(self._open, info.endpoints, self._max_workers, buffer, on_metadata, runs):
                report.add(batch.num_rows)
                yield batch

    def _read(self, descriptor, progress=None, what="read", on_metadata=None, direct=False):
        if direct:
            table = self._read_direct(descriptor, progress, what, on_metadata)
            if table is not None:
                return table
        info = self._info(descriptor)
        with self._reading(
            progress, info.total_records, what, lambda: info.app_metadata, descriptor.command
        ) as report:
            batches = _stream.collect(
                self._open,
                info.endpoints,
                self._max_workers,
                lambda b: report.add(b.num_rows),
                on_metadata,
                _proto.dealt_rows(info.app_metadata),
            )
        return pa.Table.from_batches(batches, schema=info.schema)

    def _read_direct(self, descriptor, progress, what, on_metadata):
        """The read in one call: `DoGet` of a ticket carrying the command.
        None when the server answers that the read has several parts (read
        in parallel through GetFlightInfo's endpoints instead)."""
        batches = []
        try:
            # Whether a row policy decides an empty answer: the plan's notes.
            notes = lambda: self._info(descriptor).app_metadata  # noqa: E731
            with self._reading(progress, None, what, notes, descriptor.command) as report:
                try:
                    reader = self._client.do_get(flight.Ticket(_DIRECT + descriptor.command), self._options)
                    while True:
                        try:
                            chunk = reader.read_chunk()
                        except StopIteration:
                            break
                        if chunk.data is not None:
                            report.add(chunk.data.num_rows)
                            batches.append(chunk.data)
                        elif chunk.app_metadata is not None and on_metadata is not None:
                            on_metadata(chunk.app_metadata.to_pybytes())
                    schema = reader.schema
                except (flight.FlightError, pa.ArrowException) as e:
                    if not batches and _IN_PARTS in str(e):
                        raise _InParts from None
                    raise
        except _InParts:
            return None
        return pa.Table.from_batches(batches, schema=schema)


class _InParts(Exception):
    """A direct read the server answered with `READ_IN_PARTS`."""


def _outside_stacklevel():
    """The `stacklevel` that makes a warning raised by our caller point at
    the first line outside this package: the user's own, whichever of the
    client's methods (and how many of them) the read went through."""
    frame, level = sys._getframe(1), 1
    while frame is not None and _ours(frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    return level


_HERE = os.path.dirname(os.path.abspath(__file__))


def _ours(filename):
    """A frame of this package, or of the `contextlib` machinery its
    methods read through."""
    return filename == contextlib.__file__ or os.path.dirname(os.path.abspath(filename)) == _HERE


# A query's conditions: what follows WHERE, ON, USING, HAVING or QUALIFY,
# up to the next clause.
_CONDITIONS = re.compile(
    r"\b(?:where|on|using|having|qualify)\b(.*?)"
    r"(?=\b(?:group|order|limit|union|except|intersect|join|window|from)\b|\)\s*select\b|$)",
    re.IGNORECASE | re.DOTALL,
)
# String literals, quoted names' quotes aside, and comments: not column names.
_NOT_NAMES = re.compile(r"'(?:[^']|'')*'|--[^\n]*|/\*.*?\*/", re.DOTALL)


def _warn_masked(masked, expression):
    """Warn when the caller's own filter, or a condition of their query,
    names columns they see masked: it compares the masked values, so it
    may match nothing."""
    kind, text = expression
    text = _NOT_NAMES.sub(" ", text)
    if kind == "sql":
        text = " ".join(m.group(1) for m in _CONDITIONS.finditer(text))
    words = {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text)}
    named = [c for c in masked if c.lower() in words]
    if named:
        where = "filter" if kind == "filter" else "query's condition"
        warnings.warn(
            MaskedColumnWarning(
                f"no rows: your {where} reads "
                f"{', '.join(named)}, which you see masked: it compares the masked values "
                "(as preview(name) shows them), not the originals"
            ),
            stacklevel=_outside_stacklevel(),
        )


def _warn_row_policy(filtered):
    if filtered:
        warnings.warn(
            RowPolicyWarning(
                f"no rows: a row policy on {', '.join(filtered)} decides which rows you see, "
                "from your attributes (whoami() shows them); it, or the read's own filter, "
                "left none. describe(name) shows rows_filtered; the dataset's owner can say more"
            ),
            stacklevel=_outside_stacklevel(),
        )


def _scan(name, columns, filter, limit):
    if isinstance(columns, str):
        # columns="age" means the column age, not the columns a, g, e;
        # "state, age" the two columns, as Spark's `columns` option.
        columns = [c.strip() for c in columns.split(",") if c.strip()]
    return flight.FlightDescriptor.for_command(_proto.encode_scan(name, columns, filter, limit))


def _sql(query, privacy_receipt=False):
    return flight.FlightDescriptor.for_command(_proto.encode_sql(query, privacy_receipt))


def _receipt(bodies):
    """The privacy receipt a DP answer's stream ended with (None: the
    query read no dataset under differential privacy)."""
    for body in bodies:
        r = json.loads(body)
        if r is None:
            continue
        for key in ("resets_at_ms", "window_ends_at_ms"):
            r.setdefault(key, None)
        return _timestamps(r)
    return None


def _timestamps(d):
    """`d` with each `<name>_at_ms` (milliseconds since the epoch, or
    None) as `<name>_at`, a timezone-aware datetime (or None)."""
    for key in [k for k in d if k.endswith("_at_ms")]:
        ms = d.pop(key)
        d[key[: -len("_ms")]] = (
            None if ms is None else datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
        )
    return d


def _to_polars(table):
    try:
        import polars as pl
    except ImportError:
        raise ImportError("polars is not installed: pip install polars") from None
    return pl.from_arrow(table, rechunk=False)


def _policy_json(spec):
    return spec if isinstance(spec, str) else json.dumps(spec)


def _to_pandas(table, types_mapper):
    # The streamed chunks are converted as they are: to_pandas copies each
    # column once either way, so combining chunks first only adds a copy
    # (measured: about 0.09 s against 0.14 s of CPU for 10 million rows of
    # eight columns, pandas 3). self_destruct frees the Arrow buffers as
    # columns are converted.
    return table.to_pandas(types_mapper=types_mapper, split_blocks=True, self_destruct=True)


def connect(address=None, token=None, **kwargs):
    """Connect to Veil; address and token default to VEIL_ADDRESS / VEIL_TOKEN."""
    return Connection(address=address, token=token, **kwargs)
