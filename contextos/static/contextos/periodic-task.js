// The periodic task form: under the crontab field, what the chosen schedule means in words
// (the translations come in the #readable-crontabs JSON block).
(function () {
  "use strict";
  var $ = window.django && window.django.jQuery;
  var data = document.getElementById("readable-crontabs");
  if (!$ || !data) {
    return;
  }
  var readable = JSON.parse(data.textContent);
  var help = $(".field-crontab .help");
  var original = help.html();
  $(".field-crontab_translation").hide();
  $(".field-crontab").change(function () {
    var translation = readable[$("#id_crontab").val()];
    help.html(original).append($("<br>"), document.createTextNode("Translation: " + (translation || "")));
  });
})();
