// Forms marked data-confirm="…" ask before they are sent (cancel a job, revoke a token, …).
// A script file rather than onsubmit attributes: the dashboard's CSP allows no inline script.
document.addEventListener(
  "submit",
  (event) => {
    const message = event.target.dataset && event.target.dataset.confirm;
    if (message && !window.confirm(message)) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  },
  true,
);
