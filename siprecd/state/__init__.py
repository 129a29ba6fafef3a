"""Live session state that outlives the process: the store interface and its backends."""

from siprecd.state.store import StateStore, StoreError

__all__ = ["StateStore", "StoreError"]
