/* Maple & Moss: the page's own events, the cookie banner, add-to-cart, signup and the test card.
 * Every event goes through window.tracklayer (the snippet the middleware injects): it mints the
 * event id, fires the Pinterest tag with it and beacons the same event to our server. */
(function () {
  "use strict";
  var tl = function () { return window.tracklayer; };
  var YEAR = 31536000;

  function setCookie(name, value, maxAge) {
    var domain = document.body.dataset.bannerDomain;
    document.cookie = name + "=" + value + "; path=/; SameSite=Lax; max-age=" + maxAge +
      (domain ? "; domain=" + domain : "") + (location.protocol === "https:" ? "; Secure" : "");
  }
  function hasCookie(pair) { return document.cookie.split("; ").indexOf(pair) !== -1; }

  // 1. The events this page fires on load (rendered by the server: ViewCategory, Search, Checkout, ...).
  var data = document.getElementById("page-events");
  var events = data ? JSON.parse(data.textContent || "[]") : [];
  events.forEach(function (e) { tl().track(e.event, e.custom || {}, e.options || {}); });

  // 2. The cookie banner: nothing is sent (and no tracking cookie is set) before "Accept".
  var banner = document.querySelector("[data-consent-banner]");
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-consent]");
    if (!button) return;
    var yes = button.dataset.consent === "accept";
    tl().consent(yes);
    // The snippet writes the consent cookie for the shared cookie domain; where this host is not
    // inside it (the payment partner), write it for this host so the server sees it too.
    if (yes && !hasCookie("tl_consent=granted")) setCookie("tl_consent", "granted", YEAR);
    setCookie("tl_banner", yes ? "accepted" : "declined", YEAR);
    if (banner) banner.hidden = true;
  });

  // 3. Add to cart without leaving the product page.
  var addForm = document.querySelector("[data-add-to-cart]");
  if (addForm) addForm.addEventListener("submit", function (event) {
    event.preventDefault();
    var custom = JSON.parse(addForm.dataset.addToCart);
    var quantity = Math.max(1, parseInt(addForm.elements.quantity.value, 10) || 1);
    var price = custom.contents[0].item_price;
    custom.num_items = quantity;
    custom.contents[0].quantity = quantity;
    custom.value = Math.round(price * quantity * 100) / 100;
    tl().track("AddToCart", custom);
    fetch(addForm.action, {
      method: "POST", body: new URLSearchParams(new FormData(addForm)),
      headers: { Accept: "application/json" }, credentials: "same-origin"
    }).then(function (r) { return r.json(); }).then(function (answer) {
      document.querySelectorAll("[data-cart-count]").forEach(function (el) { el.textContent = answer.count; });
      document.querySelector("[data-added]").hidden = false;
    }).catch(function () { addForm.submit(); });
  });

  // 4. Signup: the email goes to our own server with the event, which hashes it before storing.
  var signup = document.querySelector("[data-signup]");
  if (signup) signup.addEventListener("submit", function (event) {
    event.preventDefault();
    var error = signup.querySelector("[data-error]");
    fetch(signup.action, {
      method: "POST", body: new URLSearchParams(new FormData(signup)),
      headers: { Accept: "application/json" }, credentials: "same-origin"
    }).then(function (r) { return r.json(); }).then(function (answer) {
      if (!answer.ok) { error.textContent = answer.error; error.hidden = false; return; }
      tl().track("Signup", {}, { user: { email: signup.elements.email.value, first_name: signup.elements.first_name.value } });
      signup.hidden = true;
      document.querySelector("[data-welcome]").hidden = false;
    }).catch(function () { signup.submit(); });
  });

  // 5. The payment partner: AddPaymentInfo once the card details are complete.
  var payment = document.querySelector("[data-payment-form]");
  if (payment) {
    var reported = false;
    var check = function () {
      var f = payment.elements;
      if (reported || !(f.card_number.value.replace(/\D/g, "").length >= 12 && f.expiry.value && f.cvc.value)) return;
      reported = true;
      tl().track("AddPaymentInfo", JSON.parse(payment.dataset.paymentInfo));
    };
    payment.addEventListener("change", check);
    payment.addEventListener("submit", check);
    payment.querySelector("[data-test-card]").addEventListener("click", function () {
      payment.elements.card_number.value = "4242 4242 4242 4242";
      payment.elements.expiry.value = "12/34";
      payment.elements.cvc.value = "123";
      check();
    });
  }
})();
