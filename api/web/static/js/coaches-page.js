// `/coaches`: coach and mentor discovery on `/search/coaches` (facets, filters, sort,
// pagination with the keyset cursor: a stack of cursors gives "previous").
import {
  config, lang, t, tn, getJSON, showError, clearError, renderChecklist, renderRatingOptions,
  renderLanguageAndRating, catalogueLabel, languageLabel, formatPrice, formatRating, formatNumber, toMinor, el,
  keepLanguageLinks, priceHint,
} from "./common.js";

const $ = (id) => document.getElementById(id);
const form = $("filters");
const list = $("result-list");
const statusBox = $("status");
const errorBox = $("error");
const PAGE_SIZE = 12;

const state = {
  q: "",
  kind: "",
  expertises: new Set(),
  languages: new Set(),
  minRating: "",
  currency: "",
  minPrice: "",
  maxPrice: "",
  sort: "rating",
};
let cursors = [null]; // cursor of each page seen so far; the last one is the current page
let nextCursor = null;
let controller = null;
const fieldsByParam = { min_price: $("min-price"), max_price: $("max-price"), q: $("q"), currency: $("currency") };

function params(cursor) {
  const p = new URLSearchParams();
  if (state.q) p.set("q", state.q);
  if (state.kind) p.set("kind", state.kind);
  if (state.expertises.size) p.set("expertise", [...state.expertises].sort().join(","));
  if (state.languages.size) p.set("language", [...state.languages].sort().join(","));
  if (state.minRating) p.set("min_rating", state.minRating);
  const min = toMinor(state.minPrice, state.currency);
  const max = toMinor(state.maxPrice, state.currency);
  if (min !== "") p.set("min_price", min);
  if (max !== "") p.set("max_price", max);
  if (state.currency) p.set("currency", state.currency);
  let sort = state.sort;
  if (sort === "relevance" && !state.q) sort = "rating";
  p.set("sort", sort);
  p.set("limit", String(PAGE_SIZE));
  if (cursor) p.set("cursor", cursor);
  return p;
}

/** Load the page whose cursor is `cursors[index]` (index 0 = first page, new facets). */
async function load(index = 0) {
  if (index === 0) cursors = [null];
  controller?.abort();
  controller = new AbortController();
  $("results").setAttribute("aria-busy", "true");
  let data;
  try {
    data = await getJSON("/search/coaches", params(cursors[index]), controller.signal);
  } catch (err) {
    if (err.name === "AbortError") return;
    $("results").setAttribute("aria-busy", "false");
    showError(errorBox, err, fieldsByParam);
    statusBox.textContent = t("status.error");
    return;
  }
  $("results").setAttribute("aria-busy", "false");
  clearError(errorBox);
  cursors = cursors.slice(0, index + 1);
  nextCursor = data.next_cursor;
  list.replaceChildren(...data.items.map(card));
  renderFacets(data.facets);
  const pages = Math.max(1, Math.ceil(data.total / PAGE_SIZE));
  const page = index + 1;
  $("page-label").textContent = t("pager.page", { page: formatNumber(page), pages: formatNumber(pages) });
  $("page-label").dataset.page = String(page);
  $("prev").disabled = index === 0;
  $("next").disabled = !nextCursor;
  list.dataset.total = String(data.total);
  statusBox.textContent = data.total ? tn("status.coaches_found", data.total) : t("status.no_coaches");
}

function card(item) {
  const li = el("li", "card");
  li.dataset.id = item.id;
  const article = el("article");
  const head = el("div", "result-head");
  const name = el("h3", "result-name");
  const link = el("a", "profile-link", item.display_name);
  link.href = `/providers/${encodeURIComponent(item.id)}?lang=${config.lang}`;
  name.append(link);
  head.append(name);
  head.append(el("span", `badge badge-${item.kind}`, t(`coaches.kind_${item.kind}_one`)));
  article.append(head);
  if (item.headline) article.append(el("p", "headline", item.headline));
  const meta = el("p", "meta");
  meta.append(el("span", "rating", formatRating(item.rating)));
  meta.append(el("span", "price", t("card.per_hour", { price: formatPrice(item.price.amount_minor, item.price.currency) })));
  article.append(meta);
  const tags = el("ul", "tags");
  tags.setAttribute("aria-label", t("card.expertises"));
  for (const s of item.expertises.slice(0, 4)) tags.append(el("li", "tag", catalogueLabel(config.expertises, s)));
  article.append(tags);
  const extra = el("p", "meta small");
  const langs = el("span", "languages", `${t("card.languages")} ${item.languages.map(languageLabel).join(", ")}`);
  langs.dataset.languages = item.languages.join(",");
  extra.append(langs);
  const where = [item.city, item.online && t("filters.mode_online")].filter(Boolean).join(" · ");
  if (where) extra.append(el("span", "", where));
  article.append(extra);
  li.append(article);
  return li;
}

function renderFacets(facets) {
  const expertises = (facets.expertises || []).map((f) => ({ value: f.value, label: f[`label_${lang}`] || f.value, count: f.count }));
  renderChecklist($("expertise-facet"), "expertise", expertises, state.expertises, (value, on) => {
    if (on) state.expertises.add(value); else state.expertises.delete(value);
    load();
  });
  renderLanguageAndRating(facets, state, load);
  const select = $("currency");
  const known = new Set([...select.options].map((o) => o.value));
  for (const p of facets.price || []) {
    if (!known.has(p.currency)) select.append(new Option(p.currency, p.currency));
  }
  select.value = state.currency;
  $("price-stats").textContent = state.currency ? priceHint((facets.price || []).filter((p) => p.currency === state.currency), state.currency) : "";
}

function init() {
  const select = $("currency");
  select.append(new Option(t("filters.any_currency"), ""));
  for (const c of ["EUR", "CHF", "CAD", "GBP", "USD", "MAD", "TND", "XOF", "XAF"]) select.append(new Option(c, c));
  select.value = state.currency;
  renderRatingOptions($("rating-options"), [], "", () => {});
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    state.q = $("q").value.trim();
    state.minPrice = $("min-price").value;
    state.maxPrice = $("max-price").value;
    load();
  });
  for (const radio of form.querySelectorAll('input[name="kind"]')) {
    radio.addEventListener("change", () => { state.kind = radio.value; load(); });
  }
  select.addEventListener("change", () => { state.currency = select.value; load(); });
  for (const id of ["min-price", "max-price"]) {
    $(id).addEventListener("change", () => {
      state.minPrice = $("min-price").value;
      state.maxPrice = $("max-price").value;
      load();
    });
  }
  $("sort").addEventListener("change", () => { state.sort = $("sort").value; load(); });
  $("reset").addEventListener("click", () => {
    Object.assign(state, { q: "", kind: "", minRating: "", minPrice: "", maxPrice: "", sort: "rating", currency: "" });
    state.expertises.clear();
    state.languages.clear();
    form.reset();
    $("sort").value = "rating";
    load();
  });
  $("next").addEventListener("click", () => {
    if (!nextCursor) return;
    cursors.push(nextCursor);
    load(cursors.length - 1).then(() => $("results").focus());
  });
  $("prev").addEventListener("click", () => {
    if (cursors.length < 2) return;
    load(cursors.length - 2).then(() => $("results").focus());
  });
}

init();
keepLanguageLinks();
load();
