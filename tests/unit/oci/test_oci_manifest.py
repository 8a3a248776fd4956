import json

import pytest

from quaymaster.oci import mediatypes as mt
from quaymaster.oci.digest import compute_digest
from quaymaster.oci.errors import OCIError
from quaymaster.oci.manifest import (
    ALLOWED_MANIFEST_CONTENT_TYPES,
    Descriptor,
    parse_manifest,
)


def digest_of(label: str) -> str:
    return compute_digest(label.encode())


CONFIG = digest_of("config")
LAYER1 = digest_of("layer1")
LAYER2 = digest_of("layer2")
CHILD1 = digest_of("child1")
CHILD2 = digest_of("child2")
SUBJECT = digest_of("subject")


def desc(media_type: str, digest: str, size: int = 10, **extra) -> dict:
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


def encode(obj) -> bytes:
    return json.dumps(obj).encode()


def docker_schema2(**extra) -> dict:
    return {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_SCHEMA2_MANIFEST,
        "config": desc(mt.DOCKER_CONFIG, CONFIG),
        "layers": [desc(mt.DOCKER_LAYER, LAYER1), desc(mt.DOCKER_LAYER, LAYER2)],
        **extra,
    }


def oci_manifest(**extra) -> dict:
    return {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": desc(mt.OCI_CONFIG, CONFIG),
        "layers": [desc(mt.OCI_LAYER_GZIP, LAYER1)],
        **extra,
    }


def oci_index(**extra) -> dict:
    return {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            desc(mt.OCI_MANIFEST, CHILD1, platform={"architecture": "amd64", "os": "linux"}),
            desc(mt.OCI_MANIFEST, CHILD2),
        ],
        **extra,
    }


def expect_invalid(raw: bytes, content_type, code: str = "MANIFEST_INVALID") -> OCIError:
    with pytest.raises(OCIError) as info:
        parse_manifest(raw, content_type)
    assert info.value.code == code
    return info.value


# --- accepted manifests ---------------------------------------------------

def test_docker_schema2():
    raw = encode(docker_schema2())
    parsed = parse_manifest(raw, mt.DOCKER_SCHEMA2_MANIFEST)
    assert parsed.media_type == mt.DOCKER_SCHEMA2_MANIFEST
    assert parsed.schema_version == 2
    assert parsed.digest == compute_digest(raw)
    assert parsed.size == len(raw)
    assert parsed.raw == raw
    assert not parsed.is_index
    assert parsed.config == Descriptor(mt.DOCKER_CONFIG, CONFIG, 10)
    assert [d.digest for d in parsed.layers] == [LAYER1, LAYER2]
    assert parsed.blob_digests == [CONFIG, LAYER1, LAYER2]
    assert parsed.child_digests == []
    assert parsed.effective_artifact_type is None


def test_docker_manifest_list_with_platforms():
    body = {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST_LIST,
        "manifests": [
            desc(mt.DOCKER_SCHEMA2_MANIFEST, CHILD1,
                 platform={"architecture": "amd64", "os": "linux"}),
            desc(mt.DOCKER_SCHEMA2_MANIFEST, CHILD2,
                 platform={"architecture": "arm64", "os": "linux", "variant": "v8"}),
        ],
    }
    parsed = parse_manifest(encode(body), mt.DOCKER_MANIFEST_LIST)
    assert parsed.is_index
    assert parsed.child_digests == [CHILD1, CHILD2]
    assert parsed.blob_digests == []
    assert parsed.config is None
    assert parsed.manifests[1].platform == {"architecture": "arm64", "os": "linux",
                                            "variant": "v8"}


def test_oci_manifest_with_annotations():
    body = oci_manifest(annotations={"org.opencontainers.image.title": "demo"})
    parsed = parse_manifest(encode(body), mt.OCI_MANIFEST)
    assert parsed.media_type == mt.OCI_MANIFEST
    assert parsed.annotations == {"org.opencontainers.image.title": "demo"}
    assert parsed.blob_digests == [CONFIG, LAYER1]
    assert parsed.subject is None
    # OCI 1.1: with no artifactType the referrers API reports the config media type.
    assert parsed.effective_artifact_type == mt.OCI_CONFIG


def test_oci_index():
    parsed = parse_manifest(encode(oci_index()), mt.OCI_INDEX)
    assert parsed.is_index
    assert parsed.child_digests == [CHILD1, CHILD2]
    assert parsed.manifests[0].platform == {"architecture": "amd64", "os": "linux"}
    assert parsed.manifests[1].platform is None


def test_oci_artifact_with_empty_config():
    empty = compute_digest(b"{}")
    body = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom+json",
        "config": desc(mt.OCI_EMPTY, empty, 2),
        "layers": [],
    }
    parsed = parse_manifest(encode(body), mt.OCI_MANIFEST)
    assert parsed.artifact_type == "application/vnd.example.sbom+json"
    assert parsed.effective_artifact_type == "application/vnd.example.sbom+json"
    assert parsed.layers == []
    assert parsed.blob_digests == [empty]


def test_artifact_type_falls_back_to_custom_config_type():
    body = oci_manifest(config=desc("application/vnd.example.config.v1+json", CONFIG))
    parsed = parse_manifest(encode(body), mt.OCI_MANIFEST)
    assert parsed.artifact_type is None
    assert parsed.effective_artifact_type == "application/vnd.example.config.v1+json"


def test_subject_is_parsed():
    body = oci_manifest(artifactType="application/vnd.example.sig",
                        subject=desc(mt.OCI_MANIFEST, SUBJECT, 123))
    parsed = parse_manifest(encode(body), mt.OCI_MANIFEST)
    assert parsed.subject == Descriptor(mt.OCI_MANIFEST, SUBJECT, 123)
    assert SUBJECT not in parsed.blob_digests


def test_index_subject_and_artifact_type():
    body = oci_index(subject=desc(mt.OCI_MANIFEST, SUBJECT), artifactType="application/x.y")
    parsed = parse_manifest(encode(body), mt.OCI_INDEX)
    assert parsed.subject.digest == SUBJECT
    assert parsed.effective_artifact_type == "application/x.y"


@pytest.mark.parametrize("foreign", [mt.DOCKER_FOREIGN_LAYER, mt.OCI_NONDISTRIBUTABLE_LAYER_GZIP])
def test_foreign_layer_excluded_from_blob_digests(foreign):
    body = docker_schema2(layers=[
        desc(foreign, LAYER1, urls=["https://example.com/layer"]),
        desc(mt.DOCKER_LAYER, LAYER2),
    ])
    parsed = parse_manifest(encode(body), None)
    assert parsed.blob_digests == [CONFIG, LAYER2]
    assert parsed.layers[0].urls == ["https://example.com/layer"]


def test_duplicate_layers_deduplicated_in_order():
    body = docker_schema2(layers=[desc(mt.DOCKER_LAYER, LAYER2), desc(mt.DOCKER_LAYER, LAYER1),
                                  desc(mt.DOCKER_LAYER, LAYER2)])
    parsed = parse_manifest(encode(body), mt.DOCKER_SCHEMA2_MANIFEST)
    assert len(parsed.layers) == 3
    assert parsed.blob_digests == [CONFIG, LAYER2, LAYER1]


def test_digest_covers_exact_bytes():
    compact = json.dumps(oci_manifest(), separators=(",", ":")).encode()
    pretty = json.dumps(oci_manifest(), indent=3).encode()
    a = parse_manifest(compact, mt.OCI_MANIFEST)
    b = parse_manifest(pretty, mt.OCI_MANIFEST)
    assert a.digest == compute_digest(compact)
    assert b.digest == compute_digest(pretty)
    assert a.digest != b.digest


def test_sha512_digest():
    raw = encode(oci_manifest())
    assert parse_manifest(raw, mt.OCI_MANIFEST, algorithm="sha512").digest == \
        compute_digest(raw, "sha512")


@pytest.mark.parametrize("content_type", [
    f"{mt.OCI_MANIFEST}; charset=utf-8",
    f" {mt.OCI_MANIFEST.upper()} ",
])
def test_content_type_with_parameters(content_type):
    assert parse_manifest(encode(oci_manifest()), content_type).media_type == mt.OCI_MANIFEST


@pytest.mark.parametrize("content_type", [None, "", "application/json",
                                          "application/octet-stream"])
def test_generic_content_type_uses_body_media_type(content_type):
    parsed = parse_manifest(encode(docker_schema2()), content_type)
    assert parsed.media_type == mt.DOCKER_SCHEMA2_MANIFEST


def test_media_type_inferred_from_shape():
    manifest = oci_manifest()
    del manifest["mediaType"]
    index = oci_index()
    del index["mediaType"]
    assert parse_manifest(encode(manifest), None).media_type == mt.OCI_MANIFEST
    assert parse_manifest(encode(index), "application/json").media_type == mt.OCI_INDEX


def test_body_without_media_type_uses_content_type():
    body = oci_manifest()
    del body["mediaType"]
    assert parse_manifest(encode(body), mt.OCI_MANIFEST).media_type == mt.OCI_MANIFEST


def test_allowed_content_types():
    assert set(ALLOWED_MANIFEST_CONTENT_TYPES) == mt.MANIFEST_TYPES


# --- rejected manifests ---------------------------------------------------

@pytest.mark.parametrize("content_type", sorted(mt.SCHEMA1_TYPES))
def test_schema1_rejected_by_content_type(content_type):
    err = expect_invalid(encode({"schemaVersion": 1, "name": "a/b", "tag": "x"}), content_type)
    assert "schema 1" in err.message


@pytest.mark.parametrize("content_type", [None, "application/json"])
def test_schema1_rejected_by_body(content_type):
    err = expect_invalid(encode({"schemaVersion": 1, "name": "a/b", "fsLayers": []}),
                         content_type)
    assert "schema 1" in err.message


def test_content_type_body_mismatch():
    err = expect_invalid(encode(docker_schema2()), mt.OCI_MANIFEST)
    assert "does not match" in err.message


@pytest.mark.parametrize("content_type", ["text/plain", "application/vnd.example+json"])
def test_unsupported_content_type(content_type):
    err = expect_invalid(encode(oci_manifest()), content_type)
    assert "unsupported manifest media type" in err.message


def test_unsupported_body_media_type():
    expect_invalid(encode(oci_manifest(mediaType="application/vnd.example+json")), None)


def test_undeterminable_media_type():
    expect_invalid(encode({"schemaVersion": 2, "layers": []}), None)


def test_oversized():
    raw = encode(oci_manifest())
    with pytest.raises(OCIError) as info:
        parse_manifest(raw, mt.OCI_MANIFEST, max_size=len(raw) - 1)
    assert info.value.code == "SIZE_INVALID"
    assert str(len(raw) - 1) in info.value.message
    assert parse_manifest(raw, mt.OCI_MANIFEST, max_size=len(raw)).size == len(raw)


def test_oversized_checked_before_parsing():
    expect_invalid(b"x" * (4 * 1024 * 1024 + 1), mt.OCI_MANIFEST, "SIZE_INVALID")


@pytest.mark.parametrize("raw", [b"", b"not json", b"{", b"\xff\xfe{}", b"[]",
                                 encode([oci_manifest()]), b'"text"', b"2",
                                 b'{"schemaVersion": NaN}'])
def test_not_a_json_object(raw):
    expect_invalid(raw, mt.OCI_MANIFEST)


@pytest.mark.parametrize("version", [None, 3, "2", 2.0, True])
def test_schema_version_must_be_two(version):
    body = oci_manifest(schemaVersion=version)
    err = expect_invalid(encode(body), mt.OCI_MANIFEST)
    assert "schemaVersion" in err.message


def test_missing_config():
    body = oci_manifest()
    del body["config"]
    err = expect_invalid(encode(body), mt.OCI_MANIFEST)
    assert "config" in err.message


@pytest.mark.parametrize("layers", [None, {}, "x"])
def test_layers_must_be_a_list(layers):
    body = oci_manifest(layers=layers)
    err = expect_invalid(encode(body), mt.OCI_MANIFEST)
    assert "layers" in err.message


def test_index_requires_manifests():
    body = oci_index()
    del body["manifests"]
    expect_invalid(encode(body), mt.OCI_INDEX)


@pytest.mark.parametrize("size", [-1, "12", 1.5, True, None, 2**63])
def test_bad_descriptor_size(size):
    body = oci_manifest(layers=[desc(mt.OCI_LAYER_GZIP, LAYER1, size)])
    err = expect_invalid(encode(body), mt.OCI_MANIFEST)
    assert "layers[0].size" in err.message


@pytest.mark.parametrize("digest", ["sha256:" + "A" * 64, "sha256:abc", "nope", None, 5])
def test_bad_descriptor_digest(digest):
    body = oci_manifest(config=desc(mt.OCI_CONFIG, digest))
    err = expect_invalid(encode(body), mt.OCI_MANIFEST)
    assert "config.digest" in err.message


@pytest.mark.parametrize("media_type", [None, "", "nosubtype", "a/b/c", "a b/c", 7])
def test_bad_descriptor_media_type(media_type):
    body = oci_manifest(layers=[desc(media_type, LAYER1)])
    err = expect_invalid(encode(body), mt.OCI_MANIFEST)
    assert "layers[0].mediaType" in err.message


def test_descriptor_must_be_object():
    expect_invalid(encode(oci_manifest(layers=["sha256:" + "a" * 64])), mt.OCI_MANIFEST)


@pytest.mark.parametrize("platform", ["linux", {"os": "linux"}, {"architecture": "amd64"},
                                      {"architecture": 1, "os": "linux"}])
def test_bad_platform(platform):
    body = oci_index()
    body["manifests"][0]["platform"] = platform
    err = expect_invalid(encode(body), mt.OCI_INDEX)
    assert "manifests[0].platform" in err.message


@pytest.mark.parametrize("annotations", [[], "x", {"k": 1}])
def test_bad_annotations(annotations):
    expect_invalid(encode(oci_manifest(annotations=annotations)), mt.OCI_MANIFEST)


def test_bad_subject():
    body = oci_manifest(subject={"digest": SUBJECT})
    err = expect_invalid(encode(body), mt.OCI_MANIFEST)
    assert "subject" in err.message


def test_bad_artifact_type():
    expect_invalid(encode(oci_manifest(artifactType=5)), mt.OCI_MANIFEST)


def test_descriptor_from_json_defaults():
    d = Descriptor.from_json(desc(mt.OCI_LAYER_TAR, LAYER1, 0))
    assert (d.size, d.annotations, d.artifact_type, d.platform, d.urls) == (0, {}, None, None, [])


def test_is_foreign_layer():
    assert mt.is_foreign_layer(mt.DOCKER_FOREIGN_LAYER)
    assert mt.is_foreign_layer(mt.OCI_NONDISTRIBUTABLE_LAYER_TAR)
    assert mt.is_foreign_layer(mt.OCI_NONDISTRIBUTABLE_LAYER_ZSTD)
    assert not mt.is_foreign_layer(mt.OCI_LAYER_ZSTD)
    assert not mt.is_foreign_layer(mt.DOCKER_LAYER)
