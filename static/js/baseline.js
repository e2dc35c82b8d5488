// The baseline picker ({% baseline_picker %}): the model list shows only the chosen provider's
// priced models. Without this script both selects still work (the models grouped by provider);
// a model of another provider is refused by the server with a sentence.
(function () {
  "use strict";

  function setUp(picker) {
    const providerSelect = picker.querySelector("[data-baseline-provider]");
    const modelSelect = picker.querySelector("[data-baseline-model]");
    if (!providerSelect || !modelSelect) return;
    // Detached copies: hiding <option>s is not honoured by every browser, rebuilding is.
    const groups = Array.from(modelSelect.querySelectorAll("optgroup"));
    const none = modelSelect.querySelector("option[data-none]");
    const initial = modelSelect.value;
    groups.forEach(function (group) { group.remove(); });

    function narrow(previous) {
      modelSelect.querySelectorAll("optgroup").forEach(function (group) { group.remove(); });
      const group = groups.find(function (g) { return g.dataset.provider === providerSelect.value; });
      if (!group) {
        // No baseline: a disabled select is not submitted, so the model is sent as blank.
        if (none && !none.parentNode) modelSelect.prepend(none);
        modelSelect.value = "";
        modelSelect.disabled = true;
        return;
      }
      if (none && none.parentNode) none.remove();
      modelSelect.appendChild(group);
      modelSelect.disabled = false;
      const keep = Array.from(group.querySelectorAll("option")).some(function (o) {
        return o.value === previous;
      });
      modelSelect.value = keep ? previous : group.querySelector("option").value;
    }

    providerSelect.addEventListener("change", function () { narrow(modelSelect.value); });
    narrow(initial);
  }

  document.querySelectorAll("[data-baseline-picker]").forEach(setUp);
})();
