"""The configured state store: ``[state] backend = local | redis``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from siprecd.config import Config
from siprecd.state.local import LocalStore, default_path

if TYPE_CHECKING:
    from siprecd.metrics import Metrics


def local_store(config: Config) -> LocalStore:
    return LocalStore(config.state.path or default_path(config.recording.directory))


def state_store_from_config(reactor: Any, config: Config, metrics: Metrics | None = None) -> Any:
    local = local_store(config)
    if config.state.backend == "local":
        return local
    from siprecd.state.redis import RedisStore

    return RedisStore(reactor, config.state, local, metrics=metrics)
