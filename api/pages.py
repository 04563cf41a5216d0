"""The web pages: `/` (tutor map search), `/coaches` (coach and mentor discovery) and
`/admin` (the back-office: pending KYC and open complaints).

Plain HTML, CSS and JavaScript modules under `api/web/` (no build step), served by the API:
templates in `api/web/templates/`, assets (and the vendored Leaflet libraries) under
`/static/` from `api/web/static/`. The pages call the public search API from the browser.

Each page is rendered with the UI language chosen by `?lang=fr|en`, else the best
`Accept-Language` match, else English. The templates are Jinja: each page extends
`base.html` (the head and the site header they share). UI strings live in one file,
`api/web/i18n.json`: templates say `{{ t("key") }}`, and the strings of the chosen language are passed to the scripts with the page configuration (tile URL and
attribution from `MAP_TILE_URL` / `MAP_TILE_ATTRIBUTION`, catalogue labels, cities).
"""

from __future__ import annotations

import json
import re
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jinja2
import markupsafe
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from core.languages import LANGUAGE_LABELS
from core.money import MINOR_UNIT_EXPONENT
from core.settings import get_settings
from profiles.catalogue import EXPERTISES, SUBJECTS

WEB_DIR = Path(__file__).resolve().parent / "web"
STATIC_DIR = WEB_DIR / "static"
UI_LANGUAGES: tuple[str, ...] = ("en", "fr")
DEFAULT_LANGUAGE = "en"

# City picker: real city centres (WGS84) of the seeded markets, with their currency.
CITIES: tuple[dict[str, Any], ...] = (
    {"id": "paris", "name": "Paris", "lat": 48.8566, "lng": 2.3522, "currency": "EUR"},
    {"id": "lyon", "name": "Lyon", "lat": 45.764, "lng": 4.8357, "currency": "EUR"},
    {"id": "marseille", "name": "Marseille", "lat": 43.2965, "lng": 5.3698, "currency": "EUR"},
    {"id": "brussels", "name": "Bruxelles", "lat": 50.8503, "lng": 4.3517, "currency": "EUR"},
    {"id": "geneva", "name": "Genève", "lat": 46.2044, "lng": 6.1432, "currency": "CHF"},
    {"id": "montreal", "name": "Montréal", "lat": 45.5019, "lng": -73.5674, "currency": "CAD"},
    {"id": "casablanca", "name": "Casablanca", "lat": 33.5731, "lng": -7.5898, "currency": "MAD"},
    {"id": "dakar", "name": "Dakar", "lat": 14.7167, "lng": -17.4677, "currency": "XOF"},
    {"id": "abidjan", "name": "Abidjan", "lat": 5.36, "lng": -4.0083, "currency": "XOF"},
    {"id": "london", "name": "London", "lat": 51.5072, "lng": -0.1276, "currency": "GBP"},
    {"id": "new-york", "name": "New York", "lat": 40.7128, "lng": -74.006, "currency": "USD"},
)

_LANG_RANGE = re.compile(
    r"^\s*([A-Za-z]{1,8}|\*)(?:-[A-Za-z0-9]{1,8})*\s*(?:;\s*q\s*=\s*([0-9.]+))?"
)

router = APIRouter(include_in_schema=False)


@lru_cache(maxsize=1)
def messages() -> dict[str, dict[str, str]]:
    """UI strings by language (`api/web/i18n.json`), every key present in every language."""
    data: dict[str, dict[str, str]] = json.loads((WEB_DIR / "i18n.json").read_text("utf-8"))
    return data


@lru_cache(maxsize=1)
def _templates() -> jinja2.Environment:
    """The pages' Jinja environment: HTML autoescaped, block tags leave no blank lines, an
    unknown variable is an error."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(WEB_DIR / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )


def choose_language(lang: str | None, accept_language: str | None) -> str:
    """The UI language: a supported `lang` parameter, else the best supported
    `Accept-Language` range (q-values honoured, `fr-CA` counts as `fr`), else English."""
    if lang and lang.lower() in UI_LANGUAGES:
        return lang.lower()
    best: tuple[float, int, str] | None = None
    for index, part in enumerate((accept_language or "").split(",")):
        m = _LANG_RANGE.match(part)
        if not m:
            continue
        primary = m.group(1).lower()
        try:
            weight = float(m.group(2)) if m.group(2) is not None else 1.0
        except ValueError:
            continue
        code = DEFAULT_LANGUAGE if primary == "*" else primary
        if code in UI_LANGUAGES and weight > 0:
            candidate = (-weight, index, code)
            if best is None or candidate < best:
                best = candidate
    return best[2] if best else DEFAULT_LANGUAGE


def _tile_origin(url: str) -> str | None:
    """The CSP source of a tile URL template (`{s}` subdomains become a wildcard)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    host = re.sub(r"\{s\}", "*", parts.netloc)
    return f"{parts.scheme}://{host}"


def page_config(lang: str, test_now: str | None = None) -> dict[str, Any]:
    """What the page scripts need: language and strings, tiles, catalogue, cities, and for
    the journey pages the payment mode and the video join window.

    `testNow` (ENV=test only) is the instant the page's clock starts at: the scripts send
    it as `X-Test-Now` to the API, which honours it only in that environment."""
    s = get_settings()
    publishable = s.stripe_publishable_key or None
    return {
        "testNow": test_now if s.env == "test" else None,
        "stripePublishableKey": publishable,
        "paymentMode": "stripe" if publishable else "test",
        "joinBeforeS": int(getattr(s, "session_join_before_s", 900)),
        "joinAfterS": int(getattr(s, "session_join_after_s", 900)),
        "lang": lang,
        "messages": messages()[lang],
        "apiBase": "/api/v1",
        "tileUrl": s.map_tile_url.strip(),
        "tileAttribution": s.map_tile_attribution,
        "subjects": [{"slug": e.slug, "fr": e.fr, "en": e.en} for e in SUBJECTS],
        "expertises": [{"slug": e.slug, "fr": e.fr, "en": e.en} for e in EXPERTISES],
        "languages": LANGUAGE_LABELS,
        "currencyExponent": MINOR_UNIT_EXPONENT,
        "cities": list(CITIES),
    }


def render_page(
    template: str, lang: str, path: str, test_now: str | None = None, extra: str = ""
) -> str:
    """The page HTML of `template` (a file in `api/web/templates/`): strings of `lang`
    (`t(key)`, the key itself when a string is missing), the other language's link for
    `path`, the configuration embedded as JSON, and `extra` (the provider page's id)."""
    strings = messages()[lang]
    other = "fr" if lang == "en" else "en"
    config = json.dumps(page_config(lang, test_now), ensure_ascii=False).replace("<", "\\u003c")
    page = _templates().get_template(template)
    # the configuration is JSON with `<` escaped: it cannot close its <script> element
    safe_config = markupsafe.Markup(config)  # noqa: S704
    return page.render(
        t=lambda key: strings.get(key, key),
        lang=lang,
        other_lang=other,
        other_lang_href=f"{path}?lang={other}",
        config=safe_config,
        extra=extra,
    )


def _response(template: str, request: Request, lang: str | None, extra: str = "") -> HTMLResponse:
    chosen = choose_language(lang, request.headers.get("accept-language"))
    tiles = _tile_origin(get_settings().map_tile_url.strip())
    img_src = " ".join(x for x in ("'self'", "data:", tiles) if x)
    # Stripe's Payment Element (journey pages, when a publishable key is set) loads
    # Stripe.js, frames its fields and calls Stripe's API
    stripe = bool(get_settings().stripe_publishable_key)
    script_src = "'self' https://js.stripe.com" if stripe else "'self'"
    connect_src = "'self' https://api.stripe.com" if stripe else "'self'"
    frame_src = "; frame-src https://js.stripe.com https://hooks.stripe.com" if stripe else ""
    csp = (
        f"default-src 'self'; script-src {script_src}; style-src 'self' 'unsafe-inline'; "
        f"img-src {img_src}; connect-src {connect_src}; frame-ancestors 'none'; "
        f"base-uri 'self'{frame_src}"
    )
    return HTMLResponse(
        render_page(template, chosen, request.url.path, request.query_params.get("now"), extra),
        headers={
            "Content-Language": chosen,
            "Vary": "Accept-Language",
            "Content-Security-Policy": csp,
            "Cache-Control": "no-cache",
        },
    )


LangParam = Query(default=None, description="UI language: fr or en")


@router.get("/", response_class=HTMLResponse)
async def map_page(request: Request, lang: str | None = LangParam) -> HTMLResponse:
    """Tutor search on a map (Leaflet, clusters from the map endpoint, synchronised list)."""
    return _response("map.html", request, lang)


@router.get("/coaches", response_class=HTMLResponse)
async def coaches_page(request: Request, lang: str | None = LangParam) -> HTMLResponse:
    """Coach and mentor discovery (facets, filters, sort, pagination)."""
    return _response("coaches.html", request, lang)


@router.get("/providers/{provider_id}", response_class=HTMLResponse)
async def provider_page(
    request: Request, provider_id: uuid.UUID, lang: str | None = LangParam
) -> HTMLResponse:
    """A provider: profile, reviews with their histogram, upcoming slots with live seats
    left, and the booking flow (slot and seats → hold with a countdown → pay → confirmed)."""
    return _response("provider.html", request, lang, extra=str(provider_id))


@router.get("/signin", response_class=HTMLResponse)
async def signin_page(request: Request, lang: str | None = LangParam) -> HTMLResponse:
    """Sign in (or create a student account), then back to `?next=`."""
    return _response("signin.html", request, lang)


@router.get("/me/bookings", response_class=HTMLResponse)
async def bookings_page(request: Request, lang: str | None = LangParam) -> HTMLResponse:
    """My bookings: status, cancel with the refund shown first, join inside the window."""
    return _response("bookings.html", request, lang)


@router.post("/_test/payment_intents/{intent_id}/{outcome}")
async def test_payment(intent_id: str, outcome: str) -> JSONResponse:
    """The test-payment step of the pages (no Stripe publishable key): asks the local
    Stripe stand-in to make the PaymentIntent succeed or fail, as `stripe trigger` does;
    its signed webhook then takes the same path as Stripe's. Refused (404) when a real
    Stripe key is configured or in production."""
    s = get_settings()
    standin = s.stripe_standin_url
    uses_standin = s.stripe_uses_standin
    if s.env == "prod" or not standin or not uses_standin or outcome not in ("succeed", "fail"):
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    if not re.fullmatch(r"pi_[A-Za-z0-9_]{1,200}", intent_id):
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(
            f"{standin.rstrip('/')}/_standin/payment_intents/{intent_id}/{outcome}"
        )
    return JSONResponse({"status": r.status_code}, status_code=200 if r.is_success else 502)


@router.get("/admin", response_class=HTMLResponse)
async def admin_page(request: Request, lang: str | None = LangParam) -> HTMLResponse:
    """The back-office: pending KYC decisions and open complaints (admin sign-in; the
    data comes from the admin API with the admin's bearer token)."""
    return _response("admin.html", request, lang)


def install_pages(app: FastAPI) -> None:
    """Mount the pages and their static assets (`/static`) on `app`."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
