// runbot's console script: keeps the front page live from /api/events, runs the command bar,
// the buttons and prompts, and shows times as "3m ago". No build step, no dependency. Every
// fragment it inserts was rendered (and escaped) by the server.
"use strict";
(function () {
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  function ago(iso) {
    var t = Date.parse(iso);
    if (isNaN(t)) return iso;
    var s = Math.round((Date.now() - t) / 1000), future = s < 0;
    s = Math.abs(s);
    var text = s < 60 ? s + "s" : s < 3600 ? Math.floor(s / 60) + "m"
      : s < 86400 ? Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m"
      : Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
    return future ? "in " + text : text + " ago";
  }
  function times(root) {
    (root || document).querySelectorAll("time[datetime]").forEach(function (el) {
      el.title = el.getAttribute("datetime");
      el.textContent = ago(el.getAttribute("datetime"));
    });
  }
  function fragment(html) {
    var t = document.createElement("template");
    t.innerHTML = html.trim();
    return t.content.firstElementChild;
  }

  // The server's answer to a change, whatever the status: JSON with either html or error.
  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body || {})
    }).then(function (r) {
      return r.json().catch(function () { return { error: "HTTP " + r.status }; })
        .then(function (j) { j.status = r.status; return j; });
    }, function () { return { error: "runbot did not answer: check the connection and try again" }; });
  }

  var results = document.getElementById("results");
  function showAnswer(a) {
    if (!results) return;
    var el;
    if (a.html) {
      el = fragment(a.html);
    } else {
      el = document.createElement("div");
      el.className = "result refused";
      var p = document.createElement("div");
      p.textContent = "🚫 " + (a.error || "runbot refused the request");
      el.appendChild(p);
    }
    var id = el.getAttribute("data-request");
    var old = id && results.querySelector('.result[data-request="' + CSS.escape(id) + '"]');
    if (old) old.replaceWith(el); else results.prepend(el);
    while (results.children.length > 30) results.lastElementChild.remove();
    times(el);
  }

  function showCard(data) {
    var el = fragment(data.html);
    var old = document.getElementById(el.id);
    if (old) old.remove();
    var list = document.getElementById(data.resolved ? "resolved-cards" : "open-cards");
    if (!list) return;
    if (data.resolved) {
      list.prepend(el);
      while (list.children.length > 20) list.lastElementChild.remove();
    } else {
      var rank = el.getAttribute("data-rank"), before = null;
      for (var i = 0; i < list.children.length; i++) {
        if (list.children[i].getAttribute("data-rank") > rank) { before = list.children[i]; break; }
      }
      list.insertBefore(el, before);
    }
    var none = document.getElementById("no-open");
    var open = document.getElementById("open-cards");
    if (none && open) none.hidden = open.children.length > 0;
    times(el);
  }

  function showActivity(data) {
    var list = document.getElementById("activity");
    if (!list) return;
    var el = fragment(data.html);
    list.prepend(el);
    while (list.children.length > 50) list.lastElementChild.remove();
    times(el);
  }

  // Pages for the person signed in: a badge counting the unread ones, and the browser's
  // notification where it is permitted (asked for on a click, never on load).
  var badge = document.getElementById("pages-badge"), unread = 0, lastPage = null;
  function showBadge() {
    if (!badge) return;
    badge.hidden = unread === 0;
    var count = document.getElementById("pages-count");
    if (count) count.textContent = String(unread);
  }
  function openPage(url) { unread = 0; showBadge(); if (url) location.href = url; }
  function showPage(data) {
    unread += 1; lastPage = data; showBadge(); showActivity(data);
    if (window.Notification && Notification.permission === "granted") {
      try {
        var n = new Notification(data.title || "runbot: you are paged", {
          body: [data.summary, data.reason].filter(Boolean).join("\n"),
          tag: "runbot-page-" + data.page_id
        });
        n.onclick = function () { window.focus(); n.close(); openPage(data.url); };
      } catch (_) { /* some browsers allow notifications only from a service worker */ }
    }
  }
  if (badge) badge.addEventListener("click", function (e) { e.preventDefault(); openPage(lastPage && lastPage.url); });
  var ask = document.getElementById("notify-pages");
  if (ask && window.Notification && Notification.permission === "default") {
    ask.hidden = false;
    ask.addEventListener("click", function () {
      Notification.requestPermission().then(function () { ask.hidden = true; });
    });
  }
  document.addEventListener("click", function (e) {
    if (e.target.closest("a[data-page]")) { unread = 0; showBadge(); }
  });

  // The live feed. The browser reconnects by itself after a dropped stream (sending the last
  // id it saw); after a refusal (a 401 once the session is over, a 503 while the database is
  // away) it gives up for good, so the page opens a new stream itself, later each time, from
  // the last id it saw, or reloads, which lands on the sign-in page when that is the reason.
  var live = document.getElementById("live");
  if (live && window.EventSource) {
    var status = document.getElementById("connection");
    var say = function (t) { if (status) status.textContent = t; };
    var last = live.getAttribute("data-after") || "0", wait = 1000;
    var parse = function (e) { if (e.lastEventId) last = e.lastEventId; try { return JSON.parse(e.data); } catch (_) { return null; } };
    var open = function () {
      var source = new EventSource("/api/events?after=" + encodeURIComponent(last));
      source.addEventListener("hello", function (e) { parse(e); wait = 1000; say("Live"); live.setAttribute("data-connected", "true"); });
      source.addEventListener("card", function (e) { var d = parse(e); if (d) showCard(d); });
      source.addEventListener("reply", function (e) { var d = parse(e); if (d) showAnswer(d); });
      source.addEventListener("announcement", function (e) { var d = parse(e); if (d) showActivity(d); });
      source.addEventListener("page", function (e) { var d = parse(e); if (d) showPage(d); });
      source.addEventListener("resync", function () { location.reload(); });
      source.addEventListener("signed-out", function () { source.close(); location.reload(); });
      source.onerror = function () {
        live.setAttribute("data-connected", "false");
        if (source.readyState !== EventSource.CLOSED) { say("Reconnecting…"); return; }
        say("Disconnected: trying again in " + Math.round(wait / 1000) + " s…");
        setTimeout(function () {
          // A quick look first: signed out means the sign-in page, not a silent retry.
          fetch("/api/commands", { credentials: "same-origin" }).then(function (r) {
            if (r.status === 401) location.reload(); else open();
          }, open);
        }, wait);
        wait = Math.min(wait * 2, 30000);
      };
    };
    open();
  }

  // Buttons: a card's actions, a prompt's answers, command buttons in answers.
  document.addEventListener("click", function (e) {
    var b = e.target.closest("button[data-button], button[data-prompt], button[data-copy]");
    if (!b) return;
    if (b.hasAttribute("data-copy")) {
      var src = document.getElementById(b.getAttribute("data-copy"));
      if (src && navigator.clipboard) navigator.clipboard.writeText(src.value || src.textContent)
        .then(function () { b.textContent = "Copied"; });
      else if (src) { src.select(); document.execCommand("copy"); }
      return;
    }
    b.disabled = true;
    var done = function (a) { b.disabled = false; showAnswer(a); };
    if (b.hasAttribute("data-prompt")) {
      post("/api/prompts/" + encodeURIComponent(b.getAttribute("data-prompt")) + "/" +
        encodeURIComponent(b.getAttribute("data-verb"))).then(done);
    } else {
      post("/api/buttons", { id: b.getAttribute("data-button") }).then(done);
    }
  });

  // The command bar, with completion from /api/commands.
  var bar = document.getElementById("command-bar");
  if (bar) {
    var input = document.getElementById("command"), list = document.getElementById("command-list");
    var help = document.getElementById("command-help"), catalog = [];
    fetch("/api/commands", { credentials: "same-origin" }).then(function (r) { return r.ok ? r.json() : []; })
      .then(function (c) { catalog = c; complete(); });
    var complete = function () {
      var text = input.value.replace(/^\s+/, ""), name = text.replace(/^\//, "").split(/\s/)[0];
      var spec = catalog.filter(function (c) { return c.name === name; })[0];
      var options = [];
      if (!spec || text.indexOf(" ") < 0) {
        catalog.forEach(function (c) { options.push(["/" + c.name + " ", c.description]); });
      } else {
        var base = text.replace(/\S*$/, "");
        spec.options.forEach(function (o) {
          if (text.indexOf(" " + o.name + ":") >= 0) return;
          if (o.choices.length) o.choices.forEach(function (v) { options.push([base + o.name + ":" + v + " ", o.description]); });
          else options.push([base + o.name + ":", o.description + " (" + o.type + ")"]);
        });
      }
      list.replaceChildren.apply(list, options.slice(0, 50).map(function (o) {
        var opt = document.createElement("option");
        opt.value = o[0]; opt.label = o[1];
        return opt;
      }));
      if (help) help.textContent = spec ? spec.usage + " — " + spec.description : "";
    };
    input.addEventListener("input", complete);
    bar.addEventListener("submit", function (e) {
      e.preventDefault();
      var text = input.value.trim();
      if (!text) return;
      var go = bar.querySelector("button[type=submit]");
      go.disabled = true;
      post("/api/commands", { command: text }).then(function (a) {
        go.disabled = false;
        showAnswer(a);
        if (!a.error) { input.value = ""; complete(); }
      });
    });
  }

  times();
  setInterval(times, 30000);
})();
