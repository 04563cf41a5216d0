// Shared helpers of the journey pages (provider, sign-in, my bookings): the clock, the
// signed-in account, and API calls with the bearer token and problem+json errors.

import { config, t, ApiError } from "./common.js";

const loadedAt = Date.now();
// the alert title of these pages (the search pages say "check the search")
config.messages["error.title"] = config.messages["journey.error_title"];
const TOKEN = "educonnect.token";
const EMAIL = "educonnect.email";

/** The page's clock (ms): real time, or with ENV=test the `?now=` instant, ticking. */
export function nowMs() {
  return config.testNow ? Date.parse(config.testNow) + (Date.now() - loadedAt) : Date.now();
}

export function token() {
  return localStorage.getItem(TOKEN);
}

export function signIn(accessToken, email) {
  localStorage.setItem(TOKEN, accessToken);
  localStorage.setItem(EMAIL, email);
}

export function signOut() {
  localStorage.removeItem(TOKEN);
  localStorage.removeItem(EMAIL);
}

/** The sign-in page's URL, coming back to this page (with its query) afterwards. */
export function signInUrl() {
  const next = window.location.pathname + window.location.search;
  return `/signin?lang=${config.lang}&next=${encodeURIComponent(next)}`;
}

/** Keep `?now=` (test clock) on links between the journey pages. */
export function withClock(href) {
  if (!config.testNow) return href;
  const url = new URL(href, window.location.origin);
  url.searchParams.set("now", config.testNow);
  return url.pathname + url.search;
}

/** Header: who is signed in, with a sign-out button, or a sign-in link. */
export function renderAccount() {
  const box = document.getElementById("account");
  if (!box) return;
  box.replaceChildren();
  for (const a of document.querySelectorAll("nav a")) a.href = withClock(a.getAttribute("href"));
  if (token()) {
    const who = document.createElement("span");
    who.textContent = localStorage.getItem(EMAIL) || "";
    const out = document.createElement("button");
    out.type = "button";
    out.className = "link-button";
    out.textContent = t("account.sign_out");
    out.addEventListener("click", () => {
      signOut();
      renderAccount();
    });
    box.append(who, " ", out);
  } else {
    const a = document.createElement("a");
    a.href = signInUrl();
    a.textContent = t("account.sign_in");
    a.id = "signin-link";
    box.append(a);
  }
}

/** A call to the API: JSON body or throws ApiError (401 clears the stored token). */
export async function api(method, path, { body, idempotencyKey, auth = true, form } = {}) {
  const headers = { Accept: "application/json" };
  if (config.testNow) headers["X-Test-Now"] = new Date(nowMs()).toISOString();
  if (auth && token()) headers.Authorization = `Bearer ${token()}`;
  if (idempotencyKey) headers["Idempotency-Key"] = `"${idempotencyKey}"`;
  let payload;
  if (form) {
    payload = new URLSearchParams(form);
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(`${config.apiBase}${path}`, { method, headers, body: payload });
  } catch {
    throw new ApiError(0, null);
  }
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json().catch(() => null) : null;
  if (!response.ok) {
    if (response.status === 401 && auth) signOut();
    throw new ApiError(response.status, data);
  }
  return data;
}

export function formatWhen(iso) {
  return new Intl.DateTimeFormat(config.lang, {
    weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", timeZone: "UTC", timeZoneName: "short",
  }).format(new Date(iso));
}

export function newKey() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}
