// Keeps a job's page up to date without reloading it: while the job is queued or running, its
// panel is fetched again every second and put in place of the old one when it changed; then
// every ten seconds while its webhook is still being delivered. Without
// JavaScript the page refreshes itself instead (a <noscript> meta refresh).
"use strict";

(function () {
  const POLL_MS = { job: 1000, webhook: 10000 }; // a webhook's retries are minutes apart
  let shown = null; // the last panel put in place, without its CSRF tokens (new each time)

  function withoutTokens(html) {
    return html.replace(/name="csrfmiddlewaretoken" value="[^"]*"/g, "");
  }

  // The focused link or button, told by its text: a keyboard user about to press "Cancel"
  // keeps the focus on it when the panel around it is replaced.
  function focusedControl(panel) {
    const active = document.activeElement;
    return active && panel.contains(active) ? active.textContent.trim() : null;
  }

  function refocus(label) {
    const panel = document.getElementById("job");
    const same = [...panel.querySelectorAll("a, button")].find(
      (control) => control.textContent.trim() === label
    );
    (same || panel).focus({ preventScroll: true });
  }

  function replace(panel, html) {
    if (withoutTokens(html) === shown) {
      return; // unchanged: screen readers are not told the same status again
    }
    shown = withoutTokens(html);
    const label = focusedControl(panel);
    panel.outerHTML = html;
    if (label !== null) {
      refocus(label);
    }
  }

  function poll() {
    const panel = document.getElementById("job");
    if (!panel || !panel.hasAttribute("data-active")) {
      return; // finished: the panel shown is the last one
    }
    fetch(panel.dataset.panelUrl, { credentials: "same-origin", cache: "no-store" })
      .then((response) => (response.ok ? response.text() : Promise.reject(response.status)))
      .then((html) => replace(panel, html))
      .catch(() => {}) // a missed look (the server restarting, a network blip): try again
      .finally(() => setTimeout(poll, pause()));
  }

  function pause() {
    const panel = document.getElementById("job");
    return POLL_MS[panel && panel.dataset.active] || POLL_MS.job;
  }

  setTimeout(poll, pause());
})();
