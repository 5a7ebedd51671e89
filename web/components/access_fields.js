/**
 * The form's "Access and TLS" part for remote and cloud workers: bearer token, custom headers,
 * certificate checks and a CA bundle.
 *
 * The API never sends a stored token, only its masked form, so the token input starts empty: a
 * token typed there replaces the stored one, "Remove" deletes it, and otherwise the form leaves
 * `auth_token` out of what it saves so the server keeps it.
 */

import { button, h, icon } from "./dom.js";
import { createCheckField, createField } from "./field.js";
import { createHeadersEditor } from "./headers_editor.js";

export const ACCESS_FIELDS = ["auth_token", "headers", "tls_verify", "tls_ca_file"];

/**
 * @param {{worker: object|null}} options the worker being edited (as the API shows it), or null
 */
export function createAccessFields({ worker }) {
  const savedToken = worker?.auth_token || null;
  let removeToken = false;

  const tokenInput = h("input", { type: "password", class: "dgpu-input", autocomplete: "new-password", spellcheck: "false" });
  const token = createField({
    label: "Access token",
    name: "auth_token",
    input: tokenInput,
    hint: "Sent as \u201cAuthorization: Bearer \u2026\u201d on every request to the worker.",
  });
  tokenInput.placeholder = savedToken ? "Type to replace it" : "None";

  const savedText = h("span", { class: "dgpu-mono", text: savedToken });
  const savedNote = h("span", { class: "dgpu-meta" });
  const removeButton = button({ label: "Remove token", text: "Remove", variant: "link", onClick: () => setRemoved(!removeToken) });

  /** Marks the saved token for removal on save (or takes that back). */
  function setRemoved(removed) {
    removeToken = removed;
    savedText.classList.toggle("dgpu-struck", removed);
    savedNote.textContent = removed ? "removed when you save" : "saved";
    removeButton.querySelector("span").textContent = removed ? "Undo" : "Remove";
    removeButton.setAttribute("aria-label", removed ? "Undo token removal" : "Remove token");
    removeButton.title = removeButton.getAttribute("aria-label");
    tokenInput.disabled = removed;
    if (removed) tokenInput.value = "";
  }
  if (savedToken) {
    tokenInput.before(h("div", { class: "dgpu-secret-saved" }, savedText, savedNote, removeButton));
    setRemoved(false);
  }

  const headers = createHeadersEditor({ headers: worker?.headers ?? {} });

  const tlsVerify = createCheckField({ label: "Verify the TLS certificate", name: "tls_verify", checked: worker?.tls_verify ?? true });
  const tlsWarning = h(
    "p",
    { class: "dgpu-warning" },
    icon("pi-exclamation-triangle"),
    h("span", { text: "Certificate checks are off: anyone on the network path can read and change this worker's traffic, token included." }),
  );
  tlsVerify.root.insertBefore(tlsWarning, tlsVerify.root.lastChild);
  const showTlsWarning = () => {
    tlsWarning.hidden = tlsVerify.input.checked;
  };
  tlsVerify.input.addEventListener("change", showTlsWarning);
  showTlsWarning();

  const caFile = createField({
    label: "CA bundle",
    name: "tls_ca_file",
    hint: "Path on the master of a PEM file to trust for this worker (self-signed or private certificates).",
  });
  caFile.input.placeholder = "/path/to/ca.pem";
  caFile.input.value = worker?.tls_ca_file ?? "";

  const root = h(
    "fieldset",
    { class: "dgpu-fieldset" },
    h("legend", { class: "dgpu-legend", text: "Access and TLS" }),
    token.root,
    headers.root,
    tlsVerify.root,
    caFile.root,
  );

  /** `undefined`: keep what is stored; `null`: remove it; a string: the new token. */
  function tokenChange() {
    const typed = tokenInput.value;
    if (typed) return typed;
    return removeToken ? null : undefined;
  }

  return {
    root,
    fields: { auth_token: token, headers, tls_verify: tlsVerify, tls_ca_file: caFile },

    /** What to save: tokens and headers only when the user changed them. */
    changes({ editing }) {
      const result = { tls_verify: tlsVerify.input.checked, tls_ca_file: caFile.input.value.trim() || null };
      const tokenValue = tokenChange();
      if (tokenValue !== undefined && (editing || tokenValue !== null)) result.auth_token = tokenValue;
      if (headers.changed()) result.headers = headers.value();
      return result;
    },

    /**
     * What to test: the form's access as a whole. A kept token goes as its masked form, which the
     * master can only resolve against the saved worker.
     */
    forTest() {
      const tokenValue = tokenChange();
      const result = { tls_verify: tlsVerify.input.checked, headers: headers.value() };
      if (caFile.input.value.trim()) result.tls_ca_file = caFile.input.value.trim();
      if (tokenValue) result.auth_token = tokenValue;
      else if (tokenValue === undefined && savedToken) result.auth_token = savedToken;
      return result;
    },

    /** True when the token and headers are the saved ones, untouched. */
    secretsUnchanged: () => tokenChange() === undefined && !headers.changed(),
  };
}
