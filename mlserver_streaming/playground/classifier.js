// Classifier panel: pasted rows through the V2 stream (/infer_stream), or a CSV file through
// the upload route (/classify_csv), which scores the file while it is still being sent.
// Both answer V2 events with `rows_done` / `rows_total`, which drive the progress bar.
import { errorMessage, isAbort, setStatus, sseData } from "./sse.js";

const $ = (id) => document.getElementById(id);
const SHOWN_ROWS = 200;  // rows rendered in the table; the summary counts them all
let classifiers = [];
let controller = null;

export async function initClassifierPanel() {
  $("clf-run").addEventListener("click", () => run(pastedRequest));
  $("clf-upload").addEventListener("click", () => run(fileRequest));
  $("clf-stop").addEventListener("click", () => controller && controller.abort());
  $("clf-model").addEventListener("change", showInfo);
  try {
    const response = await fetch("/v2/classifiers");
    if (!response.ok) throw new Error(await errorMessage(response));
    classifiers = (await response.json()).classifiers;
    $("clf-model").replaceChildren(...classifiers.map((c, i) => new Option(
      `${c.name}${c.version ? ` v${c.version}` : ""}`, String(i))));
    showInfo();
  } catch (err) {
    setStatus($("clf-status"), `cannot list classifiers: ${err.message}`, true);
  }
  document.body.dataset.classifiers = classifiers.length;
}

function selected() {
  return classifiers[Number($("clf-model").value)];
}

function showInfo() {
  const c = selected();
  $("clf-info").textContent = c ? `${c.features} features · classes: ${c.classes.join(", ")}` : "";
}

function modelPath(c, route) {
  const versioned = c.version ? `/versions/${encodeURIComponent(c.version)}` : "";
  return `/v2/models/${encodeURIComponent(c.name)}${versioned}/${route}`;
}

// A header line is one with no number in it (the server's rule for uploads too).
function dataLines(text) {
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l);
  const isHeader = lines.length && lines[0].split(",").every((f) => f.trim() === "" || isNaN(Number(f)));
  return isHeader ? lines.slice(1) : lines;
}

function pastedRequest(c, chunkSize) {
  const lines = dataLines($("clf-rows").value);
  if (!lines.length) throw new Error("paste at least one CSV row");
  const data = lines.flatMap((l) => l.split(",").map((f) => Number(f.trim().replace(/^"|"$/g, ""))));
  const body = {
    inputs: [{ name: "features", datatype: "FP64", shape: [lines.length, c.features], data }],
    parameters: { chunk_size: chunkSize },
  };
  return { url: modelPath(c, "infer_stream"), body: JSON.stringify(body),
           type: "application/json", rows: lines.length };
}

async function fileRequest(c, chunkSize) {
  const file = $("clf-file").files[0];
  if (!file) throw new Error("choose a CSV file first");
  const rows = await countRows(file);
  const query = new URLSearchParams({ chunk_size: chunkSize, rows_total: rows });
  return { url: `${modelPath(c, "classify_csv")}?${query}`, body: file, type: "text/csv", rows };
}

// Counts data rows by streaming through the file (no whole-file string), for `rows_total`.
async function countRows(file) {
  const reader = file.stream().pipeThrough(new TextDecoderStream()).getReader();
  let rows = 0, first = null, tail = "";
  for (;;) {
    const { value, done } = await reader.read();
    const text = tail + (done ? "\n" : value);
    const lines = text.split("\n");
    tail = lines.pop();
    for (const line of lines) {
      if (!line.trim()) continue;
      if (first === null) first = line;
      rows += 1;
    }
    if (done) break;
  }
  return first !== null && dataLines(first).length === 0 ? rows - 1 : rows;
}

async function run(makeRequest) {
  const c = selected(), status = $("clf-status");
  if (!c) return;
  const tbody = $("clf-results").querySelector("tbody");
  tbody.replaceChildren();
  $("clf-summary").textContent = "";
  setProgress(0, null);
  document.body.dataset.clfState = "running";
  controller = new AbortController();
  for (const id of ["clf-run", "clf-upload"]) $(id).disabled = true;
  $("clf-stop").disabled = false;
  const counts = {}, started = performance.now();
  try {
    const request = await makeRequest(c, Math.max(1, Number($("clf-chunk").value)));
    setStatus(status, `classifying ${request.rows.toLocaleString()} rows…`);
    const response = await fetch(request.url, {
      method: "POST", headers: { "content-type": request.type }, body: request.body,
      signal: controller.signal,
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    let finish = null;
    for await (const data of sseData(response)) {
      const event = JSON.parse(data), p = event.parameters || {};
      addRows(tbody, event.outputs || [], p.offset ?? 0, counts);
      if (p.rows_done !== undefined) setProgress(p.rows_done, p.rows_total ?? request.rows);
      if (p.final) {
        finish = p.finish_reason;
        if (finish === "error") throw new Error(p.error);
      }
    }
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    setStatus(status, `finished: ${finish ?? "stream ended without a final event"} in ${seconds} s`);
    document.body.dataset.clfState = finish === "complete" ? "complete" : "error";
  } catch (err) {
    const stopped = isAbort(err);
    setStatus(status, stopped ? "stopped" : err.message, !stopped);
    document.body.dataset.clfState = stopped ? "stopped" : "error";
  } finally {
    controller = null;
    for (const id of ["clf-run", "clf-upload"]) $(id).disabled = false;
    $("clf-stop").disabled = true;
    $("clf-summary").textContent = Object.entries(counts).map(([k, v]) => `${k}: ${v}`).join(" · ");
  }
}

function setProgress(done, total) {
  $("clf-progress").max = total || 1;
  $("clf-progress").value = done;
  $("clf-progress").dataset.done = done;
  $("clf-progress-text").textContent = total
    ? `${done.toLocaleString()} / ${total.toLocaleString()} rows (${(100 * done / total).toFixed(1)}%)`
    : "";
}

function addRows(tbody, outputs, offset, counts) {
  const byName = Object.fromEntries(outputs.map((o) => [o.name, o]));
  const labels = byName.label ? byName.label.data : [];
  const confidence = byName.confidence ? byName.confidence.data : [];
  const probs = byName.probabilities;
  const width = probs ? probs.shape[1] : 0;
  labels.forEach((label, i) => {
    counts[label] = (counts[label] || 0) + 1;
    if (offset + i >= SHOWN_ROWS) return;
    const tr = tbody.insertRow();
    const p = probs ? probs.data.slice(i * width, (i + 1) * width).map((x) => x.toFixed(4)) : [];
    const cells = [offset + i + 1, label, confidence.length ? confidence[i].toFixed(4) : "", p.join(", ")];
    cells.forEach((value, j) => {
      const td = tr.insertCell();
      td.textContent = value;
      if (j !== 1) td.className = "num";
    });
  });
}
