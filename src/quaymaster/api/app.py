"""The FastAPI application mounted at /api/v1: each domain contributes a router."""

from fastapi import FastAPI
from starlette.middleware.sessions import SessionMiddleware

from quaymaster.api import errors
from quaymaster.settings import Settings

SESSION_COOKIE = "quaymaster_session"
SESSION_MAX_AGE = 31 * 86400


def session_middleware_options(settings: Settings) -> dict:
    """The browser session (a signed cookie): shared by the API and the web UI."""
    return {"secret_key": settings.SECRET_KEY, "session_cookie": SESSION_COOKIE, "max_age": SESSION_MAX_AGE,
            "same_site": "lax", "https_only": settings.PREFERRED_URL_SCHEME == "https" or settings.SESSION_COOKIE_SECURE}


def create_api(settings: Settings) -> FastAPI:
    from quaymaster.accounts import api_orgs, api_robots, api_users
    from quaymaster.auditlog import api as auditlog_api
    from quaymaster.content import api as content_api
    from quaymaster.content import api_quota, api_search
    from quaymaster.mirroring import api as mirroring_api
    from quaymaster.secscan import api as secscan_api
    from quaymaster.superuser import api as superuser_api

    api = FastAPI(title="Quaymaster API", version="v1", openapi_url="/discovery", docs_url=None, redoc_url=None,
                  description="Quay-compatible REST API")
    errors.install(api)
    for router in (api_users.router, api_orgs.router, api_robots.router, content_api.router,
                   api_search.router, auditlog_api.router, superuser_api.router):
        api.include_router(router)
    api.include_router(api_quota.router)
    api.include_router(mirroring_api.router)
    api.include_router(secscan_api.router)
    api.add_middleware(SessionMiddleware, **session_middleware_options(settings))
    return api
