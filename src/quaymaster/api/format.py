"""Small shared helpers for API responses in Quay's formats."""

from datetime import datetime

from fastapi import Request


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def quay_time(value: datetime | None) -> str | None:
    """Quay renders timestamps as RFC 2822 dates in UTC."""
    return value.strftime("%a, %d %b %Y %H:%M:%S -0000") if value else None
