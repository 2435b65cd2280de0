// The draw-a-digit page: pointer-event drawing, debounced predictions, upload and drop, feature maps.
// Plain browser JavaScript with no build step and nothing fetched from outside this server.
"use strict";

const canvas = document.getElementById("canvas");
const ctx = canvas.getContext("2d");
const answer = document.getElementById("answer");
const digitEl = document.getElementById("digit");
const messageEl = document.getElementById("message");
const bars = document.getElementById("bars");
const seen = document.getElementById("seen");
const layersEl = document.getElementById("layers");

// A stroke 1/11 of the canvas wide becomes about 2 px after the server shrinks the digit to 20 px,
// as thick as MNIST's pen strokes; thinner lines fade away in the reduction to 28x28.
const BRUSH = canvas.width / 11;
const DEBOUNCE_MS = 120;   // ask again this long after the last pen movement
const MIN_INK = 0.004;     // below this fraction of inked pixels the canvas counts as blank
// The drawing is sent at half size: the digit ends up 20 pixels tall anyway, and preprocessing a
// 140x140 image costs the server a third of a 280x280 one (accuracy on MNIST digits drawn this way
// is the same within a digit or two in 3,000).
const SEND_SIDE = 140;

let drawing = false;
let last = null;
let upload = null;         // the dropped or chosen File while it is what the page shows
let timer = null;
let inFlight = false;
let again = false;         // input changed while a request was out: ask once more when it returns
let generation = 0;        // bumped by Clear, so a late answer for a cleared drawing is dropped
let updates = 0;

function clearCanvas() {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
}

function point(e) {
  const r = canvas.getBoundingClientRect();
  return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height];
}

function stroke(from, to) {
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = BRUSH;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(from[0], from[1]);
  ctx.lineTo(to[0], to[1]);
  ctx.stroke();
}

canvas.addEventListener("pointerdown", (e) => {
  e.preventDefault();
  canvas.setPointerCapture(e.pointerId);
  drawing = true;
  if (upload) { clearCanvas(); upload = null; }  // drawing after an upload starts a fresh digit
  last = point(e);
  stroke(last, last);  // a tap leaves a dot
  schedule();
});

canvas.addEventListener("pointermove", (e) => {
  if (!drawing) return;
  e.preventDefault();
  // Coalesced events keep fast strokes smooth where the browser merges pointer moves.
  const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
  for (const ev of events.length ? events : [e]) {
    const p = point(ev);
    stroke(last, p);
    last = p;
  }
  schedule();
});

for (const type of ["pointerup", "pointercancel"]) {
  canvas.addEventListener(type, () => {
    if (!drawing) return;
    drawing = false;
    predictNow(true);  // the stroke is finished: answer at once, with the feature maps
  });
}

document.getElementById("clear").addEventListener("click", () => {
  clearCanvas();
  upload = null;
  generation += 1;
  clearTimeout(timer);
  showBlank();
});

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(() => predictNow(false), DEBOUNCE_MS);
}

function inkFraction() {
  const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let ink = 0;
  for (let i = 0; i < px.length; i += 4) if (px[i] > 64) ink += 1;
  return ink / (px.length / 4);
}

function canvasBlob() {
  const small = document.createElement("canvas");
  small.width = small.height = SEND_SIDE;
  const sctx = small.getContext("2d");
  sctx.imageSmoothingEnabled = true;
  sctx.imageSmoothingQuality = "high";
  sctx.drawImage(canvas, 0, 0, SEND_SIDE, SEND_SIDE);
  return new Promise((resolve) => small.toBlob(resolve, "image/png"));
}

async function predictNow(withFeatures) {
  clearTimeout(timer);
  if (inFlight) { again = true; return; }
  if (!upload && inkFraction() < MIN_INK) { showBlank(); return; }
  inFlight = true;
  const gen = generation;
  answer.dataset.state = "busy";
  try {
    const form = new FormData();
    form.append("file", upload || await canvasBlob(), upload ? upload.name : "canvas.png");
    const url = withFeatures || upload ? "/api/predict?features=true" : "/api/predict";
    const reply = await fetch(url, { method: "POST", body: form });
    const data = await reply.json().catch(() => ({ error: `HTTP ${reply.status}` }));
    if (gen !== generation) return;
    if (reply.ok) showResult(data);
    else if (!upload && /no digit|no ink|blank/i.test(data.error || "")) showBlank();
    else showError(data.error || `HTTP ${reply.status}`);
  } catch (err) {
    if (gen === generation) showError(`the server did not answer (${err.message})`);
  } finally {
    inFlight = false;
    if (again) { again = false; predictNow(!drawing); }
  }
}

function setBars(probs) {
  const top = probs.indexOf(Math.max(...probs));
  bars.querySelectorAll("li").forEach((li, i) => {
    const p = probs[i] || 0;
    li.classList.toggle("top", i === top && probs.length > 0);
    li.querySelector(".fill").style.width = `${(p * 100).toFixed(1)}%`;
    li.querySelector(".pct").textContent = probs.length ? `${(p * 100).toFixed(1)}%` : "";
  });
}

function showBlank() {
  answer.dataset.state = "blank";
  delete answer.dataset.digit;
  digitEl.textContent = "?";
  messageEl.textContent = "draw a digit";
  setBars([]);
  seen.getContext("2d").clearRect(0, 0, 28, 28);
  finish();
}

function showError(text) {
  answer.dataset.state = "error";
  delete answer.dataset.digit;
  digitEl.textContent = "!";
  messageEl.textContent = text;
  setBars([]);
  finish();
}

function showResult(data) {
  const pct = (data.confidence * 100).toFixed(1);
  const guess = data.best_guess;
  const second = data.top_k.length > 1 ? data.top_k[1].digit : "?";
  answer.dataset.state = data.unsure ? "unsure" : "done";
  answer.dataset.digit = guess;
  digitEl.textContent = guess;
  messageEl.textContent = data.unsure ? `not sure: maybe ${guess}, or ${second} (${pct}%)` : `${pct}% sure`;
  setBars(data.probs);
  drawGrey(seen, data.image28.flat(), 28, 28, 255);
  if (data.layers) showLayers(data.layers);
  finish();
}

function finish() {
  updates += 1;
  answer.dataset.updates = String(updates);  // lets tests wait for the next answer
}

function drawGrey(target, values, w, h, max) {
  const g = target.getContext("2d");
  const img = g.createImageData(w, h);
  for (let i = 0; i < w * h; i += 1) {
    const v = max > 0 ? Math.round(255 * Math.max(0, values[i]) / max) : 0;
    img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = v;
    img.data[4 * i + 3] = 255;
  }
  g.putImageData(img, 0, 0);
}

function decodeF32(b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const view = new DataView(bytes.buffer);
  const out = new Float32Array(bytes.length / 4);
  for (let i = 0; i < out.length; i += 1) out[i] = view.getFloat32(4 * i, true);  // little-endian
  return out;
}

function showLayers(layers) {
  if (!layersEl.dataset.built) {
    layersEl.innerHTML = "";
    for (const layer of layers) {
      const [c, h, w] = layer.shape;
      const block = document.createElement("div");
      block.className = "layer";
      block.innerHTML = `<h3>${layer.name} <small>${layer.type}: ${c} maps of ${h}&times;${w}</small></h3>`;
      const grid = document.createElement("div");
      grid.className = "maps";
      grid.style.setProperty("--tile", `${Math.max(22, Math.min(64, 4 * h))}px`);
      for (let k = 0; k < c; k += 1) {
        const tile = document.createElement("canvas");
        tile.width = w;
        tile.height = h;
        tile.title = `${layer.name}, map ${k}`;
        grid.appendChild(tile);
      }
      block.appendChild(grid);
      layersEl.appendChild(block);
    }
    layersEl.dataset.built = "1";
  }
  layers.forEach((layer, li) => {
    const [c, h, w] = layer.shape;
    const maps = decodeF32(layer.maps_f32);
    const tiles = layersEl.children[li].querySelectorAll("canvas");
    for (let k = 0; k < c; k += 1) {
      const one = maps.subarray(k * h * w, (k + 1) * h * w);
      drawGrey(tiles[k], one, w, h, Math.max(...one));  // each map scaled to its own brightest spot
    }
  });
}

// Upload and drag-and-drop: the file itself goes to the server; the canvas shows a preview.
async function useFile(file) {
  if (!file) return;
  upload = file;
  generation += 1;
  clearCanvas();
  try {
    const bitmap = await createImageBitmap(file);
    const scale = Math.min(canvas.width / bitmap.width, canvas.height / bitmap.height);
    const w = bitmap.width * scale, h = bitmap.height * scale;
    ctx.drawImage(bitmap, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
  } catch (err) {
    // Not something the browser can show; the server's answer says what is wrong with it.
  }
  predictNow(true);
}

document.getElementById("file").addEventListener("change", (e) => {
  useFile(e.target.files[0]);
  e.target.value = "";  // choosing the same file again still fires change
});

const dropzone = document.getElementById("dropzone");
dropzone.addEventListener("dragover", (e) => { e.preventDefault(); dropzone.classList.add("dragging"); });
dropzone.addEventListener("dragleave", () => dropzone.classList.remove("dragging"));
dropzone.addEventListener("drop", (e) => {
  e.preventDefault();
  dropzone.classList.remove("dragging");
  useFile(e.dataTransfer.files[0]);
});

function buildBars() {
  for (let i = 0; i < 10; i += 1) {
    const li = document.createElement("li");
    li.innerHTML = `<span class="key">${i}</span><span class="bar"><span class="fill"></span></span><span class="pct"></span>`;
    bars.appendChild(li);
  }
}

async function showModel() {
  try {
    const meta = await (await fetch("/api/model")).json();
    const metrics = meta.metrics || {};
    const test = typeof metrics.test_accuracy === "number";
    const acc = test ? metrics.test_accuracy : metrics.val_accuracy;
    const name = meta.name || (meta.architecture || {}).name || "model";
    document.getElementById("model-name").textContent = `model: ${name}` +
      (typeof acc === "number" ? ` (${(acc * 100).toFixed(2)}% ${test ? "test" : "validation"} accuracy)` : "");
  } catch (err) {
    // The footer is a nicety; the page works without it.
  }
}

buildBars();
clearCanvas();
showBlank();
showModel();
