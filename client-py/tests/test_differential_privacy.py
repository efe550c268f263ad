"""Differential privacy from Python: noisy answers with receipts, refusals,
budgets, the same answers through ADBC (Flight SQL), and Veil's noise
cross-checked against OpenDP's on the same data."""

import math
import warnings

import pytest

import veil
from conftest import Server

POLICY = """
[[policies]]
name = "trials-dp"
dataset = "clinical.trials"
except = { groups = ["privileged"] }
[policies.differential_privacy]
privacy_unit = "participant_id"
epsilon = 0.1
delta = 1e-6
latency_tolerance = "24h"
groupable = ["state", "diagnosis"]
columns.age = { lower = 0, upper = 100 }
public_groups = { diagnosis = ["hypertension", "type 2 diabetes", "asthma", "migraine", "arthritis", "none"] }
"""


@pytest.fixture(scope="module")
def dp(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("veil-dp"), extra_config=POLICY)
    yield s
    s.stop()


def test_answers_come_noisy_with_a_receipt_and_are_kept(dp):
    alice = veil.connect(dp.address, token=dp.token("alice"))
    q = "SELECT diagnosis, COUNT(*) AS n FROM clinical.trials GROUP BY diagnosis ORDER BY diagnosis"
    frame, receipt = alice.sql(q, privacy=True)
    assert list(frame["diagnosis"]) == sorted(
        ["hypertension", "type 2 diabetes", "asthma", "migraine", "arthritis", "none"]
    )
    assert receipt["epsilon"] == 0.1 and receipt["charged"] == 0.1
    assert receipt["unit"] == "epsilon" and receipt["budget"] is None
    assert receipt["window_ends_at"].tzinfo is not None
    again, receipt = alice.sql(q, privacy=True)
    assert list(again["n"]) == list(frame["n"])
    assert receipt["charged"] == 0.0
    # Without privacy=True: just the frame; a query on no DP dataset has
    # no receipt.
    assert list(alice.sql(q)["n"]) == list(frame["n"])
    _, none = alice.sql("SELECT COUNT(*) FROM clinical.sites", privacy=True)
    assert none is None
    budgets = alice.dp_budget("clinical.trials")
    mine = [b for b in budgets if b["ledger"] == "you"][0]
    assert mine["spent"] == pytest.approx(0.1)
    # Times as datetimes, as in a receipt; no raw milliseconds left.
    assert not [k for b in budgets for k in b if k.endswith("_ms")]
    assert all(
        b[k] is None or b[k].tzinfo is not None for b in budgets for k in b if k.endswith("_at")
    )


def test_an_empty_answer_does_not_blame_the_row_policy(dp):
    # alice has a row policy (CA only); no rows here come from HAVING over
    # the noisy answer, and from private keys held back, not from it.
    alice = veil.connect(dp.address, token=dp.token("alice"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert alice.sql(
            "SELECT COUNT(*) AS n FROM clinical.trials HAVING COUNT(*) > 1000000000"
        ).empty
        assert alice.sql(
            "SELECT state, COUNT(*) AS n FROM clinical.trials WHERE age > 200 GROUP BY state"
        ).empty


def test_private_group_keys_spend_delta_shown_in_receipt_and_ledger(dp):
    erin = veil.connect(dp.address, token=dp.token("erin"))
    q = "SELECT state, COUNT(*) AS n FROM clinical.trials GROUP BY state"
    _, receipt = erin.sql(q, privacy=True)
    # Keys the policy doesn't list are released by threshold: δ spent.
    assert receipt["delta_charged"] == pytest.approx(1e-6)
    assert receipt["delta_spent"] == pytest.approx(1e-6)
    assert receipt["delta_budget"] is None  # no budgets in this policy
    assert receipt["delta_remaining"] is None and receipt["budget_epsilon"] is None
    _, receipt = erin.sql(
        "SELECT diagnosis, COUNT(*) FROM clinical.trials GROUP BY diagnosis", privacy=True
    )
    assert receipt["delta_charged"] == 0.0
    mine = [b for b in erin.dp_budget("clinical.trials") if b["ledger"] == "you"][0]
    assert mine["delta_spent"] == pytest.approx(1e-6)
    assert mine["query_delta"] == pytest.approx(1e-6)


def test_spending_shows_as_the_decimal_sum(dp):
    # 0.1 three times is 0.30000000000000004 as a float sum; receipts and
    # budgets show 0.3.
    dave = veil.connect(dp.address, token=dp.token("dave"))
    dave.put_user("gina", groups=["analysts"])
    gina = veil.connect(dp.address, token=dp.token("gina"))
    for i in range(3):
        _, receipt = gina.sql(
            f"SELECT COUNT(*) AS n FROM clinical.trials WHERE age > {1000 + i}", privacy=True
        )
        assert receipt["charged"] == 0.1
    assert 0.1 + 0.1 + 0.1 != 0.3
    assert receipt["spent"] == 0.3
    mine = [b for b in gina.dp_budget("clinical.trials") if b["ledger"] == "you"][0]
    assert mine["spent"] == 0.3
    # An overseer sees the dataset's ledger and gina's by name.
    ledgers = [b["ledger"] for b in dave.dp_budget("clinical.trials")]
    assert "dataset" in ledgers and "you" in ledgers
    assert {"issuer": "veil-demo", "subject": "gina"} in ledgers
    assert not mine["exempt"]
    # bob (privileged) is exempt: told so, next to the budget others have.
    bob = veil.connect(dp.address, token=dp.token("bob"))
    _, receipt = bob.sql("SELECT COUNT(*) AS n FROM clinical.trials", privacy=True)
    assert receipt is None
    assert [b["exempt"] for b in bob.dp_budget("clinical.trials") if b["ledger"] == "you"] == [True]


def test_raw_reads_and_other_shapes_are_refused_with_codes(dp):
    alice = veil.connect(dp.address, token=dp.token("alice"))
    with pytest.raises(veil.PermissionDenied, match=r"\[DP_ROW_LEVEL\]"):
        alice.scan_as_pandas("clinical.trials", limit=3)
    with pytest.raises(veil.PermissionDenied, match=r"\[DP_ROW_LEVEL\]"):
        alice.preview("clinical.trials")
    with pytest.raises(veil.InvalidArgument, match=r"\[DP_FUNCTION\]"):
        alice.sql("SELECT MAX(age) FROM clinical.trials")
    with pytest.raises(veil.InvalidArgument, match=r"\[DP_JOIN\]"):
        alice.sql("SELECT COUNT(*) FROM clinical.trials t JOIN clinical.sites s ON t.state = s.state")
    with pytest.raises(veil.InvalidArgument, match=r"\[DP_GROUP_BY\]"):
        alice.sql("SELECT COUNT(*) FROM clinical.trials GROUP BY participant_id")
    with pytest.raises(veil.InvalidArgument, match=r"\[DP_OPTIONS\]"):
        alice.sql("SELECT WITH DIFFERENTIAL_PRIVACY OPTIONS (epsilon => 5) COUNT(*) FROM clinical.trials")
    # bob is exempt: rows.
    bob = veil.connect(dp.address, token=dp.token("bob"))
    assert len(bob.scan_as_pandas("clinical.trials", limit=3)) == 3


def test_flight_sql_drivers_get_the_same_noisy_answer(dp):
    adbc = pytest.importorskip("adbc_driver_flightsql.dbapi")
    from adbc_driver_flightsql import DatabaseOptions

    token = dp.token("alice")
    q = "SELECT COUNT(*) AS n FROM clinical.trials WHERE age >= 30"
    ours = veil.connect(dp.address, token=token).sql(q)
    with adbc.connect(dp.address, db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"}) as conn:
        with conn.cursor() as cur:
            cur.execute(q)
            theirs = cur.fetch_arrow_table().to_pandas()
            assert int(theirs["n"][0]) == int(ours["n"][0])
            # A prepared statement with a parameter: the same question.
            cur.execute("SELECT COUNT(*) AS n FROM clinical.trials WHERE age >= ?", parameters=(30,))
            assert int(cur.fetch_arrow_table().to_pandas()["n"][0]) == int(ours["n"][0])
            with pytest.raises(Exception, match=r"DP_ROW_LEVEL"):
                cur.execute("SELECT * FROM clinical.trials")
                cur.fetch_arrow_table()


def _ks_statistic(a, b):
    """Two-sample Kolmogorov-Smirnov statistic."""
    a, b = sorted(a), sorted(b)
    values = sorted(set(a) | set(b))
    i = j = 0
    d = 0.0
    for v in values:
        while i < len(a) and a[i] <= v:
            i += 1
        while j < len(b) and b[j] <= v:
            j += 1
        d = max(d, abs(i / len(a) - j / len(b)))
    return d


def test_noise_matches_opendp_on_the_same_data(dp):
    """Veil's noisy COUNT, SUM and AVG against OpenDP's discrete Laplace
    with the same scales around bob's exact answers: the distributions
    agree (two-sample Kolmogorov-Smirnov at α = 0.00001, so the three
    comparisons fail together by chance about once in 30,000 runs; 250
    draws keep the test as sharp as 150 draws were at α = 0.001)."""
    dp_lib = pytest.importorskip("opendp.prelude")
    dp_lib.enable_features("contrib")
    # alice reads the CA rows (her row policy), under the DP policy.
    alice = veil.connect(dp.address, token=dp.token("alice"))
    bob = veil.connect(dp.address, token=dp.token("bob"))
    exact = bob.sql(
        "SELECT COUNT(*) AS n, SUM(age) AS s FROM clinical.trials WHERE state = 'CA' AND age > 0"
    )
    n, s = int(exact["n"][0]), int(exact["s"][0])
    eps = 0.1
    draws = 250

    def opendp_laplace(scale, k):
        m = dp_lib.m.make_laplace(dp_lib.atom_domain(T=int), dp_lib.absolute_distance(T=int), scale)
        return [m(0) for _ in range(k)]

    # Each spelling of the question is a fresh draw (`age > -i` keeps every
    # row), so many draws of one exact answer.
    veil_counts, veil_sums, veil_avgs = [], [], []
    for i in range(draws):
        row = alice.sql(
            f"SELECT COUNT(*) AS n FROM clinical.trials WHERE age > {-i}"
        )
        veil_counts.append(int(row["n"][0]) - n)
        row = alice.sql(f"SELECT SUM(age) AS s FROM clinical.trials WHERE age > {-i}")
        veil_sums.append(int(row["s"][0]) - s)
        row = alice.sql(f"SELECT AVG(age) AS a FROM clinical.trials WHERE age > {-i}")
        veil_avgs.append(float(row["a"][0]))
    # One measurement each: count scale 1/ε, sum scale 100/ε; the average
    # splits ε between a sum and a count.
    ours_counts = opendp_laplace(1 / eps, draws)
    ours_sums = opendp_laplace(100 / eps, draws)
    sum_noise = opendp_laplace(2 * 100 / eps, draws)
    count_noise = opendp_laplace(2 / eps, draws)
    ours_avgs = [min(100.0, max(0.0, (s + a) / max(1, n + b))) for a, b in zip(sum_noise, count_noise)]
    critical = math.sqrt(-0.5 * math.log(0.00001 / 2)) * math.sqrt(2 / draws)  # α = 0.00001
    for name, a, b in [("COUNT", veil_counts, ours_counts), ("SUM", veil_sums, ours_sums), ("AVG", veil_avgs, ours_avgs)]:
        d = _ks_statistic(a, b)
        assert d < critical, f"{name}: KS {d:.3f} >= {critical:.3f}"
    # And the spread is the right size, not merely the same shape twice.
    sd = math.sqrt(sum(x * x for x in veil_sums) / draws)
    assert 0.5 * math.sqrt(2) * 1000 < sd < 1.6 * math.sqrt(2) * 1000, sd
