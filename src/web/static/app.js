// regate's pages: copy buttons and confirmations. No inline script anywhere (the pages'
// Content-Security-Policy forbids it); everything hangs on data- attributes.
"use strict";

// The clipboard API exists only in a secure context (HTTPS, or localhost); a registry
// served over plain HTTP on a LAN still gets its copy buttons, the old way.
function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    return navigator.clipboard.writeText(text);
  }
  return new Promise((resolve, reject) => {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "sr-only";
    document.body.appendChild(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    if (ok) { resolve(); } else { reject(new Error("copy refused")); }
  });
}

document.addEventListener("click", (event) => {
  const copy = event.target.closest("[data-copy]");
  if (copy) {
    const text = copy.getAttribute("data-copy");
    const was = copy.textContent;
    copyText(text).then(() => {
      copy.textContent = "Copied";
    }, () => {
      copy.textContent = "Select and copy it";
    }).finally(() => {
      setTimeout(() => { copy.textContent = was; }, 1500);
    });
  }
});
document.addEventListener("submit", (event) => {
  const question = event.target.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
