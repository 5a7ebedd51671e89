/**
 * Entry point, and the only module with side effects: registers the extension and the
 * "Distributed" sidebar tab, and wires the store to ComfyUI's websocket and toasts.
 * ComfyUI imports every .js file under web/, so all other modules only export.
 */

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { DistributedClient } from "./api.js";
import { createPanel } from "./components/panel.js";
import { DistributedStore } from "./store.js";

const TAB_ID = "distributed";
const TOAST_LIFE_MS = { error: 8000, warn: 6000, info: 4000, success: 3000 };

function loadStylesheet() {
  const href = new URL("./panel.css", import.meta.url).href;
  if (document.querySelector(`link[rel="stylesheet"][href="${CSS.escape(href)}"]`)) return;
  document.head.append(Object.assign(document.createElement("link"), { rel: "stylesheet", href }));
}

app.registerExtension({
  name: "comfyui-distributed-gpu.panel",
  async setup() {
    loadStylesheet();
    const store = new DistributedStore(new DistributedClient((path, init) => api.fetchApi(path, init)));
    store.addEventListener("notice", (event) => {
      const { severity, summary, detail } = event.detail;
      app.extensionManager.toast.add({ severity, summary, detail, life: TOAST_LIFE_MS[severity] ?? 5000 });
    });
    store.workflowSource = () => app.graphToPrompt();
    store.connect(api);
    store.refresh();

    const panel = createPanel(store);
    app.extensionManager.registerSidebarTab({
      id: TAB_ID,
      icon: "pi pi-server",
      title: "Distributed",
      // Both the pinned and the newest frontend use the tooltip as the button's accessible name.
      tooltip: "Distributed GPUs",
      type: "custom",
      render: (el) => panel.mount(el),
      destroy: () => panel.unmount(),
    });
  },
});
