"""Blob storage behind one small interface; drivers per backend, locations for replication."""

from quaymaster.storage.base import BlobStore, StorageError
from quaymaster.storage.distributed import DistributedStorage, build_storage

__all__ = ["BlobStore", "StorageError", "DistributedStorage", "build_storage"]
