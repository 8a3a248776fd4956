"""Matching index reports against stored vulnerabilities, and building vulnerability reports."""
