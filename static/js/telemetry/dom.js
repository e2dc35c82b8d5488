// Building and updating the telemetry page's elements, found by their data-role.

export function el(tag, attrs, children) {
  const node = document.createElement(tag);
  Object.entries(attrs || {}).forEach(function ([k, v]) {
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  });
  (children || []).forEach(function (c) { node.append(c); });
  return node;
}

export function role(root, name) { return root.querySelector('[data-role="' + name + '"]'); }

// Writes only a changed text, so an unchanged figure costs no layout.
export function setText(root, name, text) {
  const node = role(root, name);
  if (node && node.textContent !== text) node.textContent = text;
}
