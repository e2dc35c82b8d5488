// Form behaviours the pages once wrote inline (onchange="…"), here so that the
// Content-Security-Policy can forbid inline script.
//   data-autosubmit        a field whose change submits its form
//   data-clear="a b"       fields of that form emptied first (a range preset clears from/to)
document.addEventListener("change", function (event) {
  var field = event.target.closest("[data-autosubmit]");
  if (!field || !field.form) return;
  (field.dataset.clear || "").split(/\s+/).filter(Boolean).forEach(function (name) {
    var other = field.form.elements[name];
    if (other) other.value = "";
  });
  field.form.submit();
});
