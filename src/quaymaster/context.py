"""The runtime services one process shares: built once from settings, handed to every handler."""

from dataclasses import dataclass, field

from quaymaster.accounts.tokens import InstanceKeys
from quaymaster.auditlog.service import AuditLog
from quaymaster.db.encryption import FieldCipher
from quaymaster.db.engine import Database
from quaymaster.events import EventBus, InProcessBus, InProcessLocks, Locks
from quaymaster.registry.hashing import HashCache
from quaymaster.settings import Settings
from quaymaster.storage import DistributedStorage


@dataclass
class AppContext:
    settings: Settings
    db: Database
    storage: DistributedStorage
    keys: InstanceKeys
    audit: AuditLog
    cipher: FieldCipher
    hashes: HashCache = field(default_factory=HashCache)
    events: EventBus = field(default_factory=InProcessBus)
    locks: Locks = field(default_factory=InProcessLocks)
