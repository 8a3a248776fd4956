"""Events and locks shared by the processes of a deployment: Redis when configured, in-process otherwise."""

from quaymaster.events.bus import EventBus, InProcessBus, Subscription
from quaymaster.events.locks import InProcessLocks, Locks

__all__ = ["EventBus", "InProcessBus", "Subscription", "Locks", "InProcessLocks"]
