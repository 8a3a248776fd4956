"""The mirroring domain's table: one pull-mirror configuration per repository, in Quay's shape.

Quay keeps the tag rule in a separate RepoMirrorRule tree; it only ever uses one root rule of
kind tag_glob_csv, so it is two columns here."""

from datetime import datetime
from enum import IntEnum

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from quaymaster.db.base import Base, utcnow


class MirrorStatus(IntEnum):
    """Quay's RepoMirrorStatus values; the API shows the names."""

    CANCEL = -2
    FAIL = -1
    NEVER_RUN = 0
    SUCCESS = 1
    SYNCING = 2
    SYNC_NOW = 3


MIRROR_TYPE_PULL = 1
RULE_TAG_GLOB_CSV = "tag_glob_csv"
MAX_SYNC_RETRIES = 3


class RepoMirrorConfig(Base):
    __tablename__ = "repomirrorconfig"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Cascade: garbage collection deletes repository rows and must not trip over a mirror config.
    repository_id: Mapped[int] = mapped_column(ForeignKey("repository.id", ondelete="CASCADE"), unique=True)
    creation_date: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    is_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    mirror_type: Mapped[int] = mapped_column(Integer, default=MIRROR_TYPE_PULL)
    # SET NULL: deleting the robot leaves a config that fails its syncs with a clear message.
    internal_robot_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"),
                                                          nullable=True, index=True)
    external_reference: Mapped[str] = mapped_column(Text)
    external_registry_username: Mapped[str | None] = mapped_column(Text, nullable=True)  # FieldCipher
    external_registry_password: Mapped[str | None] = mapped_column(Text, nullable=True)  # FieldCipher
    external_registry_config: Mapped[dict] = mapped_column(JSON, default=dict)
    architecture_filter: Mapped[list] = mapped_column(JSON, default=list)
    root_rule_kind: Mapped[str] = mapped_column(String(32), default=RULE_TAG_GLOB_CSV)
    root_rule_value: Mapped[list] = mapped_column(JSON, default=list)
    sync_interval: Mapped[int] = mapped_column(Integer)
    sync_start_date: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    sync_expiration_date: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    sync_retries_remaining: Mapped[int] = mapped_column(Integer, default=MAX_SYNC_RETRIES)
    sync_status: Mapped[int] = mapped_column(Integer, default=MirrorStatus.NEVER_RUN, index=True)
    sync_transaction_id: Mapped[str] = mapped_column(String(36))
    skopeo_timeout: Mapped[int] = mapped_column(Integer, default=300)
