'use strict';
// Hand the provider's answer to the page that opened this popup, and only to our own origin.
(function () {
  const q = new URLSearchParams(window.location.search);
  const msg = { type: 'oxnotify-oauth2', code: q.get('code'), state: q.get('state'),
                error: q.get('error'), error_description: q.get('error_description') };
  const text = document.getElementById('text');
  if (!window.opener) {
    text.textContent = 'This page must be opened by the oxnotify page\'s Authorize button. Close it and try again.';
    return;
  }
  window.opener.postMessage(msg, window.location.origin);
  text.textContent = 'Done. You can close this window.';
  window.close();
})();
