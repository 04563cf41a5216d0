"""The web pages as HTTP resources: language choice, configuration, strings, assets.

(What they do in a browser is in `test_web_browser.py`.)
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.pages import STATIC_DIR, WEB_DIR, choose_language, messages


@pytest.fixture
async def web(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    """A client on a fresh app (no database needed for the pages themselves)."""
    from api.app import create_app
    from core.settings import get_settings

    monkeypatch.setenv("MAP_TILE_URL", "https://{s}.tiles.example.org/{z}/{x}/{y}.png")
    get_settings.cache_clear()
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c
    get_settings.cache_clear()


def _config(html: str) -> dict[str, Any]:
    m = re.search(r'<script id="page-config" type="application/json">(.*?)</script>', html, re.S)
    assert m is not None
    data: dict[str, Any] = json.loads(m.group(1))
    return data


@pytest.mark.parametrize(
    ("lang", "accept", "expected"),
    [
        (None, None, "en"),
        (None, "fr-FR,fr;q=0.9,en;q=0.8", "fr"),
        (None, "de-DE, en;q=0.5, fr;q=0.7", "fr"),
        (None, "en-GB;q=0.8,en;q=0.9,fr;q=0.95", "fr"),
        (None, "en-GB,fr;q=0.95", "en"),
        (None, "fr;q=0, en", "en"),
        (None, "de, *;q=0.1", "en"),
        ("fr", "en", "fr"),
        ("EN", "fr", "en"),
        ("xx", "fr-CA", "fr"),
        (None, "garbage;;;", "en"),
    ],
)
def test_choose_language(lang: str | None, accept: str | None, expected: str) -> None:
    assert choose_language(lang, accept) == expected


@pytest.mark.parametrize("path", ["/", "/coaches"])
async def test_pages_follow_accept_language_and_lang(web: httpx.AsyncClient, path: str) -> None:
    fr = await web.get(path, headers={"Accept-Language": "fr-FR,fr;q=0.9"})
    assert fr.status_code == 200
    assert fr.headers["content-type"].startswith("text/html")
    assert fr.headers["content-language"] == "fr"
    assert "Accept-Language" in fr.headers["vary"]
    assert '<html lang="fr">' in fr.text
    assert "{{" not in fr.text
    assert _config(fr.text)["messages"]["common.search"] == "Rechercher"
    en = await web.get(path, params={"lang": "en"}, headers={"Accept-Language": "fr"})
    assert '<html lang="en">' in en.text
    assert _config(en.text)["lang"] == "en"
    assert f'href="{path}?lang=fr"' in en.text


async def test_map_page_config_and_csp(web: httpx.AsyncClient) -> None:
    r = await web.get("/")
    cfg = _config(r.text)
    assert cfg["tileUrl"] == "https://{s}.tiles.example.org/{z}/{x}/{y}.png"
    assert "OpenStreetMap" in cfg["tileAttribution"]
    assert any(c["id"] == "paris" for c in cfg["cities"])
    assert {s["slug"] for s in cfg["subjects"]} >= {"mathematics", "physics"}
    csp = r.headers["content-security-policy"]
    assert "img-src 'self' data: https://*.tiles.example.org;" in csp
    assert "script-src 'self';" in csp  # no inline script runs: the config is JSON data


async def test_empty_tile_url_disables_tiles(
    web: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.settings import get_settings

    monkeypatch.setenv("MAP_TILE_URL", "")
    get_settings.cache_clear()
    r = await web.get("/")
    assert _config(r.text)["tileUrl"] == ""
    assert "img-src 'self' data:;" in r.headers["content-security-policy"]


async def test_config_cannot_break_out_of_its_script(
    web: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.settings import get_settings

    monkeypatch.setenv("MAP_TILE_ATTRIBUTION", "</script><script>alert(1)</script>")
    get_settings.cache_clear()
    r = await web.get("/")
    assert "<script>alert(1)" not in r.text
    assert _config(r.text)["tileAttribution"] == "</script><script>alert(1)</script>"


async def test_static_assets_and_vendored_libraries_are_served(web: httpx.AsyncClient) -> None:
    for path in (
        "/static/js/map-page.js",
        "/static/js/coaches-page.js",
        "/static/js/common.js",
        "/static/css/app.css",
        "/static/vendor/leaflet-1.9.4/leaflet.js",
        "/static/vendor/leaflet.markercluster-1.5.3/leaflet.markercluster.js",
    ):
        r = await web.get(path)
        assert r.status_code == 200, path
    assert (await web.get("/static/nope.js")).status_code == 404


def test_every_string_exists_in_both_languages() -> None:
    msgs = messages()
    assert set(msgs) == {"en", "fr"}
    assert set(msgs["en"]) == set(msgs["fr"])
    used: set[str] = set()
    for template in (WEB_DIR / "templates").glob("*.html"):
        used |= set(re.findall(r"\bt\(\"([a-z0-9_.]+)\"\)", template.read_text("utf-8")))
    for script in (STATIC_DIR / "js").glob("*.js"):
        text = script.read_text("utf-8")
        used |= set(re.findall(r"\bt\(\"([a-z0-9_.]+)\"", text))
        used |= {
            f"{k}.{f}"
            for k in re.findall(r"\btn\(\"([a-z0-9_.]+)\"", text)
            for f in ("one", "other")
        }
    missing = used - set(msgs["en"])
    assert not missing, missing


def test_vendored_files_match_their_recorded_hashes() -> None:
    import hashlib

    vendor = STATIC_DIR / "vendor"
    text = (vendor / "VENDORED.md").read_text("utf-8")
    recorded = dict(
        (path, digest) for digest, path in re.findall(r"^([0-9a-f]{64})  (\S+)$", text, re.M)
    )
    files = {
        str(p.relative_to(vendor))
        for p in vendor.rglob("*")
        if p.is_file() and p.name != "VENDORED.md"
    }
    assert set(recorded) == files
    for path, digest in recorded.items():
        assert hashlib.sha256((vendor / path).read_bytes()).hexdigest() == digest, path
    assert (vendor / "leaflet-1.9.4" / "LICENSE").exists()
    assert (vendor / "leaflet.markercluster-1.5.3" / "LICENSE").exists()


def test_package_data_ships_the_pages() -> None:
    import tomllib

    data = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["api"]
    assert "web/static/**/*" in patterns
    assert "web/templates/*.html" in patterns
