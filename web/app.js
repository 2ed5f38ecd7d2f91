// The unmask viewer: streams denoising frames over WebSocket, replays them, exports them,
// and drives the fine-tuning API. Plain JS, no dependencies, works offline.
"use strict";

const $ = (id) => document.getElementById(id);
const wsBase = (location.protocol === "https:" ? "wss://" : "ws://") + location.host;

const run = { diffusion: [], ar: [], timeline: [], index: 0, timer: null, sockets: [], lastRequest: null };
const chat = { turns: [] }; // the conversation so far, as {role, content}
let info = null;
let formFilled = false; // the form shows the server's defaults once; later /info reads keep what the user chose

// ---------- server status ----------

async function loadInfo() {
  try {
    const response = await fetch("/info");
    info = await response.json();
    if (info.parameters) applyParameters(info.parameters);
    const model = info.model;
    $("server").textContent = model ? `${model.id} · ${model.device}` : (info.model_error ? "model failed to load" : "loading model…");
    $("server").className = "pill " + (model ? "ok" : info.model_error ? "bad" : "");
    const chat = $("mode").querySelector("option[value=chat]");
    chat.disabled = Boolean(model && !model.chat);
    chat.title = chat.disabled ? "this model has no chat template" : "";
    if (chat.disabled && chatMode()) { $("mode").value = "text"; $("mode").dispatchEvent(new Event("change")); }
    const twin = Boolean(info.autoregressive && info.autoregressive.loaded);
    $("compare").disabled = !twin || chatMode();
    $("compare").parentElement.title = twin ? "" : "this server has no autoregressive twin";
    if (!model && !info.model_error) setTimeout(loadInfo, 1000);
  } catch (err) {
    $("server").textContent = "server unreachable";
    $("server").className = "pill bad";
    setTimeout(loadInfo, 2000);
  }
}

// The form's values, choices, bounds and help come from the server's one declaration of each parameter:
// a form field is the parameter whose name is its id.
function applyParameters(parameters) {
  for (const p of parameters) {
    const input = $(p.name);
    if (!input) continue;
    input.title = p.help;
    if (input.tagName === "SELECT" && p.choices) {
      const chosen = formFilled ? input.value : p.default;
      input.replaceChildren(...p.choices.map((choice) => {
        const option = document.createElement("option");
        option.textContent = choice;
        return option;
      }));
      input.value = p.choices.includes(chosen) ? chosen : p.default;
    } else if (input.type === "number") {
      const low = p.ge !== undefined ? p.ge : p.gt;
      if (low !== undefined) input.min = low;
      const high = p.le !== undefined ? p.le : p.lt;
      if (high !== undefined) input.max = high;
      if (!formFilled) input.value = p.default === null ? "" : p.default;
    } else if (input.type === "checkbox" && !formFilled) {
      input.checked = Boolean(p.default);
    }
  }
  formFilled = true;
}

// ---------- rendering ----------

function chatMode() {
  return $("mode").value === "chat";
}

function renderText(container, frame) {
  container.replaceChildren();
  if (!frame) return;
  const sample = frame.samples[0];
  const replyOnly = chatMode() && container.id === "text"; // the conversation is shown above, as turns
  sample.tokens.forEach((piece, k) => {
    if (replyOnly && sample.fixed[k]) return;
    if (sample.masked[k]) {
      const box = document.createElement("span");
      box.className = "masked";
      box.title = "still masked";
      container.append(box);
      return;
    }
    if (!piece.trim()) return;
    if (/^\s/.test(piece)) container.append(" ");
    const span = document.createElement("span");
    span.textContent = piece.trim();
    span.className = sample.fixed[k] ? "prompt" : sample.edited[k] ? "edited" : sample.revealed[k] ? "new" : "earlier";
    const c = sample.confidence[k];
    span.title = sample.fixed[k] ? "prompt" : c === null ? "" : `confidence ${c.toFixed(3)}`;
    container.append(span);
  });
}

function showDiffusion(frame) {
  renderText($("text"), frame);
  if (!frame) return;
  // A run may finish in fewer passes than asked: its end token, or threshold remasking keeping everything.
  const early = frame.done && frame.step < frame.steps;
  const asked = run.lastRequest || {};
  const unprompted = !asked.inputs && !asked.messages ? " · no prompt: text from nothing" : "";
  $("counter").textContent = `step ${frame.step} / ${frame.steps}` + (early ? " · done early" : "") + unprompted;
  $("elapsed").textContent = `${(frame.arrived_ms / 1000).toFixed(2)} s`;
  $("passes").textContent = `${frame.step} forward passes`;
  $("progress").style.width = `${frame.done ? 100 : Math.min(100, (100 * frame.step) / frame.steps)}%`;
}

function showAr(frame, total) {
  renderText($("ar-text"), frame);
  if (!frame) return;
  $("ar-counter").textContent = `token ${frame.step}`;
  $("ar-elapsed").textContent = `${(frame.arrived_ms / 1000).toFixed(2)} s`;
  $("ar-passes").textContent = `${frame.step} forward passes`;
  $("ar-progress").style.width = `${Math.min(100, (100 * frame.step) / Math.max(1, total))}%`;
}

function finalText() {
  const last = run.diffusion[run.diffusion.length - 1];
  if (!last) return "";
  const s = last.samples[0];
  const skip = (k) => s.masked[k] || (chatMode() && s.fixed[k]);
  return s.tokens.map((p, k) => (skip(k) ? "" : p)).join("").trim();
}

function renderConversation() {
  $("turns").replaceChildren(...chat.turns.map((turn) => {
    const item = document.createElement("li");
    item.className = turn.role;
    const who = document.createElement("b");
    who.textContent = turn.role === "user" ? "you" : "model";
    item.append(who, turn.content);
    return item;
  }));
}

function setMode() {
  const chatting = chatMode();
  $("conversation").hidden = !chatting;
  $("prompt-label").textContent = chatting ? "Your message" : "Prompt";
  if (chatting) {
    $("compare").checked = false;
    $("prompt").value = "";
    $("prompt").placeholder = "Say something to the model";
  }
  $("compare").disabled = chatting || !(info && info.autoregressive && info.autoregressive.loaded);
  renderText($("text"), null);
}

// ---------- errors ----------

// The API names its fields (parameters.steps, max_new_tokens); the form calls them Steps, Length.
function inFormWords(message, param) {
  const input = param && $(param.split(".").pop());
  if (!input || !input.closest("label")) return message;
  const label = input.closest("label").firstChild.textContent.trim();
  input.focus();
  return `${label}: ${message.replaceAll(param, label).replaceAll(input.id, label)}`;
}

function showError(message, retry) {
  $("error-text").textContent = message;
  $("retry").hidden = !retry;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
}

// ---------- generation ----------

function request() {
  const parameters = {};
  for (const p of (info && info.parameters) || []) {
    const input = $(p.name);
    if (!input) continue;
    if (input.type === "checkbox") parameters[p.name] = input.checked;
    else if (input.type !== "number") parameters[p.name] = input.value;
    else if (input.value !== "") parameters[p.name] = Number(input.value);
  }
  if (chatMode()) return { messages: [...chat.turns, { role: "user", content: $("prompt").value }], parameters };
  return { inputs: $("prompt").value, parameters };
}

function stream(path, body, frames, onFrame, started) {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(wsBase + path);
    run.sockets.push(socket);
    let finished = false;
    socket.onopen = () => socket.send(JSON.stringify(body));
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "frame") {
        message.arrived_ms = performance.now() - started;
        frames.push(message);
        onFrame(message);
      } else if (message.type === "done") {
        finished = true;
        resolve(message);
      } else if (message.type === "error") {
        finished = true;
        reject({ message: inFormWords(message.error.message, message.error.param), retry: false });
      }
    };
    socket.onclose = () => {
      if (!finished) reject({ message: "The connection to the server was lost before the text was finished.", retry: true });
    };
  });
}

async function generate(body) {
  stopPlayback();
  run.sockets.forEach((s) => s.close());
  run.sockets = [];
  clearError();
  run.diffusion = [];
  run.ar = [];
  run.lastRequest = body;
  const compare = $("compare").checked && !$("compare").disabled;
  $("pane-ar").hidden = !compare;
  $("panes").classList.toggle("compare", compare);
  $("replay").hidden = true;
  $("generate").disabled = true;
  renderText($("text"), null);
  renderText($("ar-text"), null);
  for (const id of ["counter", "elapsed", "passes", "ar-counter", "ar-elapsed", "ar-passes"]) $(id).textContent = "";
  for (const id of ["progress", "ar-progress"]) $(id).style.width = "0%";
  const started = performance.now();
  const jobs = [stream("/ws/generate", body, run.diffusion, showDiffusion, started)];
  if (compare) jobs.push(stream("/ws/generate_ar", body, run.ar, (f) => showAr(f, body.parameters.max_new_tokens), started));
  try {
    await Promise.all(jobs);
    buildTimeline();
    $("replay").hidden = false;
    if (body.messages) {
      chat.turns = [...body.messages, { role: "assistant", content: finalText() }];
      renderConversation();
      $("prompt").value = "";
    }
  } catch (err) {
    showError(err.message || String(err), err.retry);
  } finally {
    $("generate").disabled = false;
  }
}

// ---------- replay ----------

function buildTimeline() {
  // Every frame of either side, in the order it arrived: one wall clock for both.
  const events = run.diffusion.map((f, i) => ({ t: f.arrived_ms, side: "diffusion", i }));
  run.ar.forEach((f, i) => events.push({ t: f.arrived_ms, side: "ar", i }));
  events.sort((a, b) => a.t - b.t);
  run.timeline = events;
  $("scrub").max = String(events.length - 1);
  show(events.length - 1);
}

function latest(side, upto) {
  let found = -1;
  for (let k = 0; k <= upto; k++) if (run.timeline[k].side === side) found = run.timeline[k].i;
  return found;
}

function show(index) {
  if (!run.timeline.length) return;
  run.index = Math.max(0, Math.min(run.timeline.length - 1, index));
  $("scrub").value = String(run.index);
  const d = latest("diffusion", run.index);
  showDiffusion(d >= 0 ? run.diffusion[d] : null);
  if (run.ar.length) {
    const a = latest("ar", run.index);
    showAr(a >= 0 ? run.ar[a] : null, run.ar[run.ar.length - 1].step);
  }
}

function stopPlayback() {
  if (run.timer) clearInterval(run.timer);
  run.timer = null;
  $("play").textContent = "▶ play";
}

function togglePlayback() {
  if (run.timer) return stopPlayback();
  if (run.index >= run.timeline.length - 1) show(0);
  $("play").textContent = "❚❚ pause";
  run.timer = setInterval(() => {
    if (run.index >= run.timeline.length - 1) stopPlayback();
    else show(run.index + 1);
  }, run.ar.length ? 80 : 250);
}

// ---------- exports ----------

function exportTitle() {
  const last = run.lastRequest;
  if (!last) return "";
  return last.messages ? last.messages[last.messages.length - 1].content : last.inputs;
}

async function download(path, name) {
  clearError();
  try {
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ frames: run.diffusion, title: "unmask: " + exportTitle(),
        ...(path === "/render/gif" && run.ar.length ? { autoregressive: run.ar } : {}) }),
    });
    if (!response.ok) throw new Error((await response.json()).error.message);
    const url = URL.createObjectURL(await response.blob());
    const link = document.createElement("a");
    link.href = url;
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (err) {
    showError(`Export failed: ${err.message}`, false);
  }
}

async function copyText() {
  const text = finalText();
  try {
    await navigator.clipboard.writeText(text);
  } catch (err) {
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  $("copy").textContent = "copied";
  setTimeout(() => ($("copy").textContent = "copy text"), 1200);
}

// ---------- fine-tuning ----------

function headers() {
  return { Authorization: `Bearer ${$("key").value.trim()}`, "Content-Type": "application/json" };
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
  return body;
}

function jobError(message) {
  $("job-error").textContent = message;
  $("job-error").hidden = !message;
}

async function submitJob() {
  jobError("");
  localStorage.setItem("unmask-key", $("key").value.trim());
  const hyperparameters = { max_steps: Number($("job-steps").value), batch_size: Number($("job-batch").value) };
  const body = { model: (info && info.model && info.model.id) || "unmask-starter", hyperparameters };
  if ($("job-suffix").value) body.suffix = $("job-suffix").value;
  try {
    const file = $("file").files[0];
    if (file) {
      const form = new FormData();
      form.append("purpose", "fine-tune");
      form.append("file", file);
      const uploaded = await api("/v1/files", { method: "POST", headers: { Authorization: headers().Authorization }, body: form });
      body.training_file = uploaded.id;
    } else {
      const texts = $("texts").value.split(/\n\s*\n/).map((t) => t.trim()).filter(Boolean);
      if (!texts.length) throw new Error("Paste some training text or choose a file first.");
      body.training_texts = texts;
    }
    const job = await api("/v1/fine_tuning/jobs", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    watchJob(job.id);
  } catch (err) {
    jobError(err.message);
  }
}

const levelLosses = {}; // the latest loss at each masking level drawn so far, by job

function watchJob(id) {
  levelLosses[id] = {};
  $("job-events").replaceChildren();
  $("cancel-job").hidden = false;
  $("cancel-job").onclick = () => api(`/v1/fine_tuning/jobs/${id}/cancel`, { method: "POST", headers: headers() }).catch((e) => jobError(e.message));
  const source = new EventSource(`/v1/fine_tuning/jobs/${id}/stream`);
  source.addEventListener("event", (e) => {
    const event = JSON.parse(e.data);
    const item = document.createElement("li");
    item.textContent = event.message;
    $("job-events").prepend(item);
    if (event.data && event.data.level_losses) showLevels(id, event.data.level_losses); // every record, none skipped
  });
  source.addEventListener("job", (e) => showJob(JSON.parse(e.data), source));
  source.addEventListener("error", (e) => {
    if (e.data) jobError(JSON.parse(e.data).error.message);
    source.close();
  });
}

// Each progress record averages the levels its window drew; the table keeps the latest loss at every
// level seen so far, in order of the masking rate.
function showLevels(id, losses) {
  const seen = (levelLosses[id] = Object.assign(levelLosses[id] || {}, losses));
  const rows = Object.entries(seen).sort(([a], [b]) => Number(a) - Number(b));
  $("levels").querySelector("tbody").replaceChildren(...rows.map(([rate, loss]) => {
    const row = document.createElement("tr");
    row.innerHTML = `<td>${rate}</td><td>${loss.toFixed(3)}</td>`;
    return row;
  }));
}

function showJob(job, source) {
  const p = job.progress;
  let status = `${job.id}: ${job.status}`;
  if (p) status += ` · step ${p.step} / ${p.total_steps} · loss ${p.loss.toFixed(3)} · eta ${Math.round(p.eta_s)} s`;
  else if (job.status === "running") status += " · loading the model and the data (the first step follows)";
  else if (job.status === "queued") status += " · waiting for a worker";
  if (job.fine_tuned_model) status += ` · serving as ${job.fine_tuned_model}`;
  if (job.error) status += ` · ${job.error.message}`;
  $("job-status").textContent = status;
  $("job-progress").style.width = p ? `${(100 * p.step) / p.total_steps}%` : "0";
  showLevels(job.id, p ? p.level_losses : {});
  if (["succeeded", "failed", "cancelled"].includes(job.status)) {
    source.close();
    $("cancel-job").hidden = true;
    untilServing(job.status === "succeeded" ? job.version : null).then(loadInfo);
  }
}

// The server swaps to a published version a moment after the job succeeds: look again until it does
// (or it was refused, which the table then says), for up to half a minute.
async function untilServing(version) {
  for (let tries = 0; tries < 60; tries++) {
    const list = await loadCheckpoints();
    if (!version || !list || list.serving === version || (list.reload_error && list.reload_error.version === version)) return;
    await new Promise((done) => setTimeout(done, 500));
  }
}

async function loadCheckpoints() {
  try {
    const list = await api("/v1/checkpoints");
    const body = $("checkpoints").querySelector("tbody");
    body.replaceChildren(...list.data.map((c) => {
      const row = document.createElement("tr");
      row.className = c.version === list.serving ? "current" : "";
      const measured = c.metrics && c.metrics.held_out_loss && Object.keys(c.metrics.held_out_loss).length;
      const loss = measured ? Object.entries(c.metrics.held_out_loss).map(([r, l]) => `${r}: ${l.toFixed(2)}`).join(", ")
        : c.version === "base" ? "" : "none (too little text to hold any out)";
      const created = c.created_at ? new Date(c.created_at * 1000).toLocaleString() : "";
      for (const value of [c.version, c.model, created, loss]) {
        const cell = document.createElement("td");
        cell.textContent = value;
        row.append(cell);
      }
      const cell = document.createElement("td");
      const button = document.createElement("button");
      button.className = "small";
      button.textContent = c.version === list.serving ? "serving" : "activate";
      button.disabled = c.version === list.serving;
      button.onclick = () => activate(c.version);
      cell.append(button);
      row.append(cell);
      return row;
    }));
    $("reload-error").hidden = !list.reload_error;
    if (list.reload_error) $("reload-error").textContent = `Refused ${list.reload_error.version}: ${list.reload_error.message}`;
    return list;
  } catch (err) {
    $("reload-error").hidden = false;
    $("reload-error").textContent = err.message;
  }
}

async function activate(version) {
  jobError("");
  try {
    await api(`/v1/checkpoints/${version}/activate`, { method: "POST", headers: headers() });
  } catch (err) {
    jobError(err.message);
  }
  loadCheckpoints();
  loadInfo();
}

// ---------- wiring ----------

$("form").addEventListener("submit", (e) => {
  e.preventDefault();
  if (chatMode() && !$("prompt").value.trim()) {
    showError("Write a message first: a chat reply answers one.", false);
    $("prompt").focus();
    return;
  }
  generate(request());
});
$("retry").onclick = () => run.lastRequest && generate(run.lastRequest);
$("mode").onchange = setMode;
$("clear-chat").onclick = () => { chat.turns = []; renderConversation(); renderText($("text"), null); };
$("play").onclick = togglePlayback;
$("prev").onclick = () => { stopPlayback(); show(run.index - 1); };
$("next").onclick = () => { stopPlayback(); show(run.index + 1); };
$("scrub").oninput = () => { stopPlayback(); show(Number($("scrub").value)); };
$("copy").onclick = copyText;
$("gif").onclick = () => download("/render/gif", "unmask.gif");
$("html").onclick = () => download("/render/html", "unmask.html");
$("job-form").addEventListener("submit", (e) => {
  e.preventDefault();
  submitJob();
});
$("refresh").onclick = loadCheckpoints;
document.querySelectorAll(".tab").forEach((tab) => {
  tab.onclick = () => {
    document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t === tab));
    $("tab-generate").hidden = tab.dataset.tab !== "generate";
    $("tab-finetune").hidden = tab.dataset.tab !== "finetune";
    if (tab.dataset.tab === "finetune") loadCheckpoints();
  };
});
document.addEventListener("keydown", (e) => {
  if (["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName) || $("replay").hidden) return;
  if (e.key === " ") { e.preventDefault(); togglePlayback(); }
  if (e.key === "ArrowLeft") { stopPlayback(); show(run.index - 1); }
  if (e.key === "ArrowRight") { stopPlayback(); show(run.index + 1); }
});
$("key").value = localStorage.getItem("unmask-key") || "";
loadInfo();
