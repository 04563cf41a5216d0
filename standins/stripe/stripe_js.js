// A stand-in of Stripe.js v3 (https://js.stripe.com/v3/), served by the local Stripe stand-in
// at GET /v3/, for browser tests of the Payment Element path without Stripe's network.
//
// The subset the pages use: `Stripe(publishableKey)`, `stripe.elements({clientSecret,
// locale})`, `elements.create("payment").mount(selector)` and `stripe.confirmPayment({
// elements, redirect: "if_required" })`. Like Stripe.js, it talks to the API with the
// publishable key and the PaymentIntent's client secret as form fields:
// `POST https://api.stripe.com/v1/payment_intents/{id}/confirm` (`key`, `client_secret`,
// `payment_method`). The element is a plain card-number field; Stripe's test card numbers
// map to Stripe's test PaymentMethods (4242 4242 4242 4242 succeeds, 4000 0000 0000 0002
// is declined, …), and `confirmPayment` resolves to `{paymentIntent}` or `{error}` as the
// real one does.
(function () {
  "use strict";
  const API = "https://api.stripe.com";
  const TEST_CARDS = {
    "4242424242424242": "pm_card_visa",
    "4000000000000002": "pm_card_chargeDeclined",
    "4000000000009995": "pm_card_chargeDeclinedInsufficientFunds",
    "4000000000000069": "pm_card_chargeDeclinedExpiredCard",
  };
  const LABELS = {
    en: { number: "Card number", incomplete: "Your card number is incomplete." },
    fr: { number: "Numéro de carte", incomplete: "Le numéro de carte est incomplet." },
  };

  function labels(locale) {
    return LABELS[String(locale || "en").slice(0, 2)] || LABELS.en;
  }

  function Stripe(publishableKey) {
    if (!(this instanceof Stripe)) return new Stripe(publishableKey);
    if (!String(publishableKey || "").startsWith("pk_")) {
      throw new Error("Stripe(): a publishable key (pk_…) is required");
    }
    this._key = publishableKey;
  }

  Stripe.prototype.elements = function (options) {
    const clientSecret = options && options.clientSecret;
    if (!clientSecret) throw new Error("elements(): clientSecret is required");
    const text = labels(options.locale);
    const elements = { _clientSecret: clientSecret, _input: null };
    elements.create = function (type) {
      if (type !== "payment") throw new Error(`elements.create(): unsupported type ${type}`);
      return {
        mount(target) {
          const host = typeof target === "string" ? document.querySelector(target) : target;
          const label = document.createElement("label");
          label.textContent = text.number;
          const input = document.createElement("input");
          input.name = "cardnumber";
          input.autocomplete = "cc-number";
          input.inputMode = "numeric";
          label.append(" ", input);
          host.replaceChildren(label);
          elements._input = input;
          elements._text = text;
        },
      };
    };
    return elements;
  };

  Stripe.prototype.confirmPayment = async function ({ elements }) {
    const digits = (elements._input ? elements._input.value : "").replace(/\D/g, "");
    const method = TEST_CARDS[digits];
    if (!method) {
      return {
        error: {
          type: "validation_error",
          code: "incomplete_number",
          message: elements._text.incomplete,
        },
      };
    }
    const secret = elements._clientSecret;
    const id = secret.split("_secret_")[0];
    const body = new URLSearchParams({ key: this._key, client_secret: secret, payment_method: method });
    const response = await fetch(`${API}/v1/payment_intents/${encodeURIComponent(id)}/confirm`, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body,
    });
    const payload = await response.json();
    if (!response.ok) return { error: payload.error };
    return { paymentIntent: payload };
  };

  window.Stripe = Stripe;
})();
