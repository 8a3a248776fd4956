"""Validate scanner responses against Quay's copy of the Clair v4 OpenAPI schemas, as Quay does."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

SPEC = Path(__file__).resolve().parents[1] / "data" / "scanner" / "clair-v4.openapi.json"
_URI = "urn:quay:clair-v4.openapi.json"


@lru_cache(maxsize=1)
def _registry() -> Registry:
    spec = json.loads(SPEC.read_text())
    return Registry().with_resource(_URI, Resource.from_contents(spec, default_specification=DRAFT4))


def validate(instance: object, schema_name: str) -> None:
    """Raise jsonschema.ValidationError when `instance` does not satisfy components/schemas/<name>."""
    validator = jsonschema.Draft4Validator({"$ref": f"{_URI}#/components/schemas/{schema_name}"},
                                           registry=_registry())
    validator.validate(instance)
