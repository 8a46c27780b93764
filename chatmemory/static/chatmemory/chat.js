// chatmemory: send a message with fetch and show the reply as it streams in
// (Server-Sent Events on a POST: events "token", "done", "error").
// Without this script the form posts normally and the page reloads.
(function () {
  "use strict";

  var form = document.getElementById("cm-compose");
  if (!form || !window.fetch || !window.AbortController || !window.TextDecoder) {
    return;
  }
  var box = form.querySelector("textarea");
  var transcript = document.getElementById("cm-transcript");
  var errors = document.getElementById("cm-errors");
  var typing = document.getElementById("cm-typing");
  var sendButton = document.getElementById("cm-send");
  var stopButton = document.getElementById("cm-stop");
  var controller = null;
  var stopped = false;

  function bubble(role, text) {
    var item = document.createElement("li");
    item.className = "cm-msg cm-" + role;
    var who = document.createElement("span");
    who.className = "cm-who";
    who.textContent = role === "human" ? "You" : "Assistant";
    var body = document.createElement("div");
    body.className = "cm-text";
    body.textContent = text; // text, never HTML
    item.appendChild(who);
    item.appendChild(body);
    transcript.appendChild(item);
    item.scrollIntoView({ block: "end" });
    return item;
  }

  function showError(message) {
    errors.textContent = "";
    var p = document.createElement("p");
    p.textContent = message;
    errors.appendChild(p);
  }

  function busy(on) {
    typing.hidden = !on;
    stopButton.hidden = !on;
    sendButton.disabled = on;
    form.classList.toggle("cm-busy", on);
  }

  // Calls onEvent(name, data) for each complete event in the stream.
  async function readEvents(response, onEvent) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    for (;;) {
      var chunk = await reader.read();
      if (chunk.done) break;
      buffer += decoder.decode(chunk.value, { stream: true });
      buffer = buffer.replace(/\r\n?/g, "\n");
      var end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        var block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        var name = "message";
        var data = [];
        block.split("\n").forEach(function (line) {
          if (line.charAt(0) === ":") return; // a comment
          var colon = line.indexOf(":");
          var field = colon < 0 ? line : line.slice(0, colon);
          var value = colon < 0 ? "" : line.slice(colon + 1);
          if (value.charAt(0) === " ") value = value.slice(1);
          if (field === "event") name = value;
          else if (field === "data") data.push(value);
        });
        if (data.length) onEvent(name, data.join("\n"));
      }
    }
  }

  async function send(event) {
    event.preventDefault();
    if (controller) return;
    errors.textContent = "";
    var text = box.value;
    var body = new FormData(form);
    var hint = document.getElementById("cm-empty-hint");
    if (hint) hint.hidden = true;
    var question = bubble("human", text);
    var reply = bubble("ai", "");
    var replyText = reply.querySelector(".cm-text");
    reply.classList.add("cm-streaming");
    var finished = false;
    var failed = null;
    stopped = false;
    controller = new AbortController();
    busy(true);
    try {
      var response = await fetch(form.dataset.streamUrl, {
        method: "POST",
        body: body,
        headers: { Accept: "text/event-stream" },
        signal: controller.signal,
        credentials: "same-origin",
      });
      var type = response.headers.get("Content-Type") || "";
      if (type.indexOf("text/event-stream") !== 0) {
        failed =
          response.status === 404
            ? "This chat no longer exists."
            : response.redirected || response.status === 403
              ? "Your login has expired: reload the page and log in again."
              : "The server answered with an error (HTTP " + response.status + ").";
      } else {
        await readEvents(response, function (name, data) {
          if (name === "token") {
            replyText.textContent += data;
            reply.scrollIntoView({ block: "end" });
          } else if (name === "done") {
            finished = true;
          } else if (name === "error") {
            failed = data;
          }
        });
        if (!finished && !failed) {
          failed = "The connection closed before the reply was complete.";
        }
      }
    } catch (err) {
      if (!stopped) {
        failed = "The connection was lost. Reload the page to see what was saved.";
      }
    }
    reply.classList.remove("cm-streaming");
    if (stopped) {
      // The server saves a stopped reply as far as it got.
      reply.classList.add("cm-interrupted");
      var flag = document.createElement("span");
      flag.className = "cm-flag";
      flag.textContent = "stopped";
      reply.appendChild(flag);
      box.value = "";
    } else if (failed) {
      // Nothing was saved: take the turn off the page, keep the text in the box.
      question.remove();
      reply.remove();
      if (hint) hint.hidden = false;
      showError(failed);
    } else {
      box.value = "";
      // The first message names an untitled chat (as the server did).
      var title = document.querySelector(".cm-title");
      if (title && title.dataset.untitled === "1") {
        title.textContent = text.trim().split(/\s+/).join(" ").slice(0, 80);
        title.dataset.untitled = "0";
      }
    }
    controller = null;
    busy(false);
    box.focus();
  }

  form.addEventListener("submit", send);
  stopButton.addEventListener("click", function () {
    if (!controller) return;
    stopped = true;
    controller.abort();
  });
  // Enter sends, Shift+Enter makes a new line.
  box.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
})();
