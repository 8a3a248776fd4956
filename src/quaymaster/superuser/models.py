"""Tables of the superuser domain."""

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from quaymaster.db.base import Base


class Message(Base):
    """A banner every visitor sees (severity info, warning or error)."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    content: Mapped[str] = mapped_column(Text)
    media_type: Mapped[str] = mapped_column(String(32), default="text/plain")
    severity: Mapped[str] = mapped_column(String(16), default="info")
