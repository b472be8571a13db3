// Text panel: OpenAI-compatible streaming (/v1/completions, /v1/chat/completions).
// Tokens are appended as their chunks arrive; Stop aborts the fetch, and the server, seeing
// the connection close, cancels the sequence and frees its slot.
import { errorMessage, isAbort, setStatus, sseData } from "./sse.js";

const $ = (id) => document.getElementById(id);
const chat = [];  // the conversation so far: {role, content, name?}
let controller = null;

export async function initTextPanel() {
  $("text-mode").addEventListener("change", showMode);
  $("text-send").addEventListener("click", generate);
  $("text-stop").addEventListener("click", () => controller && controller.abort());
  $("chat-clear").addEventListener("click", () => { chat.length = 0; renderChat(); });
  showMode();
  try {
    const response = await fetch("/v1/models");
    if (!response.ok) throw new Error(`GET /v1/models: ${await errorMessage(response)}`);
    const models = (await response.json()).data.map((m) => m.id);
    $("text-model").replaceChildren(...models.map((id) => new Option(id, id)));
    setStatus($("text-status"), models.length ? "" : "no text model is loaded", !models.length);
  } catch (err) {
    setStatus($("text-status"), `cannot list text models: ${err.message}`, true);
  }
  document.body.dataset.textModels = $("text-model").options.length;
}

function showMode() {
  const isChat = $("text-mode").value === "chat";
  $("chat-box").hidden = !isChat;
  $("chat-clear").hidden = !isChat;
  $("text-prompt").placeholder = isChat ? "Your message" : "Write a prompt, e.g. ROMEO:";
}

function renderChat() {
  $("chat-log").replaceChildren(...chat.map((m) => {
    const div = document.createElement("div");
    div.className = `turn ${m.role}`;
    div.textContent = `${m.name || m.role}: ${m.content}`;
    return div;
  }));
}

function requestBody(isChat) {
  const body = {
    model: $("text-model").value,
    max_tokens: Number($("text-max-tokens").value),
    temperature: Number($("text-temperature").value),
    stream: true,
    stream_options: { include_usage: true },
  };
  if ($("text-seed").value !== "") body.seed = Number($("text-seed").value);
  if (!isChat) return { ...body, prompt: $("text-prompt").value };
  const message = { role: "user", content: $("text-prompt").value };
  if ($("chat-name").value.trim()) message.name = $("chat-name").value.trim();
  chat.push(message);
  renderChat();
  return { ...body, messages: chat };
}

function chunkText(chunk, isChat) {
  const choice = chunk.choices && chunk.choices[0];
  if (!choice) return ["", null];
  const text = isChat ? (choice.delta && choice.delta.content) || "" : choice.text || "";
  return [text, choice.finish_reason || null];
}

async function generate() {
  const isChat = $("text-mode").value === "chat";
  const output = $("text-output"), status = $("text-status");
  const path = isChat ? "/v1/chat/completions" : "/v1/completions";
  const body = requestBody(isChat);
  output.textContent = "";
  $("text-usage").textContent = "";
  controller = new AbortController();
  $("text-send").disabled = true;
  $("text-stop").disabled = false;
  document.body.dataset.textState = "streaming";
  setStatus(status, "waiting for the first token…");
  const started = performance.now();
  let firstAt = null, finish = null, usage = null;
  try {
    const response = await fetch(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    for await (const data of sseData(response)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message || JSON.stringify(chunk.error));
      if (chunk.usage) usage = chunk.usage;
      const [text, reason] = chunkText(chunk, isChat);
      if (text) {
        firstAt = firstAt ?? performance.now();
        output.textContent += text;
        setStatus(status, "streaming…");
      }
      finish = reason || finish;
    }
    setStatus(status, `finished: ${finish ?? "?"}`);
    document.body.dataset.textState = "finished";
  } catch (err) {
    const stopped = isAbort(err);
    setStatus(status, stopped ? "stopped (the server cancels the sequence)" : err.message, !stopped);
    document.body.dataset.textState = stopped ? "stopped" : "error";
  } finally {
    controller = null;
    $("text-send").disabled = false;
    $("text-stop").disabled = true;
    if (isChat && output.textContent) {
      chat.push({ role: "assistant", content: output.textContent });
      renderChat();
    }
    showUsage(usage, started, firstAt);
  }
}

function showUsage(usage, started, firstAt) {
  const seconds = (performance.now() - started) / 1000;
  const parts = [];
  if (usage) {
    parts.push(`prompt ${usage.prompt_tokens} · completion ${usage.completion_tokens} · `
      + `total ${usage.total_tokens} tokens`);
    if (seconds > 0) parts.push(`${(usage.completion_tokens / seconds).toFixed(1)} tokens/s`);
  }
  if (firstAt !== null) parts.push(`first token after ${Math.round(firstAt - started)} ms`);
  $("text-usage").textContent = parts.join(" · ");
}
