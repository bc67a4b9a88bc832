// Copy buttons: a button with data-copy="text" copies that text; one with data-copy-link copies
// the absolute address of its link (data-copy-link names the link's id). The buttons are shown
// only where this script runs (the "js" class), and work in panels job.js puts in place later.
"use strict";

(function () {
  document.documentElement.classList.add("js");

  function textFor(button) {
    if (button.dataset.copyLink) {
      return new URL(document.getElementById(button.dataset.copyLink).href, location.href).href;
    }
    return button.dataset.copy;
  }

  function announce(button, message) {
    const label = button.textContent;
    button.textContent = message;
    setTimeout(() => {
      button.textContent = label;
    }, 2000);
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-copy], button[data-copy-link]");
    if (!button) {
      return;
    }
    navigator.clipboard.writeText(textFor(button)).then(
      () => announce(button, "Copied"),
      () => announce(button, "Copy failed: select the text and copy it")
    );
  });
})();
