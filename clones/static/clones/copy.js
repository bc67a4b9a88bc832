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
    button.dataset.label = button.dataset.label || button.textContent; // a second click too
    button.textContent = message;
    clearTimeout(button.restore);
    button.restore = setTimeout(() => {
      button.textContent = button.dataset.label;
    }, 2000);
  }

  // The Clipboard API exists on https:// and localhost only; over plain http the browser's older
  // copy command still works, from a selected text field.
  function copyWithoutClipboardApi(text) {
    const field = document.createElement("textarea");
    field.value = text;
    field.setAttribute("readonly", "");
    field.style.position = "fixed";
    field.style.opacity = "0";
    document.body.appendChild(field);
    field.select();
    const copied = document.execCommand("copy");
    field.remove();
    return copied ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    return copyWithoutClipboardApi(text);
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-copy], button[data-copy-link]");
    if (!button) {
      return;
    }
    copy(textFor(button)).then(
      () => announce(button, "Copied"),
      () => announce(button, "Copy failed: select the text and copy it")
    );
  });
})();
