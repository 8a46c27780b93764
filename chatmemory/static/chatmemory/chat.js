// chatmemory: the chat page. Sends a message with fetch and shows the reply as
// it streams in (Server-Sent Events on a POST: events "token", "done", "error"),
// renders assistant replies as sanitised Markdown, keeps the view on the latest
// message, and manages the composer, copy buttons and the chat sidebar.
// Without this script the forms post normally and the page reloads.
(function () {
  "use strict";

  // Django's JavaScript catalog defines gettext; without it, English.
  var gettext = window.gettext || function (text) { return text; };
  var ngettext = window.ngettext || function (singular, plural, count) {
    return count === 1 ? singular : plural;
  };
  var interpolate = window.interpolate || function (format, values, named) {
    if (named) {
      return format.replace(/%\((\w+)\)s/g, function (match, name) { return String(values[name]); });
    }
    values = values.slice();
    return format.replace(/%s/g, function () { return String(values.shift()); });
  };

  // ---------------------------------------------------------------------
  // Markdown: markdown-it parses (raw HTML off: it shows as text), DOMPurify
  // sanitises what it produced, highlight.js colours fenced code. The same
  // function renders a reply while it streams and after a reload.

  var SAFE_URL = /^(?:https?:|mailto:|#|\/(?!\/))/i;
  var markdown = null;

  function markdownParser() {
    if (markdown || !window.markdownit) return markdown;
    markdown = window.markdownit({
      html: false,
      linkify: true,
      breaks: false,
      typographer: false,
      highlight: function (code, lang) {
        var hljs = window.hljs;
        if (hljs && lang && hljs.getLanguage(lang)) {
          try {
            return hljs.highlight(code, { language: lang, ignoreIllegals: true }).value;
          } catch (err) {
            return "";
          }
        }
        return ""; // markdown-it escapes the code itself
      },
    });
    var validate = markdown.validateLink;
    markdown.validateLink = function (url) {
      return validate(url) && SAFE_URL.test(url.trim());
    };
    // Images would load from anywhere the text says: show them as links.
    markdown.renderer.rules.image = function (tokens, index, options, env, self) {
      var token = tokens[index];
      var src = token.attrGet("src") || "";
      var alt = self.renderInlineAsText(token.children || [], options, env) || src;
      return (
        '<a href="' + markdown.utils.escapeHtml(src) + '">' +
        markdown.utils.escapeHtml(alt) + "</a>"
      );
    };
    return markdown;
  }

  var purifyReady = false;
  function purify(html) {
    var DOMPurify = window.DOMPurify;
    if (!purifyReady) {
      DOMPurify.addHook("afterSanitizeAttributes", function (node) {
        if (node.tagName === "A") {
          var href = node.getAttribute("href") || "";
          if (!SAFE_URL.test(href.trim())) node.removeAttribute("href");
          node.setAttribute("rel", "noopener noreferrer nofollow");
          node.setAttribute("target", "_blank");
        }
      });
      purifyReady = true;
    }
    return DOMPurify.sanitize(html, {
      RETURN_DOM_FRAGMENT: true,
      FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "img", "svg", "math"],
      FORBID_ATTR: ["style"],
      ALLOWED_URI_REGEXP: SAFE_URL,
    });
  }

  function copyText(text, button) {
    var done = function () {
      var label = button.textContent;
      button.textContent = gettext("Copied");
      button.classList.add("cm-copied");
      setTimeout(function () {
        button.textContent = label;
        button.classList.remove("cm-copied");
      }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { fallbackCopy(text); done(); });
    } else {
      fallbackCopy(text);
      done();
    }
  }

  function fallbackCopy(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "cm-offscreen";
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); } catch (err) { /* nothing more to try */ }
    area.remove();
  }

  function decorateCode(root) {
    root.querySelectorAll("pre").forEach(function (pre) {
      var code = pre.querySelector("code");
      if (!code) return;
      var match = /(?:^|\s)language-([\w+#.-]+)/.exec(code.className);
      code.classList.add("hljs");
      var frame = document.createElement("div");
      frame.className = "cm-code";
      var bar = document.createElement("div");
      bar.className = "cm-code-bar";
      var lang = document.createElement("span");
      lang.textContent = match ? match[1] : gettext("code");
      var button = document.createElement("button");
      button.type = "button";
      button.className = "cm-code-copy";
      button.textContent = gettext("Copy code");
      button.setAttribute("aria-label", gettext("Copy code"));
      button.addEventListener("click", function () { copyText(code.textContent, button); });
      bar.appendChild(lang);
      bar.appendChild(button);
      pre.replaceWith(frame);
      frame.appendChild(bar);
      frame.appendChild(pre);
    });
  }

  // Renders `source` as Markdown into `element` (a .cm-text), keeping the
  // source for the copy button. Falls back to plain text without the libraries.
  function renderMarkdown(element, source) {
    element.cmSource = source;
    var parser = markdownParser();
    if (!parser || !window.DOMPurify) {
      element.textContent = source;
      return;
    }
    var fragment = purify(parser.render(source));
    decorateCode(fragment);
    element.textContent = "";
    element.appendChild(fragment);
    element.classList.add("cm-md");
  }

  // ---------------------------------------------------------------------
  // Times: stored as epoch milliseconds, shown in the reader's time zone.

  var timeFormat = (function () {
    var lang = document.documentElement.lang || undefined;
    try {
      return new Intl.DateTimeFormat(lang, { dateStyle: "medium", timeStyle: "short" });
    } catch (err) {
      return null;
    }
  })();

  function showTime(element) {
    var value = element.getAttribute("datetime");
    var date = value ? new Date(value) : null;
    if (!date || isNaN(date.getTime()) || !timeFormat) return;
    element.textContent = timeFormat.format(date);
  }

  function timeElement(date) {
    var time = document.createElement("time");
    time.className = "cm-time";
    time.setAttribute("datetime", date.toISOString());
    showTime(time);
    return time;
  }

  // ---------------------------------------------------------------------
  // Per-message tools: copy on every message (see below).

  function messageSource(item) {
    var text = item.querySelector(".cm-text");
    if (!text) return "";
    return text.cmSource !== undefined ? text.cmSource : text.textContent;
  }

  function addTools(item) {
    if (item.querySelector(".cm-tools")) return;
    var tools = document.createElement("div");
    tools.className = "cm-tools";
    var copy = document.createElement("button");
    copy.type = "button";
    copy.className = "cm-tool cm-copy";
    copy.textContent = gettext("Copy");
    copy.setAttribute("aria-label", item.classList.contains("cm-ai")
      ? gettext("Copy this reply") : gettext("Copy this message"));
    copy.addEventListener("click", function () {
      // A reply made only of tool calls copies what it shows of them.
      var calls = [];
      item.querySelectorAll(".cm-calls > li").forEach(function (call) {
        calls.push(call.textContent);
      });
      copyText(messageSource(item) || calls.join("\n"), copy);
    });
    tools.appendChild(copy);
    item.appendChild(tools);
  }

  // Everything above works on any page that shows messages.
  document.querySelectorAll("time.cm-time").forEach(showTime);
  document.querySelectorAll(".cm-transcript .cm-msg").forEach(function (item) {
    if (item.classList.contains("cm-ai")) {
      var text = item.querySelector(".cm-text");
      if (text) renderMarkdown(text, text.textContent);
    }
    // Every message (system, tool and other notes too), not an unreadable
    // entry (its text only says it is one) nor the empty chat's hint.
    if (!item.classList.contains("cm-unreadable") && !item.classList.contains("cm-hint")) {
      addTools(item);
    }
  });

  // ---------------------------------------------------------------------
  // The sidebar: search all my chats by title (on the server, which reads a
  // bounded number of chats per request: "Search older chats" goes on);
  // rename in place.

  var search = document.getElementById("cm-chat-search");
  if (search && window.fetch) {
    var chatList = document.getElementById("cm-chat-list");
    var moreLink = document.querySelector(".cm-sidebar .cm-more");
    var results = document.getElementById("cm-search-results");
    var resultList = document.getElementById("cm-search-list");
    var searchStatus = document.getElementById("cm-search-status");
    var searchMore = document.getElementById("cm-search-more");
    var searchTimer = null;
    var searchNumber = 0;
    var searchNext = null;
    var found = 0;

    var showList = function (on) {
      chatList.hidden = !on;
      if (moreLink) moreLink.hidden = !on;
      results.hidden = on;
    };

    // Says what was searched: all my chats, or (with more to read) how many;
    // and when a window found more chats than it lists, that it did.
    var searchStatusText = function (answer) {
      var text;
      if (answer.next === null) {
        text = found
          ? interpolate(ngettext("%s chat found.", "%s chats found.", found), [found])
          : gettext("No chat has that title.");
      } else {
        text = interpolate(
          ngettext(
            "%(found)s chat found in your %(searched)s most recent chats (of %(total)s).",
            "%(found)s chats found in your %(searched)s most recent chats (of %(total)s).",
            found
          ),
          { found: found, searched: answer.searched, total: answer.total },
          true
        );
      }
      if (answer.found > answer.results.length) {
        text += " " + interpolate(
          gettext("Only the first %(listed)s of the %(found)s found last are listed: type more of the title."),
          { listed: answer.results.length, found: answer.found },
          true
        );
      }
      return text;
    };

    var runSearch = function (from) {
      var needle = search.value;
      var number = ++searchNumber;
      var url = search.dataset.searchUrl + "?q=" + encodeURIComponent(needle) + "&from=" + from;
      searchMore.hidden = true;
      if (!from) searchStatus.textContent = gettext("Searching\u2026");
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          return response.json().then(function (answer) {
            if (!response.ok) throw new Error(answer.error || response.status);
            return answer;
          });
        })
        .then(function (answer) {
          if (number !== searchNumber) return; // a newer search replaced this one
          if (!from) {
            resultList.textContent = "";
            found = 0;
          }
          answer.results.forEach(function (chat) {
            var item = document.createElement("li");
            var link = document.createElement("a");
            link.href = chat.url;
            link.textContent = chat.title;
            item.appendChild(link);
            resultList.appendChild(item);
          });
          found += answer.found;
          searchNext = answer.next;
          searchMore.hidden = searchNext === null;
          searchStatus.textContent = searchStatusText(answer);
        })
        .catch(function (err) {
          if (number !== searchNumber) return;
          searchStatus.textContent = err && err.message && !/^\d+$/.test(err.message)
            ? err.message : gettext("The search failed: try again.");
        });
    };

    search.addEventListener("input", function () {
      clearTimeout(searchTimer);
      if (!search.value.trim()) {
        searchNumber += 1; // answers still on their way are dropped
        showList(true);
        return;
      }
      showList(false);
      searchTimer = setTimeout(function () { runSearch(0); }, 200);
    });
    search.addEventListener("keydown", function (event) {
      if (event.key === "Enter") {
        event.preventDefault();
        clearTimeout(searchTimer);
        if (search.value.trim()) runSearch(0);
      }
    });
    searchMore.addEventListener("click", function () {
      if (searchNext !== null) runSearch(searchNext);
    });
  }
  document.querySelectorAll(".cm-chat-rename").forEach(function (button) {
    button.addEventListener("click", function () {
      var item = button.closest("li");
      var panel = item.querySelector(".cm-rename-inline");
      panel.hidden = !panel.hidden;
      button.setAttribute("aria-expanded", String(!panel.hidden));
      if (!panel.hidden) {
        var input = panel.querySelector("input[name=title]");
        input.focus();
        input.select();
      }
    });
  });
  document.querySelectorAll(".cm-rename-inline").forEach(function (panel) {
    panel.addEventListener("keydown", function (event) {
      if (event.key === "Escape") {
        panel.hidden = true;
        var button = panel.closest("li").querySelector(".cm-chat-rename");
        button.setAttribute("aria-expanded", "false");
        button.focus();
      }
    });
  });
  document.querySelectorAll(".cm-chat-delete").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      var title = form.dataset.title || gettext("Untitled chat");
      if (!window.confirm(interpolate(gettext("Delete \u201c%s\u201d and all its messages?"), [title]))) {
        event.preventDefault();
      }
    });
  });
  var sidebarToggle = document.getElementById("cm-sidebar-toggle");
  if (sidebarToggle) {
    sidebarToggle.addEventListener("click", function () {
      var open = document.body.classList.toggle("cm-sidebar-open");
      sidebarToggle.setAttribute("aria-expanded", String(open));
    });
  }

  // ---------------------------------------------------------------------
  // The chat itself.

  var form = document.getElementById("cm-compose");
  if (!form || !window.fetch || !window.AbortController || !window.TextDecoder) {
    return;
  }
  var box = form.querySelector("textarea");
  var scroller = document.getElementById("cm-scroll");
  var transcript = document.getElementById("cm-transcript");
  var errors = document.getElementById("cm-errors");
  var typing = document.getElementById("cm-typing");
  var announcer = document.getElementById("cm-announce");
  var sendButton = document.getElementById("cm-send");
  var stopButton = document.getElementById("cm-stop");
  var jumpButton = document.getElementById("cm-jump");
  var controller = null;
  var stopped = false;

  // --- Scrolling: follow the newest text unless the reader scrolled up.

  var follow = true;
  function atBottom() {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 24;
  }
  function toBottom() {
    scroller.scrollTop = scroller.scrollHeight;
    follow = true;
    jumpButton.hidden = true;
  }
  function contentGrew() {
    if (follow) toBottom();
    else jumpButton.hidden = false;
  }
  scroller.addEventListener("scroll", function () {
    follow = atBottom();
    if (follow) jumpButton.hidden = true;
  }, { passive: true });
  jumpButton.addEventListener("click", function () {
    toBottom();
    box.focus();
  });
  // The composer growing (or the window shrinking) takes room from the
  // transcript: stay at the bottom when we were there.
  if (window.ResizeObserver) {
    new ResizeObserver(function () { if (follow) toBottom(); }).observe(scroller);
  }
  toBottom(); // a chat opens at its latest message

  // --- The composer: grows with its text, Enter sends, Esc stops.

  function fitBox() {
    box.style.height = "auto";
    var limit = parseFloat(getComputedStyle(box).maxHeight) || 240;
    box.style.height = Math.min(box.scrollHeight + 2, limit) + "px";
    box.style.overflowY = box.scrollHeight + 2 > limit ? "auto" : "hidden";
  }
  // Our own message for an empty box, in the page's language, in the errors area.
  form.noValidate = true;
  box.setAttribute("rows", "1");
  box.removeAttribute("autofocus");
  box.addEventListener("input", fitBox);
  fitBox();
  box.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (!controller) form.requestSubmit();
    }
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && controller) {
      event.preventDefault();
      stop();
    }
  });

  function announce(text) {
    // One message per event: screen readers read the region's new text once.
    announcer.textContent = "";
    setTimeout(function () { announcer.textContent = text; }, 50);
  }

  function bubble(role, text) {
    var item = document.createElement("li");
    item.className = "cm-msg cm-" + role;
    var meta = document.createElement("div");
    meta.className = "cm-meta";
    var who = document.createElement("span");
    who.className = "cm-who";
    who.textContent = role === "human" ? gettext("You") : gettext("Assistant");
    meta.appendChild(who);
    meta.appendChild(timeElement(new Date()));
    var body = document.createElement("div");
    body.className = "cm-text";
    if (role === "ai") renderMarkdown(body, text);
    else body.textContent = text; // text, never HTML
    item.appendChild(meta);
    item.appendChild(body);
    transcript.appendChild(item);
    return item;
  }

  // A reply's tool calls, as the page shows them after a reload.
  function showToolCalls(item, calls) {
    var old = item.querySelector(".cm-calls");
    if (old) old.remove();
    if (!calls || !calls.length) return;
    var list = document.createElement("ul");
    list.className = "cm-calls";
    calls.forEach(function (call) {
      var entry = document.createElement("li");
      // The call's name and arguments go in as text, never as HTML.
      gettext("Called tool %(name)s with %(arguments)s")
        .split(/(%\((?:name|arguments)\)s)/)
        .forEach(function (part) {
          var field = /^%\((name|arguments)\)s$/.exec(part);
          if (field) {
            var code = document.createElement("code");
            code.textContent = String(call[field[1]]);
            entry.appendChild(code);
          } else if (part) {
            entry.appendChild(document.createTextNode(part));
          }
        });
      list.appendChild(entry);
    });
    item.querySelector(".cm-text").after(list);
  }

  // Marks a reply as stopped, as the page shows a stopped reply after a reload.
  function flagStopped(reply) {
    var flag = reply.querySelector(".cm-flag");
    if (!flag) {
      flag = document.createElement("span");
      flag.className = "cm-flag";
      flag.textContent = gettext("stopped");
      (reply.querySelector(".cm-calls") || reply.querySelector(".cm-text")).after(flag);
    }
    flag.hidden = false;
    reply.classList.add("cm-interrupted");
  }

  // What a message says, for screen readers: its text, then its tool calls.
  function messageWords(item) {
    var parts = [];
    item.querySelectorAll(".cm-text, .cm-calls li").forEach(function (part) {
      var text = part.textContent.trim();
      if (text) parts.push(text);
    });
    return parts.join(" ");
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
    sendButton.hidden = on;
    form.classList.toggle("cm-busy", on);
    transcript.setAttribute("aria-busy", String(on));
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

  // A turn was saved: this chat is now my most recent one (first in the
  // sidebar, shown there if it was not), and named by the store from its
  // first message if it had no title: the heading, the tab and the sidebar
  // show that saved title.
  function chatStored(title) {
    var entry = document.querySelector("#cm-chat-list > li.cm-current");
    if (entry) {
      entry.hidden = false;
      entry.parentNode.prepend(entry);
    }
    var heading = document.querySelector(".cm-title");
    if (!title || !heading || heading.dataset.untitled !== "1") return;
    heading.textContent = title;
    heading.dataset.untitled = "0";
    document.title = title;
    var rename = document.querySelector(".cm-rename input[name=title]");
    if (rename && !rename.value) rename.value = title;
    if (!entry || entry.dataset.title) return;
    entry.dataset.title = title;
    entry.querySelector(".cm-chat-link").textContent = title;
    entry.querySelector(".cm-chat-delete").dataset.title = title;
    entry.querySelector(".cm-rename-inline input[name=title]").value = title;
    entry.querySelector(".cm-chat-rename").setAttribute(
      "aria-label", interpolate(gettext("Rename \u201c%s\u201d"), [title]));
    entry.querySelector(".cm-chat-delete button").setAttribute(
      "aria-label", interpolate(gettext("Delete \u201c%s\u201d"), [title]));
  }

  function stop() {
    if (!controller) return;
    stopped = true;
    controller.abort();
  }

  function turnId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID().replace(/-/g, "");
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) {
      return (b < 16 ? "0" : "") + b.toString(16);
    }).join("");
  }

  // Tells the server what the page showed when the user stopped the reply,
  // so the saved reply is exactly that text.
  function reportStop(turn, shown) {
    var url = form.dataset.stopUrl;
    if (!url) return Promise.resolve();
    var body = new FormData();
    body.append("csrfmiddlewaretoken", form.querySelector("[name=csrfmiddlewaretoken]").value);
    body.append("turn", turn);
    body.append("shown", shown);
    return fetch(url, { method: "POST", body: body, credentials: "same-origin" })
      .catch(function () { /* the saved reply then keeps what the server had */ });
  }

  // The last turn's tools: regenerate or continue the reply, edit the question.
  function lastTurn() {
    var items = transcript.querySelectorAll(".cm-msg");
    var reply = items[items.length - 1];
    var question = items[items.length - 2];
    if (!reply || !question || !reply.classList.contains("cm-ai") || !question.classList.contains("cm-human")) {
      return null;
    }
    return { question: question, reply: reply };
  }

  function toolButton(item, className, label, name, onClick) {
    var tools = item.querySelector(".cm-tools");
    if (!tools) return;
    var button = document.createElement("button");
    button.type = "button";
    button.className = "cm-tool cm-turn-tool " + className;
    button.textContent = label;
    button.setAttribute("aria-label", name);
    button.addEventListener("click", onClick);
    tools.appendChild(button);
  }

  function refreshTurnTools() {
    transcript.querySelectorAll(".cm-turn-tool").forEach(function (button) { button.remove(); });
    var turn = lastTurn();
    if (!turn || controller || !form.dataset.stopUrl) return;
    toolButton(turn.reply, "cm-regenerate", gettext("Regenerate"), gettext("Regenerate this reply"), function () {
      runTurn({ action: "regenerate", text: messageSource(turn.question), question: turn.question, old: turn.reply });
    });
    if (turn.reply.classList.contains("cm-interrupted")) {
      toolButton(turn.reply, "cm-continue", gettext("Continue"), gettext("Continue this reply"), function () {
        runTurn({ action: "continue", text: messageSource(turn.question), question: turn.question, old: turn.reply });
      });
    }
    toolButton(turn.question, "cm-edit", gettext("Edit"), gettext("Edit this message"), function () {
      editQuestion(turn);
    });
  }

  // Opens the editor on the last question, holding `draft` if given (an
  // edit that failed comes back to the editor with its text).
  function editQuestion(turn, draft) {
    var text = turn.question.querySelector(".cm-text");
    var editor = document.createElement("form");
    editor.className = "cm-editor";
    var area = document.createElement("textarea");
    area.value = draft === undefined ? messageSource(turn.question) : draft;
    area.setAttribute("aria-label", gettext("Edit this message"));
    area.rows = Math.min(8, area.value.split("\n").length + 1);
    var save = document.createElement("button");
    save.type = "submit";
    save.className = "cm-button cm-primary";
    save.textContent = gettext("Send");
    var cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "cm-button";
    cancel.textContent = gettext("Cancel");
    var row = document.createElement("div");
    row.className = "cm-editor-actions";
    row.appendChild(cancel);
    row.appendChild(save);
    editor.appendChild(area);
    editor.appendChild(row);
    text.hidden = true;
    turn.question.querySelector(".cm-tools").hidden = true;
    text.after(editor);
    area.focus();
    function close() {
      editor.remove();
      text.hidden = false;
      turn.question.querySelector(".cm-tools").hidden = false;
    }
    cancel.addEventListener("click", function () { close(); refreshTurnTools(); });
    area.addEventListener("keydown", function (event) {
      if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        close();
      } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        editor.requestSubmit();
      }
    });
    editor.addEventListener("submit", function (event) {
      event.preventDefault();
      var edited = area.value;
      if (!edited.trim()) return;
      close();
      runTurn({ action: "edit", text: edited, question: turn.question, old: turn.reply });
    });
  }

  function send(event) {
    event.preventDefault();
    if (controller) return;
    var text = box.value;
    if (!text.trim()) {
      showError(gettext("Type a message first: it is empty."));
      return;
    }
    var hint = document.getElementById("cm-empty-hint");
    if (hint) hint.remove();
    // The box is free again at once: what is typed during the reply stays.
    box.value = "";
    fitBox();
    runTurn({ action: "", text: text });
  }

  // Runs one turn. action "" sends `text` as a new question; "edit" replaces
  // the last question with `text`; "regenerate" and "continue" redo or extend
  // the last reply. The server replaces the old turn only when the new one is
  // saved; until then (and on failure) the page shows the old one.
  async function runTurn(options) {
    if (controller) return;
    errors.textContent = "";
    var action = options.action;
    var text = options.text;
    var body = new FormData(form);
    body.set("message", text);
    var turn = turnId();
    body.append("turn", turn);
    if (action) body.append("action", action);
    var question = options.question;
    var oldQuestionText = question ? messageSource(question) : null;
    var reply;
    var base = "";
    if (action === "") {
      question = bubble("human", text);
      reply = bubble("ai", "");
    } else if (action === "continue") {
      reply = options.old;
      base = messageSource(reply);
      var oldFlag = reply.querySelector(".cm-flag");
      if (oldFlag) oldFlag.hidden = true;
    } else {
      if (action === "edit") question.querySelector(".cm-text").textContent = text;
      options.old.hidden = true;
      reply = bubble("ai", "");
    }
    var replyText = reply.querySelector(".cm-text");
    reply.classList.add("cm-streaming");
    toBottom();
    var shown = base;
    var received = base;
    var painting = false;
    function paint() {
      painting = false;
      // After Stop the page shows nothing more: what it showed is what is saved.
      if (stopped || shown === received) return;
      shown = received;
      renderMarkdown(replyText, shown);
      contentGrew();
    }
    var finished = null;
    var failed = null;
    var redraft = null;
    stopped = false;
    controller = new AbortController();
    busy(true);
    refreshTurnTools();
    announce(gettext("The assistant is typing\u2026"));
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
            ? gettext("This chat no longer exists.")
            : response.redirected || response.status === 403
              ? gettext("Your login has expired: reload the page and log in again.")
              : interpolate(gettext("The server answered with an error (HTTP %s)."), [response.status]);
      } else {
        await readEvents(response, function (name, data) {
          if (stopped) return; // nothing arriving after Stop is shown
          if (name === "token") {
            received += data;
            if (!painting) {
              painting = true;
              requestAnimationFrame(paint);
            }
          } else if (name === "done") {
            try { finished = JSON.parse(data); } catch (err) { finished = {}; }
          } else if (name === "error") {
            failed = data;
          }
        });
        if (!finished && !failed && !stopped) {
          failed = gettext("The connection closed before the reply was complete.");
        }
      }
    } catch (err) {
      if (!stopped) {
        failed = gettext("The connection was lost. Reload the page to see what was saved.");
      }
    }
    reply.classList.remove("cm-streaming");
    var flag = reply.querySelector(".cm-flag");
    if (stopped) {
      // What the user saw is what the reply is: the page says so to the server.
      renderMarkdown(replyText, shown);
      flagStopped(reply);
      if (options.old && options.old !== reply) options.old.remove();
      addTools(question);
      addTools(reply);
      announce(gettext("Reply stopped."));
      await reportStop(turn, shown);
    } else if (failed) {
      // Nothing was saved: the page shows the old turn again.
      if (action === "") {
        question.remove();
        reply.remove();
        box.value = box.value ? text + "\n\n" + box.value : text;
        fitBox();
      } else if (action === "continue") {
        renderMarkdown(replyText, base);
        if (flag) flag.hidden = false;
      } else {
        reply.remove();
        options.old.hidden = false;
        question.querySelector(".cm-text").textContent = oldQuestionText;
        // The edited text is not lost: the editor opens again with it.
        if (action === "edit") redraft = text;
      }
      showError(failed);
    } else {
      renderMarkdown(replyText, received);
      showToolCalls(reply, finished.tool_calls);
      if (finished.stopped) {
        flagStopped(reply); // cut at the server's time limit, saved as stopped
      } else {
        if (flag) flag.remove();
        reply.classList.remove("cm-interrupted");
      }
      if (options.old && options.old !== reply) options.old.remove();
      addTools(question);
      addTools(reply);
      chatStored(finished.title);
      announce(interpolate(
        finished.stopped
          ? gettext("The reply took too long and was stopped: %s")
          : gettext("The assistant replied: %s"),
        [messageWords(reply)]
      ));
    }
    contentGrew();
    controller = null;
    busy(false);
    refreshTurnTools();
    var again = redraft !== null && lastTurn();
    if (again) editQuestion(again, redraft);
    else box.focus();
  }

  refreshTurnTools();
  form.addEventListener("submit", send);
  stopButton.addEventListener("click", stop);
})();
