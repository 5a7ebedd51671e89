/**
 * The panel's only way to the server: every request goes through `DistributedClient`.
 *
 * It is handed ComfyUI's `api.fetchApi` (main.js owns the import), so requests get ComfyUI's
 * base path and user header. Requests that change state carry `X-Distributed-Request: 1`, which
 * the master requires so that another web origin cannot drive it with a plain form post.
 */

/** A refused or failed request: `field` names the bad input ("port", "settings.worker_timeout"). */
export class ApiError extends Error {
  constructor(status, message, field = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.field = field;
  }
}

const worker = (workerId) => `/distributed/workers/${encodeURIComponent(workerId)}`;
const hostWorkers = (hostId) => `/distributed/hosts/${encodeURIComponent(hostId)}/workers`;
const hostWorker = (hostId, workerId) => `${hostWorkers(hostId)}/${encodeURIComponent(workerId)}`;
const pool = (name) => `/distributed/pools/${encodeURIComponent(name)}`;

export class DistributedClient {
  /** @param {(path: string, init?: RequestInit) => Promise<Response>} fetchApi */
  constructor(fetchApi) {
    this.fetchApi = fetchApi;
  }

  async request(method, path, body = undefined) {
    const headers = {};
    if (method !== "GET") headers["X-Distributed-Request"] = "1";
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await this.fetchApi(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      throw new ApiError(0, `Cannot reach the master: ${error.message}`);
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) {
      const message = data && typeof data.error === "string" ? data.error : `${method} ${path} answered ${response.status}`;
      throw new ApiError(response.status, message, data?.field ?? null);
    }
    return data;
  }

  /** The registry snapshot with each worker's status (same body as `distributed.registry_changed`). */
  snapshot() {
    return this.request("GET", "/distributed/workers");
  }

  createWorker(fields) {
    return this.request("POST", "/distributed/workers", fields);
  }

  updateWorker(workerId, changes) {
    return this.request("PATCH", worker(workerId), changes);
  }

  deleteWorker(workerId) {
    return this.request("DELETE", worker(workerId));
  }

  /** `{master?: {...}, settings?: {...}}`; answers with the whole snapshot. */
  updateConfig(changes) {
    return this.request("PATCH", "/distributed/config", changes);
  }

  /** `{ok, stage, message}`: the master checks the worker, the browser never calls it. */
  testWorker(workerId) {
    return this.request("POST", `${worker(workerId)}/test`);
  }

  /** Checks a worker that is not saved (yet): the form's current fields, as for createWorker. */
  testUnsavedWorker(fields) {
    return this.request("POST", "/distributed/test-connection", fields);
  }

  /** `action` is "launch", "stop" or "restart" (local workers only). */
  controlWorker(workerId, action) {
    return this.request("POST", `${worker(workerId)}/${action}`);
  }

  workerLog(workerId, lines) {
    return this.request("GET", `${worker(workerId)}/log?lines=${encodeURIComponent(lines)}`);
  }

  // A host's workers (docs/hosts.md): the master carries each action to the host and answers with
  // the host's fresh view, `{host: {...}}`, as the snapshot shows it under `hosts`.

  /** `{cuda_device: number|null, listen: "network"|"loopback"}`: one more worker on a free GPU of the host. */
  addHostWorker(hostId, fields) {
    return this.request("POST", hostWorkers(hostId), fields);
  }

  /** Where the host's worker listens; a worker that runs is restarted so the change takes effect. */
  setHostWorkerListen(hostId, workerId, listen) {
    return this.request("PATCH", hostWorker(hostId, workerId), { listen });
  }

  removeHostWorker(hostId, workerId) {
    return this.request("DELETE", hostWorker(hostId, workerId));
  }

  /** `action` is "launch", "stop" or "restart". */
  controlHostWorker(hostId, workerId, action) {
    return this.request("POST", `${hostWorker(hostId, workerId)}/${action}`);
  }

  hostWorkerLog(hostId, workerId, lines) {
    return this.request("GET", `${hostWorker(hostId, workerId)}/log?lines=${encodeURIComponent(lines)}`);
  }

  jobs() {
    return this.request("GET", "/distributed/jobs");
  }

  /** What each worker lacks for a prompt: `{workers: [...], workflow_problems: [...]}`. */
  inventoryFor(prompt, workflow) {
    return this.request("POST", "/distributed/inventory", { prompt, workflow });
  }

  /** `{shell, filename, script, models, node_packs, unresolved}` for one worker (or any, without `worker_id`). */
  setupScript({ prompt, workflow, workerId = null, shell = "bash" }) {
    return this.request("POST", "/distributed/setup-script", { prompt, workflow, worker_id: workerId, shell });
  }

  /** Starts copying what the worker lacks for the prompt: `{copy, skipped}`. */
  copyModels(workerId, { prompt, workflow }) {
    return this.request("POST", `${worker(workerId)}/models/copy`, { prompt, workflow });
  }

  cancelCopy(workerId) {
    return this.request("DELETE", `${worker(workerId)}/models/copy`);
  }

  modelCopies() {
    return this.request("GET", "/distributed/model-copies");
  }

  /** `{pools: [...]}`: every elastic pool with its members (same body as `distributed.pools_changed`). */
  pools() {
    return this.request("GET", "/distributed/pools");
  }

  createPool(fields) {
    return this.request("POST", "/distributed/pools", fields);
  }

  updatePool(name, changes) {
    return this.request("PATCH", pool(name), changes);
  }

  deletePool(name) {
    return this.request("DELETE", pool(name));
  }

  /** Starts one member now; answers with the member (202). */
  startPoolMember(name) {
    return this.request("POST", `${pool(name)}/start`);
  }

  stopPoolMember(name, memberId) {
    return this.request("POST", `${pool(name)}/members/${encodeURIComponent(memberId)}/stop`);
  }

  /** ComfyUI's own stats for the master's GPU. */
  masterStats() {
    return this.request("GET", "/system_stats");
  }
}
