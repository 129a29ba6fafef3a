"""The configured state store: ``[state] backend = local | redis``."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

from siprecd.config import Config
from siprecd.state.local import LocalStore, default_path

if TYPE_CHECKING:
    from siprecd.metrics import Metrics


NODE_MARKER = ".node-id"


def base_node_id(config: Config) -> str:
    """This machine's name in a cluster: the same for every worker process of it."""
    return config.state.node_id or socket.gethostname()


def node_id(config: Config) -> str:
    """The owner of this process's sessions: one of [service] workers owns its calls alone."""
    base = base_node_id(config)
    return base if config.worker_index is None else f"{base}-w{config.worker_index}"


def state_path(config: Config) -> str:
    path = config.state.path or default_path(config.recording.directory)
    if config.worker_index is None:
        return path
    # Each worker its own SQLite file beside the configured one: state.sqlite -> state.worker1.sqlite.
    directory, base = os.path.split(path)
    stem, dot, extension = base.rpartition(".")
    suffix = f"worker{config.worker_index}"
    return os.path.join(directory, f"{stem}.{suffix}.{extension}" if dot and stem else f"{base}.{suffix}")


def directory_owner_problem(config: Config) -> str | None:
    """In a cluster each node needs its own recording directory: start-up recovery closes the
    sessions of the active index, which would be another node's live calls on a shared one."""
    if config.state.backend != "redis":
        return None
    marker = os.path.join(config.recording.directory, NODE_MARKER)
    try:
        with open(marker, encoding="utf-8") as handle:
            owner = handle.read().strip()
    except FileNotFoundError:
        return None
    except OSError as error:
        return f"cannot read {marker}: {error.strerror}"
    if owner and owner != base_node_id(config):
        return (
            f"[recording] directory = {config.recording.directory} belongs to node {owner!r} "
            f"({marker}), not {base_node_id(config)!r} ([state] node_id): each node of a cluster needs "
            "its own recording directory"
        )
    return None


def mark_directory(config: Config) -> None:
    if config.state.backend == "redis":
        from siprecd.durable import atomic_write

        atomic_write(os.path.join(config.recording.directory, NODE_MARKER), (base_node_id(config) + "\n").encode())


def local_store(config: Config) -> LocalStore:
    return LocalStore(state_path(config))


def state_store_from_config(reactor: Any, config: Config, metrics: Metrics | None = None) -> Any:
    local = local_store(config)
    if config.state.backend == "local":
        return local
    from siprecd.state.redis import RedisStore

    mark_directory(config)

    return RedisStore(reactor, config.state, local, node_id(config), metrics=metrics)
