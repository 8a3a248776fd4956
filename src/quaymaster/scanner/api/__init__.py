"""The Clair v4 HTTP API (Starlette): indexer, matcher and notifier routes, PSK middleware."""
