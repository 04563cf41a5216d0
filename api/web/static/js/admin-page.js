// The back-office page: pending KYC decisions and open complaints, from the admin API.
// The admin signs in once (OAuth2 password form); the access token stays in this tab.
const config = JSON.parse(document.getElementById("page-config").textContent);
const t = (key) => config.messages[key] || key;
const api = config.apiBase;
const KEY = "educonnect.admin.token";

function headers() {
  return { Authorization: `Bearer ${sessionStorage.getItem(KEY)}` };
}

async function getJson(path) {
  const r = await fetch(api + path, { headers: headers() });
  if (r.status === 401 || r.status === 403) {
    sessionStorage.removeItem(KEY);
    showLogin();
    throw new Error(`HTTP ${r.status}`);
  }
  if (!r.ok) throw new Error(`HTTP ${r.status}`);
  return r.json();
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
  return td;
}

async function decide(userId, decision, button) {
  button.disabled = true;
  const r = await fetch(`${api}/admin/kyc/${userId}/verify`, {
    method: "POST",
    headers: { ...headers(), "Content-Type": "application/json" },
    body: JSON.stringify({ decision }),
  });
  if (r.ok) await loadKyc();
  else button.disabled = false;
}

async function loadKyc() {
  const rows = await getJson("/admin/kyc/pending");
  const body = document.querySelector("#kyc-table tbody");
  body.replaceChildren();
  for (const p of rows) {
    const tr = document.createElement("tr");
    tr.dataset.userId = p.user_id;
    cell(tr, p.display_name);
    cell(tr, p.kind);
    cell(tr, String(p.documents));
    const actions = cell(tr, "");
    for (const [decision, label] of [["approve", t("admin.approve")], ["reject", t("admin.reject")]]) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = label;
      b.dataset.decision = decision;
      b.addEventListener("click", () => decide(p.user_id, decision, b));
      actions.appendChild(b);
    }
    body.appendChild(tr);
  }
  document.getElementById("kyc-empty").hidden = rows.length > 0;
}

async function loadComplaints() {
  const body = document.querySelector("#complaints-table tbody");
  body.replaceChildren();
  let count = 0;
  for (const status of ["open", "in_review"]) {
    const page = await getJson(`/admin/complaints?status=${status}&limit=100`);
    for (const c of page.items) {
      const tr = document.createElement("tr");
      tr.dataset.complaintId = c.id;
      cell(tr, c.booking_id);
      cell(tr, c.reason);
      cell(tr, c.status);
      cell(tr, new Date(c.created_at).toLocaleString(config.lang));
      body.appendChild(tr);
      count += 1;
    }
  }
  document.getElementById("complaints-empty").hidden = count > 0;
}

function showLogin() {
  document.getElementById("board").hidden = true;
  document.getElementById("login").hidden = false;
}

async function showBoard() {
  document.getElementById("login").hidden = true;
  document.getElementById("board").hidden = false;
  await Promise.all([loadKyc(), loadComplaints()]);
}

document.getElementById("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new URLSearchParams(new FormData(event.target));
  const r = await fetch(`${api}/auth/login`, { method: "POST", body: form });
  const error = document.getElementById("login-error");
  if (!r.ok) {
    error.textContent = t("admin.login_failed");
    error.hidden = false;
    return;
  }
  sessionStorage.setItem(KEY, (await r.json()).access_token);
  error.hidden = true;
  await showBoard();
});

if (sessionStorage.getItem(KEY)) showBoard().catch(showLogin);
else showLogin();
