// The colour theme: the system's (prefers-color-scheme) unless a person chose light or dark in
// the header's toggle; the choice is kept in localStorage. Loaded in <head> without defer, so
// <html data-theme> is set before the first paint (the CSP allows no inline script to do it).
// Whenever the colours in effect change, "opsdash:theme" is dispatched on document, so the
// charts, which draw on canvas with colours read from CSS variables, can redraw.
(function () {
  "use strict";
  var KEY = "opsdash-theme";
  var root = document.documentElement;
  var dark = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;

  function stored() {
    try {
      var value = window.localStorage.getItem(KEY);
      return value === "light" || value === "dark" ? value : "system";
    } catch (e) {
      return "system"; // storage refused (privacy mode): follow the system
    }
  }

  function store(choice) {
    try {
      if (choice === "system") window.localStorage.removeItem(KEY);
      else window.localStorage.setItem(KEY, choice);
    } catch (e) { /* the choice then lasts for this page only */ }
  }

  // The palette in effect, for scripts: "light" or "dark".
  function effective(choice) {
    if (choice === "light" || choice === "dark") return choice;
    return dark && dark.matches ? "dark" : "light";
  }

  function apply(choice) {
    if (choice === "light" || choice === "dark") root.setAttribute("data-theme", choice);
    else root.removeAttribute("data-theme");
    root.setAttribute("data-theme-effective", effective(choice));
  }

  function changed() {
    document.dispatchEvent(new CustomEvent("opsdash:theme", { detail: { theme: root.getAttribute("data-theme-effective") } }));
  }

  function syncControls(choice) {
    var selects = document.querySelectorAll("select[data-theme-choice]");
    for (var i = 0; i < selects.length; i += 1) selects[i].value = choice;
  }

  apply(stored());

  if (dark && dark.addEventListener) {
    dark.addEventListener("change", function () {
      var choice = stored();
      apply(choice);
      if (choice === "system") changed();
    });
  }
  // Another tab changed the choice: follow it.
  window.addEventListener("storage", function (event) {
    if (event.key !== KEY && event.key !== null) return;
    var choice = stored();
    apply(choice);
    syncControls(choice);
    changed();
  });

  document.addEventListener("DOMContentLoaded", function () {
    var selects = document.querySelectorAll("select[data-theme-choice]");
    for (var i = 0; i < selects.length; i += 1) {
      var select = selects[i];
      select.value = stored();
      select.addEventListener("change", function (event) {
        var choice = event.target.value;
        store(choice);
        apply(choice);
        syncControls(choice);
        changed();
      });
      var label = select.closest("label");
      if (label) label.hidden = false;
    }
  });
})();
