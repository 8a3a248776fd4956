"""Superuser operations: globally visible messages, service keys, registry-wide administration."""
