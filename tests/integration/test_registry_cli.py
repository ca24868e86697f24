"""`qc-stream defects ...` and `qc-stream models ...` as a user runs them (subprocess, real Postgres)."""

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from qc_stream.storage import migrate

QC = str(Path(sys.executable).with_name("qc-stream"))


def qc(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [QC, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def env(pg_url, broker):
    migrate.upgrade(pg_url)
    return {
        "QC_DATABASE_URL": pg_url,
        "QC_KAFKA_BOOTSTRAP": broker.bootstrap,
        "QC_REDIS_URL": "off",
    }


def test_add_list_show_retire(env):
    r = qc(
        env,
        "defects",
        "add",
        "--product",
        "pill",
        "--name",
        "Dent",
        "--description",
        "a dent",
        "--root-cause",
        "press misaligned",
        "--corrective-action",
        "recalibrate the press",
    )
    assert r.returncode == 0, r.stderr
    assert "registered defect type 'Dent' for product 'pill'" in r.stdout
    assert "event published on qc.defect-types" in r.stdout
    assert qc(env, "defects", "add", "-p", "screw", "-n", "rust").returncode == 0

    listed = json.loads(qc(env, "defects", "list", "--format", "json").stdout)
    assert [(d["product"], d["name"]) for d in listed] == [("pill", "Dent"), ("screw", "rust")]
    only = json.loads(qc(env, "defects", "list", "--product", "pill", "--format", "json").stdout)
    assert [d["name"] for d in only] == ["Dent"]
    shown = json.loads(
        qc(env, "defects", "show", "-p", "pill", "-n", "dent", "--format", "json").stdout
    )
    assert (
        shown["corrective_action"] == "recalibrate the press"
        and shown["root_cause"] == "press misaligned"
    )

    assert qc(env, "defects", "retire", "-p", "pill", "-n", "DENT").returncode == 0
    assert [
        d["name"] for d in json.loads(qc(env, "defects", "list", "--format", "json").stdout)
    ] == ["rust"]
    assert len(json.loads(qc(env, "defects", "list", "--all", "--format", "json").stdout)) == 2


def cells(stdout: str) -> list[list[str]]:
    """The body rows of a rich table: the text between the "│" borders, cell by cell."""
    return [
        [c.strip() for c in line.strip().strip("│").split("│")]
        for line in stdout.splitlines()
        if line.startswith("│")
    ]


def test_defect_listings_print_a_table_by_default(env):
    # a description with rich markup and an emoji code prints as typed
    desc = "a [bold]dent[/bold] :smile:"
    assert qc(env, "defects", "add", "-p", "pill", "-n", "dent", "-d", desc).returncode == 0
    assert qc(env, "defects", "add", "-p", "screw", "-n", "rust").returncode == 0
    r = qc(env, "defects", "list")
    assert r.returncode == 0, r.stderr
    assert "┃ product ┃ name ┃ status ┃ description" in r.stdout
    assert cells(r.stdout) == [["pill", "dent", "active", desc], ["screw", "rust", "active", ""]]
    r = qc(env, "defects", "show", "-p", "pill", "-n", "dent")
    assert r.returncode == 0, r.stderr
    shown = {c[0]: c[1] for c in cells(r.stdout)}
    assert shown["product"] == "pill" and shown["name"] == "dent" and shown["description"] == desc
    r = qc(env, "defects", "list", "--format", "yaml")
    assert r.returncode == 2 and "Invalid value for '--format'" in r.stderr


def test_models_list_json_has_the_contract_keys_and_the_table_shows_them(env):
    """The shipped prompt versions (models/prompts/, recorded in the database on first read)."""
    r = qc(env, "models", "list", "--format", "json")
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    assert listed and all(
        {"version", "backbone_id", "active", "created_at"} <= set(v) for v in listed
    )
    assert sum(v["active"] for v in listed) == 1
    assert all(datetime.fromisoformat(v["created_at"]) for v in listed)
    assert all(v["backbone_id"].count("@") == 1 for v in listed)  # e.g. qc-clip-tiny-cpu@1a2b3c4d
    r = qc(env, "models", "list")
    assert r.returncode == 0, r.stderr
    rows = {c[1]: c for c in cells(r.stdout)}
    assert set(rows) == {v["version"] for v in listed}
    for v in listed:
        row = rows[v["version"]]
        assert row[0] == ("*" if v["active"] else "") and row[6] == v["backbone_id"]


INVALID = [
    (("-p", "pill", "-n", "   "), "error: defect name must not be empty"),
    (
        ("-p", "pill", "-n", "x" * 41),
        "error: defect name is 41 characters long; at most 40 are allowed",
    ),
    (("-p", "pill", "-n", "dent", "-d", "y" * 501), "error: description is 501 characters long"),
    (
        ("-p", "bottle", "-n", "dent"),
        "error: unknown product 'bottle' (known products: pill, screw)",
    ),
    (
        ("-p", "pill", "-n", "DENT"),
        "error: defect type 'dent' is already registered for product 'pill'",
    ),
    (("-p", "pill", "-n", "bent\npin"), "error: defect name 'bent\\npin' contains a newline"),
    (("-p", "pill", "-n", "bent\tpin"), "error: defect name 'bent\\tpin' contains a tab"),
]


def test_invalid_registrations_fail_with_one_line_and_write_nothing(env):
    env = {**env, "QC_PRODUCTS": "pill,screw"}
    assert qc(env, "defects", "add", "-p", "pill", "-n", "dent").returncode == 0
    for args, message in INVALID:
        r = qc(env, "defects", "add", *args)
        assert r.returncode == 2, args
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith(message), r.stderr
    assert len(json.loads(qc(env, "defects", "list", "--all", "--format", "json").stdout)) == 1


def test_broker_down_registers_and_says_the_event_was_not_published(env):
    from qc_stream.devtools.broker import free_port

    env = {**env, "QC_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    r = qc(env, "defects", "add", "-p", "pill", "-n", "burr")
    assert r.returncode == 0
    assert "registered defect type 'burr'" in r.stdout
    assert (
        "the event was NOT published on qc.defect-types" in r.stderr and "Traceback" not in r.stderr
    )
    assert [
        d["name"] for d in json.loads(qc(env, "defects", "list", "--format", "json").stdout)
    ] == ["burr"]
    r = qc(env, "defects", "publish")  # still down: says so, non-zero
    assert r.returncode == 2 and r.stderr.startswith("error: 1 event(s) could not be published")


def test_models_commands_without_versions_and_unknown_version(env, tmp_path):
    env = {**env, "QC_MODELS_DIR": str(tmp_path / "models")}
    r = qc(env, "models", "list")
    assert r.returncode == 0 and "no prompt versions yet" in r.stdout
    r = qc(env, "models", "activate", "nope")
    assert r.returncode == 2 and r.stderr.startswith("error: prompt version 'nope' not found")
    r = qc(env, "models", "refresh")
    assert r.returncode == 2 and "no active prompt version to refresh" in r.stderr


def _shipped_state(models: Path) -> dict:
    """What a command could change in the shipped models folder: its listings, ACTIVE, and the
    files (mtime, size) of the backbones and of the active version."""
    active = (models / "prompts" / "ACTIVE").read_text().strip()
    watched = [models / "prompts" / "ACTIVE"]
    watched += [p for p in (models / "backbones").rglob("*") if p.is_file()]
    watched += [p for p in (models / "prompts" / active).rglob("*") if p.is_file()]
    return {
        "models": sorted(p.name for p in models.iterdir()),
        "prompts": sorted(p.name for p in (models / "prompts").iterdir()),
        "files": {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in watched},
    }


def test_default_models_folder_is_the_users_and_the_checkout_is_never_written(env, tmp_path):
    """With QC_MODELS_DIR unset, `defects add --refresh` and `models activate` write into the
    per-user folder ($XDG_DATA_HOME/qc-stream/models, seeded from the shipped prompt versions);
    the repository's models/ stays as it was."""
    from qc_stream.settings import SHIPPED_MODELS_DIR

    env = {**env, "XDG_DATA_HOME": str(tmp_path / "data")}
    user = tmp_path / "data" / "qc-stream" / "models"
    before = _shipped_state(SHIPPED_MODELS_DIR)
    shipped_active = (SHIPPED_MODELS_DIR / "prompts" / "ACTIVE").read_text().strip()

    r = qc(env, "defects", "add", "-p", "pill", "-n", "burr", "--refresh")
    assert r.returncode == 0, r.stderr
    new = (user / "prompts" / "ACTIVE").read_text().strip()
    assert new != shipped_active and (user / "prompts" / new / "manifest.json").is_file()
    assert (user / "prompts" / shipped_active).is_dir()  # seeded
    assert not (user / "backbones").exists()  # the shipped weights are read in place

    r = qc(env, "models", "activate", shipped_active)
    assert r.returncode == 0, r.stderr
    assert (user / "prompts" / "ACTIVE").read_text().strip() == shipped_active
    assert _shipped_state(SHIPPED_MODELS_DIR) == before
