"""DefectRegistry on real Postgres, Redis and the embedded broker: events, cache, failures."""

import json
import uuid

import pytest
from sqlalchemy import func, select

from qc_stream.errors import InputError
from qc_stream.registry.events import DEFECT_TYPES_TOPIC, EventPublisher
from qc_stream.registry.service import VOCABULARY_CACHE_KEY, DefectRegistry
from qc_stream.storage import migrate
from qc_stream.storage.cache import Cache
from qc_stream.storage.db import make_engine
from qc_stream.storage.defect_types import DefectTypeRepository
from qc_stream.storage.orm import DefectTypeRow


@pytest.fixture
def engine(pg_url):
    migrate.upgrade(pg_url)
    eng = make_engine(pg_url)
    yield eng
    eng.dispose()


def _events(bootstrap: str) -> list[tuple[str, dict]]:
    """Every record on qc.defect-types, read without a consumer group."""
    from qc_stream.devtools.local import read_topic_to_end

    return [
        (m.key.decode(), json.loads(m.value))
        for m in read_topic_to_end(bootstrap, DEFECT_TYPES_TOPIC)
    ]


def test_add_and_retire_publish_keyed_events(engine, broker, redis_url, redis_prefix):
    product = f"p{uuid.uuid4().hex[:6]}"  # the session broker is shared: a product of our own
    registry = DefectRegistry(
        DefectTypeRepository(engine),
        publisher=EventPublisher(broker.bootstrap),
        cache=Cache(redis_url, redis_prefix, 60),
    )
    change = registry.add(product, "Dent", "a dent", corrective_action="check the press")
    assert change.published and change.publish_error is None
    assert registry.retire(product, "DENT").published

    mine = [(k, v) for k, v in _events(broker.bootstrap) if v["product"] == product]
    assert [k for k, _ in mine] == [f"{product}/dent", f"{product}/dent"]
    assert [v["status"] for _, v in mine] == ["active", "retired"]
    assert mine[0][1]["corrective_action"] == "check the press"
    registry.close()


def test_vocabulary_is_cached_and_invalidated_on_change(engine, redis_url, redis_prefix):
    cache = Cache(redis_url, redis_prefix, 60)
    registry = DefectRegistry(DefectTypeRepository(engine), cache=cache)
    registry.add("pill", "crack")
    assert registry.vocabulary() == {"pill": ["crack"]}
    # A write that bypasses the registry is not seen while the cached value lives...
    DefectTypeRepository(engine).retire("pill", "crack")
    assert registry.vocabulary() == {"pill": ["crack"]}
    # ...while a change through the registry invalidates it.
    registry.add("pill", "burr")
    assert registry.vocabulary() == {"pill": ["burr"]}
    cache.invalidate(VOCABULARY_CACHE_KEY)


def test_broker_down_still_registers_and_says_so(engine):
    from qc_stream.devtools.broker import free_port

    registry = DefectRegistry(
        DefectTypeRepository(engine),
        publisher=EventPublisher(f"127.0.0.1:{free_port()}", timeout_s=1),
    )
    change = registry.add("pill", "dent")
    assert not change.published and "bootstrap" in change.publish_error.lower()
    assert registry.get("pill", "dent").active
    registry.close()


def test_invalid_input_writes_nothing_and_publishes_nothing(engine):
    class Recorder:
        sent = []

        def publish_defect(self, event):
            self.sent.append(event)
            return True

        last_error = None

        def close(self):
            pass

    publisher = Recorder()
    registry = DefectRegistry(
        DefectTypeRepository(engine), publisher=publisher, allowed_products=frozenset({"pill"})
    )
    registry.add("pill", "dent")
    for args in [("pill", ""), ("pill", "DENT"), ("bottle", "dent"), ("pill", "x" * 500)]:
        with pytest.raises(InputError):
            registry.add(*args)
    with engine.connect() as c:
        assert c.execute(select(func.count()).select_from(DefectTypeRow)).scalar_one() == 1
    assert len(publisher.sent) == 1
