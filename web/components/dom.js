/**
 * Small DOM builders shared by the components.
 *
 * Every string reaches the page through `textContent` or an attribute value, never as HTML:
 * worker names and error messages come from config files and remote machines.
 */

/**
 * Creates an element. `props` keys: `class` (string or array), `text`, `dataset`, `on<event>`
 * (listener functions), DOM properties such as `checked`/`disabled` (non-string values), and
 * plain attributes (strings). `null`, `undefined` and `false` values are skipped.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") {
      el.className = Array.isArray(value) ? value.filter(Boolean).join(" ") : value;
    } else if (key === "text") {
      el.textContent = String(value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key.startsWith("on")) {
      if (typeof value === "function") el.addEventListener(key.slice(2), value);
    } else if (typeof value !== "string" && key in el) {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  appendChildren(el, children);
  return el;
}

export function appendChildren(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children (an empty list clears it). */
export function replaceChildren(el, ...children) {
  el.replaceChildren();
  appendChildren(el, children);
}

/** A PrimeIcons glyph; decorative, so hidden from screen readers. */
export function icon(name) {
  return h("i", { class: `pi ${name}`, "aria-hidden": "true" });
}

/** A real <button>: keyboard reachable, named by `label` for assistive tech and tests. */
export function button({ label, iconName = null, text = null, variant = "text", onClick, title = null, disabled = false }) {
  const classes = ["dgpu-btn", `dgpu-btn-${variant}`, text ? null : "dgpu-btn-icon"];
  return h(
    "button",
    { type: "button", class: classes, "aria-label": label, title: title ?? label, disabled, onclick: onClick },
    iconName ? icon(iconName) : null,
    text ? h("span", { text }) : null,
  );
}

let nextId = 0;

/** A document-unique id for label/input pairs. */
export function uniqueId(prefix) {
  nextId += 1;
  return `dgpu-${prefix}-${nextId}`;
}

/**
 * An on/off switch: a checkbox with role="switch" inside its label, so a click on the text,
 * Space on the focused control and screen readers all work without extra code.
 */
export function toggleSwitch({ label, checked, onChange, hint = null, hideLabel = false }) {
  const input = h("input", { type: "checkbox", role: "switch", class: "dgpu-switch-input", checked: Boolean(checked) });
  input.addEventListener("change", () => onChange(input.checked, input));
  const root = h(
    "label",
    { class: "dgpu-switch", title: hint ?? label },
    input,
    h("span", { class: "dgpu-switch-track", "aria-hidden": "true" }),
    h("span", { class: hideLabel ? "dgpu-visually-hidden" : "dgpu-switch-label", text: label }),
  );
  return { root, input };
}
