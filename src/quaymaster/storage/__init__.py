"""Blob storage behind one small interface; drivers per backend, locations for replication."""

from quaymaster.storage.base import BlobNotFound, BlobStore, StorageError
from quaymaster.storage.distributed import DistributedStorage, build_storage

__all__ = ["BlobNotFound", "BlobStore", "DistributedStorage", "StorageError", "build_storage"]
