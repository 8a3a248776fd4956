"""The /v2 route table."""

from starlette.routing import Route

from quaymaster.registry import blobs, listing, manifests
from quaymaster.registry.auth import token_endpoint

NAME = "/v2/{name:path}"

routes = [
    Route("/v2/", listing.ping, methods=["GET", "HEAD"]),
    Route("/v2/auth", token_endpoint, methods=["GET"]),
    Route("/v2/_catalog", listing.catalog, methods=["GET"]),
    Route(NAME + "/tags/list", listing.list_tags, methods=["GET"]),
    Route(NAME + "/manifests/{reference}", manifests.get_manifest, methods=["GET", "HEAD"]),
    Route(NAME + "/manifests/{reference}", manifests.put_manifest, methods=["PUT"]),
    Route(NAME + "/manifests/{reference}", manifests.delete_manifest, methods=["DELETE"]),
    Route(NAME + "/referrers/{digest}", manifests.get_referrers, methods=["GET"]),
    Route(NAME + "/blobs/uploads/", blobs.start_upload, methods=["POST"]),
    Route(NAME + "/blobs/uploads/{uuid}", blobs.upload_status, methods=["GET"]),
    Route(NAME + "/blobs/uploads/{uuid}", blobs.patch_upload, methods=["PATCH"]),
    Route(NAME + "/blobs/uploads/{uuid}", blobs.finish_upload, methods=["PUT"]),
    Route(NAME + "/blobs/uploads/{uuid}", blobs.cancel_upload, methods=["DELETE"]),
    Route(NAME + "/blobs/{digest}", blobs.get_blob, methods=["GET", "HEAD"]),
    Route(NAME + "/blobs/{digest}", blobs.delete_blob, methods=["DELETE"]),
]
