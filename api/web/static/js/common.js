// Shared helpers of the EduConnect pages: configuration, UI strings, formatting, API calls
// with readable problem+json errors, and facet checkbox lists.

export const config = JSON.parse(document.getElementById("page-config").textContent);
export const lang = config.lang;

/** The UI string `key`, with `{name}` placeholders replaced from `vars`. */
export function t(key, vars = {}) {
  const text = config.messages[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : `{${name}}`));
}

/** Plural-aware string: `key.one` or `key.other` with `{n}` formatted. */
export function tn(key, n, vars = {}) {
  const form = new Intl.PluralRules(lang).select(n) === "one" ? "one" : "other";
  return t(`${key}.${form}`, { n: formatNumber(n), ...vars });
}

export function formatNumber(n) {
  return new Intl.NumberFormat(lang).format(n);
}

export function exponent(currency) {
  return config.currencyExponent[currency] ?? 2;
}

/** An amount in minor units as a localized price ("28 €", "£32.50"). */
export function formatPrice(amountMinor, currency) {
  const digits = exponent(currency);
  const value = amountMinor / 10 ** digits;
  try {
    return new Intl.NumberFormat(lang, {
      style: "currency",
      currency,
      minimumFractionDigits: Number.isInteger(value) ? 0 : digits,
      maximumFractionDigits: digits,
    }).format(value);
  } catch {
    return `${value} ${currency}`;
  }
}

export function currencySymbol(currency) {
  try {
    const parts = new Intl.NumberFormat(lang, { style: "currency", currency }).formatToParts(0);
    return parts.find((p) => p.type === "currency")?.value ?? currency;
  } catch {
    return currency;
  }
}

/** Major units typed by the user → integer minor units (string), or "" when empty. */
export function toMinor(value, currency) {
  if (value === "" || value === null || value === undefined) return "";
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  return String(Math.round(n * 10 ** exponent(currency || "EUR")));
}

export function formatRating(rating) {
  if (rating.avg === null || rating.avg === undefined) return t("card.unrated");
  const avg = new Intl.NumberFormat(lang, { minimumFractionDigits: 1, maximumFractionDigits: 1 }).format(rating.avg);
  return t("card.rating", { avg, count: formatNumber(rating.count) });
}

export function catalogueLabel(list, slug) {
  const entry = list.find((e) => e.slug === slug);
  return entry ? entry[lang] : slug;
}

export function languageLabel(code) {
  return config.languages[code]?.[lang] ?? code.toUpperCase();
}

/** Lower-case, accents stripped: "Mathématiques" → "mathematiques". */
export function fold(text) {
  return text.normalize("NFKD").replace(/\p{M}/gu, "").toLowerCase().trim();
}

/** The error of a failed API call, carrying the problem+json body when there is one. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** GET `path` with `params` (URLSearchParams); JSON body, or throws ApiError / AbortError. */
export async function getJSON(path, params, signal) {
  const url = `${config.apiBase}${path}?${params.toString()}`;
  let response;
  try {
    response = await fetch(url, { signal, headers: { Accept: "application/json" } });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, null);
  }
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json().catch(() => null) : null;
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

// Messages of the search API's validation errors that have a translation.
const KNOWN_MESSAGES = [
  [/min_price must be ≤ max_price/, "error.min_gt_max"],
  [/must be ≥ 0/, "error.negative"],
  [/not an integer/, "error.not_integer"],
  [/not a number/, "error.not_number"],
  [/must be between 1 and 5/, "error.rating_range"],
  [/cursor/, "error.cursor"],
];

/** Readable, localized lines for an ApiError (one per faulty parameter). */
export function errorLines(err) {
  if (!(err instanceof ApiError)) return [t("error.unexpected")];
  if (err.status === 0) return [t("error.network")];
  if (err.status >= 500) return [t("error.unavailable")];
  const problem = err.problem || {};
  if (Array.isArray(problem.errors) && problem.errors.length) {
    return problem.errors.map((e) => {
      const known = KNOWN_MESSAGES.find(([re]) => re.test(e.message));
      const label = config.messages[`param.${e.param}`] ?? e.param;
      const message = known ? t(known[1]) : e.message;
      return lang === "fr" ? `${label}\u00a0: ${message}` : `${label}: ${message}`;
    });
  }
  return [problem.detail || problem.title || t("error.unexpected")];
}

/** Show `err` in the alert box `box` and mark the named fields invalid. */
export function showError(box, err, fieldsByParam = {}) {
  const lines = errorLines(err);
  box.replaceChildren();
  const title = document.createElement("p");
  title.className = "error-title";
  title.textContent = t("error.title");
  const list = document.createElement("ul");
  for (const line of lines) {
    const li = document.createElement("li");
    li.textContent = line;
    list.append(li);
  }
  box.append(title, list);
  box.hidden = false;
  for (const e of err?.problem?.errors || []) {
    const field = fieldsByParam[e.param];
    if (field) {
      field.setAttribute("aria-invalid", "true");
      field.setAttribute("aria-describedby", box.id);
    }
  }
}

export function clearError(box) {
  box.hidden = true;
  box.replaceChildren();
  for (const field of document.querySelectorAll("[aria-invalid]")) {
    field.removeAttribute("aria-invalid");
    field.removeAttribute("aria-describedby");
  }
}

/**
 * Render a facet as a checkbox list: `items` [{value, label, count}], `selected` a Set.
 * Keeps keyboard focus on the same checkbox across re-renders; calls `onToggle(value, on)`.
 */
export function renderChecklist(container, name, items, selected, onToggle) {
  const focusedId = document.activeElement?.id;
  container.replaceChildren();
  if (!items.length) {
    const p = document.createElement("p");
    p.className = "hint";
    p.textContent = t("filters.no_values");
    container.append(p);
    return;
  }
  for (const item of items) {
    const id = `${name}-${item.value}`;
    const label = document.createElement("label");
    label.className = "option facet-option";
    label.htmlFor = id;
    const box = document.createElement("input");
    box.type = "checkbox";
    box.id = id;
    box.name = name;
    box.value = item.value;
    box.checked = selected.has(item.value);
    box.addEventListener("change", () => onToggle(item.value, box.checked));
    const text = document.createElement("span");
    text.className = "facet-label";
    text.textContent = item.label;
    const count = document.createElement("span");
    count.className = "count";
    count.dataset.count = String(item.count);
    count.textContent = formatNumber(item.count);
    count.setAttribute("aria-label", tn("filters.count", item.count));
    label.append(box, text, count);
    container.append(label);
  }
  if (focusedId) document.getElementById(focusedId)?.focus();
}

/** Minimum-rating radios with counts derived from the `rating` facet buckets. */
export function renderRatingOptions(container, buckets, current, onChange) {
  const focusedId = document.activeElement?.id;
  const atLeast = (from) => buckets.filter((b) => b.from >= from).reduce((s, b) => s + b.count, 0);
  const options = [["", null], ["2", 2], ["3", 3], ["4", 4]];
  container.replaceChildren();
  for (const [value, from] of options) {
    const id = `rating-${value || "any"}`;
    const label = document.createElement("label");
    label.className = "option";
    label.htmlFor = id;
    const radio = document.createElement("input");
    radio.type = "radio";
    radio.name = "min_rating";
    radio.id = id;
    radio.value = value;
    radio.checked = current === value;
    radio.addEventListener("change", () => radio.checked && onChange(value));
    const text = document.createElement("span");
    text.className = "facet-label";
    text.textContent = from ? t("filters.rating_at_least", { n: from }) : t("filters.rating_any");
    label.append(radio, text);
    if (from && buckets.length) {
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = formatNumber(atLeast(from));
      label.append(count);
    }
    container.append(label);
  }
  if (focusedId) document.getElementById(focusedId)?.focus();
}

/** The language checklist and minimum-rating radios of the search pages, from a response's
 * `facets`: a change updates `state.languages` (a Set) or `state.minRating`, then calls
 * `onChange`. */
export function renderLanguageAndRating(facets, state, onChange) {
  const languages = (facets.languages || []).map((f) => ({ value: f.value, label: languageLabel(f.value), count: f.count }));
  renderChecklist(document.getElementById("language-facet"), "language", languages, state.languages, (value, on) => {
    if (on) state.languages.add(value); else state.languages.delete(value);
    onChange();
  });
  renderRatingOptions(document.getElementById("rating-options"), facets.rating || [], state.minRating, (value) => {
    state.minRating = value;
    onChange();
  });
}

/** A small element with optional class and text. */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Keep `?lang=` on the language switch and navigation links (the rest of the URL too). */
export function keepLanguageLinks() {
  for (const a of document.querySelectorAll("[data-lang-switch]")) {
    const url = new URL(window.location.href);
    url.searchParams.set("lang", a.getAttribute("hreflang"));
    a.href = url.pathname + url.search;
  }
}

/** Price range hint from the `price` facet ("28 € – 60 €, avg 35 €"). */
export function priceHint(priceFacet, currency) {
  const stats = priceFacet.find((p) => p.currency === currency) || priceFacet[0];
  if (!stats) return "";
  return t("filters.price_stats", {
    min: formatPrice(stats.min, stats.currency),
    max: formatPrice(stats.max, stats.currency),
    avg: formatPrice(Math.round(stats.avg), stats.currency),
  });
}
