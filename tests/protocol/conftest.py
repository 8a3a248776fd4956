"""Protocol tests drive /v2 through a hand-written client over the in-process app."""

import pytest

from .v2client import V2Client


@pytest.fixture
async def client(http):
    return V2Client(http)
