// The studio page: talks to the server it came from, and to nothing else.
"use strict";

const COLOURS = ["#2d6cdf", "#e0672b", "#2a9d4b", "#c2306b", "#7b4fd0", "#b08d12", "#138a8a", "#8c5a3c",
                 "#5b6573", "#d94f4f"];
const $ = (id) => document.getElementById(id);
const state = { seeds: {}, current: null, jobs: { music: null, text: null }, takes: [] };

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw new Error("the studio server does not answer; is it still running?");
  }
  const body = await response.json().catch(() => ({ error: `the server answered ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `the server answered ${response.status}`);
  return body;
}

function postJSON(path, body) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

function numberOrNull(id) {
  const value = $(id).value.trim();
  return value === "" ? null : Number(value);
}

// -- piano roll --------------------------------------------------------------------------------------
function drawRoll(roll, title) {
  const canvas = $("roll");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 900, height = canvas.clientHeight || 320;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  $("roll-title").textContent = title || "Piano roll";
  const legend = $("legend");
  legend.replaceChildren();
  if (!roll || !roll.notes.length) {
    g.fillStyle = "#5b6573";
    g.font = "14px system-ui, sans-serif";
    g.fillText("no notes yet: choose a seed, or continue from scratch", 16, 28);
    return;
  }
  const left = 40, bottom = 22, top = 8, right = 8;
  const pitches = roll.notes.map((n) => n[0]);
  const low = Math.min(...pitches) - 2, high = Math.max(...pitches) + 2;
  const [first, last] = roll.view || [0, roll.duration];
  const seconds = Math.max(last - first, 1);
  const x = (t) => left + (Math.max(t, first) - first) / seconds * (width - left - right);
  const rowHeight = (height - top - bottom) / (high - low + 1);
  const y = (p) => top + (high - p) * rowHeight;
  g.strokeStyle = "#eef0f3";
  g.fillStyle = "#5b6573";
  g.font = "11px system-ui, sans-serif";
  for (let p = Math.ceil(low / 12) * 12; p <= high; p += 12) {  // a line and a name at every C
    g.beginPath(); g.moveTo(left, y(p) + rowHeight); g.lineTo(width - right, y(p) + rowHeight); g.stroke();
    g.fillText(`C${p / 12 - 1}`, 4, y(p) + rowHeight);
  }
  const step = seconds > 120 ? 30 : seconds > 40 ? 10 : seconds > 12 ? 5 : 1;
  for (let t = Math.ceil(first / step) * step; t <= last; t += step) g.fillText(`${t}s`, x(t) - 6, height - 6);
  for (const [start, end] of roll.marks || []) {  // where the generated music is
    g.fillStyle = "rgba(45, 108, 223, 0.06)";
    g.fillRect(x(start), top, x(end) - x(start), height - top - bottom);
    g.strokeStyle = "#1d232b";
    g.setLineDash([5, 4]);
    for (const edge of end < last - 1e-6 ? [start, end] : [start]) {
      g.beginPath(); g.moveTo(x(edge), top); g.lineTo(x(edge), height - bottom); g.stroke();
    }
    g.setLineDash([]);
    g.fillStyle = "#1d232b";
    g.fillText("generated", x(start) + 4, top + 11);
  }
  for (const [pitch, start, end, track, , generated] of roll.notes) {
    g.globalAlpha = generated ? 1.0 : 0.35;  // the seed is pale, the new music full
    g.fillStyle = COLOURS[track % COLOURS.length];
    g.fillRect(x(start), y(pitch), Math.max(x(end) - x(start), 1.5), Math.max(rowHeight - 0.5, 1));
  }
  g.globalAlpha = 1.0;
  const playing = new Set(roll.notes.map((n) => n[3]));
  roll.tracks.forEach((track, index) => {
    if (!playing.has(index)) return;
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = COLOURS[index % COLOURS.length];
    item.append(swatch, `${track.name}${track.role ? ` (${track.role})` : ""}`);
    legend.append(item);
  });
  const key = document.createElement("span");
  key.textContent = "pale: from the seed · full: generated";
  legend.append(key);
}

// -- jobs ----------------------------------------------------------------------------------------------
function watch(panel, job, onDone) {
  state.jobs[panel] = job.id;
  const box = $(`${panel}-status`);
  box.hidden = false;
  const bar = box.querySelector("progress"), stage = box.querySelector(".stage");
  box.querySelector(".cancel").onclick = () => postJSON(`/api/jobs/${job.id}/cancel`, {}).catch((e) => showError(e.message));
  const show = (j) => {
    stage.textContent = j.state === "queued" && j.position ? `waiting: ${j.position} job(s) before this one`
      : j.state === "running" ? j.stage : j.state;
    if (j.progress === null || j.progress === undefined) bar.removeAttribute("value");
    else bar.value = j.progress;
  };
  show(job);
  const tick = async () => {
    if (state.jobs[panel] !== job.id) return;  // a newer job took over the panel
    let j;
    try {
      j = await api(`/api/jobs/${job.id}`);
    } catch (e) {
      showError(e.message);
      box.hidden = true;
      return;
    }
    show(j);
    if (panel === "text") showText(j);
    if (j.state === "queued" || j.state === "running") { setTimeout(tick, 300); return; }
    box.hidden = true;
    state.jobs[panel] = null;
    if (j.state === "failed") showError(j.error);
    if (j.state === "done") onDone(j);
  };
  setTimeout(tick, 200);
}

// -- music ---------------------------------------------------------------------------------------------
function addSeed(info, select) {
  state.seeds[info.id] = info;
  const choice = $("seed-choice");
  if (![...choice.options].some((o) => o.value === info.id)) {
    let yours = $("your-files");
    if (!yours) {
      yours = document.createElement("optgroup");
      yours.id = "your-files";
      yours.label = "your files";
      choice.append(yours);
    }
    yours.append(new Option(info.name, info.id));
  }
  if (select) {
    choice.value = info.id;
    showSeed(info);
  }
}

function showSeed(info) {
  if (!info) {
    $("seed-info").textContent = "Without a seed the model composes from scratch (pop-piano unless you pick one).";
    drawRoll(null);
    return;
  }
  $("seed-info").textContent = `${info.tracks}. Chosen model: ${info.model}, because ${info.reason}.`;
  drawRoll(info.roll, `Seed: ${info.name}`);
}

async function chooseSeed() {
  const id = $("seed-choice").value;
  if (!id) { showSeed(null); return; }
  try {
    if (!state.seeds[id] || !state.seeds[id].roll) state.seeds[id] = await api(`/api/seeds/${id}`);
    showSeed(state.seeds[id]);
  } catch (e) { showError(e.message); }
}

async function upload(file) {
  showError("");
  if (!file) return;
  try {
    const info = await api("/api/seeds", { method: "POST", body: file,
      headers: { "X-Filename": encodeURIComponent(file.name), "Content-Type": "application/octet-stream" } });
    addSeed(info, true);
  } catch (e) {
    showError(e.message);
  } finally {
    $("seed-file").value = "";
  }
}

function musicSettings() {
  return { seed: $("seed-choice").value || null, model: $("model").value, seconds: numberOrNull("seconds"),
           temperature: numberOrNull("temperature"), top_p: numberOrNull("top-p"), random_seed: numberOrNull("random-seed") };
}

async function startMusic(path, body) {
  showError("");
  try {
    watch("music", await postJSON(path, body), (j) => { addTake(j.take); showTake(j.take); });
  } catch (e) { showError(e.message); }
}

function describe(take) {
  const s = take.settings;
  const what = take.kind === "continue" ? `${s.seconds} s continued` : take.kind === "rewrite"
    ? `beats ${s.start_beat}-${s.end_beat} rewritten` : "harmonized";
  const topP = s.top_p ? `, top-p ${s.top_p}` : "";
  return `${take.seed}: ${what} by ${take.checkpoint}, temperature ${s.temperature}${topP}, random seed ${s.random_seed}`;
}

function addTake(take) {
  state.takes.push(take);
  const item = document.createElement("li");
  item.id = `take-${take.id}`;
  const what = document.createElement("div");
  what.className = "what";
  what.textContent = describe(take);
  const show = document.createElement("button");
  show.type = "button";
  show.textContent = "Show and play";
  show.onclick = async () => {
    try { showTake(await api(`/api/takes/${take.id}`)); } catch (e) { showError(e.message); }
  };
  const midi = document.createElement("a");
  midi.href = take.midi; midi.textContent = "MIDI"; midi.className = "midi"; midi.download = "";
  const wav = document.createElement("a");
  wav.href = take.wav || ""; wav.textContent = "WAV"; wav.className = "wav"; wav.download = "";
  wav.hidden = !take.wav;
  const again = document.createElement("button");
  again.type = "button";
  again.className = "regenerate";
  again.textContent = "Regenerate";
  again.onclick = () => startMusic(`/api/takes/${take.id}/regenerate`, {});
  const onward = document.createElement("button");
  onward.type = "button";
  onward.className = "as-seed";
  onward.textContent = "Use as the seed";
  onward.onclick = async () => {
    try { addSeed(await postJSON(`/api/takes/${take.id}/seed`, {}), true); } catch (e) { showError(e.message); }
  };
  item.append(what, show, midi, wav, again, onward);
  $("takes").append(item);
}

function showTake(take) {
  drawRoll(take.roll, `Take ${take.number}: ${take.seed}`);
  const player = $("player");
  if (take.wav) player.src = take.wav; else player.removeAttribute("src");
  const start = (take.roll.marks[0] || [0])[0];
  if (take.kind === "continue" && start > 5) {  // start playing a few seconds before the new music
    player.addEventListener("loadedmetadata", () => { player.currentTime = start - 5; }, { once: true });
  }
  const notices = take.notices.length ? ` Notices: ${take.notices.join("; ")}.` : "";
  $("take-info").textContent = `${describe(take)}. Audio: ${take.audio}.${notices}`;
  document.querySelectorAll("#takes li").forEach((li) => li.classList.toggle("current", li.id === `take-${take.id}`));
}

// -- text ----------------------------------------------------------------------------------------------
function showText(job) {
  $("text-out").textContent = job.text;
}

async function startText(event) {
  event.preventDefault();
  showError("");
  $("text-download").hidden = true;
  const body = { prompt: $("prompt").value, checkpoint: $("text-model").value, length: numberOrNull("length"),
                 temperature: numberOrNull("text-temperature"), top_p: numberOrNull("text-top-p"),
                 random_seed: numberOrNull("text-random-seed") };
  try {
    const job = await postJSON("/api/text", body);
    $("text-out").textContent = body.prompt;
    watch("text", job, (j) => {
      showText(j);
      const link = $("text-download");
      link.href = `/api/jobs/${j.id}/text.txt`;
      link.hidden = false;
    });
  } catch (e) { showError(e.message); }
}

// -- start ---------------------------------------------------------------------------------------------
async function start() {
  document.querySelectorAll(".tab").forEach((tab) => tab.addEventListener("click", () => {
    document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t === tab));
    document.querySelectorAll(".panel").forEach((p) => { p.hidden = p.id !== tab.dataset.panel; });
  }));
  $("seed-file").addEventListener("change", (e) => upload(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); upload(e.dataTransfer.files[0]); });
  $("seed-choice").addEventListener("change", chooseSeed);
  $("music-form").addEventListener("submit", (e) => { e.preventDefault(); startMusic("/api/music", musicSettings()); });
  $("harmonize").addEventListener("click", () => startMusic("/api/harmonize", {
    seed: $("seed-choice").value || null, mode: "harmonize", temperature: numberOrNull("temperature"),
    random_seed: numberOrNull("random-seed") }));
  $("rewrite").addEventListener("click", () => startMusic("/api/harmonize", {
    seed: $("seed-choice").value || null, mode: "rewrite", start_beat: numberOrNull("start-beat"),
    end_beat: numberOrNull("end-beat"), temperature: numberOrNull("temperature"), random_seed: numberOrNull("random-seed") }));
  $("text-form").addEventListener("submit", startText);
  try {
    const info = await api("/api/info");
    $("upload-limit").textContent = `MIDI, MusicXML, ABC or kern; at most ${info.upload_limit / 1048576} MiB.`;
    for (const m of info.models) {
      if (m.kind === "music") $("model").add(new Option(`${m.name}: ${m.description}`, m.name));
      if (m.kind === "text") $("text-model").add(new Option(`${m.name}: ${m.description}`, m.name));
    }
    const examples = document.createElement("optgroup");
    examples.label = "examples";
    for (const example of info.examples) examples.append(new Option(example.description, example.id));
    $("seed-choice").append(examples);
    for (const take of await api("/api/takes")) addTake(take);
    if (info.examples.length) { $("seed-choice").value = info.examples[0].id; }
    await chooseSeed();
  } catch (e) { showError(e.message); }
  document.body.dataset.ready = "1";
}

start();
