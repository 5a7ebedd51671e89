/**
 * All panel state, in one EventTarget.
 *
 * Fed by a snapshot (GET /distributed/workers) and by the master's `distributed.*` websocket
 * events, re-read whenever ComfyUI's socket reconnects. Writes go to the server first and the
 * state changes only with what the server answers, so the panel never shows a change the
 * registry refused. Components listen for "change"; main.js turns "notice" into toasts.
 */

const JOB_EVENTS = {
  registryChanged: "distributed.registry_changed",
  workerStatus: "distributed.worker_status",
  jobUpdate: "distributed.job_update",
  shareReassigned: "distributed.share_reassigned",
  shareCopied: "distributed.share_copied",
  workerSkipped: "distributed.worker_skipped",
  modelCopy: "distributed.model_copy",
  poolsChanged: "distributed.pools_changed",
  poolAlert: "distributed.pool_alert",
};
const SEVERITIES = new Set(["success", "info", "warn", "error"]);

const DOWN_STATES = new Set(["offline", "error"]);
const MASTER_PARTICIPANT = "master";

/**
 * The master's device in the one shape the panel uses, from either source: /system_stats' first
 * device or the snapshot's `master_device` (both name a torch device type and a name). `type` says
 * what it renders on; `device_name` is what the master card shows ("cpu" for the processor).
 */
function masterDevice({ type, name }) {
  return { type: type ?? null, device_name: type === "cpu" ? "cpu" : name ?? null };
}

export class DistributedStore extends EventTarget {
  /** @param {import("./api.js").DistributedClient} client */
  constructor(client, now = () => Date.now()) {
    super();
    this.client = client;
    this.now = now;
    this.state = {
      loaded: false,
      loadError: null,
      registryError: null,
      master: { participate: true, host: "", cuda_device: null },
      settings: {},
      workers: [],
      // What the master knows of each host (GPUs, workers, state), by host id (docs/hosts.md).
      hosts: {},
      // Elastic pools as GET /distributed/pools shows them: members, hours used, last failure.
      pools: [],
      masterDevice: null,
      job: null,
      // The master's latest ComfyUI prompt as ComfyUI reports it: its step progress (sent to every
      // tab when the prompt was queued without a client id) and, when this tab saw its end, the
      // outcome (done or failed) and when that was.
      masterRun: { promptId: null, progress: null, outcome: null, endedAt: null },
      // What each worker lacks for the open workflow (checked on request), and each worker's model copy.
      inventory: { checking: false, error: null, rows: [], problems: [], checkedAt: null },
      copies: {},
    };
    // Set by main.js: resolves to ComfyUI's `{output, workflow}` for the workflow open in the editor.
    this.workflowSource = null;
    this.refreshSeq = 0;
    this.source = null;
    // The last pushed status per worker id: a push can overtake the HTTP answer that adds the worker.
    this.pushedStatus = new Map();
    // The revision of the pools shown: a route's answer and a push travel apart, the newer wins.
    this.poolsRevision = 0;
    this.handlers = {
      [JOB_EVENTS.registryChanged]: (event) => this.applySnapshot(event.detail),
      [JOB_EVENTS.workerStatus]: (event) => this.applyWorkerStatus(event.detail),
      [JOB_EVENTS.jobUpdate]: (event) => this.applyJobUpdate(event.detail),
      [JOB_EVENTS.shareReassigned]: (event) => this.onShareReassigned(event.detail),
      [JOB_EVENTS.shareCopied]: (event) => this.onShareCopied(event.detail),
      [JOB_EVENTS.workerSkipped]: (event) => this.onWorkerSkipped(event.detail),
      [JOB_EVENTS.modelCopy]: (event) => this.applyModelCopy(event.detail),
      [JOB_EVENTS.poolsChanged]: (event) => this.applyPools(event.detail),
      [JOB_EVENTS.poolAlert]: (event) => this.onPoolAlert(event.detail),
      reconnected: () => this.refresh(),
      // The master's own share runs as the job's `prompt_id` in ComfyUI: its steps come from ComfyUI.
      progress: (event) => this.onMasterProgress(event.detail),
      execution_success: (event) => this.onMasterEnd(event.detail, "done"),
      execution_error: (event) => this.onMasterEnd(event.detail, "failed"),
      execution_interrupted: (event) => this.onMasterEnd(event.detail, "failed"),
    };
  }

  /** Subscribes to the server's events on ComfyUI's `api` object (once; `disconnect` undoes it). */
  connect(source) {
    if (this.source) return;
    this.source = source;
    for (const [name, handler] of Object.entries(this.handlers)) source.addEventListener(name, handler);
  }

  disconnect() {
    if (!this.source) return;
    for (const [name, handler] of Object.entries(this.handlers)) this.source.removeEventListener(name, handler);
    this.source = null;
  }

  /** Re-reads everything; a slower, older answer never overwrites a newer one. */
  async refresh() {
    const seq = ++this.refreshSeq;
    try {
      const snapshot = await this.client.snapshot();
      if (seq !== this.refreshSeq) return;
      this.applySnapshot(snapshot);
    } catch (error) {
      if (seq !== this.refreshSeq) return;
      this.state.loadError = error.message;
      this.emitChange("snapshot");
      return;
    }
    await Promise.all([this.refreshMasterDevice(), this.refreshRunningJob(), this.refreshModelCopies(), this.refreshPools()]);
  }

  /** Picks up model copies that started before the panel loaded. */
  async refreshModelCopies() {
    let body;
    try {
      body = await this.client.modelCopies();
    } catch {
      return;
    }
    for (const copy of Array.isArray(body?.copies) ? body.copies : []) this.applyModelCopy(copy);
  }

  async refreshPools() {
    try {
      this.applyPools(await this.client.pools());
    } catch {
      // The worker list's own error already says the master cannot be reached.
    }
  }

  async refreshMasterDevice() {
    try {
      const stats = await this.client.masterStats();
      const device = stats?.devices?.[0];
      this.state.masterDevice = device
        ? { ...masterDevice(device), vram_total: device.vram_total, vram_free: device.vram_free }
        : null;
    } catch {
      this.state.masterDevice = null;
    }
    this.emitChange("master");
  }

  /** Picks up a run that started before the panel loaded. */
  async refreshRunningJob() {
    let body;
    try {
      body = await this.client.jobs();
    } catch {
      return;
    }
    const jobs = Array.isArray(body) ? body : body?.jobs;
    const running = Array.isArray(jobs) ? jobs.find((job) => job?.state === "running") : null;
    if (running && !this.state.job) this.applyJobUpdate(running);
  }

  // --- server → state ----------------------------------------------------------------------

  applySnapshot(snapshot) {
    if (!snapshot || !Array.isArray(snapshot.workers)) return;
    const ids = new Set(snapshot.workers.map((w) => w.id));
    for (const workerId of this.pushedStatus.keys()) if (!ids.has(workerId)) this.pushedStatus.delete(workerId);
    Object.assign(this.state, {
      loaded: true,
      loadError: null,
      registryError: snapshot.registry_error ?? null,
      master: snapshot.master ?? this.state.master,
      masterDevice: snapshot.master_device ? { ...this.state.masterDevice, ...masterDevice(snapshot.master_device) } : this.state.masterDevice,
      settings: snapshot.settings ?? this.state.settings,
      workers: snapshot.workers.map((w) => this.withNewestStatus(w)),
      hosts: snapshot.hosts && typeof snapshot.hosts === "object" ? snapshot.hosts : {},
    });
    this.emitChange("snapshot");
  }

  /**
   * The worker with the newer of its own status and the last one pushed for it. A push and an HTTP
   * answer travel on different connections, so either may arrive first; the server numbers every
   * status it shows (`revision`), and the higher number wins.
   */
  withNewestStatus(worker) {
    const pushed = this.pushedStatus.get(worker.id);
    return isNewer(pushed, worker.status) ? { ...worker, status: pushed } : worker;
  }

  applyWorker(received) {
    const worker = this.withNewestStatus(received);
    const index = this.state.workers.findIndex((w) => w.id === worker.id);
    if (index === -1) this.state.workers = [...this.state.workers, worker];
    else this.state.workers = this.state.workers.map((w, i) => (i === index ? worker : w));
    this.emitChange("worker");
  }

  applyWorkerStatus({ worker_id: workerId, status } = {}) {
    if (!workerId || !status) return;
    const current = this.worker(workerId);
    if (isNewer(this.pushedStatus.get(workerId), status) || isNewer(current?.status, status)) return;
    this.pushedStatus.set(workerId, status);
    if (!current) return;
    const before = current.status?.state;
    this.applyWorker({ ...current, status });
    if (this.isRunParticipant(workerId) && !DOWN_STATES.has(before) && DOWN_STATES.has(status.state)) {
      this.notify("warn", `${current.name} went ${status.state} during the run`, status.error ?? "Its share will be re-run elsewhere.");
    }
  }

  applyJobUpdate(update) {
    if (!update?.job_id) return;
    const now = this.now();
    const previous = this.state.job?.jobId === update.job_id ? this.state.job : null;
    const finished = update.state === "done" || update.state === "failed";
    const shares = withRunningSince(Array.isArray(update.shares) ? update.shares : [], previous?.shares ?? [], now);
    // A job is "done" once the workers' shares are in; the master's own share may still be running.
    const settled = update.state === "failed" || (update.state === "done" && shares.every((share) => share.state === "done" || share.state === "failed"));
    this.state.job = {
      jobId: update.job_id,
      promptId: update.prompt_id ?? null,
      state: update.state,
      mode: update.mode ?? null,
      error: update.error ?? null,
      shares,
      tiles: Array.isArray(update.tiles) ? update.tiles : [],
      durationS: typeof update.duration_s === "number" ? update.duration_s : null,
      startedAt: previous?.startedAt ?? now,
      collectors: Array.isArray(update.collectors) ? update.collectors.map(String) : [],
      finishedAt: settled ? (previous?.finishedAt ?? now) : null,
    };
    this.emitChange("job");
    if (update.state === "failed" && previous?.state !== "failed") {
      this.notify("error", "Distributed run failed", update.error ?? "No reason given.");
    }
    // The run changed the workers' relative speeds and the master's free VRAM.
    if (finished && previous?.state === "running") this.refresh();
  }

  /** Step progress of one of the master's prompts, less the collectors' own waiting ticks. */
  onMasterProgress(detail) {
    if (!detail?.prompt_id) return;
    const job = this.state.job;
    if (job?.collectors.includes(String(detail.node))) return;
    const progress = { value: detail.value, max: detail.max, node: detail.node ?? null };
    const run = this.state.masterRun;
    this.state.masterRun = run.promptId === detail.prompt_id
      ? { ...run, progress }
      : { promptId: detail.prompt_id, progress, outcome: null, endedAt: null };
    if (job?.promptId === detail.prompt_id) this.emitChange("job");
  }

  /**
   * One of the master's prompts ended. Only the tab that queued it hears this; the job snapshot
   * says when the master's share is done, but not when its prompt was interrupted after that.
   */
  onMasterEnd(detail, outcome) {
    const promptId = detail?.prompt_id;
    if (!promptId) return;
    const run = this.state.masterRun;
    this.state.masterRun = { promptId, progress: run.promptId === promptId ? run.progress : null, outcome, endedAt: this.now() };
    if (this.state.job?.promptId === promptId) this.emitChange("job");
  }

  /**
   * A model copy's snapshot (event or answer). Two connections deliver them, so a snapshot of the same
   * copy that is behind the one shown (fewer bytes, or progress after the end) is dropped.
   */
  applyModelCopy(copy) {
    if (!copy?.worker_id) return;
    const shown = this.state.copies[copy.worker_id];
    if (shown && shown.started_at === copy.started_at) {
      if (shown.state !== "copying" && copy.state === "copying") return;
      if (copy.state === "copying" && copy.done_bytes < shown.done_bytes) return;
    }
    this.state.copies = { ...this.state.copies, [copy.worker_id]: copy };
    this.emitChange("copy");
    if (shown?.state === "copying" && copy.state !== "copying" && shown.started_at === copy.started_at) {
      if (copy.state === "done") this.notify("success", `Models copied to ${copy.worker_name}`);
      else this.notify(copy.state === "failed" ? "error" : "warn", `Copy to ${copy.worker_name} ${copy.state}`, copy.error ?? "");
      if (this.state.inventory.checkedAt !== null) this.checkWorkflow();
    }
  }

  applyPools(snapshot) {
    if (!snapshot || !Array.isArray(snapshot.pools) || !this.takePoolsRevision(snapshot.revision)) return;
    this.state.pools = snapshot.pools;
    this.emitChange("pools");
  }

  /** One pool as a route answers it, in place (or added at the end), unless a newer push came first. */
  applyPool(received) {
    if (!this.takePoolsRevision(received.revision)) return;
    const index = this.state.pools.findIndex((p) => p.name === received.name);
    if (index === -1) this.state.pools = [...this.state.pools, received];
    else this.state.pools = this.state.pools.map((p, i) => (i === index ? received : p));
    this.emitChange("pools");
  }

  /** Whether pools numbered `revision` are at least as new as those shown; if so they become the shown ones. */
  takePoolsRevision(revision) {
    const number = Number(revision) || 0;
    if (number < this.poolsRevision) return false;
    this.poolsRevision = number;
    return true;
  }

  /** A start refused by the budget, a member that failed to start or to stop: a toast at once. */
  onPoolAlert({ severity, summary, detail } = {}) {
    if (!summary) return;
    this.notify(SEVERITIES.has(severity) ? severity : "warn", String(summary), detail ? String(detail) : "");
  }

  onShareReassigned({ share_index: shareIndex, from_worker: from, reason } = {}) {
    this.notify("warn", `Share ${Number(shareIndex) + 1} re-run elsewhere`, `${this.participantName(from)}: ${reason ?? "no reason given"}`);
  }

  onShareCopied({ share_index: shareIndex, to_worker: to, reason } = {}) {
    this.notify("info", `Share ${Number(shareIndex) + 1} copied to ${this.participantName(to)}`, reason ?? "");
  }

  onWorkerSkipped({ worker_id: workerId, reason } = {}) {
    this.notify("info", `${this.participantName(workerId)} skipped`, reason ?? "No reason given.");
  }

  // --- state → server (the state changes only with the server's answer) ---------------------

  async createWorker(fields) {
    const worker = await this.client.createWorker(fields);
    this.applyWorker(worker);
    return worker;
  }

  async updateWorker(workerId, changes) {
    const worker = await this.client.updateWorker(workerId, changes);
    this.applyWorker(worker);
    return worker;
  }

  async deleteWorker(workerId) {
    await this.client.deleteWorker(workerId);
    this.pushedStatus.delete(workerId);
    this.state.workers = this.state.workers.filter((w) => w.id !== workerId);
    this.emitChange("worker");
  }

  async updateConfig(changes) {
    this.applySnapshot(await this.client.updateConfig(changes));
  }

  async createPool(fields) {
    const pool = await this.client.createPool(fields);
    this.applyPool(pool);
    return pool;
  }

  async updatePool(name, changes) {
    const pool = await this.client.updatePool(name, changes);
    this.applyPool(pool);
    return pool;
  }

  /** Removes the pool; it stays listed, without its settings, while its members stop. */
  async deletePool(name) {
    await this.client.deletePool(name);
    await this.refreshPools();
  }

  async startPoolMember(name) {
    const member = await this.client.startPoolMember(name);
    await this.refreshPools();
    return member;
  }

  async stopPoolMember(name, memberId) {
    const member = await this.client.stopPoolMember(name, memberId);
    await this.refreshPools();
    return member;
  }

  testWorker(workerId) {
    return this.client.testWorker(workerId);
  }

  testUnsavedWorker(fields) {
    return this.client.testUnsavedWorker(fields);
  }

  async controlWorker(workerId, action) {
    const body = await this.client.controlWorker(workerId, action);
    if (body?.status?.state) this.applyWorkerStatus({ worker_id: workerId, status: body.status });
    return body;
  }

  /** The prompt and workflow open in the editor, as ComfyUI would queue them. */
  async openWorkflow() {
    if (!this.workflowSource) throw new Error("The open workflow cannot be read here.");
    const { output, workflow } = await this.workflowSource();
    return { prompt: output, workflow };
  }

  /** Asks the master what each worker lacks for the open workflow. */
  async checkWorkflow() {
    this.state.inventory = { ...this.state.inventory, checking: true, error: null };
    this.emitChange("inventory");
    try {
      const { prompt, workflow } = await this.openWorkflow();
      const body = await this.client.inventoryFor(prompt, workflow);
      this.state.inventory = {
        checking: false,
        error: null,
        rows: Array.isArray(body?.workers) ? body.workers : [],
        problems: Array.isArray(body?.workflow_problems) ? body.workflow_problems : [],
        checkedAt: this.now(),
      };
    } catch (error) {
      this.state.inventory = { ...this.state.inventory, checking: false, error: error.message };
    }
    this.emitChange("inventory");
  }

  async copyModels(workerId) {
    const body = await this.client.copyModels(workerId, await this.openWorkflow());
    if (body?.copy) this.applyModelCopy(body.copy);
    return body;
  }

  async cancelCopy(workerId) {
    const body = await this.client.cancelCopy(workerId);
    if (body?.copy) this.applyModelCopy(body.copy);
  }

  /** The set-up script for one worker and the open workflow: `{filename, script, unresolved, ...}`. */
  async setupScript(workerId, shell) {
    return this.client.setupScript({ ...(await this.openWorkflow()), workerId, shell });
  }

  async workerLog(workerId, lines) {
    const body = await this.client.workerLog(workerId, lines);
    return Array.isArray(body?.lines) ? body.lines : [];
  }

  /** The host's view as the master answered it after an action on one of its workers. */
  applyHostView(hostId, view) {
    if (!view || typeof view !== "object") return;
    this.state.hosts = { ...this.state.hosts, [hostId]: view };
    this.emitChange("host");
  }

  async addHostWorker(hostId, fields) {
    const body = await this.client.addHostWorker(hostId, fields);
    this.applyHostView(hostId, body?.host);
    return body;
  }

  async setHostWorkerListen(hostId, workerId, listen) {
    this.applyHostView(hostId, (await this.client.setHostWorkerListen(hostId, workerId, listen))?.host);
  }

  async removeHostWorker(hostId, workerId) {
    this.applyHostView(hostId, (await this.client.removeHostWorker(hostId, workerId))?.host);
  }

  async controlHostWorker(hostId, workerId, action) {
    this.applyHostView(hostId, (await this.client.controlHostWorker(hostId, workerId, action))?.host);
  }

  async hostWorkerLog(hostId, workerId, lines) {
    const body = await this.client.hostWorkerLog(hostId, workerId, lines);
    return Array.isArray(body?.lines) ? body.lines : [];
  }

  // --- helpers ------------------------------------------------------------------------------

  worker(workerId) {
    return this.state.workers.find((w) => w.id === workerId) ?? null;
  }

  /** A share's participant id as people know it: the worker's name, or "Master". */
  participantName(participant) {
    if (participant === MASTER_PARTICIPANT) return "Master";
    return this.worker(participant)?.name ?? String(participant ?? "unknown");
  }

  /** A participant's place in the list: the master 0, then the workers in the registry's order (for its colour). */
  participantPlace(participant) {
    if (participant === MASTER_PARTICIPANT) return 0;
    const index = this.state.workers.findIndex((w) => w.id === participant);
    return index >= 0 ? index + 1 : this.state.workers.length + 1;
  }

  /** What a participant renders on: "gpu", "cpu", or null when it has not said. */
  deviceKind(participant) {
    const type = participant === MASTER_PARTICIPANT
      ? this.state.masterDevice?.type
      : this.worker(participant)?.status?.devices?.[0]?.type ?? null;
    if (!type) return null;
    return type === "cpu" ? "cpu" : "gpu";
  }

  isRunParticipant(workerId) {
    const job = this.state.job;
    if (!job || job.state !== "running") return false;
    return job.shares.some((share) => share.participant === workerId && (share.state === "running" || share.state === "pending"));
  }

  /** Reports something worth a toast; `severity` is PrimeVue's: success, info, warn, error. */
  notify(severity, summary, detail = "") {
    this.dispatchEvent(new CustomEvent("notice", { detail: { severity, summary, detail } }));
  }

  emitChange(part) {
    this.dispatchEvent(new CustomEvent("change", { detail: { part } }));
  }
}

/**
 * The shares with `runningSince`: when this panel first saw each running share on its participant
 * (kept across updates, new when the share moves to another participant), for its own rate.
 */
function withRunningSince(shares, previousShares, now) {
  const before = new Map(previousShares.map((share) => [share.index, share]));
  return shares.map((share) => {
    if (share.state !== "running") return share;
    const seen = before.get(share.index);
    const same = seen?.state === "running" && seen.participant === share.participant && seen.runningSince !== undefined;
    return { ...share, runningSince: same ? seen.runningSince : now };
  });
}

/** True when status `a` is strictly newer than `b` (by the server's revision; a missing one is oldest). */
function isNewer(a, b) {
  return Boolean(a) && (!b || (a.revision ?? 0) > (b.revision ?? 0));
}
