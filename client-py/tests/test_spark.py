"""PySpark (local mode, the machine's Java) reading governed datasets through
the `veil` data source. Runs in its own virtualenv (pyspark needs pandas < 3):
scripts/test does that; conftest.py leaves this file out where pyspark is
not installed."""

import os
import shutil
import sys

import pytest

import veil

if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
    pytest.skip("Java is not installed: PySpark needs a JVM (Java 17); install one to run the Spark tests", allow_module_level=True)

from pyspark.sql import SparkSession  # noqa: E402

from veil.spark import VeilDataSource  # noqa: E402


@pytest.fixture(scope="module")
def spark():
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    # Spark's Python workers need this interpreter: it has the veil package.
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2]")
        .appName("veil-tests")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.python.filterPushdown.enabled", "true")
        .getOrCreate()
    )
    session.dataSource.register(VeilDataSource)
    yield session
    session.stop()


def read(spark, server, user, **options):
    r = spark.read.format("veil").option("address", server.address).option("token", server.token(user))
    for k, v in options.items():
        r = r.option(k, v)
    return r.load()


def own(server, user):
    return veil.connect(server.address, server.token(user))


def test_a_dataset_reads_with_the_readers_policies(spark, server):
    df = read(spark, server, "alice", dataset="clinical.trials")
    with own(server, "alice") as conn:
        expected = conn.scan_as_pandas("clinical.trials")
        info = conn._info(veil.client._scan("clinical.trials", None, None, None))
    rows = df.select("participant_id", "state", "ssn").toPandas()
    assert len(rows) == len(expected) > 0
    assert set(rows["state"]) == {"CA"}
    assert rows["ssn"].str.len().eq(32).all()
    assert sorted(rows["participant_id"]) == sorted(expected["participant_id"])
    # One Spark partition per Flight endpoint.
    assert df.rdd.getNumPartitions() == len(info.endpoints)


def test_filters_options_and_spark_filters_agree_with_veil(spark, server):
    with own(server, "bob") as conn:
        expected = sorted(conn.scan_as_pandas("clinical.trials", columns=["participant_id"], filter="age > 80 AND state = 'CA'")["participant_id"])
    by_option = read(spark, server, "bob", dataset="clinical.trials", filter="age > 80").where("state = 'CA'")
    assert sorted(r.participant_id for r in by_option.select("participant_id").collect()) == expected
    for pushdown in ("false", "true"):
        by_spark = read(spark, server, "bob", dataset="clinical.trials", pushdown=pushdown).where("age > 80 AND state = 'CA'")
        assert sorted(r.participant_id for r in by_spark.select("participant_id").collect()) == expected
        quoted = read(spark, server, "bob", dataset="clinical.trials", pushdown=pushdown).where("state = 'C''A' OR state IN ('CA')")
        assert quoted.count() == read(spark, server, "bob", dataset="clinical.trials").where("state = 'CA'").count()
        like = read(spark, server, "bob", dataset="clinical.trials", pushdown=pushdown).where("state LIKE 'C%' AND NOT (state = 'CO')")
        assert like.count() == read(spark, server, "bob", dataset="clinical.trials").where("state LIKE 'C%' AND state != 'CO'").count()


def test_pushed_filters_reach_veil(spark, server):
    def served():
        with own(server, "dave") as conn:
            return conn.scan_as_pandas("veil.audit", filter="user = 'bob' AND action = 'read.end'")

    before = set(served()["event_id"])
    n = read(spark, server, "bob", dataset="clinical.trials", pushdown="true").where("age = 81").count()
    after = served()
    new = after[~after["event_id"].isin(before)]
    # Only the matching rows left Veil (without pushdown, all 120,000 would).
    assert 0 < n < 120_000
    assert new["rows"].sum() == n


def test_sql_and_columns(spark, server):
    counts = read(spark, server, "alice", sql="SELECT state, count(*) AS n FROM clinical.trials GROUP BY state").toPandas()
    assert counts["state"].tolist() == ["CA"]
    narrow = read(spark, server, "alice", dataset="clinical.trials", columns="participant_id, ssn")
    assert narrow.columns == ["participant_id", "ssn"]
    assert int(counts["n"][0]) == narrow.count()
    # A schema given to Spark names the columns to read; nullable as Spark
    # writes them, though Veil sends participant_id NOT NULL.
    given = (
        spark.read.format("veil")
        .schema("participant_id BIGINT, ssn STRING")
        .option("address", server.address)
        .option("token", server.token("alice"))
        .option("dataset", "clinical.trials")
        .load()
    )
    assert given.count() == narrow.count()
    assert sorted(r.ssn for r in given.collect()) == sorted(r.ssn for r in narrow.collect())


def test_a_hidden_dataset_is_not_found(spark, server):
    with pytest.raises(Exception, match="not found"):
        read(spark, server, "carol", dataset="clinical.trials").count()


def test_types_spark_lacks_are_widened_and_instants_kept(spark, server):
    # Unsigned integers, a time zone other than UTC and nanoseconds: Spark
    # has none of them, so they arrive widened (no value lost) and as
    # instants (microseconds: Spark's resolution).
    sql = """SELECT participant_id,
                    arrow_cast(255, 'UInt8') AS u8,
                    arrow_cast(4294967295, 'UInt32') AS u32,
                    arrow_cast('18446744073709551615', 'UInt64') AS u64,
                    arrow_cast(arrow_cast('2026-01-02T03:04:05.123456789Z', 'Timestamp(Nanosecond, Some("UTC"))'),
                               'Timestamp(Nanosecond, Some("Europe/Berlin"))') AS berlin
             FROM clinical.trials ORDER BY participant_id LIMIT 3"""
    df = read(spark, server, "alice", sql=sql)
    types = dict(df.dtypes)
    assert (types["u8"], types["u32"], types["u64"], types["berlin"]) == ("smallint", "bigint", "decimal(20,0)", "timestamp")
    rows = df.toArrow()
    with own(server, "alice") as conn:
        expected = conn.sql_as_arrow(sql)
    assert rows.num_rows == expected.num_rows == 3
    assert rows["participant_id"].to_pylist() == expected["participant_id"].to_pylist()
    assert set(rows["u8"].to_pylist()) == {255}
    assert set(rows["u32"].to_pylist()) == {4294967295}
    assert set(int(v) for v in rows["u64"].to_pylist()) == {18446744073709551615}
    import datetime

    instant = datetime.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=datetime.timezone.utc)
    assert {v.astimezone(datetime.timezone.utc) for v in rows["berlin"].to_pylist()} == {instant}


def test_nested_types_widen_and_casts_lose_only_sub_microseconds():
    import pyarrow as pa
    from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

    from veil.spark import _cast, _for_spark

    batch = pa.RecordBatch.from_pydict(
        {
            "l": pa.array([[1, 4294967295]], pa.list_(pa.uint32())),
            "m": pa.array([[("a", 65535)]], pa.map_(pa.string(), pa.uint16())),
            "s": pa.array([{"u": 255, "h": 1.5}], pa.struct([("u", pa.uint8()), ("h", pa.float16())])),
            "t": pa.array([1_000_000_123], pa.time64("ns")),
            "d": pa.array([86_400_000], pa.date64()),
        }
    )
    target = to_arrow_schema(from_arrow_schema(_for_spark(batch.schema)), timezone="UTC")
    out = _cast(batch, target).to_pylist()[0]
    assert out["l"] == [1, 4294967295] and out["m"] == [("a", 65535)]
    assert out["s"] == {"u": 255, "h": 1.5}
    assert str(out["t"]) == "00:00:01" and str(out["d"]) == "1970-01-02"
    # A value that doesn't fit is an error, never wrapped or clipped.
    with pytest.raises(pa.ArrowInvalid):
        _cast(pa.RecordBatch.from_pydict({"x": pa.array([300], pa.int64())}), pa.schema([("x", pa.int8())]))


def test_the_audit_reads_through_spark(spark, server):
    # veil.audit has timestamps with a time zone (dave holds AUDIT).
    df = read(spark, server, "dave", dataset="veil.audit", columns="seq, time, action")
    assert dict(df.dtypes)["time"] == "timestamp"
    first = df.orderBy("seq").limit(1).collect()
    assert len(first) == 1 and first[0].time is not None


def test_a_type_spark_cannot_hold_is_refused_by_name(spark, server):
    sql = "SELECT participant_id, interval '1 month 2 days' AS span FROM clinical.trials LIMIT 1"
    with pytest.raises(Exception, match="'span' is an interval"):
        read(spark, server, "alice", sql=sql).schema
