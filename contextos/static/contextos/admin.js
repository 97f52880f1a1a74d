// Live refresh of admin detail pages: while a record is queued or running, its page
// carries #record-live[data-live-refresh=<ms>]; the page is fetched again at that
// interval and its main content swapped in, until the record has finished.
(function () {
  "use strict";

  function liveInterval(root) {
    var live = root.querySelector("#record-live[data-live-refresh]");
    return live ? parseInt(live.getAttribute("data-live-refresh"), 10) || 1000 : 0;
  }

  function refresh() {
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var next = fresh.getElementById("content-main");
        var current = document.getElementById("content-main");
        if (next && current) {
          current.replaceWith(document.adoptNode(next));
        }
        schedule(liveInterval(document));
      })
      .catch(function () {
        schedule(5000); // the server is restarting or the network is down: try again later
      });
  }

  function schedule(interval) {
    if (interval > 0) {
      window.setTimeout(refresh, interval);
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    schedule(liveInterval(document));
  });
})();
