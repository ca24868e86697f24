"""Engine creation and the pure parts of the inspections repository (no server needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect

from qc_stream.domain.inspection import InspectionResult, Verdict
from qc_stream.errors import StorageError
from qc_stream.storage.db import make_engine, parse_url, safe_url
from qc_stream.storage.inspections import bucket_of, count_key


@pytest.mark.parametrize(
    "url, driver",
    [
        ("postgresql://u@h/db", "postgresql+psycopg"),
        ("postgres://u@h/db", "postgresql+psycopg"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
def test_urls_are_normalised_to_supported_drivers(url, driver):
    assert parse_url(url).drivername == driver


@pytest.mark.parametrize(
    "url, words",
    [
        ("garbage", "not a database URL"),
        ("mysql://u@h/db", "unsupported database 'mysql'"),
        ("postgresql+psycopg2://u@h/db", "unsupported Postgres driver"),
        ("sqlite+pysqlcipher:///x.db", "unsupported SQLite driver"),
    ],
)
def test_bad_urls_raise_one_readable_line(url, words):
    with pytest.raises(StorageError) as e:
        parse_url(url)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_safe_url_masks_the_password():
    assert "secret" not in safe_url("postgresql+psycopg://u:secret@h/db")


def test_sqlite_engine_makes_its_folder_and_uses_wal(tmp_path):
    path = tmp_path / "a" / "b" / "qc.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0
    engine.dispose()
    assert path.exists()
    # Creating an engine never creates tables: the schema only comes from Alembic.
    engine = make_engine(f"sqlite:///{path}")
    assert inspect(engine).get_table_names() == []
    engine.dispose()


def test_sqlite_path_that_cannot_be_opened_is_a_storage_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="cannot"):
        make_engine(f"sqlite:///{tmp_path / 'file' / 'qc.db'}")


def _result(captured_at, verdict, defect):
    return InspectionResult(
        frame_id="f",
        camera_id="c",
        line_id="L1",
        product="pill",
        captured_at=captured_at,
        verdict=verdict,
        anomaly_score=0.5,
        defect_type=defect,
        model_version="m",
        prompt_version="p",
        latency_ms=1,
    )


def test_bucket_is_capture_time_in_utc_floored_to_the_minute():
    cet = timezone(timedelta(hours=1))
    assert bucket_of(datetime(2026, 1, 1, 13, 5, 59, 999, tzinfo=cet)) == datetime(
        2026, 1, 1, 12, 5, tzinfo=UTC
    )


def test_ok_frames_count_under_the_empty_defect_type():
    t = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)
    assert count_key(_result(t, Verdict.OK, "crack"))[3] == ""
    assert count_key(_result(t, Verdict.REJECT, "crack"))[3] == "crack"
    assert count_key(_result(t, Verdict.WARN, None))[3] == ""


def _error_of(fn) -> BaseException:
    try:
        fn()
    except Exception as e:
        return e
    raise AssertionError("no error")


def test_connection_errors_are_outages_and_other_database_errors_are_not(tmp_path):
    import socket

    from sqlalchemy import text

    from qc_stream.storage.db import is_connection_error, storage_errors

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = make_engine(f"postgresql+psycopg://u@127.0.0.1:{port}/db", check=False)

    def connect():
        with down.connect():
            pass

    def wrapped():
        with storage_errors("store the batch"):
            connect()

    refused = _error_of(connect)
    assert is_connection_error(refused)
    assert isinstance(_error_of(wrapped), StorageError) and is_connection_error(_error_of(wrapped))

    lite = make_engine(f"sqlite:///{tmp_path / 'x.db'}")

    def missing_table():
        with lite.connect() as c:
            c.execute(text("SELECT * FROM nowhere"))

    def duplicate():
        with lite.begin() as c:
            c.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
            c.execute(text("INSERT INTO t VALUES (1), (1)"))

    assert not is_connection_error(_error_of(missing_table))  # a schema problem: not waited out
    assert not is_connection_error(_error_of(duplicate))
    assert not is_connection_error(ValueError("not a database error"))
