"""Tables of the accounts domain: the namespace table (users, orgs, robots) and service keys."""

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from quaymaster.db.base import Base, utcnow


class User(Base):
    """One namespace: a user, an organization or a robot, as in Quay's single User table."""

    __tablename__ = "user"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    username: Mapped[str] = mapped_column(String(255), unique=True)
    email: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    organization: Mapped[bool] = mapped_column(Boolean, default=False)
    robot: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    verified: Mapped[bool] = mapped_column(Boolean, default=True)
    invalid_login_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_invalid_login: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    removed_tag_expiration_s: Mapped[int] = mapped_column(Integer, default=1209600)
    creation_date: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ServiceKey(Base):
    """A public key any node uses to verify tokens signed by the node holding the private half."""

    __tablename__ = "servicekey"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    kid: Mapped[str] = mapped_column(String(255), unique=True)
    service: Mapped[str] = mapped_column(String(255), index=True)
    jwk: Mapped[dict] = mapped_column(JSON)
    metadata_json: Mapped[dict] = mapped_column(JSON, default=dict)
    created_date: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expiration_date: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    rotation_duration: Mapped[int | None] = mapped_column(Integer, nullable=True)
    approval_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    approved_date: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
