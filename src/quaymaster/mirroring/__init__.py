"""Repository mirroring: pull mirrors that copy matching tags from another registry with skopeo."""
