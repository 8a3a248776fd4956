"""A Clair-v4-compatible vulnerability scanner: indexer, matcher, feeds and notifier.

Imports only `quaymaster.oci` and its own modules, so it can ship on its own."""
