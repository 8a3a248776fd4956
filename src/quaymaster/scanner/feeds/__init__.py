"""Updaters: read vulnerability feeds (from files, file:// or http(s) URLs) into update operations."""
