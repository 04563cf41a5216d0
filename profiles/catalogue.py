"""The catalogue of school subjects and coaching expertises.

Subjects and expertises are stable slugs (`mathematics`, `public-speaking`) with French
and English labels. This module is the one source that validation, the seed generator
and search share: a slug not listed here is rejected at the API, and search indexes the
labels of both languages so "mathématiques" and "maths" find `mathematics`.

`rate_factor` scales a country's base hourly rate (1.0 = the median subject), from the
spread of public tutoring price lists (private maths and physics lessons cost more than
music theory or homework help).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    """One subject or expertise: slug, labels, extra search keywords, price factor."""

    slug: str
    fr: str
    en: str
    keywords: tuple[str, ...] = ()
    rate_factor: float = 1.0

    def label(self, locale: str) -> str:
        """The label in `locale` ('fr' or 'en'; anything else gives English)."""
        return self.fr if locale == "fr" else self.en


SUBJECTS: tuple[CatalogueEntry, ...] = (
    CatalogueEntry(
        "mathematics",
        "Mathématiques",
        "Mathematics",
        ("maths", "math", "algèbre", "algebra", "géométrie", "geometry", "calcul"),
        1.15,
    ),
    CatalogueEntry("physics", "Physique", "Physics", ("mécanique", "mechanics"), 1.15),
    CatalogueEntry("chemistry", "Chimie", "Chemistry", ("chimie organique",), 1.1),
    CatalogueEntry("physics-chemistry", "Physique-chimie", "Physics and chemistry", (), 1.1),
    CatalogueEntry(
        "biology", "Sciences de la vie et de la Terre", "Biology", ("svt", "biologie"), 1.0
    ),
    CatalogueEntry(
        "computer-science",
        "Informatique",
        "Computer science",
        ("programmation", "programming", "python", "algorithmique"),
        1.25,
    ),
    CatalogueEntry(
        "economics", "Sciences économiques et sociales", "Economics", ("ses", "économie"), 1.05
    ),
    CatalogueEntry("accounting", "Comptabilité", "Accounting", ("gestion",), 1.1),
    CatalogueEntry(
        "french", "Français", "French language", ("grammaire", "orthographe", "dissertation"), 1.0
    ),
    CatalogueEntry(
        "french-fle",
        "Français langue étrangère",
        "French as a foreign language",
        ("fle", "delf", "dalf"),
        1.05,
    ),
    CatalogueEntry("english", "Anglais", "English", ("toeic", "toefl", "ielts", "grammar"), 1.05),
    CatalogueEntry("spanish", "Espagnol", "Spanish", (), 0.95),
    CatalogueEntry("german", "Allemand", "German", (), 1.0),
    CatalogueEntry("arabic", "Arabe", "Arabic", (), 0.95),
    CatalogueEntry("italian", "Italien", "Italian", (), 0.95),
    CatalogueEntry("chinese", "Chinois", "Mandarin Chinese", ("mandarin",), 1.1),
    CatalogueEntry("latin", "Latin", "Latin", (), 1.0),
    CatalogueEntry(
        "history-geography",
        "Histoire-géographie",
        "History and geography",
        ("histoire", "history", "géographie", "geography"),
        0.95,
    ),
    CatalogueEntry("philosophy", "Philosophie", "Philosophy", ("philo",), 1.05),
    CatalogueEntry("literature", "Littérature", "Literature", (), 1.0),
    CatalogueEntry(
        "statistics", "Statistiques", "Statistics", ("probabilités", "probability"), 1.15
    ),
    CatalogueEntry("music", "Musique", "Music", ("solfège", "piano", "guitare", "guitar"), 0.9),
    CatalogueEntry(
        "homework-help", "Aide aux devoirs", "Homework help", ("soutien scolaire",), 0.8
    ),
    CatalogueEntry(
        "exam-prep",
        "Préparation aux examens",
        "Exam preparation",
        ("bac", "brevet", "sat", "gcse", "a-levels"),
        1.2,
    ),
)

EXPERTISES: tuple[CatalogueEntry, ...] = (
    CatalogueEntry(
        "public-speaking", "Prise de parole en public", "Public speaking", ("éloquence",), 1.1
    ),
    CatalogueEntry(
        "career-change", "Reconversion professionnelle", "Career change", ("reconversion",), 1.05
    ),
    CatalogueEntry("leadership", "Leadership", "Leadership", ("management",), 1.2),
    CatalogueEntry(
        "job-interview",
        "Préparation aux entretiens",
        "Job interview preparation",
        ("entretien d'embauche",),
        1.0,
    ),
    CatalogueEntry(
        "cv-review",
        "Relecture de CV",
        "CV and résumé review",
        ("resume", "lettre de motivation"),
        0.8,
    ),
    CatalogueEntry(
        "entrepreneurship",
        "Entrepreneuriat",
        "Entrepreneurship",
        ("startup", "création d'entreprise"),
        1.2,
    ),
    CatalogueEntry(
        "product-management", "Gestion de produit", "Product management", ("product manager",), 1.25
    ),
    CatalogueEntry(
        "software-engineering",
        "Ingénierie logicielle",
        "Software engineering",
        ("développeur", "developer", "code review"),
        1.25,
    ),
    CatalogueEntry(
        "data-science",
        "Science des données",
        "Data science",
        ("machine learning", "apprentissage automatique"),
        1.3,
    ),
    CatalogueEntry("ux-design", "Design UX", "UX design", ("ergonomie",), 1.1),
    CatalogueEntry("marketing", "Marketing", "Marketing", ("growth",), 1.05),
    CatalogueEntry("sales", "Vente", "Sales", ("négociation", "negotiation"), 1.05),
    CatalogueEntry(
        "personal-finance", "Finances personnelles", "Personal finance", ("budget",), 0.95
    ),
    CatalogueEntry(
        "study-skills", "Méthodologie et organisation", "Study skills", ("méthodologie",), 0.85
    ),
    CatalogueEntry(
        "university-admissions",
        "Orientation et admissions",
        "University admissions",
        ("parcoursup", "ucas", "orientation"),
        1.1,
    ),
    CatalogueEntry(
        "wellbeing",
        "Bien-être et gestion du stress",
        "Wellbeing and stress management",
        ("stress", "sophrologie"),
        0.95,
    ),
    CatalogueEntry("life-coaching", "Coaching de vie", "Life coaching", (), 1.0),
    CatalogueEntry(
        "language-exchange",
        "Conversation et échange linguistique",
        "Language exchange",
        ("conversation",),
        0.75,
    ),
)

SUBJECTS_BY_SLUG: dict[str, CatalogueEntry] = {e.slug: e for e in SUBJECTS}
EXPERTISES_BY_SLUG: dict[str, CatalogueEntry] = {e.slug: e for e in EXPERTISES}


def is_subject(slug: str) -> bool:
    """True when `slug` is a catalogue subject."""
    return slug in SUBJECTS_BY_SLUG


def is_expertise(slug: str) -> bool:
    """True when `slug` is a catalogue expertise."""
    return slug in EXPERTISES_BY_SLUG


def search_terms(slug: str) -> str:
    """The words indexed for a subject or expertise: slug words, both labels, keywords.

    Raises `KeyError` for a slug in neither list.
    """
    entry = SUBJECTS_BY_SLUG.get(slug) or EXPERTISES_BY_SLUG[slug]
    return " ".join((slug.replace("-", " "), entry.fr, entry.en, *entry.keywords))
