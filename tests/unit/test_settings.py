import pytest

from qc_stream.errors import ConfigError
from qc_stream.settings import load_settings


def test_defaults_validate(monkeypatch):
    s = load_settings()
    assert s.thresholds_for("anything") == (s.warn_threshold, s.reject_threshold)


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"QC_KAFKA_BOOTSTRAP": "nohost"}, "QC_KAFKA_BOOTSTRAP"),
        ({"QC_DATABASE_URL": "mysql://x/y"}, "unsupported database"),
        ({"QC_DATABASE_URL": "::::"}, "QC_DATABASE_URL"),
        ({"QC_REDIS_URL": "http://x"}, "not a Redis URL"),
        ({"QC_BATCH_SIZE": "0"}, "QC_BATCH_SIZE"),
        ({"QC_THRESHOLDS": '{"pill": [0.9, 0.1]}'}, "warn <= reject"),
        ({"QC_THRESHOLDS": "{bad"}, "not JSON"),
        ({"QC_THRESHOLDS": '{"pill": [0.4]}'}, "QC_THRESHOLDS: 'pill': expected [warn, reject]"),
        ({"QC_THRESHOLDS": '{"pill": [0.4, 1.5]}'}, "QC_THRESHOLDS: 'pill': expected"),
        ({"QC_THRESHOLDS": '{"pill": "low"}'}, "QC_THRESHOLDS: 'pill': expected"),
        ({"QC_THRESHOLDS": "[0.4, 0.7]"}, "QC_THRESHOLDS: expected a JSON object like"),
        ({"QC_LOG_LEVEL": "LOUD"}, "QC_LOG_LEVEL"),
        ({"QC_WARN_THRESHOLD": "0.9", "QC_REJECT_THRESHOLD": "0.5"}, "must not exceed"),
        ({"QC_MAX_FRAME_BYTES": "33554432"}, "cannot carry a frame"),
    ],
)
def test_bad_settings_give_one_readable_line(monkeypatch, env, fragment):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as e:
        load_settings()
    msg = str(e.value)
    assert fragment in msg and "\n" not in msg


def test_per_product_thresholds(monkeypatch):
    monkeypatch.setenv("QC_THRESHOLDS", '{"pill": [0.3, 0.6]}')
    s = load_settings()
    assert s.thresholds_for("pill") == (0.3, 0.6)


def test_embedded_profile_has_short_group_timeouts(monkeypatch):
    monkeypatch.setenv("QC_BROKER_PROFILE", "embedded")
    assert load_settings().group_timeouts == (3.0, 0.5, 3.0)
    monkeypatch.setenv("QC_BROKER_PROFILE", "production")
    assert load_settings().group_timeouts[0] >= 30


def test_thresholds_are_parsed_into_pairs_per_product(monkeypatch):
    monkeypatch.setenv("QC_THRESHOLDS", '{"pill": [0.4, 0.7], "screw": [0, 1]}')
    s = load_settings()
    assert s.thresholds == {"pill": (0.4, 0.7), "screw": (0.0, 1.0)}
    assert s.thresholds_for("screw") == (0.0, 1.0) and s.thresholds_for("gear") == (
        s.warn_threshold,
        s.reject_threshold,
    )


def test_products_are_a_comma_list_and_empty_means_any(monkeypatch):
    monkeypatch.setenv("QC_PRODUCTS", " pill, screw,,")
    assert load_settings().allowed_products == frozenset({"pill", "screw"})
    monkeypatch.setenv("QC_PRODUCTS", "")
    assert load_settings().allowed_products is None
    assert load_settings(products="gear").allowed_products == frozenset({"gear"})


def test_metadata_refresh_is_short_on_the_embedded_broker_and_reaches_faust(monkeypatch):
    # A restarted embedded broker recreates qc.frames with another partition count; the worker
    # takes the new partitions only at a metadata refresh (tests/support/chaos.py, mid-batch).
    from qc_stream.stream.app import build_app

    monkeypatch.setenv("QC_BROKER_PROFILE", "embedded")
    assert load_settings().metadata_max_age_s <= 5
    monkeypatch.setenv("QC_BROKER_PROFILE", "production")
    assert load_settings().metadata_max_age_s == 300
    monkeypatch.setenv("QC_BROKER_METADATA_MAX_AGE_S", "7.5")
    app = build_app(load_settings(), broker="kafka://127.0.0.1:9")  # never contacted
    assert app.conf.consumer_metadata_max_age_ms == 7500
    assert app.conf.producer_metadata_max_age_ms == 7500


def test_stall_window_by_profile_and_off_at_zero(monkeypatch):
    monkeypatch.setenv("QC_BROKER_PROFILE", "embedded")
    assert load_settings().stall_restart_after_s == 10
    monkeypatch.setenv("QC_BROKER_PROFILE", "production")
    assert load_settings().stall_restart_after_s == 60
    monkeypatch.setenv("QC_STALL_RESTART_S", "0")
    assert load_settings().stall_restart_after_s is None
