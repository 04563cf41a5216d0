"""A validator of OpenSearch request bodies against the official API specification
(`../shared/opensearch-api-spec/spec`, OpenAPI 3.1 YAML; override with
`OPENSEARCH_API_SPEC`).

The spec's files are served to `jsonschema` (Draft 2020-12) through a `referencing`
registry that loads them on demand under one base URI keeping the `spec/namespaces` /
`spec/schemas` layout, so their relative cross-file `$ref`s resolve. Three adjustments,
the ones the spec's README reports (each makes validation *stricter* or removes a false
rejection, never hides a real error):

- `oneOf` is read as `anyOf`: many branches overlap (a sort `{"id": "asc"}` matches two),
  so strict `oneOf` rejects bodies OpenSearch accepts;
- `QueryContainer` and the bulk `OperationContainer` are closed
  (`additionalProperties: false`), so a misspelled query type or an unknown bulk action
  fails instead of passing as an unknown key;
- a bulk body is checked line by line: every action line against `OperationContainer`,
  the line after `index`/`create` is the document (an object), and the whole body against
  the spec's `bulk` request body.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_ROOT = Path(
    os.environ.get(
        "OPENSEARCH_API_SPEC",
        Path(__file__).resolve().parents[3] / "shared" / "opensearch-api-spec" / "spec",
    )
)
if not SPEC_ROOT.exists():  # worktrees live next to main: /work/<tree>/tests → /work/shared
    SPEC_ROOT = Path("/work/shared/opensearch-api-spec/spec")
BASE = "https://opensearch-api-spec.local/spec/"
_CLOSED = {
    "_common.query_dsl.yaml": ("QueryContainer",),
    "_core.bulk.yaml": ("OperationContainer",),
}

try:
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _Loader = yaml.SafeLoader


def _any_of(node: Any) -> Any:
    if isinstance(node, dict):
        out = {("anyOf" if k == "oneOf" else k): _any_of(v) for k, v in node.items()}
        return out
    if isinstance(node, list):
        return [_any_of(v) for v in node]
    return node


@cache
def _load(relpath: str) -> dict[str, Any]:
    data = yaml.load((SPEC_ROOT / relpath).read_text(), Loader=_Loader)
    data = _any_of(data)
    for name in _CLOSED.get(Path(relpath).name, ()):
        schema = data["components"]["schemas"][name]
        assert "properties" in schema, name
        schema.setdefault("additionalProperties", False)
    data["$id"] = BASE + relpath
    return dict(data)


def _retrieve(uri: str) -> Resource[Any]:
    if not uri.startswith(BASE):
        raise LookupError(uri)
    return Resource.from_contents(_load(uri[len(BASE) :]), default_specification=DRAFT202012)


@cache
def _registry() -> Registry[Any]:
    return Registry(retrieve=_retrieve)  # type: ignore[call-arg]


@cache
def _validator(ref: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": ref}, registry=_registry())


def request_body_ref(namespace: str, operation: str, content_type: str) -> str:
    """The `$ref` of an operation's request-body schema in `namespaces/<namespace>.yaml`."""
    ctype = content_type.replace("~", "~0").replace("/", "~1")
    return f"{BASE}namespaces/{namespace}.yaml#/components/requestBodies/{operation}/content/{ctype}/schema"


def errors(ref: str, body: Any) -> list[str]:
    """Messages of every violation of the schema at `ref` by `body` (empty: valid)."""
    out = []
    for e in _validator(ref).iter_errors(body):
        best = e
        if e.context:
            best = min(e.context, key=lambda c: (-len(c.absolute_path), len(c.message)))
        out.append(f"{'/'.join(map(str, e.absolute_path)) or '<body>'}: {best.message[:300]}")
    return out


# The operations whose bodies our code sends, by (method, path pattern).
OPERATIONS: list[tuple[str, re.Pattern[str], str, str]] = [
    ("POST", re.compile(r"^/[^_/][^/]*/_search$"), "_core", "search"),
    ("GET", re.compile(r"^/[^_/][^/]*/_search$"), "_core", "search"),
    ("PUT", re.compile(r"^/_index_template/[^/]+$"), "indices", "indices.put_index_template"),
    ("POST", re.compile(r"^/_index_template/[^/]+$"), "indices", "indices.put_index_template"),
    ("PUT", re.compile(r"^/[^_/][^/]*/_settings$"), "indices", "indices.put_settings"),
    ("POST", re.compile(r"^/_aliases$"), "indices", "indices.update_aliases"),
    ("PUT", re.compile(r"^/[^_/][^/]*$"), "indices", "indices.create"),
]
BULK = re.compile(r"^(/[^_/][^/]*)?/_bulk$")


@dataclass
class Checked:
    """Bodies validated so far, by operation."""

    by_operation: dict[str, int] = field(default_factory=dict)

    def add(self, operation: str) -> None:
        self.by_operation[operation] = self.by_operation.get(operation, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.by_operation.values())


CHECKED = Checked()


def validate_bulk(raw: bytes) -> list[str]:
    """Violations of an NDJSON bulk body (see the module docstring)."""
    lines = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
    problems = [
        f"bulk: {m}"
        for m in errors(request_body_ref("_core", "bulk", "application/x-ndjson"), lines)
    ]
    op_ref = f"{BASE}schemas/_core.bulk.yaml#/components/schemas/OperationContainer"
    i = 0
    while i < len(lines):
        action = lines[i]
        problems += [f"line {i + 1}: {m}" for m in errors(op_ref, action)]
        kind = next(iter(action), None) if isinstance(action, dict) else None
        if kind in ("index", "create", "update"):
            if i + 1 >= len(lines) or not isinstance(lines[i + 1], dict):
                problems.append(f"line {i + 2}: {kind} needs a source object")
            elif kind == "update":
                upd = f"{BASE}schemas/_core.bulk.yaml#/components/schemas/UpdateAction"
                problems += [f"line {i + 2}: {m}" for m in errors(upd, lines[i + 1])]
            i += 2
        else:
            i += 1
    return problems


def validate_request(method: str, path: str, body: bytes) -> tuple[str | None, list[str]]:
    """(operation, violations) for one recorded HTTP request; operation None when the
    request has no body to validate."""
    if not body.strip():
        return None, []
    if BULK.match(path) and method in ("POST", "PUT"):
        problems = validate_bulk(body)
        CHECKED.add("bulk")
        return "bulk", problems
    for m, pattern, namespace, operation in OPERATIONS:
        if m == method and pattern.match(path):
            ref = request_body_ref(namespace, operation, "application/json")
            problems = errors(ref, json.loads(body))
            CHECKED.add(operation)
            return operation, problems
    return f"unknown {method} {path}", [f"no spec operation mapped for {method} {path}"]
