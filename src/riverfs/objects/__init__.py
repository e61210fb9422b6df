"""Object storage: one async interface over obstore, used for all store I/O."""

from riverfs.objects.store import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StoreError,
    StoreFull,
    open_store,
)

__all__ = ["ObjectInfo", "ObjectNotFound", "ObjectStore", "StoreError", "StoreFull", "open_store"]
