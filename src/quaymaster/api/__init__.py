"""The /api/v1 REST API plumbing shared by every domain's routes: app, errors, auth dependencies."""
