// `/`: tutor search on a map. The map shows `/search/tutors/map` (server clusters below
// zoom 13, points clustered by leaflet.markercluster from zoom 13); the list shows
// `/search/tutors` around the chosen position (radius, or the visible map area).
import {
  config, lang, t, tn, fold, getJSON, showError, clearError, renderChecklist,
  renderRatingOptions, renderLanguageAndRating, catalogueLabel, languageLabel, formatPrice,
  formatRating, formatNumber, currencySymbol, toMinor, el, keepLanguageLinks, priceHint,
} from "./common.js";

const L = window.L;
const $ = (id) => document.getElementById(id);
const form = $("filters");
const list = $("result-list");
const statusBox = $("status");
const errorBox = $("error");
const moreButton = $("more");
const searchHere = $("search-here");
const mapNotice = $("map-notice");

const defaultCity = config.cities[0];
const state = {
  center: { lat: defaultCity.lat, lng: defaultCity.lng },
  currency: defaultCity.currency,
  radius: 10, // km; null = the visible map area
  viewRadius: null, // km, frozen when a viewport search runs
  q: "",
  boxSubject: null, // subject chosen through the search box
  subjects: new Set(),
  languages: new Set(),
  minRating: "",
  mode: "",
  thisWeek: false,
  minPrice: "",
  maxPrice: "",
  sort: "distance",
  follow: false,
};
let items = [];
let nextCursor = null;
let lastFacets = null;
const inflight = { list: null, map: null };
const lastUrl = { list: null, map: null };

// ------------------------------------------------------------------ map

const map = L.map("map", {
  center: [state.center.lat, state.center.lng], zoom: 11, zoomControl: true, keyboard: true, minZoom: 2, maxZoom: 19,
});
map.attributionControl.setPrefix('<a href="https://leafletjs.com" hreflang="en">Leaflet</a>');
const mapEl = $("map");
mapEl.setAttribute("aria-label", t("map.map_label"));
if (config.tileUrl) {
  let failed = false;
  L.tileLayer(config.tileUrl, { attribution: config.tileAttribution, maxZoom: 19 })
    .on("tileerror", () => {
      if (failed) return;
      failed = true;
      mapEl.classList.add("no-tiles");
      mapNotice.textContent = t("map.tiles_unavailable");
      mapNotice.hidden = false;
    })
    .addTo(map);
} else {
  mapEl.classList.add("no-tiles");
}

const clusterLayer = L.layerGroup().addTo(map); // server clusters (zoom < 13)
const pointLayer = L.markerClusterGroup({ showCoverageOnHover: false, maxClusterRadius: 50 }).addTo(map);
const highlightLayer = L.layerGroup().addTo(map);
const pointMarkers = new Map(); // tutor id → marker
let radiusCircle = null;

function clusterIcon(count) {
  const size = count < 10 ? "small" : count < 100 ? "medium" : "large";
  return L.divIcon({
    html: `<div><span>${formatNumber(count)}</span></div>`,
    className: `marker-cluster marker-cluster-${size} server-cluster`,
    iconSize: L.point(40, 40),
  });
}

function pointIcon() {
  return L.divIcon({ html: "<span></span>", className: "tutor-marker", iconSize: L.point(18, 18) });
}

function drawRadius() {
  if (radiusCircle) radiusCircle.remove();
  radiusCircle = null;
  if (state.radius) {
    radiusCircle = L.circle([state.center.lat, state.center.lng], {
      radius: state.radius * 1000, color: "#1d4ed8", weight: 1.5, fill: false, interactive: false,
      dashArray: "6 4",
    }).addTo(map);
  }
}

function fitToRadius() {
  drawRadius();
  if (radiusCircle) map.fitBounds(radiusCircle.getBounds(), { animate: false });
  else map.setView([state.center.lat, state.center.lng], 12, { animate: false });
}

function viewportBbox() {
  const b = map.getBounds();
  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
  let west = b.getWest();
  let east = b.getEast();
  if (east - west >= 360) { west = -180; east = 180; }
  return [clamp(west, -180, 180), clamp(b.getSouth(), -90, 90), clamp(east, -180, 180), clamp(b.getNorth(), -90, 90)]
    .map((v) => v.toFixed(5)).join(",");
}

/** Half the viewport diagonal in km (the list covers everything visible), ≤ 500. */
function viewportRadiusKm() {
  const b = map.getBounds();
  const km = map.distance(b.getSouthWest(), b.getNorthEast()) / 2000;
  return Math.min(500, Math.max(0.5, Math.round(km * 10) / 10));
}

// ------------------------------------------------------------------ queries

function filterParams() {
  const p = new URLSearchParams();
  if (state.q) p.set("q", state.q);
  if (state.subjects.size) p.set("subject", [...state.subjects].sort().join(","));
  if (state.languages.size) p.set("language", [...state.languages].sort().join(","));
  if (state.minRating) p.set("min_rating", state.minRating);
  if (state.mode) p.set("mode", state.mode);
  if (state.thisWeek) {
    const from = new Date();
    from.setUTCMinutes(0, 0, 0);
    const to = new Date(from.getTime() + 7 * 86400e3);
    p.set("available_from", from.toISOString().replace(".000Z", "Z"));
    p.set("available_to", to.toISOString().replace(".000Z", "Z"));
  }
  const min = toMinor(state.minPrice, state.currency);
  const max = toMinor(state.maxPrice, state.currency);
  if (min !== "") p.set("min_price", min);
  if (max !== "") p.set("max_price", max);
  if ((min !== "" || max !== "") && state.currency) p.set("currency", state.currency);
  return p;
}

function listParams(cursor) {
  const p = filterParams();
  p.set("lat", state.center.lat.toFixed(5));
  p.set("lng", state.center.lng.toFixed(5));
  p.set("radius_km", String(state.radius ?? state.viewRadius ?? viewportRadiusKm()));
  let sort = state.sort;
  if (sort === "relevance" && !state.q) sort = "distance";
  p.set("sort", sort);
  p.set("limit", "20");
  if (cursor) p.set("cursor", cursor);
  return p;
}

function mapParams() {
  const p = filterParams();
  p.set("bbox", viewportBbox());
  p.set("zoom", String(map.getZoom()));
  if (state.radius) {
    p.set("lat", state.center.lat.toFixed(5));
    p.set("lng", state.center.lng.toFixed(5));
    p.set("radius_km", String(state.radius));
  }
  return p;
}

async function run(kind, path, params, { force = false } = {}) {
  const key = params.toString();
  if (!force && lastUrl[kind] === key) return null;
  lastUrl[kind] = key;
  inflight[kind]?.abort();
  const controller = new AbortController();
  inflight[kind] = controller;
  try {
    return await getJSON(path, params, controller.signal);
  } finally {
    if (inflight[kind] === controller) inflight[kind] = null;
  }
}

function setBusy(busy) {
  $("results").setAttribute("aria-busy", busy ? "true" : "false");
}

/** New search: the list (first page, facets) and the map. */
async function search({ force = false } = {}) {
  if (!state.radius) state.viewRadius = viewportRadiusKm();
  searchHere.hidden = true;
  await Promise.all([loadList({ force }), loadMap({ force })]);
}

async function loadList({ cursor = null, force = false } = {}) {
  setBusy(true);
  let data;
  try {
    data = await run("list", "/search/tutors", listParams(cursor), { force });
  } catch (err) {
    if (err.name === "AbortError") return;
    lastUrl.list = null;
    setBusy(false);
    showError(errorBox, err, fieldsByParam);
    statusBox.textContent = t("status.error");
    return;
  }
  setBusy(false);
  if (!data) return;
  clearError(errorBox);
  if (!cursor) {
    items = [];
    list.replaceChildren();
    lastFacets = data.facets;
    renderFacets(data.facets);
  }
  items.push(...data.items);
  for (const item of data.items) list.append(card(item));
  nextCursor = data.next_cursor;
  moreButton.hidden = !nextCursor;
  list.dataset.total = String(data.total);
  statusBox.textContent = data.total
    ? tn("status.tutors_found", data.total, { shown: formatNumber(items.length) })
    : t("status.no_tutors");
}

async function loadMap({ force = false } = {}) {
  let data;
  try {
    data = await run("map", "/search/tutors/map", mapParams(), { force });
  } catch (err) {
    if (err.name === "AbortError") return;
    lastUrl.map = null;
    showError(errorBox, err, fieldsByParam);
    return;
  }
  if (!data) return;
  clusterLayer.clearLayers();
  pointLayer.clearLayers();
  pointMarkers.clear();
  mapEl.dataset.mode = data.mode;
  mapEl.dataset.total = String(data.total);
  if (data.mode === "clusters") {
    for (const c of data.clusters) {
      const marker = L.marker([c.centroid.lat, c.centroid.lng], {
        icon: clusterIcon(c.count), title: tn("map.cluster_title", c.count), alt: tn("map.cluster_title", c.count),
        keyboard: true, riseOnHover: true,
      });
      marker.on("click", () => {
        const b = L.latLngBounds([c.bounds.min_lat, c.bounds.min_lng], [c.bounds.max_lat, c.bounds.max_lng]);
        if (b.getNorthEast().equals(b.getSouthWest())) map.setView(b.getCenter(), Math.min(map.getZoom() + 3, 18));
        else map.fitBounds(b.pad(0.1));
      });
      clusterLayer.addLayer(marker);
    }
  } else {
    const markers = data.points.map((pt) => {
      const marker = L.marker([pt.lat, pt.lng], {
        icon: pointIcon(), title: pt.display_name, alt: pt.display_name, keyboard: true, riseOnHover: true,
      });
      marker.bindPopup(popupContent(pt));
      marker.on("mouseover", () => setActive(pt.id, true, { fromMap: true }));
      marker.on("mouseout", () => setActive(pt.id, false, { fromMap: true }));
      marker.on("click", () => {
        const li = list.querySelector(`[data-id="${pt.id}"]`);
        if (li) { li.scrollIntoView({ block: "nearest" }); }
      });
      pointMarkers.set(pt.id, marker);
      return marker;
    });
    pointLayer.addLayers(markers);
  }
}

function popupContent(pt) {
  const box = el("div", "popup");
  box.append(el("strong", "", pt.display_name));
  box.append(el("div", "", `${formatRating(pt.rating)} · ${t("card.per_hour", { price: formatPrice(pt.price.amount_minor, pt.price.currency) })}`));
  return box;
}

// ------------------------------------------------------------------ list

function card(item) {
  const li = el("li", "result");
  li.dataset.id = item.id;
  li.tabIndex = 0;
  const head = el("div", "result-head");
  const name = el("h3", "result-name");
  const link = el("a", "profile-link", item.display_name);
  link.href = `/providers/${encodeURIComponent(item.id)}?lang=${config.lang}`;
  name.append(link);
  head.append(name);
  head.append(el("span", "price", t("card.per_hour", { price: formatPrice(item.price.amount_minor, item.price.currency) })));
  li.append(head);
  if (item.headline) li.append(el("p", "headline", item.headline));
  const meta = el("p", "meta");
  meta.append(el("span", "rating", formatRating(item.rating)));
  if (item.distance_km !== null && item.distance_km !== undefined) {
    meta.append(el("span", "distance", t("card.distance", {
      km: new Intl.NumberFormat(lang, { maximumFractionDigits: 1 }).format(item.distance_km),
    })));
  }
  if (item.city) meta.append(el("span", "city", item.city));
  li.append(meta);
  const tags = el("ul", "tags");
  tags.setAttribute("aria-label", t("card.subjects"));
  for (const s of item.subjects.slice(0, 4)) tags.append(el("li", "tag", catalogueLabel(config.subjects, s)));
  li.append(tags);
  const extra = el("p", "meta small");
  extra.append(el("span", "", `${t("card.languages")} ${item.languages.map(languageLabel).join(", ")}`));
  const modes = [item.online && t("filters.mode_online"), item.in_person && t("filters.mode_in_person")].filter(Boolean);
  extra.append(el("span", "", modes.join(" · ")));
  li.append(extra);
  const on = () => setActive(item.id, true);
  const off = () => setActive(item.id, false);
  li.addEventListener("mouseenter", on);
  li.addEventListener("mouseleave", off);
  li.addEventListener("focus", on);
  li.addEventListener("blur", off);
  li.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && item.location) map.setView([item.location.lat, item.location.lng], Math.max(map.getZoom(), 14));
  });
  return li;
}

/** Highlight a tutor on both sides: the list item and its marker (or a ring at its spot). */
function setActive(id, on, { fromMap = false } = {}) {
  const li = list.querySelector(`[data-id="${id}"]`);
  li?.classList.toggle("is-active", on);
  if (fromMap) return;
  highlightLayer.clearLayers();
  for (const m of document.querySelectorAll(".tutor-marker.is-active")) m.classList.remove("is-active");
  if (!on) return;
  const marker = pointMarkers.get(id);
  const visible = marker ? pointLayer.getVisibleParent(marker) : null;
  if (visible?.getElement()) {
    visible.getElement().classList.add("is-active");
    visible.setZIndexOffset(1000);
  }
  const item = items.find((i) => i.id === id);
  if (item?.location) {
    L.circleMarker([item.location.lat, item.location.lng], {
      radius: 12, color: "#b45309", weight: 3, fillColor: "#f59e0b", fillOpacity: 0.5,
      className: "highlight-ring", interactive: false,
    }).addTo(highlightLayer);
  }
}

// ------------------------------------------------------------------ facets and filters

const fieldsByParam = {
  min_price: $("min-price"), max_price: $("max-price"), q: $("q"), radius_km: $("radius"),
};

function renderFacets(facets) {
  const subjects = (facets.subjects || []).map((f) => ({ value: f.value, label: f[`label_${lang}`] || f.value, count: f.count }));
  renderChecklist($("subject-facet"), "subject", subjects, state.subjects, (value, on) => {
    if (on) state.subjects.add(value); else state.subjects.delete(value);
    if (state.boxSubject && !state.subjects.has(state.boxSubject)) { $("q").value = ""; state.boxSubject = null; }
    search();
  });
  renderLanguageAndRating(facets, state, search);
  if (!state.currency && facets.price?.length) state.currency = facets.price[0].currency;
  $("price-currency").textContent = state.currency ? `(${currencySymbol(state.currency)})` : "";
  $("price-stats").textContent = priceHint(facets.price || [], state.currency);
}

function subjectFromText(text) {
  const folded = fold(text);
  if (!folded) return null;
  const entry = config.subjects.find((s) => [s.slug, s.fr, s.en].some((v) => fold(v) === folded));
  return entry ? entry.slug : null;
}

function readSearchBox() {
  const text = $("q").value.trim();
  const slug = subjectFromText(text);
  if (state.boxSubject && state.boxSubject !== slug) state.subjects.delete(state.boxSubject);
  state.boxSubject = slug;
  if (slug) { state.subjects.add(slug); state.q = ""; } else state.q = text;
  if (state.q && state.sort === "distance") { /* keep distance: a map is about nearby tutors */ }
}

function setCity(id) {
  const city = config.cities.find((c) => c.id === id);
  if (!city) return;
  state.center = { lat: city.lat, lng: city.lng };
  state.currency = city.currency;
  fitToRadius();
  search();
}

function initForm() {
  const citySelect = $("city");
  for (const c of config.cities) citySelect.append(new Option(c.name, c.id));
  citySelect.append(new Option(t("map.my_position"), "here"));
  citySelect.value = defaultCity.id;
  const datalist = $("subject-options");
  for (const s of config.subjects) datalist.append(new Option(s[lang]));
  renderRatingOptions($("rating-options"), [], "", () => {});

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    readSearchBox();
    state.minPrice = $("min-price").value;
    state.maxPrice = $("max-price").value;
    search({ force: true });
  });
  citySelect.addEventListener("change", () => {
    if (citySelect.value === "here") locate(); else setCity(citySelect.value);
  });
  $("radius").addEventListener("change", () => {
    state.radius = $("radius").value ? Number($("radius").value) : null;
    if (state.radius) fitToRadius(); else drawRadius();
    search();
  });
  $("follow-map").addEventListener("change", () => {
    state.follow = $("follow-map").checked;
    if (state.follow) moved();
  });
  for (const radio of form.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener("change", () => { state.mode = radio.value; search(); });
  }
  $("this-week").addEventListener("change", () => { state.thisWeek = $("this-week").checked; search(); });
  for (const id of ["min-price", "max-price"]) {
    $(id).addEventListener("change", () => {
      state.minPrice = $("min-price").value;
      state.maxPrice = $("max-price").value;
      search();
    });
  }
  $("sort").addEventListener("change", () => { state.sort = $("sort").value; search(); });
  $("reset").addEventListener("click", () => {
    Object.assign(state, { q: "", boxSubject: null, minRating: "", mode: "", thisWeek: false, minPrice: "", maxPrice: "", sort: "distance" });
    state.subjects.clear();
    state.languages.clear();
    form.reset();
    $("city").value = config.cities.find((c) => c.lat === state.center.lat)?.id ?? "here";
    $("radius").value = state.radius ? String(state.radius) : "";
    $("follow-map").checked = state.follow;
    search();
  });
  $("locate").addEventListener("click", locate);
  moreButton.addEventListener("click", () => nextCursor && loadList({ cursor: nextCursor }));
  searchHere.addEventListener("click", () => {
    const c = map.getCenter();
    state.center = { lat: c.lat, lng: c.lng };
    state.currency = null;
    $("city").value = "here";
    drawRadius();
    search();
  });
}

function locate() {
  if (!navigator.geolocation) {
    statusBox.textContent = t("map.geolocation_unavailable");
    return;
  }
  navigator.geolocation.getCurrentPosition(
    (pos) => {
      state.center = { lat: pos.coords.latitude, lng: pos.coords.longitude };
      state.currency = null;
      $("city").value = "here";
      fitToRadius();
      search();
    },
    () => { statusBox.textContent = t("map.geolocation_denied"); },
    { timeout: 10000, maximumAge: 600000 },
  );
}

/** The map moved: follow it (search as I move) or refresh the markers only. */
function moved() {
  if (state.follow) {
    const c = map.getCenter();
    state.center = { lat: c.lat, lng: c.lng };
    if ($("city").value !== "here") {
      const city = config.cities.find((x) => x.id === $("city").value);
      if (city && map.distance(c, [city.lat, city.lng]) > 1000) $("city").value = "here";
    }
    drawRadius();
    search();
    return;
  }
  loadMap();
  const offset = map.distance(map.getCenter(), [state.center.lat, state.center.lng]);
  searchHere.hidden = offset < 500;
}

initForm();
keepLanguageLinks();
fitToRadius();
map.on("moveend", moved);
search();
