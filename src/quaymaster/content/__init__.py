"""Repositories, manifests, blobs and tags (with history): the registry's content."""
