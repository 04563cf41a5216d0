"""OpenSearch index layout shared by the engine, the sink and the reindex.

Two index families, `tutors` and `coaches`. Each is a series of versioned indices
(`tutors_v1`, `tutors_v2`, …) created from the index template of `infra/opensearch/`
(`<family>.json`, pattern `<family>_v*`), and one alias (`tutors`) naming the live one.
Searches and the streaming sink only ever use the alias; a reindex builds the next
version and swaps the alias atomically (`indexer/opensearch_reindex.py`).

`prefix` (setting `OPENSEARCH_INDEX_PREFIX`, default empty) is prepended to every index,
alias and template name, so several environments or test runs can share one cluster.
"""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

FAMILIES: tuple[str, ...] = ("tutors", "coaches")
TEMPLATES_DIR = Path(__file__).resolve().parents[3] / "infra" / "opensearch"
_VERSION_RE = re.compile(r"_v(\d+)$")


def alias_name(family: str, prefix: str = "") -> str:
    """The alias searches and the sink use: `{prefix}{family}`."""
    _check(family)
    return f"{prefix}{family}"


def index_name(family: str, version: int, prefix: str = "") -> str:
    """The concrete index of `version`: `{prefix}{family}_v{version}`."""
    _check(family)
    return f"{prefix}{family}_v{version}"


def index_version(index: str) -> int | None:
    """The version number of a concrete index name (`tutors_v3` → 3), None if unversioned."""
    m = _VERSION_RE.search(index)
    return int(m.group(1)) if m else None


def template_name(family: str, prefix: str = "") -> str:
    """Name of the family's index template."""
    _check(family)
    return f"{prefix}educonnect-{family}"


@cache
def _raw_template(family: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((TEMPLATES_DIR / f"{family}.json").read_text())
    return data


def index_template(family: str, prefix: str = "") -> dict[str, Any]:
    """The body of `PUT _index_template/<template_name>` for `family` (a fresh copy),
    its pattern adjusted to `prefix`."""
    _check(family)
    body = copy.deepcopy(_raw_template(family))
    body["index_patterns"] = [f"{prefix}{family}_v*"]
    return body


def live_settings(family: str, replicas: int) -> dict[str, Any]:
    """The serving settings restored after a bulk load: template refresh interval and
    `replicas` replicas (`PUT <index>/_settings` body)."""
    settings = _raw_template(family)["template"]["settings"]["index"]
    return {
        "index": {"number_of_replicas": replicas, "refresh_interval": settings["refresh_interval"]}
    }


LOAD_SETTINGS: dict[str, Any] = {"index": {"number_of_replicas": 0, "refresh_interval": "-1"}}
"""Settings of an index being bulk-loaded: no replicas, no refresh (ANCHORS: rebuilds)."""


def _check(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown index family {family!r} (known: {', '.join(FAMILIES)})")
