"""The registry side of vulnerability scanning: per-manifest index status, a Clair v4 client,
the indexing worker, and the security API and pages."""
