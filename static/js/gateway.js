// Gateway pages: copy buttons, and the "new workflow" form, which posts to /api/workflows.
(function () {
  "use strict";

  // navigator.clipboard exists only on secure origins (https, localhost) and may be refused;
  // a dashboard on a LAN address over plain http selects the text and uses execCommand.
  function copyBySelection(text) {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () {
        return copyBySelection(text);
      });
    }
    return copyBySelection(text);
  }

  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    const label = button.textContent;
    button.addEventListener("click", function () {
      const source = document.querySelector(button.dataset.copy);
      if (!source) return;
      copyText(source.textContent.trim()).then(
        function () { button.textContent = "Copied"; },
        function () { button.textContent = "Select and copy"; }
      ).finally(function () {
        setTimeout(function () { button.textContent = label; }, 1600);
      });
    });
  });

  // "Connect a client" is folded (its snippets are long); a link to it, or a URL ending in
  // #connect, opens it, since following an anchor does not open a closed <details>.
  function openConnect() {
    const connect = document.getElementById("connect");
    if (connect && !connect.open) connect.open = true;
  }
  document.querySelectorAll("a[data-open-details]").forEach(function (link) {
    link.addEventListener("click", openConnect);
  });
  if (window.location.hash === "#connect") openConnect();

  const form = document.getElementById("new-workflow");
  if (!form) return;
  const error = form.querySelector(".form-error");
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const data = new FormData(form);
    const body = {
      name: String(data.get("name") || "").trim(),
      baseline_provider: String(data.get("baseline_provider") || "").trim(),
      baseline_model: String(data.get("baseline_model") || "").trim(),
    };
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    error.hidden = true;
    fetch(form.dataset.api, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        "X-CSRFToken": form.querySelector("[name=csrfmiddlewaretoken]").value,
      },
      body: JSON.stringify(body),
    }).then(function (response) {
      return response.json().then(function (payload) {
        if (!response.ok) throw new Error(payload.detail || "The workflow could not be created.");
        window.location.assign(window.location.pathname + "workflows/" + payload.slug + "/");
      });
    }).catch(function (err) {
      error.textContent = err.message;
      error.hidden = false;
      button.disabled = false;
    });
  });
})();
