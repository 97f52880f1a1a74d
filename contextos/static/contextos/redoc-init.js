// Starts Redoc on /api/redoc/ with the schema URL and settings the page carries (no inline
// script: the Content-Security-Policy allows none).
(function () {
  "use strict";
  var container = document.getElementById("redoc-container");
  var settingsBlock = document.getElementById("redoc-settings");
  var settings = settingsBlock ? JSON.parse(settingsBlock.textContent) : {};
  Redoc.init(container.getAttribute("data-schema-url"), settings, container);
})();
