// Upload with a progress bar: XHR exposes upload progress, fetch() does not.
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  if (!form) return;
  const bar = document.querySelector("#upload-progress .progress-bar");
  const box = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  const button = form.querySelector("button[type=submit]");

  function human(bytes) {
    const units = ["bytes", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (bytes >= 1024 && i < units.length - 1) { bytes /= 1024; i++; }
    return (i ? bytes.toFixed(1) : bytes) + " " + units[i];
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const file = form.querySelector("input[type=file]").files[0];
    if (!file) return;
    const max = Number(form.dataset.maxBytes);
    if (file.size > max) {
      status.textContent = "This file is " + human(file.size) + ", over the upload limit of " +
        human(max) + ". Copy it to the server and install it by path instead.";
      status.className = "small error";
      return;
    }
    const data = new FormData(form);
    data.delete("csrfmiddlewaretoken");
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.dataset.uploadUrl);
    xhr.setRequestHeader("X-CSRFToken", form.querySelector("[name=csrfmiddlewaretoken]").value);
    xhr.upload.addEventListener("progress", function (e) {
      if (!e.lengthComputable) return;
      const pct = Math.round((e.loaded / e.total) * 100);
      bar.style.width = pct + "%";
      status.textContent = "Uploading… " + human(e.loaded) + " of " + human(e.total) + " (" + pct + "%)";
    });
    xhr.addEventListener("load", function () {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (err) { body = {}; }
      if (xhr.status === 202) {
        status.textContent = "Uploaded. Checking and trial-loading…";
        window.location = "/models/" + body.id + "/";
      } else {
        status.textContent = body.detail || ("The upload failed (HTTP " + xhr.status + ").");
        status.className = "small error";
        button.disabled = false;
      }
    });
    xhr.addEventListener("error", function () {
      status.textContent = "The connection broke during the upload. Nothing was installed; try again.";
      status.className = "small error";
      button.disabled = false;
    });
    box.classList.remove("hidden");
    status.className = "small muted";
    button.disabled = true;
    xhr.send(data);
  });
})();
