"""Turning a manifest's layers into an index report: fetch, read, detect, coalesce."""
