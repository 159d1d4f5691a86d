// The browser's side of the connection indicator. htmx's SSE extension reports the EventSource's
// life as DOM events; we turn them into data-conn on the element that owns the connection, and
// CSS does the rest. A file rather than hx-on attributes, because those need 'unsafe-eval' and
// our Content-Security-Policy allows no inline or evaluated script.
(function () {
  "use strict";
  function board(evt) {
    return evt.target.closest ? evt.target.closest("[sse-connect]") : null;
  }
  document.addEventListener("htmx:sseOpen", function (evt) {
    var el = board(evt);
    if (el) el.dataset.conn = "live";
  });
  document.addEventListener("htmx:sseError", function (evt) {
    var el = board(evt);
    if (!el) return;
    // The extension reports the browser's own retries too: CONNECTING (0) means it is trying
    // again by itself; CLOSED (2) means it gave up and the extension will build a new source.
    var source = evt.detail && evt.detail.source;
    el.dataset.conn = source && source.readyState === 0 ? "reconnecting" : "down";
  });
  document.addEventListener("htmx:sseClose", function (evt) {
    var el = board(evt);
    if (el) el.dataset.conn = "down";
  });
})();

// Copy buttons of the embed builder: <button data-copy="ID"> copies the text of element ID.
(function () {
  "use strict";
  document.addEventListener("click", function (evt) {
    var button = evt.target.closest && evt.target.closest("[data-copy]");
    if (!button) return;
    var source = document.getElementById(button.dataset.copy);
    if (!source) return;
    var done = function () {
      var note = document.createElement("span");
      note.className = "copied";
      note.textContent = "Copied";
      button.after(note);
      setTimeout(function () { note.remove(); }, 1500);
    };
    var text = source.value || source.textContent;
    var fallback = function () {
      // Older browsers, plain-HTTP pages and denied permissions: copy the selection instead.
      source.select();
      if (document.execCommand("copy")) done();
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, fallback);
    } else {
      fallback();
    }
  });
})();

// Fired alerts. The owner's pages receive the SSE event "alert" and htmx puts its banner on the
// page; here we also show a browser notification, once the person has allowed them (the
// button in the top bar asks, as browsers only ask after a click).
(function () {
  "use strict";
  var canNotify = "Notification" in window;
  document.addEventListener("htmx:sseMessage", function (evt) {
    var message = evt.detail;
    if (!message || message.type !== "alert" || !canNotify) return;
    if (Notification.permission !== "granted") return;
    var text = new DOMParser().parseFromString(message.data, "text/html").body.textContent;
    new Notification("pricestream alert", { body: text.replace(/\s+/g, " ").trim() });
  });
  document.querySelectorAll("[data-notify]").forEach(function (button) {
    if (!canNotify || Notification.permission !== "default") return;
    button.hidden = false;
    button.addEventListener("click", function () {
      Notification.requestPermission().then(function () { button.hidden = true; });
    });
  });
})();
