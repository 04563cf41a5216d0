"""A local stand-in for an OpenSearch cluster at the HTTP level (`http.server` in a thread).

It records every request (method, path, query, body) and answers with realistic response
shapes (taken from OpenSearch 2.x): index/alias bookkeeping is kept in memory (templates,
indices, aliases, mapping `_meta`), bulk items succeed (201 created / 200 deleted) unless
told otherwise, and `_search` returns hits with `sort` values and the aggregations the
request asked for. It does not search: the tests that need real answers are the
integration suite (`pytest -m opensearch`).

Knobs: `bulk_status[id or index/id] = [status, …]` (consumed per item, e.g. `[429, 201]`),
`missing` (ids a delete does not find → 404), `search_delay_s`, `fail_search` (HTTP status).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes


@dataclass
class State:
    templates: dict[str, Any] = field(default_factory=dict)
    indices: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → create body
    aliases: dict[str, str] = field(default_factory=dict)  # alias → index
    bulk_status: dict[str, list[int]] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)
    search_delay_s: float = 0.0
    fail_search: int | None = None
    hits: int = 3


def _uuid(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


def search_response(body: dict[str, Any], state: State) -> dict[str, Any]:
    """A realistic `_search` answer shaped by `body` (sort values, aggregations)."""
    aggs = body.get("aggs") or {}
    size = int(body.get("size", 10))
    n = min(state.hits, size)
    sort = body.get("sort") or []
    first = next(iter(sort[0])) if sort else "_score"
    hits = []
    for i in range(n):
        if first == "_geo_distance":
            value: Any = 1200.5 + 1000 * i
        elif first == "rating_sort":
            value = 4.9 - 0.1 * i
        elif first == "price_minor":
            value = 2500.0 + 100 * i
        else:
            value = 7.5 - i
        src: dict[str, Any] = {
            "provider_id": _uuid(i + 1),
            "display_name": f"Provider {i}",
            "headline": "Maths et physique",
            "languages": ["en", "fr"],
            "price_minor": 2500 + 100 * i,
            "currency": "EUR",
            "rating_avg": None if i == 2 else 4.9 - 0.1 * i,
            "rating_count": 0 if i == 2 else 10 + i,
            "online": True,
            "in_person": i % 2 == 0,
            "city": "Paris",
            "country_code": "FR",
            "kind": "coach",
            "subjects": ["mathematics"],
            "expertises": ["public-speaking"],
            "location": {"lat": 48.85 + 0.01 * i, "lon": 2.35},
        }
        wanted = body.get("_source")
        if isinstance(wanted, list):
            src = {k: v for k, v in src.items() if k in wanted}
        hits.append(
            {
                "_index": "tutors_v3",
                "_id": src.get("provider_id", _uuid(i + 1)),
                "_score": None if sort and first != "_score" else 7.5 - i,
                "_source": src,
                "sort": [value, _uuid(i + 1)],
            }
        )
    resp: dict[str, Any] = {
        "took": 3,
        "timed_out": False,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {
            "total": {"value": 42, "relation": "eq"},
            "max_score": None,
            "hits": hits,
        },
    }
    out: dict[str, Any] = {}
    if "cells" in aggs:
        out["cells"] = {
            "buckets": [
                {
                    "key": "12/2074/1409",
                    "doc_count": 30,
                    "centroid": {"location": {"lat": 48.85, "lon": 2.35}, "count": 30},
                    "bounds": {
                        "bounds": {
                            "top_left": {"lat": 48.9, "lon": 2.3},
                            "bottom_right": {"lat": 48.8, "lon": 2.4},
                        }
                    },
                },
                {
                    "key": "12/2075/1409",
                    "doc_count": 12,
                    "centroid": {"location": {"lat": 48.86, "lon": 2.45}, "count": 12},
                    "bounds": {
                        "bounds": {
                            "top_left": {"lat": 48.87, "lon": 2.41},
                            "bottom_right": {"lat": 48.84, "lon": 2.5},
                        }
                    },
                },
            ]
        }
    if "catalogue" in aggs:
        out["catalogue"] = {
            "doc_count": 40,
            "values": {
                "doc_count_error_upper_bound": 0,
                "sum_other_doc_count": 0,
                "buckets": [
                    {"key": "mathematics", "doc_count": 30},
                    {"key": "physics", "doc_count": 12},
                ],
            },
        }
        out["languages"] = {
            "doc_count": 41,
            "values": {
                "doc_count_error_upper_bound": 0,
                "sum_other_doc_count": 0,
                "buckets": [{"key": "fr", "doc_count": 41}, {"key": "en", "doc_count": 20}],
            },
        }
        out["results"] = {
            "doc_count": 42,
            "rating": {
                "buckets": [
                    {"key": "1-2", "from": 1.0, "to": 2.0, "doc_count": 0},
                    {"key": "2-3", "from": 2.0, "to": 3.0, "doc_count": 2},
                    {"key": "3-4", "from": 3.0, "to": 4.0, "doc_count": 10},
                    {"key": "4-5", "from": 4.0, "doc_count": 25},
                ]
            },
            "price": {
                "doc_count_error_upper_bound": 0,
                "sum_other_doc_count": 0,
                "buckets": [
                    {
                        "key": "EUR",
                        "doc_count": 40,
                        "stats": {
                            "count": 40,
                            "min": 1500.0,
                            "max": 9000.0,
                            "avg": 3512.5,
                            "sum": 140500.0,
                        },
                    },
                    {
                        "key": "GBP",
                        "doc_count": 2,
                        "stats": {
                            "count": 2,
                            "min": 3000.0,
                            "max": 4000.0,
                            "avg": 3500.0,
                            "sum": 7000.0,
                        },
                    },
                ],
            },
        }
    if out:
        resp["aggregations"] = out
    return resp


class StandIn:
    """The server; `url` to point clients at, `requests` recorded, `state` the knobs."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.state = State()
        self._lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no ~40 ms delayed-ACK stall per answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                rec = Recorded(self.command, parts.path, parse_qs(parts.query), body)
                with standin._lock:
                    standin.requests.append(rec)
                status, payload = standin.route(rec)
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def bodies(self) -> Iterator[Recorded]:
        return (r for r in list(self.requests) if r.body.strip())

    # ------------------------------------------------------------------ routing

    def _not_found(self, what: str) -> tuple[int, dict[str, Any]]:
        err = {"type": "index_not_found_exception", "reason": f"no such index [{what}]"}
        return 404, {"error": {"root_cause": [err], **err}, "status": 404}

    def route(self, r: Recorded) -> tuple[int, Any]:
        s = self.state
        p = r.path.rstrip("/") or "/"
        seg = [x for x in p.split("/") if x]
        if p == "/":
            return 200, {"version": {"distribution": "opensearch", "number": "2.17.1"}}
        if seg[0] == "_index_template" and r.method in ("PUT", "POST"):
            s.templates[seg[1]] = json.loads(r.body)
            return 200, {"acknowledged": True}
        if seg[0] == "_alias" and r.method == "GET":
            alias = seg[1]
            if alias not in s.aliases:
                return 404, {"error": f"alias [{alias}] missing", "status": 404}
            return 200, {s.aliases[alias]: {"aliases": {alias: {}}}}
        if seg[0] == "_aliases" and r.method == "POST":
            for action in json.loads(r.body)["actions"]:
                ((op, a),) = action.items()
                if op == "remove" and s.aliases.get(a["alias"]) == a["index"]:
                    del s.aliases[a["alias"]]
                elif op == "add":
                    s.aliases[a["alias"]] = a["index"]
            return 200, {"acknowledged": True}
        if seg[-1] == "_bulk":
            return 200, self._bulk(r.body)
        if seg[-1] == "_search":
            if s.search_delay_s:
                time.sleep(s.search_delay_s)
            if s.fail_search:
                return s.fail_search, {
                    "error": {"type": "search_phase_execution_exception"},
                    "status": s.fail_search,
                }
            return 200, search_response(json.loads(r.body or b"{}"), s)
        if seg[-1] == "_refresh":
            return 200, {"_shards": {"total": 2, "successful": 1, "failed": 0}}
        if seg[-1] == "_settings" and r.method == "PUT":
            return 200, {"acknowledged": True}
        if seg[-1] == "_mapping" and r.method == "GET":
            name = seg[0]
            if name not in s.indices:
                return self._not_found(name)
            mappings = s.indices[name].get("mappings", {})
            return 200, {name: {"mappings": mappings}}
        if len(seg) == 1 and r.method == "PUT":
            name = seg[0]
            if name in s.indices:
                err = {
                    "type": "resource_already_exists_exception",
                    "reason": f"index [{name}] exists",
                }
                return 400, {"error": {"root_cause": [err], **err}, "status": 400}
            body = json.loads(r.body or b"{}")
            s.indices[name] = body
            for alias in body.get("aliases", {}):
                s.aliases[alias] = name
            return 200, {"acknowledged": True, "shards_acknowledged": True, "index": name}
        if len(seg) == 1 and r.method == "GET":
            pattern = seg[0]
            if pattern.endswith("*"):
                found = {
                    n: {"aliases": {}, "mappings": {}, "settings": {}}
                    for n in s.indices
                    if n.startswith(pattern[:-1])
                }
                return 200, found
            if pattern in s.indices:
                return 200, {pattern: {"aliases": {}, "mappings": {}, "settings": {}}}
            return self._not_found(pattern)
        return 400, {"error": f"stand-in has no route for {r.method} {r.path}", "status": 400}

    def _bulk(self, raw: bytes) -> dict[str, Any]:
        lines = [json.loads(x) for x in raw.decode().splitlines() if x.strip()]
        items = []
        i = 0
        while i < len(lines):
            ((op, meta),) = lines[i].items()
            i += 2 if op in ("index", "create", "update") else 1
            doc_id = meta.get("_id", "")
            queue = self.state.bulk_status.get(f"{meta.get('_index')}/{doc_id}")
            queue = queue or self.state.bulk_status.get(doc_id)
            if queue:
                status = queue.pop(0)
            elif op == "delete" and doc_id in self.state.missing:
                status = 404
            else:
                status = 200 if op == "delete" else 201
            item: dict[str, Any] = {"_index": meta.get("_index"), "_id": doc_id, "status": status}
            if status < 300:
                item.update(
                    result="deleted" if op == "delete" else "created",
                    _version=meta.get("version", 1),
                    _shards={"total": 2, "successful": 1, "failed": 0},
                    _seq_no=0,
                    _primary_term=1,
                )
            elif status == 404:
                item.update(result="not_found", _version=1)
            elif status == 409:
                item["error"] = {
                    "type": "version_conflict_engine_exception",
                    "reason": f"[{doc_id}]: version conflict, current version [5] is higher or equal to the one provided [{meta.get('version')}]",
                    "index": meta.get("_index"),
                }
            elif status == 429:
                item["error"] = {
                    "type": "rejected_execution_exception",
                    "reason": "rejected execution of coordinating operation",
                }
            else:
                item["error"] = {
                    "type": "mapper_parsing_exception",
                    "reason": "failed to parse field [location] of type [geo_point]",
                }
            items.append({op: item})
        return {
            "took": 5,
            "errors": any(next(iter(x.values()))["status"] >= 300 for x in items),
            "items": items,
        }
