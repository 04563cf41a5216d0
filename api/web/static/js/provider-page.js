// A provider's page: profile, reviews with the histogram, upcoming slots whose seats left
// update live (SSE when the notifications stream answers, else polling), and the booking
// flow: slot and seats → hold (countdown) → pay (Stripe Payment Element, or the labelled
// test-payment step against the local Stripe stand-in) → confirmed by the webhook.

import {
  config, t, tn, formatPrice, formatRating, languageLabel, catalogueLabel, showError, clearError, keepLanguageLinks, el, ApiError,
} from "./common.js";
import { api, formatWhen, newKey, nowMs, renderAccount, signInUrl, token, withClock } from "./journey.js";

const main = document.getElementById("main");
const providerId = main.dataset.providerId;
const pageError = document.getElementById("page-error");
const slotsBox = document.getElementById("slots");
const seatsInput = document.getElementById("seats");
const form = document.getElementById("book-form");
const checkout = document.getElementById("checkout");
const statusLine = document.getElementById("checkout-status");
const countdown = document.getElementById("hold-countdown");
const POLL_MS = 2000;

let provider = null;
let slots = [];
let booking = null;
let countdownTimer = null;
let live = null;
let pollTimer = null;

keepLanguageLinks();
renderAccount();

async function loadProfile() {
  provider = await api("GET", `/providers/${providerId}`, { auth: false });
  document.title = `${provider.display_name} · EduConnect`;
  document.getElementById("provider-name").textContent = provider.display_name;
  document.getElementById("provider-headline").textContent = provider.headline || "";
  const topics = provider.kind === "tutor"
    ? provider.subjects.map((s) => catalogueLabel(config.subjects, s))
    : provider.expertises.map((s) => catalogueLabel(config.expertises, s));
  const meta = [
    formatRating({ avg: provider.rating_avg, count: provider.rating_count }),
    topics.join(", "),
    provider.languages.map(languageLabel).join(", "),
    provider.city || "",
  ].filter(Boolean);
  document.getElementById("provider-meta").textContent = meta.join(" · ");
  document.getElementById("provider-price").textContent = t("card.per_hour", { price: formatPrice(provider.hourly_rate_minor, provider.currency) });
  document.getElementById("provider-bio").textContent = provider.bio || "";
}

async function loadReviews() {
  const summary = document.getElementById("rating-summary");
  const body = document.querySelector("#histogram tbody");
  const list = document.getElementById("review-list");
  let page;
  try {
    page = await api("GET", `/providers/${providerId}/reviews`, { auth: false });
  } catch {
    summary.textContent = t("provider.reviews_unavailable");
    return;
  }
  const rating = page.rating;
  summary.textContent = formatRating({ avg: rating.rating_avg, count: rating.rating_count });
  body.replaceChildren();
  const total = Object.values(rating.histogram).reduce((a, b) => a + b, 0) || 1;
  for (const stars of [5, 4, 3, 2, 1]) {
    const n = rating.histogram[String(stars)] || 0;
    const tr = el("tr");
    tr.dataset.stars = String(stars);
    tr.append(el("th", "", t("provider.stars", { n: stars })));
    const bar = el("td", "bar-cell");
    const meter = el("span", "bar");
    meter.style.width = `${Math.round((100 * n) / total)}%`;
    bar.append(meter);
    tr.append(bar, el("td", "count", String(n)));
    body.append(tr);
  }
  list.replaceChildren();
  for (const r of page.items) {
    const li = el("li", "review");
    li.append(el("p", "stars", "★".repeat(r.rating) + "☆".repeat(5 - r.rating)));
    if (r.comment) li.append(el("p", "", r.comment));
    if (r.reply) li.append(el("p", "reply", t("provider.reply", { text: r.reply })));
    list.append(li);
  }
  if (!page.items.length) list.append(el("li", "hint", t("provider.no_reviews")));
}

function seatsText(slot) {
  return slot.seats_left > 0 ? tn("provider.seats_left", slot.seats_left) : t("provider.full");
}

function renderSlots() {
  const selected = slotsBox.querySelector("input:checked")?.value || new URLSearchParams(window.location.search).get("slot");
  const focusedId = document.activeElement?.id;
  slotsBox.replaceChildren();
  document.getElementById("no-slots").hidden = slots.length > 0;
  for (const slot of slots) {
    const id = `slot-${slot.id}`;
    const label = el("label", "option slot");
    label.htmlFor = id;
    label.dataset.slotId = slot.id;
    const radio = document.createElement("input");
    radio.type = "radio";
    radio.name = "slot";
    radio.id = id;
    radio.value = slot.id;
    radio.checked = slot.id === selected;
    radio.disabled = slot.seats_left < 1;
    radio.addEventListener("change", updateSeatsMax);
    const when = el("span", "slot-when", formatWhen(slot.starts_at));
    const seats = el("span", "seats-left", seatsText(slot));
    seats.dataset.seatsLeft = String(slot.seats_left);
    label.append(radio, when, seats);
    slotsBox.append(label);
  }
  if (focusedId) document.getElementById(focusedId)?.focus();
  updateSeatsMax();
}

function updateSeatsMax() {
  const id = slotsBox.querySelector("input:checked")?.value;
  const slot = slots.find((s) => s.id === id);
  seatsInput.max = String(slot ? Math.max(1, slot.seats_left) : 1);
}

async function loadSlots() {
  const page = await api("GET", `/providers/${providerId}/availability`, { auth: false });
  slots = page.items;
  renderSlots();
}

function applySeatEvent(data) {
  const slot = slots.find((s) => s.id === data.slot_id);
  if (!slot || typeof data.seats_left !== "number") return;
  slot.seats_left = data.seats_left;
  if (data.status && data.status !== "open") slots = slots.filter((s) => s.id !== data.slot_id);
  renderSlots();
}

/** Live seats: the provider's SSE stream when it answers; polling otherwise. */
function startLive() {
  const poll = () => {
    if (pollTimer) return;
    pollTimer = setInterval(() => loadSlots().catch(() => {}), POLL_MS);
  };
  if (typeof EventSource === "undefined") return poll();
  live = new EventSource(`${config.apiBase}/providers/${providerId}/availability/events`);
  for (const type of ["seat.held", "seat.released", "slot.full", "slot.updated"]) {
    live.addEventListener(type, (e) => {
      try { applySeatEvent(JSON.parse(e.data)); } catch { /* a keep-alive */ }
    });
  }
  const status = document.getElementById("live-status");
  live.onopen = () => {
    document.body.dataset.live = "open";
    status.textContent = t("provider.live");
  };
  live.onerror = () => {
    // no stream on this server (or it went away): poll instead
    live.close();
    document.body.dataset.live = "poll";
    poll();
  };
}

// ------------------------------------------------------------------ booking flow

function showCheckout() {
  checkout.hidden = false;
  const slotWhen = formatWhen(booking.starts_at);
  document.getElementById("checkout-summary").textContent = t("checkout.summary", {
    seats: booking.seats, when: slotWhen, price: formatPrice(booking.price_minor, booking.currency),
  });
  const url = new URL(window.location.href);
  url.searchParams.set("booking", booking.id);
  history.replaceState(null, "", url.pathname + url.search);
  document.getElementById("checkout-title").focus();
  if (booking.status === "pending") {
    tick();
    clearInterval(countdownTimer);
    countdownTimer = setInterval(tick, 1000);
    preparePayment();
  } else {
    showOutcome();
  }
}

function tick() {
  const left = Math.max(0, Math.round((Date.parse(booking.hold_expires_at) - nowMs()) / 1000));
  const m = Math.floor(left / 60);
  const s = String(left % 60).padStart(2, "0");
  countdown.dataset.secondsLeft = String(left);
  countdown.textContent = left > 0 ? t("checkout.hold_left", { time: `${m}:${s}` }) : t("checkout.hold_expired");
  if (left === 0) {
    clearInterval(countdownTimer);
    setPayEnabled(false);
  }
}

function setPayEnabled(on) {
  for (const id of ["pay-succeed", "pay-fail", "pay-stripe"]) document.getElementById(id).disabled = !on;
}

let intent = null;

async function preparePayment() {
  try {
    intent = await api("POST", `/bookings/${booking.id}/payment-intent`, { idempotencyKey: `pay-${booking.id}` });
  } catch (err) {
    // 404 without booking_not_found: this server has no payments route
    const missing = err instanceof ApiError && err.status === 404 && err.problem?.code !== "booking_not_found";
    statusLine.textContent = t(missing ? "checkout.payments_unavailable" : "checkout.payment_error");
    if (!missing && err instanceof ApiError && err.problem) showError(pageError, err);
    return;
  }
  if (config.paymentMode === "stripe") {
    document.getElementById("stripe-payment").hidden = false;
    mountStripe().catch(() => { statusLine.textContent = t("checkout.payment_error"); });
  } else {
    document.getElementById("test-payment").hidden = false;
  }
}

async function mountStripe() {
  await new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = "https://js.stripe.com/v3/";
    s.onload = resolve;
    s.onerror = reject;
    document.head.append(s);
  });
  const stripe = window.Stripe(config.stripePublishableKey);
  const elements = stripe.elements({ clientSecret: intent.client_secret, locale: config.lang });
  elements.create("payment").mount("#payment-element");
  document.getElementById("pay-stripe").addEventListener("click", async () => {
    setPayEnabled(false);
    const { error } = await stripe.confirmPayment({ elements, redirect: "if_required" });
    if (error) {
      statusLine.textContent = error.message || t("checkout.payment_failed");
      setPayEnabled(true);
    } else {
      waitForConfirmation();
    }
  });
}

async function testPayment(outcome) {
  setPayEnabled(false);
  statusLine.textContent = t("checkout.processing");
  const intentId = intent.client_secret.split("_secret_")[0];
  const r = await fetch(`/_test/payment_intents/${encodeURIComponent(intentId)}/${outcome}`, { method: "POST" });
  if (!r.ok) {
    statusLine.textContent = t("checkout.payment_error");
    setPayEnabled(true);
    return;
  }
  if (outcome === "fail") {
    statusLine.textContent = t("checkout.payment_failed");
    setPayEnabled(true);
    return;
  }
  waitForConfirmation();
}

async function waitForConfirmation() {
  statusLine.textContent = t("checkout.processing");
  for (let i = 0; i < 120; i += 1) {
    booking = await api("GET", `/bookings/${booking.id}`);
    if (booking.status !== "pending") break;
    await new Promise((r) => setTimeout(r, 500));
  }
  showOutcome();
}

function showOutcome() {
  clearInterval(countdownTimer);
  countdown.textContent = "";
  document.getElementById("pay-step").hidden = true;
  statusLine.dataset.status = booking.status;
  statusLine.textContent = t(`checkout.status_${booking.status}`);
  document.getElementById("checkout-next").hidden = false;
  loadSlots().catch(() => {});
}

document.getElementById("pay-succeed").addEventListener("click", () => testPayment("succeed"));
document.getElementById("pay-fail").addEventListener("click", () => testPayment("fail"));

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearError(pageError);
  const slotId = slotsBox.querySelector("input:checked")?.value;
  if (!slotId) {
    showError(pageError, new ApiError(422, { detail: t("provider.pick_a_slot") }));
    return;
  }
  if (!token()) {
    const url = new URL(window.location.href);
    url.searchParams.set("slot", slotId);
    history.replaceState(null, "", url.pathname + url.search);
    window.location.assign(signInUrl());
    return;
  }
  document.getElementById("hold").disabled = true;
  try {
    booking = await api("POST", "/bookings", { body: { slot_id: slotId, seats: Number(seatsInput.value) || 1 }, idempotencyKey: newKey() });
    await loadSlots();
    showCheckout();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) window.location.assign(signInUrl());
    else showError(pageError, err);
  } finally {
    document.getElementById("hold").disabled = false;
  }
});

async function start() {
  try {
    await loadProfile();
  } catch (err) {
    showError(pageError, err);
    return;
  }
  await Promise.all([loadReviews(), loadSlots().catch((err) => showError(pageError, err))]);
  startLive();
  const existing = new URLSearchParams(window.location.search).get("booking");
  if (existing && token()) {
    try {
      booking = await api("GET", `/bookings/${existing}`);
      showCheckout();
    } catch { /* not ours any more */ }
  }
  for (const a of document.querySelectorAll("#checkout-next a")) a.href = withClock(a.getAttribute("href"));
}

start();
