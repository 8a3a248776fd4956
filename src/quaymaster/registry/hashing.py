"""Running digests of uploads in progress.

A hash state cannot be saved to the database (OpenSSL hashes do not serialize), so each process
keeps the running sha256 of the uploads it is receiving. When a chunk lands on a process that
does not have it (another node, a restart), the hash is rebuilt by reading the stored bytes.
"""

import hashlib
from collections import OrderedDict

MAX_ENTRIES = 1024


class HashCache:
    def __init__(self, max_entries: int = MAX_ENTRIES):
        self._entries: OrderedDict[str, tuple[int, "hashlib._Hash"]] = OrderedDict()
        self.max_entries = max_entries

    def take(self, upload_id: str, offset: int):
        """The running hash at exactly `offset`, removed from the cache (the caller advances it)."""
        entry = self._entries.pop(upload_id, None)
        if entry is not None and entry[0] == offset:
            return entry[1]
        return None

    def put(self, upload_id: str, offset: int, hasher) -> None:
        self._entries[upload_id] = (offset, hasher)
        self._entries.move_to_end(upload_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def drop(self, upload_id: str) -> None:
        self._entries.pop(upload_id, None)
