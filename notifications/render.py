"""Rendering a notification: Jinja2 templates per kind and locale, Babel formatting.

Each kind has one template per locale, `templates/<locale>/<kind>.j2`, defining three
blocks: `subject` (email subject, push title, in-app title), `short` (SMS text, push and
in-app body, one or two sentences) and `body` (the email's text part, paragraphs split by
blank lines). The email's HTML part is `templates/layout.html.j2` around the same
paragraphs, autoescaped. Locales: `fr` and `en` (anything else falls back to `en`; `fr-CA`
uses `fr`).

Filters available in templates: `money(minor, currency)` — integer minor units formatted
for the locale (`Decimal(minor) / 10**digits` with ISO 4217 digits: 2500 EUR → "25,00 €"
in fr, "€25.00" in en); `when(dt)` — an aware datetime in the recipient's time zone, long
date and short time ("samedi 9 mars 2030 à 15:00 UTC+1"-like, per CLDR).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import format_datetime
from babel.numbers import format_currency, get_currency_precision
from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_context, select_autoescape
from jinja2.runtime import Context

TEMPLATES = Path(__file__).parent / "templates"
LOCALES = ("en", "fr")


@dataclass(frozen=True, slots=True)
class Rendered:
    """One rendered message: subject, short text (SMS/push/in-app), text and HTML bodies."""

    subject: str
    short: str
    text: str
    html: str


def pick_locale(locale: str | None) -> str:
    """`fr`, `fr-CA`, `fr_FR` → `fr`; unknown or empty → `en`."""
    lang = (locale or "en").replace("_", "-").split("-", 1)[0].lower()
    return lang if lang in LOCALES else "en"


def zone(name: str | None) -> ZoneInfo:
    """The IANA zone `name`, UTC when unknown."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def money(minor: int, currency: str, locale: str) -> str:
    """`minor` units of `currency` formatted for `locale` (ISO 4217 digits, per CLDR)."""
    digits = get_currency_precision(currency)
    return format_currency(Decimal(minor).scaleb(-digits), currency, locale=locale)


def when(dt: datetime, locale: str, tz: str) -> str:
    """Aware `dt` in time zone `tz`, formatted for `locale` (long date, short time, zone)."""
    # the long localized GMT offset ("OOOO": GMT+01:00, UTC+01:00 in French); Babel renders
    # the short form "O" as the text "None"
    return format_datetime(dt, "EEEE d MMMM y, HH:mm OOOO", tzinfo=zone(tz), locale=locale)


@pass_context
def _money(ctx: Context, minor: int, currency: str) -> str:
    return money(int(minor), str(currency), ctx["locale"])


@pass_context
def _when(ctx: Context, dt: datetime | str) -> str:
    value = datetime.fromisoformat(dt) if isinstance(dt, str) else dt
    return when(value, ctx["locale"], ctx["tz"])


@lru_cache(maxsize=1)
def _envs() -> tuple[Environment, Environment]:
    loader = FileSystemLoader(str(TEMPLATES))
    plain = Environment(loader=loader, undefined=StrictUndefined, autoescape=False)  # noqa: S701 - text parts
    html = Environment(
        loader=loader, undefined=StrictUndefined, autoescape=select_autoescape(["j2", "html"])
    )
    for env in (plain, html):
        env.filters["money"] = _money
        env.filters["when"] = _when
    return plain, html


def render(kind: str, *, locale: str | None, tz: str | None, data: dict[str, Any]) -> Rendered:
    """Render `kind` for a recipient of `locale` in time zone `tz` with `data` (the
    template's variables: `name`, and the event's facts — see the templates).

    Raises `jinja2.TemplateNotFound` for a kind without templates and
    `jinja2.UndefinedError` when `data` lacks a variable the template uses."""
    lang = pick_locale(locale)
    plain, html_env = _envs()
    ctx = {**data, "locale": lang, "tz": tz or "UTC"}
    template = plain.get_template(f"{lang}/{kind}.j2")
    context = template.new_context(ctx)
    subject = "".join(template.blocks["subject"](context)).strip()
    short = " ".join("".join(template.blocks["short"](context)).split())
    body = "".join(template.blocks["body"](context)).strip()
    paragraphs = [" ".join(p.split()) for p in body.split("\n\n") if p.strip()]
    text = "\n\n".join(paragraphs) + "\n"
    layout = html_env.get_template("layout.html.j2")
    html = layout.render(subject=subject, paragraphs=paragraphs, lang=lang)
    return Rendered(subject=subject, short=short, text=text, html=html)
