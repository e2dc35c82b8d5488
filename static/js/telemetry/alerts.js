// The alert banners of the ongoing episodes. When the set of episodes changes, the page's
// alert history (an htmx partial listening on body) is told to refresh itself.

import { el, role } from "./dom.js";
import { clock } from "./format.js";

let alertKeys = "";

export function renderAlerts(root, f) {
  const box = role(root, "banners");
  const alerts = f.alerts || [];
  const keys = alerts.map(function (a) { return a.kind + "/" + a.subject; }).sort().join("|");
  box.textContent = "";
  alerts.forEach(function (a) {
    box.append(el("div", { class: "banner", "data-kind": a.kind }, [
      el("strong", { text: "Alert: " }), el("span", { text: a.message }),
      el("span", { class: "muted small", text: " · since " + clock(a.since) }),
    ]));
  });
  if (keys !== alertKeys) {
    alertKeys = keys;
    document.body.dispatchEvent(new Event("telemetry-alerts-changed"));
  }
}
