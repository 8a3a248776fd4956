"""Imports every domain's models so Base.metadata is complete (for Alembic and tests)."""

from quaymaster.accounts import models as accounts_models  # noqa: F401
from quaymaster.auditlog import models as auditlog_models  # noqa: F401
from quaymaster.content import models as content_models  # noqa: F401
from quaymaster.mirroring import models as mirroring_models  # noqa: F401
from quaymaster.secscan import models as secscan_models  # noqa: F401
from quaymaster.superuser import models as superuser_models  # noqa: F401
from quaymaster.db.base import Base

metadata = Base.metadata
