"""Build the registry's collaborators (engine, cache) from ``Settings``."""

from __future__ import annotations

from functools import lru_cache

from qc_stream.storage.cache import Cache
from qc_stream.storage.db import make_engine


@lru_cache(maxsize=8)
def _engine(url: str):
    return make_engine(url)


def make_engine_for(settings):
    """One engine per database URL per process (the storage layer raises readable StorageErrors)."""
    return _engine(settings.database_url)


def make_cache(settings):
    """The shared Redis cache, or None when Redis is switched off (QC_REDIS_URL=off)."""
    if not settings.redis_url:
        return None

    return Cache.from_settings(settings)
