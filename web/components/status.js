/** Pure mapping from a worker's health status to the dot colour and the words beside it. */

/**
 * @returns {{tone: string, label: string, detail: string|null}} `tone` picks the dot colour
 * (a CSS modifier); `detail` is the error reason shown on hover.
 */
export function describeStatus(worker) {
  const status = worker.status ?? {};
  if (!worker.enabled || status.state === "disabled") return { tone: "disabled", label: "Disabled", detail: null };
  switch (status.state) {
    case "online":
      return { tone: "online", label: "Online · idle", detail: null };
    case "busy": {
      const queued = Number(status.queue_remaining) || 0;
      return { tone: "busy", label: queued > 0 ? `Busy · ${queued} queued` : "Busy", detail: null };
    }
    case "launching":
      return { tone: "launching", label: "Launching…", detail: null };
    case "offline":
      return { tone: "offline", label: "Offline", detail: status.error ?? null };
    case "stopped":
      return { tone: "stopped", label: "Stopped", detail: null };
    case "connected":
      return { tone: "online", label: "Connected", detail: null };
    case "error":
      return { tone: "error", label: status.error ? `Error: ${status.error}` : "Error", detail: status.error ?? null };
    default:
      return { tone: "unknown", label: "Checking…", detail: null };
  }
}

/** True for the states in which a worker can take a share. */
export function isAvailable(worker) {
  return worker.enabled && (worker.status?.state === "online" || worker.status?.state === "busy");
}

const TEST_STAGES = {
  ok: "Connected",
  dns: "Host name not found",
  refused: "Connection refused",
  timeout: "Timed out",
  tls: "TLS / certificate problem",
  auth: "Not authorised (401)",
  not_comfyui: "Answers, but is not ComfyUI",
  http: "HTTP error",
};

/** A "Test connection" answer as one line: which stage failed, then the master's message. */
export function describeTestResult(result) {
  const stage = TEST_STAGES[result?.stage] ?? String(result?.stage ?? "Failed");
  const message = result?.message ? ` — ${result.message}` : "";
  return { ok: Boolean(result?.ok), text: `${result?.ok ? "Connected" : stage}${message}` };
}
