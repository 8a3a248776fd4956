"""Notifications: diff update operations, find affected manifests, deliver a signed webhook."""
