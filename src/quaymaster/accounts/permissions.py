"""authorize(identity, action, repository): the one place that decides who may do what.

Today: owners have every right on their namespace, public repositories are readable by all.
Organizations, teams, robots and per-repository roles extend this function, not its callers.
"""

from dataclasses import dataclass

from quaymaster.accounts.service import Identity

PULL, PUSH, ADMIN, CREATE = "pull", "push", "admin", "create"


@dataclass(frozen=True)
class RepoTarget:
    """What authorization needs to know of a repository (or of a namespace, for CREATE)."""

    namespace_id: int | None
    visibility: str = "private"
    exists: bool = True


def authorize(identity: Identity, action: str, target: RepoTarget, *, anonymous_access: bool = True) -> bool:
    owner = identity.user_id is not None and identity.user_id == target.namespace_id
    if action == PULL:
        if target.exists and target.visibility == "public":
            return anonymous_access or not identity.anonymous
        return owner
    if action in (PUSH, ADMIN):
        return owner
    if action == CREATE:
        return owner and identity.kind == "user"
    return False
