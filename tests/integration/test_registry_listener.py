"""The qc.defect-types listener on the embedded broker: one refresh per burst of registrations.

The refresh callback is a counter here (the refresh itself is tested in test_registry_versions)."""

import threading
import time

from qc_stream.registry.events import EventPublisher
from qc_stream.registry.listener import RegistryListener
from qc_stream.registry.service import DefectRegistry
from qc_stream.storage import migrate
from qc_stream.storage.db import make_engine
from qc_stream.storage.defect_types import DefectTypeRepository


def _wait(pred, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_burst_of_registrations_triggers_one_refresh(broker, sqlite_url):
    migrate.upgrade(sqlite_url)
    registry = DefectRegistry(
        DefectTypeRepository(make_engine(sqlite_url)), publisher=EventPublisher(broker.bootstrap)
    )
    calls = []
    listener = RegistryListener(
        broker.bootstrap, lambda: calls.append(time.monotonic()), debounce_s=1.0
    )
    thread = threading.Thread(target=listener.run, daemon=True)
    thread.start()
    try:
        assert listener.ready.wait(20)
        assert _wait(lambda: len(calls) == 1)  # the start-up refresh
        for name in ("dent", "burr", "crack"):
            assert registry.add("listener-product", name).published
        assert _wait(lambda: len(calls) == 2)
        time.sleep(2.5)  # well past another debounce period: the burst fired once
        assert len(calls) == 2
        registry.retire("listener-product", "burr")
        assert _wait(lambda: len(calls) == 3)
    finally:
        listener.stop()
        thread.join(10)
        registry.close()
    assert not thread.is_alive()
