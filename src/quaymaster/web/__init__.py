"""The web UI: shared rendering, templates and static assets; pages live in each domain's views.py."""
