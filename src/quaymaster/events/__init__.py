"""Events and locks shared by the processes of a deployment: Redis when configured, in-process otherwise."""

from quaymaster.events.bus import EventBus, InProcessBus, Subscription, publish_quietly
from quaymaster.events.factory import build_events
from quaymaster.events.locks import FileLocks, InProcessLocks, Locks

__all__ = [
           "EventBus",
           "FileLocks",
           "InProcessBus",
           "InProcessLocks",
           "Locks",
           "Subscription",
           "build_events",
           "publish_quietly",
]
