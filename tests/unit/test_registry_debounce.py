"""DebouncedTrigger: a burst of registry events becomes one refresh (pure timing, fake clock)."""

from qc_stream.registry.listener import DebouncedTrigger


def test_burst_fires_once_after_quiet_period():
    t = DebouncedTrigger(2.0)
    assert not t.due(0.0)
    t.poke(0.0)
    t.poke(1.0)
    t.poke(1.5)  # each event pushes the deadline
    assert not t.due(3.0)
    assert t.due(3.5)
    assert not t.due(10.0)  # fired once
    assert not t.pending


def test_zero_debounce_fires_on_next_check():
    t = DebouncedTrigger(0.0)
    t.poke(5.0)
    assert t.due(5.0)
