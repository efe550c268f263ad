"""What someone new to Veil (or to SQL) runs into, answered so they know
what to do next."""

import os
import subprocess
import warnings

import pytest

import veil


def connect(server, user):
    return veil.connect(server.address, server.token(user))


def test_text_in_double_quotes_says_to_use_single_quotes(server):
    with connect(server, "alice") as conn:
        with pytest.raises(veil.InvalidArgument) as e:
            conn.scan_as_pandas("clinical.trials", filter='state == "CA"')
        assert "single quotes, 'CA'" in e.value.message
        with pytest.raises(veil.InvalidArgument) as e:
            conn.sql('SELECT count(*) FROM clinical.trials WHERE state = "CA"')
        assert "single quotes, 'CA'" in e.value.message


def test_a_column_typo_suggests_the_column_as_you_know_it(server):
    with connect(server, "alice") as conn:
        for read in (
            lambda: conn.scan_as_pandas("clinical.trials", columns=["snn"]),
            lambda: conn.scan_as_pandas("clinical.trials", filter="snn = 'x'"),
        ):
            with pytest.raises(veil.InvalidArgument) as e:
                read()
            assert "'ssn'" in e.value.message
            assert "veil." not in e.value.message


def test_a_dataset_named_without_its_schema(server):
    with connect(server, "alice") as conn:
        with pytest.raises(veil.NotFound) as e:
            conn.sql("SELECT count(*) FROM trials")
        assert "did you mean clinical.trials?" in e.value.message
        assert "public" not in e.value.message
    # Only datasets the reader may read are suggested: for carol, trials
    # answers exactly like a name that exists nowhere.
    with connect(server, "carol") as conn:
        answers = []
        for name in ("trials", "nothing"):
            with pytest.raises(veil.NotFound) as e:
                conn.sql(f"SELECT count(*) FROM {name}")
            answers.append(e.value.message.replace(name, "X"))
        assert answers[0] == answers[1]
        assert "schema and name" in answers[0]


def test_other_spellings_of_a_dataset_name(server):
    with connect(server, "alice") as conn:
        # A scan of the bare name suggests the dataset, as SQL does.
        with pytest.raises(veil.NotFound) as e:
            conn.scan_as_pandas("trials")
        assert "did you mean clinical.trials?" in e.value.message
        # The catalog's name, as Flight SQL tools show it.
        with pytest.raises(veil.NotFound) as e:
            conn.scan_as_pandas("veil.clinical.trials")
        assert "did you mean clinical.trials?" in e.value.message
        # Every request that names a dataset outside SQL answers the same
        # spellings alike: a bare name, the catalog's, and quotes (which
        # only SQL reads).
        for call in (conn.scan_as_arrow, conn.describe, conn.preview, conn.schema):
            for spelling in ("trials", "veil.clinical.trials", '"clinical.trials"', '"clinical"."trials"'):
                with pytest.raises(veil.NotFound) as e:
                    call(spelling)
                assert "did you mean clinical.trials?" in e.value.message, (call, spelling, e.value.message)
        # The whole name in one pair of double quotes, in SQL.
        with pytest.raises(veil.NotFound) as e:
            conn.sql('SELECT * FROM "clinical.trials"')
        assert "public" not in e.value.message
        assert '"clinical"."trials"' in e.value.message
        # Another catalog: not found, under the name as written.
        with pytest.raises(veil.NotFound) as e:
            conn.sql("SELECT * FROM other.clinical.trials")
        assert "'other.clinical.trials' not found" in e.value.message
    # For carol, who may not see clinical.trials, each spelling answers
    # exactly like a dataset that exists nowhere.
    with connect(server, "carol") as conn:
        for read in (
            lambda n: conn.scan_as_pandas(f"veil.clinical.{n}"),
            lambda n: conn.scan_as_pandas(f'"clinical.{n}"'),
            lambda n: conn.describe(f'"clinical"."{n}"'),
            lambda n: conn.describe(f"veil.clinical.{n}"),
            lambda n: conn.schema(n),
            lambda n: conn.sql(f'SELECT * FROM "clinical.{n}"'),
            lambda n: conn.sql(f"SELECT * FROM other.clinical.{n}"),
        ):
            answers = []
            for name in ("trials", "nothing"):
                with pytest.raises(veil.NotFound) as e:
                    read(name)
                answers.append(e.value.message.replace(name, "X"))
            assert answers[0] == answers[1]


def test_query_errors_in_plain_words(server):
    with connect(server, "alice") as conn:
        cases = [
            # (filter or query, what the message says, what it must not)
            (dict(filter="age >> 60"), "'age >> 60'", "Int64("),
            (dict(filter="age > 60; DROP TABLE x"), "not well formed", "ParserError"),
            (dict(filter="age > 'abc'"), "compare numbers with numbers", "Optimizer rule"),
            (dict(filter="state = CA"), "write it in single quotes, 'CA'", None),
            (dict(columns=["AGE"]), "case sensitive: write age", "enable_ident_normalization"),
            ("SELECT sum(ssn) FROM clinical.trials", "function 'sum' does not take a String", "Internal error"),
            ('SELECT "AGE" FROM clinical.trials', "case sensitive", "single quotes"),
        ]
        for what, says, never in cases:
            with pytest.raises(veil.InvalidArgument) as e:
                if isinstance(what, str):
                    conn.sql(what)
                else:
                    conn.scan_as_pandas("clinical.trials", **what)
            assert says in e.value.message, (what, e.value.message)
            assert never is None or never not in e.value.message, (what, e.value.message)
            # A mistake in the query is not a failure while running.
            assert "while running" not in e.value.message, (what, e.value.message)


def test_a_bad_argument_is_an_invalid_argument_before_anything_is_sent(server):
    with connect(server, "alice") as conn:
        with pytest.raises(veil.InvalidArgument, match="limit must be 0 or more"):
            conn.scan_as_pandas("clinical.trials", limit=-1)
        # Still a ValueError, as Python code expects of a bad argument.
        with pytest.raises(ValueError):
            conn.scan_as_pandas("clinical.trials", limit=-1)


def test_a_filter_that_is_not_a_condition(server):
    with connect(server, "alice") as conn:
        with pytest.raises(veil.InvalidArgument) as e:
            conn.scan_as_pandas("clinical.trials", filter="age >> 60")
        assert "true or false for each row" in e.value.message


def test_an_empty_result_under_a_row_policy_says_so(server):
    with connect(server, "erin") as conn:
        with pytest.warns(veil.RowPolicyWarning, match="row policy on clinical.trials") as seen:
            df = conn.scan_as_pandas("clinical.trials")
        assert len(df) == 0
        # Every way in, the warning points at the caller's own line.
        reads = [
            lambda: conn.scan_as_arrow("clinical.trials"),
            lambda: conn.sql("SELECT * FROM clinical.trials"),
            lambda: conn.sql_as_polars("SELECT age FROM clinical.trials LIMIT 3"),
            lambda: list(conn.scan_batches("clinical.trials")),
        ]
        files = {w.filename for w in seen}
        for read in reads:
            with pytest.warns(veil.RowPolicyWarning) as more:
                read()
            files |= {w.filename for w in more}
        assert {os.path.basename(f) for f in files} == {os.path.basename(__file__)}
    with connect(server, "bob") as conn, warnings.catch_warnings():
        # No row policy applies to bob: an empty result is just empty.
        warnings.simplefilter("error")
        assert len(conn.scan_as_pandas("clinical.trials", filter="age > 1000")) == 0


def test_an_empty_result_filtering_a_masked_column_says_so_first(server):
    with connect(server, "alice") as conn:
        # alice sees ssn as a keyed hash, and her state's rows only.
        reads = [
            lambda: conn.scan_as_pandas("clinical.trials", filter="ssn = '123-45-6789'"),
            lambda: conn.sql("SELECT participant_id FROM clinical.trials WHERE SSN = '123-45-6789'"),
            lambda: list(conn.scan_batches("clinical.trials", filter="ssn LIKE '123-%'")),
        ]
        for read in reads:
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                read()
            kinds = [type(w.message) for w in seen]
            # The masked column first (the likelier cause), then the row policy.
            assert kinds == [veil.MaskedColumnWarning, veil.RowPolicyWarning], kinds
            assert "ssn" in str(seen[0].message) and "masked values" in str(seen[0].message)
            assert os.path.basename(seen[0].filename) == os.path.basename(__file__)
        # A masked column the query only selects is no reason for no rows.
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            conn.sql("SELECT ssn FROM clinical.trials WHERE age > 1000")
        assert [type(w.message) for w in seen] == [veil.RowPolicyWarning]


def test_preview_is_stable(server):
    with connect(server, "alice") as conn:
        first = conn.preview("clinical.trials")
        assert all(conn.preview("clinical.trials").equals(first) for _ in range(3))


def test_a_token_outside_the_demo_directory_points_at_the_server_directory(server, tmp_path):
    out = subprocess.run([server.bin, "token", "--user", "alice"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0
    assert "--data-dir" in out.stderr
    assert "key of the server" in out.stderr


def test_functions_that_name_files_are_not_offered(server):
    with connect(server, "bob") as conn:
        for f in ("input_file_name()", "file_row_index()"):
            with pytest.raises(veil.InvalidArgument) as e:
                conn.sql(f"SELECT {f} FROM clinical.sites LIMIT 1")
            assert "__veil" not in e.value.message


def test_a_placeholder_without_a_value(server):
    with connect(server, "alice") as conn:
        with pytest.raises(veil.InvalidArgument, match=r"takes 1 parameters"):
            conn.sql("SELECT count(*) FROM clinical.trials WHERE age > ?")
