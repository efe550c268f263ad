"""Governed datasets in Spark: a PySpark (4.0+) Python data source that
reads through Veil, one Spark partition per Flight endpoint, as Arrow
record batches.

    from veil.spark import VeilDataSource
    spark.dataSource.register(VeilDataSource)
    trials = (spark.read.format("veil")
              .option("dataset", "clinical.trials")
              .option("filter", "age > 60")        # optional, SQL over the columns you see
              .load())
    counts = spark.read.format("veil").option("sql", "SELECT state, count(*) AS n FROM clinical.trials GROUP BY state").load()

Options: `dataset` or `sql` (one of them); `columns` (comma-separated),
`filter`, `limit` with `dataset`; `address` and `token` (default: the
VEIL_ADDRESS and VEIL_TOKEN environment variables of the driver, which are
passed on to the executors with the plan). With `pushdown` set to `true`
(and Spark's `spark.sql.python.filterPushdown.enabled` on, Spark 4.1+),
Spark's own filters that Veil can run are pushed down to it; a schema given
with `.schema(...)` reads only those columns.

Types Spark has no equivalent for are widened losslessly (unsigned integers
to the next signed type, `UInt64` to `DECIMAL(20,0)`, half floats to
floats, `time32` to `time64`); timestamps with a time zone are Spark
`TIMESTAMP`s (instants), without one `TIMESTAMP_NTZ`; Spark keeps
microseconds, so nanosecond timestamps and times arrive truncated to the
microsecond. A column of a type Spark can't hold at all (an interval of
months, days and nanoseconds) is refused by name: leave it out with
`columns` or cast it in `sql`.
"""

import os

import pyarrow as pa
import pyarrow.flight as flight
from pyspark.sql.datasource import DataSource, DataSourceReader, InputPartition

from . import _proto
from .client import DEFAULT_ADDRESS, _address, connect
from .errors import VeilError


# Types Spark has no equivalent for, and the wider ones that hold every value.
_WIDER = {pa.uint8(): pa.int16(), pa.uint16(): pa.int32(), pa.uint32(): pa.int64(), pa.uint64(): pa.decimal128(20, 0), pa.float16(): pa.float32(), pa.date64(): pa.date32()}


def _is(kind, t):
    """`pa.types.<kind>(t)`, false where this pyarrow has no such type."""
    return getattr(pa.types, kind, lambda _: False)(t)


def _widened(name, t):
    """`t` as a type Spark converts from Arrow, without losing values."""
    if t in _WIDER:
        return _WIDER[t]
    if _is("is_string_view", t):
        return pa.string()
    if _is("is_binary_view", t):
        return pa.binary()
    if pa.types.is_time32(t):
        return pa.time64("us")
    if pa.types.is_interval(t):
        raise VeilError(f"column {name!r} is an interval of months, days and nanoseconds ({t}), which Spark can't hold: leave it out with the 'columns' option, or cast it in 'sql'")
    if any(_is(kind, t) for kind in ("is_list", "is_large_list", "is_fixed_size_list", "is_list_view", "is_large_list_view")):
        return pa.list_(_widened_field(name, t.value_field))
    if pa.types.is_map(t):
        return pa.map_(_widened_field(name, t.key_field), _widened_field(name, t.item_field))
    if pa.types.is_struct(t):
        return pa.struct([_widened_field(name, t.field(i)) for i in range(t.num_fields)])
    return t


def _widened_field(name, field):
    return field.with_type(_widened(name, field.type))


def _for_spark(schema):
    """The Arrow schema as Spark can take it (see the module's note)."""
    return pa.schema([_widened_field(f.name, f) for f in schema], metadata=schema.metadata)


def _cast(batch, schema):
    """`batch` as `schema`, column by column: every cast is lossless except
    to microsecond timestamps and times (Spark's resolution)."""
    if batch.schema.names != schema.names:
        raise VeilError(f"Veil sent the columns {batch.schema.names}, Spark expects {schema.names}")
    columns = []
    for column, field in zip(batch.columns, schema):
        if column.type != field.type:
            lossy = pa.types.is_timestamp(field.type) or pa.types.is_time(field.type)
            column = column.cast(field.type, safe=not lossy)
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _option(options, name):
    value = options.get(name)
    return value if value not in (None, "") else None


class _Request:
    """What to read, from the options (and pushed filters): picklable."""

    def __init__(self, options):
        self.address = _address(_option(options, "address") or os.environ.get("VEIL_ADDRESS") or DEFAULT_ADDRESS)
        self.token = _option(options, "token") or os.environ.get("VEIL_TOKEN")
        if not self.token:
            raise VeilError("no token: set VEIL_TOKEN or pass .option('token', ...) (for the demo: `veil token --user alice`)")
        self.dataset = _option(options, "dataset")
        self.sql = _option(options, "sql")
        if (self.dataset is None) == (self.sql is None):
            raise VeilError("give exactly one of .option('dataset', 'schema.name') and .option('sql', 'SELECT ...')")
        columns = _option(options, "columns")
        self.columns = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
        self.filter = _option(options, "filter")
        limit = _option(options, "limit")
        self.limit = int(limit) if limit is not None else None
        if self.sql is not None and (self.columns or self.filter or self.limit is not None):
            raise VeilError("columns, filter and limit go with 'dataset'; with 'sql', write them in the query")
        self.pushed = []

    def descriptor(self):
        if self.sql is not None:
            return flight.FlightDescriptor.for_command(_proto.encode_sql(self.sql))
        filters = [f"({f})" for f in ([self.filter] if self.filter else []) + self.pushed]
        where = " AND ".join(filters) or None
        return flight.FlightDescriptor.for_command(_proto.encode_scan(self.dataset, self.columns, where, self.limit))

    def connection(self):
        return connect(self.address, self.token)


class VeilDataSource(DataSource):
    """`spark.read.format("veil")`"""

    @classmethod
    def name(cls):
        return "veil"

    def schema(self):
        request = _Request(self.options)
        with request.connection() as conn:
            schema = conn._info(request.descriptor()).schema
        from pyspark.sql.pandas.types import from_arrow_schema

        return from_arrow_schema(_for_spark(schema))

    def reader(self, schema):
        request = _Request(self.options)
        # Spark refuses a reader that can take filters unless its
        # `spark.sql.python.filterPushdown.enabled` is on, and the reader
        # can't see that setting: the `pushdown` option says it is.
        if (_option(self.options, "pushdown") or "false").lower() == "true":
            return VeilPushdownReader(request, schema)
        return VeilReader(request, schema)


class _Endpoint(InputPartition):
    def __init__(self, ticket, locations):
        super().__init__(ticket)
        self.ticket = ticket
        self.locations = locations


# Spark's filters Veil runs, as SQL over the columns the reader sees.
_COMPARISONS = {
    "EqualTo": "=",
    "EqualNullSafe": "IS NOT DISTINCT FROM",
    "GreaterThan": ">",
    "GreaterThanOrEqual": ">=",
    "LessThan": "<",
    "LessThanOrEqual": "<=",
}


def _name(attribute):
    parts = attribute if isinstance(attribute, (tuple, list)) else (attribute,)
    if len(parts) != 1:
        return None
    return '"' + parts[0].replace('"', '""') + '"'


def _literal(value):
    import datetime
    import decimal

    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, decimal.Decimal)):
        return str(value)
    if isinstance(value, float):
        return repr(value) if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, datetime.datetime):
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    if isinstance(value, datetime.date):
        return f"DATE '{value.isoformat()}'"
    return None


def _to_sql(f):
    kind = type(f).__name__
    if kind in _COMPARISONS:
        column, value = _name(f.attribute), _literal(f.value)
        return None if column is None or value is None else f"{column} {_COMPARISONS[kind]} {value}"
    if kind in ("IsNull", "IsNotNull"):
        column = _name(f.attribute)
        return None if column is None else f"{column} IS {'' if kind == 'IsNull' else 'NOT '}NULL"
    if kind == "In":
        column = _name(f.attribute)
        values = [_literal(v) for v in f.value]
        if column is None or not values or any(v is None for v in values):
            return None
        return f"{column} IN ({', '.join(values)})"
    if kind == "Not":
        inner = _to_sql(f.child)
        return None if inner is None else f"NOT ({inner})"
    if kind in ("StringStartsWith", "StringEndsWith", "StringContains"):
        column, value = _name(f.attribute), f.value
        if column is None or not isinstance(value, str):
            return None
        escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("'", "''")
        pattern = {"StringStartsWith": f"{escaped}%", "StringEndsWith": f"%{escaped}", "StringContains": f"%{escaped}%"}[kind]
        return f"{column} LIKE '{pattern}' ESCAPE '\\'"
    return None


class VeilReader(DataSourceReader):
    def __init__(self, request, schema):
        self.request = request
        from pyspark.sql.pandas.types import to_arrow_schema

        # What Spark expects: batches are cast to it (a schema given with
        # .schema(...) has nullable columns where Veil may send NOT NULL;
        # Spark's worker reads instants in UTC).
        self.arrow_schema = to_arrow_schema(schema, timezone="UTC")
        # A schema given with .schema(...) names the columns to read.
        names = [f.name for f in schema.fields]
        if request.dataset is not None and request.columns is None:
            full = [f.name for f in VeilDataSource(_options_of(request)).schema().fields]
            if names != full:
                request.columns = names

    def partitions(self):
        with self.request.connection() as conn:
            info = conn._info(self.request.descriptor())
        return [
            _Endpoint(ep.ticket.ticket, [loc.uri.decode() if isinstance(loc.uri, bytes) else str(loc.uri) for loc in ep.locations])
            for ep in info.endpoints
        ]

    def read(self, partition):
        with self.request.connection() as conn:
            endpoint = flight.FlightEndpoint(partition.ticket, partition.locations)
            reader = conn._open(endpoint)
            while True:
                try:
                    chunk = reader.read_chunk()
                except StopIteration:
                    return
                except Exception as e:
                    raise conn._translate(e) from None
                batch = chunk.data
                if batch is None or batch.num_rows == 0:
                    continue
                if not batch.schema.equals(self.arrow_schema):
                    batch = _cast(batch, self.arrow_schema)
                yield batch


class VeilPushdownReader(VeilReader):
    """A reader that takes Spark's filters (`pushdown` option, with
    `spark.sql.python.filterPushdown.enabled` on: Spark 4.1 and later)."""

    def pushFilters(self, filters):
        """Take the filters Veil can run; return the rest to Spark."""
        if self.request.sql is not None or self.request.limit is not None:
            # A limit applies after the filter: pushing one would change
            # which rows are read.
            return list(filters)
        rest = []
        for f in filters:
            sql = _to_sql(f)
            if sql is None:
                rest.append(f)
            else:
                self.request.pushed.append(sql)
        return rest


def _options_of(request):
    options = {"address": request.address, "token": request.token, "dataset": request.dataset}
    if request.filter:
        options["filter"] = request.filter
    return options
