"""Tables of the accounts domain: the namespace table (users, orgs, robots) and service keys."""

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
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


class Team(Base):
    """A group inside an organization; its role applies org-wide (admin, creator, member)."""

    __tablename__ = "team"
    __table_args__ = (UniqueConstraint("name", "organization_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    organization_id: Mapped[int] = mapped_column(ForeignKey("user.id"), index=True)
    role: Mapped[str] = mapped_column(String(16), default="member")  # admin | creator | member
    description: Mapped[str] = mapped_column(Text, default="")


class TeamMember(Base):
    __tablename__ = "teammember"
    __table_args__ = (UniqueConstraint("user_id", "team_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"), index=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("team.id"), index=True)


class RepositoryPermission(Base):
    """A role (read, write, admin) on one repository for a user, robot or team."""

    __tablename__ = "repositorypermission"
    __table_args__ = (
        UniqueConstraint("repository_id", "user_id"),
        UniqueConstraint("repository_id", "team_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repository.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"), nullable=True, index=True)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("team.id"), nullable=True, index=True)
    role: Mapped[str] = mapped_column(String(16))


class PermissionPrototype(Base):
    """A default permission an organization applies to every new repository."""

    __tablename__ = "permissionprototype"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("user.id"), index=True)
    activating_user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"), nullable=True)
    delegate_user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"), nullable=True)
    delegate_team_id: Mapped[int | None] = mapped_column(ForeignKey("team.id"), nullable=True)
    role: Mapped[str] = mapped_column(String(16))


class RobotAccountToken(Base):
    """The robot's 64-character secret, encrypted with DATABASE_SECRET_KEY."""

    __tablename__ = "robotaccounttoken"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    robot_account_id: Mapped[int] = mapped_column(ForeignKey("user.id"), unique=True)
    token: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    unstructured_json: Mapped[dict] = mapped_column(JSON, default=dict)


class AppSpecificAuthToken(Base):
    """A per-application password: 60 public characters to find it, 60 encrypted secret ones."""

    __tablename__ = "appspecificauthtoken"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"), index=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    title: Mapped[str] = mapped_column(String(255))
    token_name: Mapped[str] = mapped_column(String(60), unique=True)
    token_secret: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expiration: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_accessed: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class OAuthAccessToken(Base):
    """A bearer token for the REST API with Quay's scopes; only a hash of its secret half is kept."""

    __tablename__ = "oauthaccesstoken"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    authorized_user_id: Mapped[int] = mapped_column(ForeignKey("user.id"), index=True)
    scope: Mapped[str] = mapped_column(String(255))
    token_name: Mapped[str] = mapped_column(String(20), unique=True)
    token_code: Mapped[str] = mapped_column(String(64))  # sha256 hex of the secret half
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class Star(Base):
    __tablename__ = "star"
    __table_args__ = (UniqueConstraint("user_id", "repository_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"), index=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repository.id"), index=True)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class FederatedLogin(Base):
    """A user's link to an outside identity (Quay's FederatedLogin): `service` ldap, `service_ident`
    the uid the directory knows them by. Users created by an LDAP login are found again through it."""

    __tablename__ = "federatedlogin"
    __table_args__ = (
        UniqueConstraint("service", "service_ident"),
        UniqueConstraint("service", "user_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"), index=True)
    service: Mapped[str] = mapped_column(String(32))
    service_ident: Mapped[str] = mapped_column(String(255))
    metadata_json: Mapped[dict] = mapped_column(JSON, default=dict)
