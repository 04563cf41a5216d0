"""ISO 639-1 language codes (the 183 two-letter codes of ISO 639-1:2002, as maintained by
the Library of Congress registration authority). Profiles store languages as these codes.
"""

from __future__ import annotations

ISO_639_1: frozenset[str] = frozenset(
    (
        "aa ab ae af ak am an ar as av ay az ba be bg bi bm bn bo br bs ca ce ch co cr cs cu "
        "cv cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he "
        "hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko "
        "kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd "
        "ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se "
        "sg si sk sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty "
        "ug uk ur uz ve vi vo wa wo xh yi yo za zh zu"
    ).split()
)

# Labels for the languages the marketplace shows in facets (others fall back to the code).
LANGUAGE_LABELS: dict[str, dict[str, str]] = {
    "fr": {"fr": "Français", "en": "French"},
    "en": {"fr": "Anglais", "en": "English"},
    "es": {"fr": "Espagnol", "en": "Spanish"},
    "de": {"fr": "Allemand", "en": "German"},
    "it": {"fr": "Italien", "en": "Italian"},
    "pt": {"fr": "Portugais", "en": "Portuguese"},
    "ar": {"fr": "Arabe", "en": "Arabic"},
    "nl": {"fr": "Néerlandais", "en": "Dutch"},
    "wo": {"fr": "Wolof", "en": "Wolof"},
    "zh": {"fr": "Chinois", "en": "Chinese"},
    "ru": {"fr": "Russe", "en": "Russian"},
    "ja": {"fr": "Japonais", "en": "Japanese"},
}


def is_language(code: str) -> bool:
    """True when `code` is a lower-case ISO 639-1 code."""
    return code in ISO_639_1


def language_label(code: str, locale: str = "en") -> str:
    """Human label of `code` in `locale` ('fr' or 'en'); the code itself when unknown."""
    return LANGUAGE_LABELS.get(code, {}).get(locale, code)
