// For other sites that show our prices the htmx way (see the README, "Embedding").
// Load it after htmx and its SSE extension. The extension opens every EventSource with
// credentials, and browsers refuse a credentialed stream unless the server names the page's
// exact origin and allows credentials. Our prices are public and we keep no cookies, so for our
// own origin we open the stream without credentials and answer CORS with a plain
// "Access-Control-Allow-Origin: *" (or the configured list). Other EventSources on the page keep
// whatever the page had.
(function () {
  "use strict";
  if (!window.htmx) {
    console.error("pricestream embed.js: load htmx and htmx-ext-sse before this script");
    return;
  }
  var ours = new URL(document.currentScript.src).origin;
  var previous = htmx.createEventSource;
  htmx.createEventSource = function (url) {
    if (new URL(url, document.baseURI).origin === ours) {
      return new EventSource(url);
    }
    return previous ? previous(url) : new EventSource(url, { withCredentials: true });
  };
})();
