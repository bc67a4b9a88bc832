// Keeps a job's page up to date without reloading it: while the job is queued or running, its
// panel is fetched again every second and put in place of the old one. Without JavaScript the
// page refreshes itself instead (a <noscript> meta refresh).
"use strict";

(function () {
  const POLL_MS = 1000;

  function poll() {
    const panel = document.getElementById("job");
    if (!panel || !panel.hasAttribute("data-active")) {
      return; // finished: the panel shown is the last one
    }
    fetch(panel.dataset.panelUrl, { credentials: "same-origin", cache: "no-store" })
      .then((response) => (response.ok ? response.text() : Promise.reject(response.status)))
      .then((html) => {
        panel.outerHTML = html;
      })
      .catch(() => {}) // a missed look (the server restarting, a network blip): try again
      .finally(() => setTimeout(poll, POLL_MS));
  }

  setTimeout(poll, POLL_MS);
})();
