// A provider's page: profile and upcoming slots with their seats left, kept current
// without a reload by the Server-Sent Events of /providers/{id}/availability/events
// (EventSource reconnects by itself and resumes with Last-Event-ID).
import { config, lang, t } from "./common.js";

const providerId = location.pathname.split("/").filter(Boolean).pop();
const slotsEl = document.getElementById("slots");
const statusEl = document.getElementById("live-status");
const when = new Intl.DateTimeFormat(lang, { dateStyle: "full", timeStyle: "short" });

function seatsText(left) {
  return left > 0 ? `${new Intl.NumberFormat(lang).format(left)} ${t("provider.seats_left")}` : t("provider.full");
}

function renderSlot(slot) {
  let li = slotsEl.querySelector(`[data-slot-id="${slot.id}"]`);
  if (!li) {
    li = document.createElement("li");
    li.className = "slot";
    li.dataset.slotId = slot.id;
    const time = document.createElement("span");
    time.className = "slot-time";
    time.textContent = when.format(new Date(slot.starts_at));
    const seats = document.createElement("span");
    seats.className = "seats-left";
    li.append(time, " — ", seats);
    slotsEl.append(li);
  }
  updateSeats(slot.id, slot.seats_left, slot.capacity);
}

function updateSeats(slotId, left, capacity) {
  const li = slotsEl.querySelector(`[data-slot-id="${slotId}"]`);
  if (!li) return;
  const seats = li.querySelector(".seats-left");
  seats.textContent = capacity > 1 ? `${seatsText(left)} / ${capacity}` : seatsText(left);
  seats.dataset.seatsLeft = String(left);
  li.classList.toggle("full", left === 0);
}

async function load() {
  const [profile, availability] = await Promise.all([
    fetch(`${config.apiBase}/providers/${providerId}`).then((r) => (r.ok ? r.json() : null)),
    fetch(`${config.apiBase}/providers/${providerId}/availability`).then((r) => (r.ok ? r.json() : { items: [] })),
  ]);
  if (profile) {
    document.getElementById("provider-name").textContent = profile.display_name;
    document.getElementById("provider-headline").textContent = profile.headline || "";
  }
  slotsEl.replaceChildren();
  for (const slot of availability.items) renderSlot(slot);
  if (!availability.items.length) slotsEl.textContent = t("provider.none");
}

function listen() {
  const source = new EventSource(`${config.apiBase}/providers/${providerId}/availability/events`);
  const onSeat = (event) => {
    const m = JSON.parse(event.data);
    if (m.seats_left !== null) updateSeats(m.slot_id, m.seats_left, m.capacity);
  };
  for (const type of ["seat.held", "seat.released", "slot.full", "slot.updated"]) {
    source.addEventListener(type, onSeat);
  }
  source.addEventListener("open", () => {
    statusEl.textContent = t("provider.live");
    document.body.dataset.live = "open";
  });
  source.addEventListener("error", () => {
    statusEl.textContent = t("provider.offline");
    document.body.dataset.live = "reconnecting";
  });
}

load().then(listen);
