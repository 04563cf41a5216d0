// Sign in (OAuth2 password form of /auth/login), or create a student account first.

import { config, t, showError, clearError, keepLanguageLinks } from "./common.js";
import { api, signIn, renderAccount } from "./journey.js";

const form = document.getElementById("signin-form");
const errorBox = document.getElementById("signin-error");
const create = document.getElementById("create-account");
const nameField = document.getElementById("name-field");

keepLanguageLinks();
renderAccount();
create.addEventListener("change", () => {
  nameField.hidden = !create.checked;
  document.getElementById("signin-submit").textContent = t(create.checked ? "signin.submit_create" : "signin.submit");
});

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearError(errorBox);
  const email = form.email.value.trim();
  const password = form.password.value;
  try {
    if (create.checked) {
      await api("POST", "/auth/register", {
        auth: false,
        body: { email, password, full_name: form.full_name.value.trim() || email, role: "student", locale: config.lang },
      });
    }
    const tokens = await api("POST", "/auth/login", { auth: false, form: { username: email, password } });
    signIn(tokens.access_token, email);
    const next = new URLSearchParams(window.location.search).get("next");
    window.location.assign(next && next.startsWith("/") && !next.startsWith("//") ? next : `/me/bookings?lang=${config.lang}`);
  } catch (err) {
    showError(errorBox, err, { email: form.email, password: form.password });
  }
});
