"""Defect-type and model-version repositories on real Postgres and SQLite (schema via Alembic)."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from qc_stream.domain.defects import DefectStatus, validate_defect_type
from qc_stream.errors import InputError
from qc_stream.storage import migrate
from qc_stream.storage.db import make_engine
from qc_stream.storage.defect_types import DefectTypeRepository
from qc_stream.storage.model_versions import ModelVersion, ModelVersionRepository
from qc_stream.storage.orm import DefectTypeRow


@pytest.fixture(params=["postgres", "sqlite"])
def engine(request):
    url = request.getfixturevalue("pg_url" if request.param == "postgres" else "sqlite_url")
    migrate.upgrade(url)
    eng = make_engine(url)
    yield eng
    eng.dispose()


def _rows(engine) -> int:
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(DefectTypeRow)).scalar_one()


def test_add_get_list_retire_and_reactivate(engine):
    repo = DefectTypeRepository(engine)
    dent = repo.add(
        validate_defect_type("pill", "Dent", "a dent", corrective_action="check the press")
    )
    repo.add(validate_defect_type("pill", "burr"))
    repo.add(validate_defect_type("screw", "rust"))
    assert dent.status is DefectStatus.ACTIVE and dent.created_at.tzinfo is not None
    assert repo.get("pill", "DENT").corrective_action == "check the press"
    assert [d.name for d in repo.list("pill")] == ["burr", "Dent"]

    retired = repo.retire("pill", "dent")
    assert retired.status is DefectStatus.RETIRED and retired.retired_at is not None
    assert [d.name for d in repo.list("pill")] == ["burr"]
    assert len(repo.list("pill", include_retired=True)) == 2
    with pytest.raises(InputError, match="already retired"):
        repo.retire("pill", "dent")

    # Registering a retired name again brings the same row back with the new text.
    back = repo.add(validate_defect_type("pill", "dent", "dent v2"))
    assert back.active and back.description == "dent v2" and back.retired_at is None
    assert _rows(engine) == 3


def test_duplicate_ignoring_case_is_refused_and_writes_nothing(engine):
    repo = DefectTypeRepository(engine)
    repo.add(validate_defect_type("pill", "dent", "first"))
    with pytest.raises(InputError, match="already registered"):
        repo.add(validate_defect_type("pill", "  DENT ", "second"))
    assert _rows(engine) == 1
    assert repo.get("pill", "dent").description == "first"
    with pytest.raises(InputError, match="no defect type"):
        repo.retire("pill", "nothing")


def test_concurrent_duplicate_registrations_make_one_row(engine):
    repo = DefectTypeRepository(engine)

    def register(i: int):
        try:
            repo.add(validate_defect_type("pill", "Crack" if i % 2 else "crack", f"writer {i}"))
            return True
        except InputError:
            return False

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(register, range(6)))
    assert outcomes.count(True) == 1
    assert _rows(engine) == 1


def test_model_versions_activate_exactly_one(engine):
    repo = ModelVersionRepository(engine)
    repo.add(
        ModelVersion(prompt_version="v1", backbone="bb@1", vocabulary={"pill": ["dent"]}),
        activate=True,
    )
    repo.add(
        ModelVersion(prompt_version="v2", backbone="bb@1", kind="zero-shot", parent_version="v1")
    )
    assert repo.active().prompt_version == "v1"
    repo.activate("v2")
    assert repo.active().prompt_version == "v2"
    assert [v.active for v in repo.list()] == [False, True]
    assert repo.get("v2").vocabulary == {} and repo.get("v1").vocabulary == {"pill": ["dent"]}
    with pytest.raises(InputError, match="unknown prompt version"):
        repo.activate("nope")
    with pytest.raises(InputError, match="already exists"):
        repo.add(ModelVersion(prompt_version="v1", backbone="bb@1"))
    assert repo.active().prompt_version == "v2"
