// INSID3 web page: paint a reference mask, segment targets, or match clicked points.
"use strict";

const $ = (id) => document.getElementById(id);
const COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"];

const state = { refFile: null, refImage: null, targets: [], points: [], painting: false, last: null };

function mode() { return $("mode-match").checked ? "match" : "segment"; }

function headers() {
  const key = $("api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function errorText(response) {
  try {
    const body = await response.json();
    return `${response.status} ${body.error}: ${typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

async function post(path, form) {
  const response = await fetch(path, { method: "POST", body: form, headers: headers() });
  if (!response.ok) throw new Error(await errorText(response));
  return response;
}

function loadImage(file) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error(`${file.name} is not an image the browser can show`));
    image.src = URL.createObjectURL(file);
  });
}

function canvasBlob(canvas) {
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

function updateRunButton() {
  const ready = state.refImage && state.targets.length > 0 && (mode() === "segment" || state.points.length > 0);
  $("run").disabled = !ready;
  $("run").textContent = mode() === "segment" ? "Segment" : "Match";
}

// ----------------------------------------------------------------------------- reference

async function setReference(file) {
  state.refFile = file;
  state.refImage = await loadImage(file);
  const { naturalWidth: w, naturalHeight: h } = state.refImage;
  for (const id of ["ref-canvas", "mask-canvas", "points-canvas"]) {
    $(id).width = w;
    $(id).height = h;
  }
  $("ref-canvas").getContext("2d").drawImage(state.refImage, 0, 0);
  state.points = [];
  drawPoints();
  $("ref-hint").textContent = mode() === "segment"
    ? "Paint the object with the brush (or upload a mask)." : "Click points on the reference.";
  updateRunButton();
}

function imagePoint(event) {
  const rect = $("ref-canvas").getBoundingClientRect();
  const scale = $("ref-canvas").width / rect.width;
  return { x: (event.clientX - rect.left) * scale, y: (event.clientY - rect.top) * scale, scale };
}

function paintTo(point) {
  const ctx = $("mask-canvas").getContext("2d");
  ctx.globalCompositeOperation = $("tool-eraser").checked ? "destination-out" : "source-over";
  ctx.strokeStyle = ctx.fillStyle = "rgb(0, 170, 255)";
  ctx.lineCap = ctx.lineJoin = "round";
  ctx.lineWidth = Number($("brush-size").value) * point.scale;
  const from = state.last || point;
  ctx.beginPath();
  ctx.moveTo(from.x, from.y);
  ctx.lineTo(point.x + 0.01, point.y);
  ctx.stroke();
  state.last = point;
}

function maskIsEmpty() {
  const canvas = $("mask-canvas");
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) return false;
  return true;
}

async function uploadMask(file) {
  if (!state.refImage) return setStatus("choose the reference image first", true);
  const image = await loadImage(file);
  const canvas = $("mask-canvas");
  const ctx = canvas.getContext("2d");
  ctx.globalCompositeOperation = "source-over";
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
  const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height);
  const d = pixels.data;
  for (let i = 0; i < d.length; i += 4) {
    const on = d[i + 3] > 0 && (d[i] || d[i + 1] || d[i + 2]);
    [d[i], d[i + 1], d[i + 2], d[i + 3]] = on ? [0, 170, 255, 255] : [0, 0, 0, 0];
  }
  ctx.putImageData(pixels, 0, 0);
}

function drawMarker(ctx, x, y, index, radius) {
  ctx.fillStyle = COLOURS[index % COLOURS.length];
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = radius / 3;
  ctx.beginPath();
  ctx.arc(x, y, radius, 0, 2 * Math.PI);
  ctx.fill();
  ctx.stroke();
  ctx.fillStyle = "#fff";
  ctx.font = `bold ${radius * 1.2}px sans-serif`;
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  ctx.fillText(String(index + 1), x, y);
}

function markerRadius(canvas) { return Math.max(6, Math.round(Math.max(canvas.width, canvas.height) / 60)); }

function drawPoints() {
  const canvas = $("points-canvas");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  state.points.forEach(([x, y], i) => drawMarker(ctx, x, y, i, markerRadius(canvas)));
}

// ------------------------------------------------------------------------------- results

function figure(caption, element) {
  const fig = document.createElement("figure");
  const text = document.createElement("figcaption");
  text.textContent = caption;
  fig.append(element, text);
  $("results").append(fig);
}

async function segmentTarget(referenceId, file) {
  const form = new FormData();
  form.append("target", file);
  form.append("reference_ids", referenceId);
  form.append("format", "overlay");
  if ($("tau").value) form.append("tau", $("tau").value);
  if ($("merge").value) form.append("merge_threshold", $("merge").value);
  const response = await post("/segment", form);
  const img = document.createElement("img");
  img.className = "overlay";
  img.alt = `overlay of ${file.name}`;
  img.src = URL.createObjectURL(await response.blob());
  const area = response.headers.get("X-Insid3-Area");
  const score = Number(response.headers.get("X-Insid3-Score")).toFixed(3);
  figure(`${file.name}: area ${area} px, score ${score}`, img);
}

async function runSegment() {
  if (maskIsEmpty()) throw new Error("paint the object on the reference (or upload its mask) first");
  const form = new FormData();
  form.append("image", state.refFile);
  form.append("mask", await canvasBlob($("mask-canvas")), "mask.png");
  const reference = await (await post("/references", form)).json();
  await Promise.all(state.targets.map((file) => segmentTarget(reference.reference_id, file)));
}

async function matchTarget(file) {
  const form = new FormData();
  form.append("target", file);
  form.append("reference_image", state.refFile);
  form.append("points", JSON.stringify(state.points.map(([x, y]) => [Math.round(x), Math.round(y)])));
  const body = await (await post("/match", form)).json();
  const image = await loadImage(file);
  const canvas = document.createElement("canvas");
  canvas.className = "matches";
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(image, 0, 0);
  body.points.forEach((p, i) => drawMarker(ctx, p.x, p.y, i, markerRadius(canvas)));
  const confidences = body.points.map((p, i) => `${i + 1}: ${p.confidence.toFixed(2)}`).join(", ");
  figure(`${file.name}: confidence ${confidences}`, canvas);
}

async function run() {
  $("run").disabled = true;
  $("results").replaceChildren();
  setStatus(mode() === "segment" ? "segmenting…" : "matching…");
  const started = performance.now();
  try {
    await (mode() === "segment" ? runSegment() : Promise.all(state.targets.map(matchTarget)));
    setStatus(`done in ${Math.round(performance.now() - started)} ms`);
  } catch (error) {
    setStatus(error.message, true);
  } finally {
    updateRunButton();
  }
}

async function checkReady() {
  const badge = $("ready");
  try {
    const response = await fetch("/readyz");
    badge.className = response.ok ? "badge ok" : "badge bad";
    badge.textContent = response.ok ? "ready" : "not ready";
    badge.title = response.ok ? "" : (await response.json()).detail;
  } catch {
    badge.className = "badge bad";
    badge.textContent = "offline";
  }
}

// -------------------------------------------------------------------------------- wiring

$("ref-file").addEventListener("change", (e) => e.target.files[0] && setReference(e.target.files[0]).catch(
  (error) => setStatus(error.message, true)));
$("mask-file").addEventListener("change", (e) => e.target.files[0] && uploadMask(e.target.files[0]).catch(
  (error) => setStatus(error.message, true)));
$("target-files").addEventListener("change", (e) => { state.targets = [...e.target.files]; updateRunButton(); });
$("clear-mask").addEventListener("click", () => {
  const canvas = $("mask-canvas");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
});
$("ref-stage").addEventListener("pointerdown", (event) => {
  if (!state.refImage) return;
  const point = imagePoint(event);
  if (mode() === "match") {
    state.points.push([point.x, point.y]);
    drawPoints();
    updateRunButton();
    return;
  }
  state.painting = true;
  state.last = null;
  $("ref-stage").setPointerCapture(event.pointerId);
  paintTo(point);
});
$("ref-stage").addEventListener("pointermove", (event) => { if (state.painting) paintTo(imagePoint(event)); });
for (const type of ["pointerup", "pointercancel"]) {
  $("ref-stage").addEventListener(type, () => { state.painting = false; state.last = null; });
}
for (const id of ["mode-segment", "mode-match"]) {
  $(id).addEventListener("change", () => {
    document.body.classList.toggle("match", mode() === "match");
    $("ref-hint").textContent = mode() === "segment"
      ? "Paint the object with the brush (or upload a mask)." : "Click points on the reference.";
    $("results").replaceChildren();
    updateRunButton();
  });
}
$("api-key").value = localStorage.getItem("insid3-api-key") || "";
$("api-key").addEventListener("change", () => localStorage.setItem("insid3-api-key", $("api-key").value));
$("run").addEventListener("click", run);
checkReady();
