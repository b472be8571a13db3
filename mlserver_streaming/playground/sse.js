// Server-Sent Events over fetch + ReadableStream (EventSource cannot POST a body).
// Yields the `data:` payload of each event as it arrives; `: comment` keep-alives are skipped.

export async function* sseData(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(line.startsWith("data: ") ? 6 : 5));
        if (data.length) yield data.join("\n");
      }
    }
  } finally {
    reader.releaseLock();
  }
}

// The message of a failed (non-2xx) response: OpenAI's {"error": {"message"}} or MLServer's
// {"error": "..."}, else the status line.
export async function errorMessage(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    const error = body.error ?? body.detail;
    if (typeof error === "string") return error;
    if (error && error.message) return error.message;
  } catch (_) { /* not JSON */ }
  return `${response.status} ${response.statusText}: ${text.slice(0, 200)}`;
}

export function setStatus(element, text, isError = false) {
  element.textContent = text;
  element.classList.toggle("error", isError);
}

export function isAbort(err) {
  return err && err.name === "AbortError";
}
