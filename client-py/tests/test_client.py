"""The Python client against a real Veil server."""

import pandas as pd
import pyarrow as pa
import pytest

import veil


def connect(server, user):
    return veil.connect(server.address, server.token(user))


def test_scan_as_pandas_applies_policies(server):
    with connect(server, "alice") as conn:
        df = conn.scan_as_pandas("clinical.trials")
    assert len(df) > 0
    assert set(df["state"]) == {"CA"}
    assert df["ssn"].str.len().eq(32).all()
    assert df["ip_address"].eq("0.0.0.0").all()
    assert df["date_of_birth"].isna().all()
    with connect(server, "bob") as conn:
        raw = conn.scan_as_pandas("clinical.trials")
    assert len(raw) == 120_000
    assert raw["ssn"].str.match(r"^\d{3}-\d{2}-\d{4}$").all()
    assert set(df["participant_id"]) <= set(raw.loc[raw["state"] == "CA", "participant_id"])
    assert len(df) == (raw["state"] == "CA").sum()


def test_kept_masks_read_back_the_same_values(server):
    """After a masked read, Veil keeps a masked copy of the file (README,
    "Kept copies"); reads served from it, whole and in endpoints, give the
    very rows and values the first read computed."""
    import time

    log = server.dir / "veil.log"

    def masked_copy_kept():
        # A copy with stored (masked) columns, not only a decoded one.
        return any(
            "kept a copy of a file" in line and "stored_columns=0" not in line
            for line in log.read_text().splitlines()
        )

    with connect(server, "alice") as conn:
        first = conn.scan_as_pandas("clinical.trials")
        deadline = time.monotonic() + 120
        while not masked_copy_kept():
            assert time.monotonic() < deadline, "no kept copy within 120 s"
            time.sleep(0.2)
        time.sleep(1.0)
        again = conn.scan_as_pandas("clinical.trials")
        narrow = conn.scan_as_pandas("clinical.trials", columns=["participant_id", "ssn"], filter="amount > 100")
    key = "participant_id"
    pd.testing.assert_frame_equal(
        first.sort_values(key).reset_index(drop=True), again.sort_values(key).reset_index(drop=True)
    )
    expected = first.loc[first["amount"] > 100, ["participant_id", "ssn"]]
    pd.testing.assert_frame_equal(
        expected.sort_values(key).reset_index(drop=True), narrow.sort_values(key).reset_index(drop=True)
    )


def test_environment_defaults_and_context_manager(server, monkeypatch):
    monkeypatch.setenv("VEIL_ADDRESS", server.address)
    monkeypatch.setenv("VEIL_TOKEN", server.token("carol"))
    with veil.connect() as conn:
        assert conn.list_datasets() == ["clinical.sites"]
    monkeypatch.delenv("VEIL_TOKEN")
    with pytest.raises(veil.Unauthenticated, match="VEIL_TOKEN"):
        veil.connect()


def test_columns_filter_limit_and_types_mapper(server):
    with connect(server, "alice") as conn:
        df = conn.scan_as_pandas("clinical.trials", columns=["participant_id", "age"], filter="age >= 80", limit=10)
        assert list(df.columns) == ["participant_id", "age"]
        assert len(df) == 10
        assert (df["age"] >= 80).all()
        arrow_backed = conn.scan_as_pandas("clinical.trials", columns=["ssn"], limit=5, types_mapper=pd.ArrowDtype)
        assert isinstance(arrow_backed["ssn"].dtype, pd.ArrowDtype)
        table = conn.scan_as_arrow("clinical.trials", columns=["ssn"], limit=5)
        assert table.schema.field("ssn").type == pa.string()
        schema = conn.schema("clinical.trials")
        assert schema.field("ssn").type == pa.string()
        assert schema.field("date_of_birth").type == pa.date32()
        assert schema.names == conn.scan_as_arrow("clinical.trials", limit=1).schema.names


def test_sql_and_describe(server):
    with connect(server, "alice") as conn:
        df = conn.sql(
            "SELECT s.site, count(*) AS n FROM clinical.trials t JOIN clinical.sites s ON t.state = s.state GROUP BY s.site"
        )
        assert df["site"].tolist() == ["CA University Hospital"]
        d = conn.describe("clinical.trials")
        assert d["rows_filtered"] is True
        cols = {c["name"]: c for c in d["columns"]}
        assert cols["ssn"]["mask"] == "hash" and cols["ssn"]["type"] == "Utf8"
        assert "PII.ssn" in cols["ssn"]["tags"]
        assert cols["age"]["mask"] is None
        assert conn.whoami()["attributes"] == {"state": ["CA"]}


def test_errors_carry_the_server_message(server):
    with connect(server, "carol") as conn:
        with pytest.raises(veil.NotFound) as hidden:
            conn.scan_as_pandas("clinical.trials")
        with pytest.raises(veil.NotFound) as missing:
            conn.scan_as_pandas("clinical.nothing")
        assert hidden.value.message.replace("trials", "X") == missing.value.message.replace("nothing", "X")
        with pytest.raises(veil.InvalidArgument, match="SELECT"):
            conn.sql("DROP TABLE clinical.sites")
        with pytest.raises(veil.PermissionDenied):
            conn.audit_tail()
    with pytest.raises(veil.Unauthenticated):
        veil.connect(server.address, "not-a-token").list_datasets()


def test_admin_from_python(server):
    with connect(server, "dave") as dave:
        events = dave.audit_tail(50)
        assert any(e["action"] == "read.start" for e in events)
        dave.set_user_disabled("erin", True)
        with pytest.raises(veil.PermissionDenied, match="disabled"):
            connect(server, "erin").list_datasets()
        dave.set_user_disabled("erin", False)
        assert connect(server, "erin").list_datasets()


def test_directory_and_reload_from_python(server):
    with connect(server, "dave") as dave:
        dave.put_user("gina", groups=["analysts"], attributes={"state": ["NY", "TX"]})
        entry = next(u for u in dave.list_users() if u["subject"] == "gina")
        assert entry["groups"] == ["analysts"]
        assert entry["attributes"] == {"state": ["NY", "TX"]}
        assert entry["origin"] == "runtime"
        assert next(u for u in dave.list_users() if u["subject"] == "alice")["origin"] == "config"
        gina = connect(server, "gina")
        states = set(gina.scan_as_pandas("clinical.trials", columns=["state"])["state"])
        assert states == {"NY", "TX"}
        with pytest.raises(veil.FailedPrecondition, match="config file"):
            dave.put_user("alice", groups=["privileged"])
        dave.delete_user("gina")
        with pytest.raises(veil.NotFound):
            gina.scan_as_pandas("clinical.trials")
        assert dave.reload().startswith("reloaded")
    with connect(server, "alice") as alice:
        with pytest.raises(veil.PermissionDenied, match="GOVERNANCE"):
            alice.reload()


def test_admin_command_line(server):
    """`veil admin` talks to the running server with VEIL_ADDRESS / VEIL_TOKEN."""
    import os
    import subprocess

    env = dict(os.environ, VEIL_ADDRESS=server.address, VEIL_TOKEN=server.token("dave"))
    run = lambda *args: subprocess.run([server.bin, "admin", *args], env=env, capture_output=True, text=True)
    out = run("users")
    assert out.returncode == 0, out.stderr
    assert "alice (issuer veil-demo) [config]" in out.stdout
    out = run("put-user", "hank", "--group", "analysts", "--attr", "state=CA")
    assert out.returncode == 0 and "saved" in out.stdout, out.stderr
    out = run("describe", "clinical.trials")
    assert out.returncode == 0 and "ssn" in out.stdout, out.stderr
    out = run("reload")
    assert out.returncode == 0 and out.stdout.startswith("reloaded"), out.stderr
    out = run("delete-user", "hank")
    assert out.returncode == 0, out.stderr
    # A preview that shows no rows says so, with the columns, not an empty table.
    env["VEIL_TOKEN"] = server.token("erin")
    out = run("preview", "clinical.trials")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("no rows of clinical.trials for you (columns: participant_id"), out.stdout
    assert "++" not in out.stdout
    env["VEIL_TOKEN"] = server.token("alice")
    out = run("grant", "alice", "AUDIT")
    assert out.returncode == 1
    assert "USER_ADMIN" in out.stderr


def test_policies_explain_and_access_requests_from_python(server):
    with connect(server, "dave") as dave:
        msg = dave.create_policy(
            {
                "name": "site-regex",
                "dataset": "clinical.sites",
                "columns": ["site"],
                "chain": [
                    {"who": {"groups": ["privileged"]}, "exempt": True},
                    {"otherwise": True, "mask": {"regex": {"pattern": r"\w+$", "replacement": "***"}}},
                ],
            }
        )
        assert "version 1" in msg
        assert any(p["name"] == "site-regex" and p["version"] == 1 for p in dave.list_policies("clinical.sites"))
        with pytest.raises(veil.FailedPrecondition, match="text columns"):
            dave.create_policy({"name": "bad", "dataset": "clinical.sites", "columns": ["beds"], "mask": {"regex": {"pattern": "1", "replacement": "x"}}})
        explained = dave.explain("carol", "clinical.sites")
        assert explained["access"] == "read"
        assert explained["masks"] == {"site": "regex"}
        assert explained["policies"][0]["outcome"].startswith("step 2 (otherwise)")
        sites = connect(server, "carol").scan_as_pandas("clinical.sites")
        assert set(sites["site"]) == {f"{s} University ***" for s in sites["state"]}
        # Open on request: visible to carol, readable once dave (an owner) approves.
        dave.create_policy({"name": "sites-on-request", "dataset": "clinical.sites", "subscription": {"on_request": True}})
    carol = connect(server, "carol")
    assert "clinical.sites" in carol.list_datasets(requestable=True)
    assert carol.describe("clinical.sites")["access"] == "request"
    with pytest.raises(veil.PermissionDenied, match="request"):
        carol.scan_as_pandas("clinical.sites")
    request = carol.request_access("clinical.sites", "mapping site capacity")
    with pytest.raises(veil.PermissionDenied, match="own"):
        carol.approve_access(request["id"])
    with connect(server, "dave") as dave:
        assert [r["id"] for r in dave.list_access_requests()] == [request["id"]]
        assert dave.approve_access(request["id"], note="ok")["status"] == "approved"
        assert len(carol.scan_as_pandas("clinical.sites")) == 10
        dave.revoke_access("clinical.sites", "carol")
        with pytest.raises(veil.PermissionDenied):
            carol.scan_as_pandas("clinical.sites")
        dave.delete_policy("sites-on-request")
        dave.delete_policy("site-regex")
    assert len(carol.scan_as_pandas("clinical.sites")) == 10


def test_explain_command_line(server):
    import json
    import os
    import subprocess

    env = dict(os.environ, VEIL_ADDRESS=server.address, VEIL_TOKEN=server.token("dave"))
    out = subprocess.run(
        [server.bin, "explain", "--user", "alice", "--dataset", "clinical.trials"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    explained = json.loads(out.stdout)
    assert explained["access"] == "read"
    assert explained["masks"]["ssn"] == "hash"
    assert explained["row_filters"][0]["rule"] == "keep rows where state matches the user's 'state'"
    env["VEIL_TOKEN"] = server.token("alice")
    out = subprocess.run(
        [server.bin, "explain", "--user", "bob", "--dataset", "clinical.trials"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
    assert "GOVERNANCE" in out.stderr


def test_k_anonymity_from_python(server):
    with connect(server, "dave") as dave:
        profile = dave.profile_k_anonymity("clinical.sites", ["state"])
        assert profile["rows"] == 10
        assert profile["columns"][0]["eligible"]
        assert 2 <= profile["suggested_k"] <= 10
        dave.create_policy(
            {
                "name": "sites-k",
                "dataset": "clinical.sites",
                "columns": ["state"],
                "mask": {"k_anonymity": {"k": 2}},
                "except": {"users": ["dave"]},
            }
        )
        try:
            raw = dave.scan_as_pandas("clinical.sites")
            seen = raw["state"].value_counts(dropna=False)
            carol = connect(server, "carol").scan_as_pandas("clinical.sites")
            merged = raw.merge(carol, on="beds", suffixes=("_raw", "_k"))
            assert len(merged) == 10, "rows are kept"
            for _, row in merged.iterrows():
                if seen[row["state_raw"]] >= 2:
                    assert row["state_k"] == row["state_raw"]
                else:
                    assert row["state_k"] is None or row["state_k"] != row["state_k"]
            assert profile["current_k"] == int(seen.min())
        finally:
            dave.delete_policy("sites-k")


def test_unmask_requests_from_python(server):
    with connect(server, "dave") as dave:
        dave.create_policy(
            {
                "name": "sites-reversible",
                "dataset": "clinical.sites",
                "columns": ["site"],
                "mask": "reversible",
                "except": {"groups": ["privileged"]},
            }
        )
    try:
        carol = connect(server, "carol")
        sites = carol.scan_as_pandas("clinical.sites")
        token = sites["site"].iloc[0]
        assert token.startswith("rv1.")
        request = carol.request_unmask("clinical.sites", "site", [token], "calling the site")
        assert request["status"] == "pending"
        with pytest.raises(veil.PermissionDenied):
            carol.approve_unmask(request["id"])
        bob = connect(server, "bob")  # privileged: exempt
        assert [r["id"] for r in bob.list_unmask_requests()] == [request["id"]]
        assert bob.approve_unmask(request["id"], note="ok")["status"] == "approved"
        originals = carol.unmask_result(request["id"])
        raw = bob.scan_as_pandas("clinical.sites")
        assert originals[token] in set(raw["site"])
        with pytest.raises(veil.NotFound):
            bob.unmask_result(request["id"])
    finally:
        with connect(server, "dave") as dave:
            dave.delete_policy("sites-reversible")


def test_the_audit_is_a_dataset_for_auditors(server):
    with connect(server, "bob") as conn:
        conn.scan_as_pandas("clinical.trials", columns=["state"], limit=10)
        with pytest.raises(veil.NotFound):
            conn.scan_as_pandas("veil.audit")
    with connect(server, "dave") as conn:
        assert "veil.audit" in conn.list_datasets()
        audit = conn.scan_as_pandas("veil.audit", filter="user = 'bob'")
        reads = audit[(audit["action"] == "read.end") & (audit["dataset"] == "clinical.trials")]
        assert len(reads) >= 1
        assert (reads["columns"] == "state").any()
        assert (reads.loc[reads["columns"] == "state", "rows"] == 10).all()
        assert set(audit["user"]) == {"bob"}
        assert audit["seq"].is_unique or audit["node_id"].nunique() > 1
        counts = conn.sql("SELECT action, count(*) AS n FROM veil.audit GROUP BY action")
        assert "read.start" in set(counts["action"])


def test_search_finds_only_what_you_may_see(server):
    with connect(server, "alice") as conn:
        hits = conn.search("ssn")
        assert [h["name"] for h in hits] == ["clinical.trials"]
        assert "column ssn" in hits[0]["matches"]
        assert hits[0]["access"] == "read"
        assert conn.search("audit") == [], "veil.audit is invisible without AUDIT"
        assert conn.search("no-such-word-anywhere") == []
        preview = conn.preview("clinical.trials", rows=5)
        assert len(preview) == 5
        assert set(preview["state"]) == {"CA"}, "policies apply to previews"
        assert preview["ssn"].str.len().eq(32).all()
    with connect(server, "carol") as conn:
        assert conn.search("ssn") == [], "carol can't see the trials"
        assert [h["name"] for h in conn.search("state")] == ["clinical.sites"]
    with connect(server, "dave") as conn:
        assert "veil.audit" in [h["name"] for h in conn.search("audit")]


def test_discovery_and_experts_from_python(server):
    import csv

    folder = server.dir / "data" / "py"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "leads.csv"
    emails = [f"lead{i}@example.org" for i in range(60)]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["lead", "mail", "score"])
        for i, e in enumerate(emails):
            w.writerow([i, e, i % 7])
    with connect(server, "dave") as dave:
        assert "registered" in dave.register_dataset("py.leads", "csv", str(path), description="Sales leads")
        try:
            assert "experts of py.leads: " in dave.set_experts("py.leads", ["erin"])
            d = dave.describe("py.leads")
            assert d["experts"] == ["erin"] and d["description"] == "Sales leads"
            assert dave.search("leads")[0]["experts"] == ["erin"]

            report = dave.discover("py.leads")
            assert [(p["column"], p["tag"]) for p in report["proposals"]] == [("mail", "PII.email")]
            assert report["proposals"][0]["confidence"] >= 80
            assert not any(e in str(report) for e in emails), "no sampled value comes back"
            with pytest.raises(ValueError):
                dave.discover("py.leads", min_confidence=101)

            assert dave.scan_as_pandas("py.leads")["mail"].str.contains("@").all()
            assert "PII.email" in dave.accept_tag("py.leads", "mail", "PII.email")
            masked = dave.scan_as_pandas("py.leads")["mail"]
            assert not masked.str.contains("@").any(), "hash-pii applies from the next read"
            with pytest.raises(veil.NotFound):
                dave.reject_tag("py.leads", "mail", "PII.email")
        finally:
            dave.set_column_tags("py.leads", "mail", [])
            dave.drop_dataset("py.leads")
    with connect(server, "erin") as erin:
        with pytest.raises(veil.NotFound):
            erin.discover("py.leads")


def test_discover_command_line(server):
    import os
    import subprocess

    folder = server.dir / "data" / "cli"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "people.csv"
    path.write_text("id,ssn,ip\n" + "".join(f"{i},{100 + i:03}-{10 + i:02}-{1000 + i:04},10.0.0.{i + 1}\n" for i in range(40)))
    env = dict(os.environ, VEIL_ADDRESS=server.address, VEIL_TOKEN=server.token("dave"))
    run = lambda *args: subprocess.run([server.bin, *args], env=env, capture_output=True, text=True)
    out = run("admin", "register", "cli.people", "--format", "csv", "--location", str(path))
    assert out.returncode == 0, out.stderr
    try:
        # Out of range: refused before anything is sampled.
        for flag, value in (("--sample", "0"), ("--sample", "100001"), ("--min-confidence", "0"), ("--min-confidence", "101")):
            out = run("discover", "cli.people", flag, value)
            assert out.returncode != 0 and "not in 1..=" in out.stderr, (flag, value, out.stderr)
        out = run("discover", "cli.people", "--sample", "40", "--min-confidence", "50")
        assert out.returncode == 0, out.stderr
        assert "sampled 40 rows" in out.stdout, out.stdout
        out = run("discover", "cli.people")
        assert out.returncode == 0, out.stderr
        assert "PII.ssn" in out.stdout and "PII.ip.v4" in out.stdout, out.stdout
        assert "100-10-1000" not in out.stdout
        assert "decide: veil discover cli.people --accept" in out.stdout
        out = run("discover", "cli.people", "--reject", "ip=PII.ip.v4", "--accept", "ssn=PII.ssn")
        assert out.returncode == 0, out.stderr
        assert "accepted" in out.stdout and "rejected" in out.stdout
        out = run("discover", "cli.people", "--json")
        assert out.returncode == 0, out.stderr
        import json

        report = json.loads(out.stdout)
        assert report["proposals"] == []
        assert report["previously_rejected"] == [{"column": "ip", "tag": "PII.ip.v4", "rejected_by": "dave (veil-demo)"}]
        out = run("discover", "cli.people", "--accept", "ssn")
        assert out.returncode == 1 and "COLUMN=TAG" in out.stderr
    finally:
        run("admin", "set-tags", "cli.people", "ssn")
        run("admin", "drop", "cli.people")
