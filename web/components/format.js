/** Pure formatting helpers: numbers and worker fields to the short strings the cards show. */

const GIB = 1024 ** 3;

export function formatBytes(bytes) {
  if (typeof bytes !== "number" || !Number.isFinite(bytes)) return null;
  if (bytes >= GIB) return `${(bytes / GIB).toFixed(1)} GB`;
  return `${Math.round(bytes / 1024 ** 2)} MB`;
}

/** "1m 05s"-style; seconds under a minute stay plain. */
export function formatDuration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds < 0) return null;
  const total = Math.round(seconds);
  if (total < 60) return `${total}s`;
  const minutes = Math.floor(total / 60);
  if (minutes < 60) return `${minutes}m ${String(total % 60).padStart(2, "0")}s`;
  return `${Math.floor(minutes / 60)}h ${String(minutes % 60).padStart(2, "0")}m`;
}

/** Where the master reaches a worker, as the user typed it. */
export function workerAddress(worker) {
  if ((worker.type === "cloud" || worker.type === "host") && worker.url) return worker.url;
  const host = String(worker.host ?? "").includes(":") ? `[${worker.host}]` : worker.host;
  return worker.port ? `${host}:${worker.port}` : String(host ?? "");
}

/** "NVIDIA RTX 4090 · 18.2 GB free of 24.0 GB", or null before the first health check. */
export function describeDevice({ device_name: name, vram_total: total, vram_free: free } = {}) {
  if (!name) return null;
  const shown = name === "cpu" ? "CPU" : name;
  const totalText = formatBytes(total);
  const freeText = formatBytes(free);
  if (totalText && freeText) return `${shown} · ${freeText} free of ${totalText}`;
  if (totalText) return `${shown} · ${totalText}`;
  return shown;
}

export const WORKER_TYPE_LABELS = { local: "Local", remote: "Remote", cloud: "Cloud", host: "Host" };

const OS_LABELS = { nt: "Windows", posix: "Linux/macOS" };

/**
 * The card's second line of facts, each with a tooltip: relative speed at the last workflow
 * ("speed 0.33×", 1.00× is the fastest), the last round trip, and the worker's OS.
 * @returns {{text: string, title: string}[]}
 */
export function describeWorkerFacts(worker) {
  const facts = [];
  const speed = worker.relative_speed;
  if (typeof speed === "number" && Number.isFinite(speed)) {
    facts.push({ text: `speed ${speed.toFixed(2)}×`, title: "Speed at the last workflow run, relative to the fastest GPU (1.00×)" });
  }
  const roundTrip = worker.status?.round_trip_ms;
  if (typeof roundTrip === "number" && Number.isFinite(roundTrip)) {
    facts.push({ text: `${roundTrip < 10 ? roundTrip.toFixed(1) : Math.round(roundTrip)} ms`, title: "Round trip of the last health check" });
  }
  const os = worker.status?.os;
  if (typeof os === "string" && os) facts.push({ text: OS_LABELS[os] ?? os, title: `Operating system (${os})` });
  return facts;
}

/**
 * How the master signs in to a worker, for the card: "token ••••abcd · 2 headers · own CA".
 * The API only ever sends masked secrets, and they are shown as it sends them.
 */
export function describeAccess(worker) {
  const parts = [];
  if (worker.auth_token) parts.push(`token ${worker.auth_token}`);
  const headerCount = Object.keys(worker.headers ?? {}).length;
  if (headerCount) parts.push(`${headerCount} header${headerCount === 1 ? "" : "s"}`);
  if (worker.tls_ca_file) parts.push("own CA");
  return parts.join(" · ");
}
