"""The /v2 registry protocol (OCI Distribution 1.1, Docker Registry v2) and the /v2/auth token service.

Thin HTTP handlers: they parse, call accounts/content services and storage, and shape responses.
"""
