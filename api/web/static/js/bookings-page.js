// My bookings: status, cancel with the refund shown before confirming, and a join button
// shown only inside the video join window (the page's clock: real, or `?now=` in tests).

import { config, t, formatPrice, showError, clearError, keepLanguageLinks, el, ApiError } from "./common.js";
import { api, formatWhen, newKey, nowMs, renderAccount, signInUrl, token, withClock } from "./journey.js";

const list = document.getElementById("bookings");
const errorBox = document.getElementById("bookings-error");
const statusLine = document.getElementById("bookings-status");
const dialog = document.getElementById("cancel-dialog");
const names = new Map();
let bookings = [];

keepLanguageLinks();
renderAccount();

function inJoinWindow(b) {
  const now = nowMs();
  return b.status === "confirmed"
    && now >= Date.parse(b.starts_at) - config.joinBeforeS * 1000
    && now <= Date.parse(b.ends_at) + config.joinAfterS * 1000;
}

async function providerName(id) {
  if (!names.has(id)) {
    names.set(id, api("GET", `/providers/${id}`, { auth: false }).then((p) => p.display_name).catch(() => ""));
  }
  return names.get(id);
}

async function render() {
  const focusedId = document.activeElement?.id;
  list.replaceChildren();
  statusLine.textContent = bookings.length ? t("bookings.count", { n: bookings.length }) : t("bookings.none");
  for (const b of bookings) {
    const li = el("li", "booking");
    li.dataset.id = b.id;
    li.dataset.status = b.status;
    const head = el("h2", "booking-title");
    const link = el("a", "", (await providerName(b.provider_id)) || t("bookings.provider"));
    link.href = withClock(`/providers/${b.provider_id}?lang=${config.lang}`);
    head.append(link);
    li.append(head);
    li.append(el("p", "meta", `${formatWhen(b.starts_at)} · ${t("bookings.seats", { n: b.seats })} · ${formatPrice(b.price_minor, b.currency)}`));
    const badge = el("p", `status status-${b.status}`, t(`bookings.status_${b.status}`));
    badge.dataset.status = b.status;
    li.append(badge);
    if (b.refund_due_minor !== null && b.refund_due_minor !== undefined && ["canceled", "refunded"].includes(b.status)) {
      li.append(el("p", "refund", t("bookings.refund_due", { amount: formatPrice(b.refund_due_minor, b.currency) })));
    }
    const actions = el("div", "actions");
    if (inJoinWindow(b)) {
      const join = el("button", "primary join", t("bookings.join"));
      join.type = "button";
      join.id = `join-${b.id}`;
      join.addEventListener("click", () => joinSession(b, li));
      actions.append(join);
    } else if (b.status === "confirmed") {
      const opens = new Date(Date.parse(b.starts_at) - config.joinBeforeS * 1000).toISOString();
      actions.append(el("p", "hint join-later", t("bookings.join_opens", { when: formatWhen(opens) })));
    }
    if (["pending", "confirmed"].includes(b.status) && nowMs() < Date.parse(b.starts_at)) {
      const cancel = el("button", "cancel", t("bookings.cancel"));
      cancel.type = "button";
      cancel.id = `cancel-${b.id}`;
      cancel.addEventListener("click", () => askCancel(b));
      actions.append(cancel);
    }
    if (b.status === "completed" && !reviewed.has(b.id)) actions.append(reviewForm(b, li));
    li.append(actions);
    list.append(li);
  }
  if (focusedId) document.getElementById(focusedId)?.focus();
}

const reviewed = new Set();

/** Stars (radio group) and a comment for a completed lesson: POST /bookings/{id}/review. */
function reviewForm(b, li) {
  const form = el("form", "review-form");
  form.id = `review-${b.id}`;
  const stars = el("fieldset", "stars-field");
  stars.append(el("legend", "", t("bookings.review_title")));
  for (let n = 5; n >= 1; n -= 1) {
    const label = el("label", "option");
    const radio = document.createElement("input");
    radio.type = "radio";
    radio.name = "rating";
    radio.value = String(n);
    radio.required = true;
    label.append(radio, ` ${t("provider.stars", { n })}`);
    stars.append(label);
  }
  const commentLabel = el("label", "", t("bookings.review_comment"));
  const comment = document.createElement("textarea");
  comment.name = "comment";
  comment.maxLength = 2000;
  commentLabel.append(comment);
  const submit = el("button", "primary", t("bookings.review_submit"));
  submit.type = "submit";
  form.append(stars, commentLabel, submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError(errorBox);
    const rating = Number(new FormData(form).get("rating"));
    if (!rating) return;
    try {
      await api("POST", `/bookings/${b.id}/review`, {
        body: { rating, comment: comment.value.trim() || null, locale: config.lang },
        idempotencyKey: newKey(),
      });
      reviewed.add(b.id);
      form.replaceWith(el("p", "review-thanks", t("bookings.review_thanks")));
      li.dataset.reviewed = "true";
    } catch (err) {
      showError(errorBox, err);
    }
  });
  return form;
}

async function load() {
  if (!token()) {
    window.location.assign(signInUrl());
    return;
  }
  try {
    const page = await api("GET", "/bookings?as=student&limit=100");
    bookings = page.items.slice().reverse();
    await render();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) window.location.assign(signInUrl());
    else showError(errorBox, err);
  }
}

async function askCancel(b) {
  clearError(errorBox);
  let preview;
  try {
    preview = await api("GET", `/bookings/${b.id}/cancel-preview`);
  } catch (err) {
    showError(errorBox, err);
    return;
  }
  const refund = document.getElementById("cancel-refund");
  refund.dataset.refundMinor = String(preview.refund_due_minor);
  refund.textContent = t("bookings.cancel_refund", {
    amount: formatPrice(preview.refund_due_minor, preview.currency), percent: preview.refund_percent,
  });
  dialog.returnValue = "";
  dialog.showModal();
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "confirm") return;
    try {
      const result = await api("POST", `/bookings/${b.id}/cancel`, { body: {}, idempotencyKey: newKey() });
      statusLine.textContent = t("bookings.canceled", { amount: formatPrice(result.refund_due_minor, preview.currency) });
      const i = bookings.findIndex((x) => x.id === b.id);
      bookings[i] = result.booking;
      await render();
      statusLine.textContent = t("bookings.canceled", { amount: formatPrice(result.refund_due_minor, preview.currency) });
    } catch (err) {
      showError(errorBox, err);
    }
  }, { once: true });
}

async function joinSession(b, li) {
  clearError(errorBox);
  try {
    const session = await api("POST", `/bookings/${b.id}/session-token`);
    // the access token a LiveKit client joins `session.url` with (an embedded video
    // client is not part of this page yet): the room is shown as ready
    const box = el("p", "room-ready", t("bookings.room_ready", { room: session.room }));
    box.dataset.room = session.room;
    box.tabIndex = -1;
    li.dataset.sessionToken = "issued";
    li.querySelector(".actions").append(box);
    box.focus();
  } catch (err) {
    showError(errorBox, err);
  }
}

load();
setInterval(() => render().catch(() => {}), 15000);
