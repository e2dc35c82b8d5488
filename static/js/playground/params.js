// The generation parameters' inputs: read into a run's params, checked, filled from a rerun.
// The parameters come from the page (opsdash.runs.params via json_script): their names, types
// and ranges are written once, on the server.

function paramDefinition() {
  const block = document.getElementById("param-definition");
  return block ? JSON.parse(block.textContent) : [];
}

// The browser checks min/max/step itself; an exclusive minimum (top_p 0) it cannot express.
export function guardParams(form) {
  paramDefinition().forEach(function (p) {
    const input = form.elements[p.name];
    if (!input || !p.exclusive_minimum) return;
    input.addEventListener("input", function () {
      const v = input.value.trim();
      input.setCustomValidity(v !== "" && parseFloat(v) <= p.minimum
        ? p.name + " must be " + p.help + "." : "");
    });
  });
}

// The params of a run message: the inputs that are filled in, typed.
export function readParams(form) {
  const out = {};
  paramDefinition().forEach(function (p) {
    const input = form.elements[p.name];
    if (!input) return;
    const v = input.value.trim();
    if (v === "") return;
    if (p.type === "stops") {
      out[p.name] = input.value.split(",").map(function (s) { return s.replace(/\\n/g, "\n"); }).filter(Boolean);
    } else {
      out[p.name] = p.type === "int" ? parseInt(v, 10) : parseFloat(v);
    }
  });
  return out;
}

// The inputs set to a past run's params (stop sequences back to one comma-separated field).
export function fillParams(form, params) {
  Object.keys(params || {}).forEach(function (k) {
    const field = form.elements[k];
    if (!field || params[k] === null) return;
    field.value = Array.isArray(params[k]) ? params[k].join(",") : params[k];
  });
}
