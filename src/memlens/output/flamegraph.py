# SPDX-License-Identifier: GPL-2.0-only
"""A self-contained HTML flame graph (`--html`): one file, no network, no dependency.

The stack tree is built here and embedded as JSON in a `<script type="application/json">`
block; a small inline script lays it out as absolutely positioned divs (root at the
bottom, as flamegraph.pl draws), with a tooltip, click to zoom and a search box.  Frame
names are attacker-controlled (a process names its own functions and comm), so the JSON
has `<`, `>` and `&` escaped (no `</script>` can end the block early) and the script only
ever assigns them through textContent.
"""
from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, Union

from memlens.output.files import OutputFile, write_file_atomic
from memlens.output.folded import Entry, fold

Folded = Union[Mapping[str, int], Iterable[Entry]]


def build_tree(folded: Mapping[str, int]) -> dict[str, Any]:
    """{"n": name, "v": total, "c": [children sorted by name]} rooted at "all"."""
    root: dict[str, Any] = {"n": "all", "v": 0, "c": {}}
    for stack, count in folded.items():
        node = root
        node["v"] += count
        for frame in stack.split(";"):
            node = node["c"].setdefault(frame, {"n": frame, "v": 0, "c": {}})
            node["v"] += count

    def finish(node: dict[str, Any]) -> dict[str, Any]:
        children = [finish(node["c"][k]) for k in sorted(node["c"])]
        out = {"n": node["n"], "v": node["v"]}
        if children:
            out["c"] = children
        return out

    return finish(root)


def _script_json(data: Any) -> str:
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_html(folded: Folded, title: str = "Flame Graph", count_name: str = "bytes") -> str:
    """Return the HTML page for folded stacks ({stack: count}) or (prefix, stack, count) entries."""
    if not isinstance(folded, Mapping):
        folded = fold(folded)
    data = {"title": title, "count_name": count_name, "root": build_tree(folded)}
    fields = {"TITLE": html.escape(title), "DATA": _script_json(data)}
    # One pass, so a title containing "@DATA@" is not expanded a second time.
    return re.sub(r"@(TITLE|DATA)@", lambda m: fields[m[1]], _TEMPLATE)


def write_html(path: str | os.PathLike[str] | OutputFile, folded: Folded,
               title: str = "Flame Graph", count_name: str = "bytes") -> None:
    """Write the flame graph page to `path`."""
    write_file_atomic(path, render_html(folded, title, count_name).encode("utf-8"))


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>@TITLE@</title>
<style>
body { font: 12px Verdana, sans-serif; margin: 10px; background: #f8f8f8; color: #000; }
h1 { font-size: 17px; text-align: center; margin: 4px 0; }
#bar { display: flex; gap: 8px; align-items: center; margin: 6px 0; }
#bar input { flex: 0 1 240px; }
#status { margin-left: auto; }
#graph { position: relative; width: 100%; overflow: hidden; }
.f { position: absolute; height: 15px; box-sizing: border-box; border: 1px solid #f8f8f8;
     overflow: hidden; white-space: nowrap; text-overflow: ellipsis; padding: 0 2px;
     line-height: 13px; font-size: 11px; cursor: pointer; border-radius: 2px; }
.f:hover { border-color: #000; }
.f.dim { opacity: 0.45; }
.f.hit { background: #e060e0 !important; }
#tip { position: fixed; display: none; pointer-events: none; background: #fffbe6;
       border: 1px solid #888; padding: 4px 6px; max-width: 60%; word-break: break-all;
       box-shadow: 2px 2px 4px rgba(0,0,0,.2); }
#detail { min-height: 16px; margin-top: 6px; font-family: monospace; word-break: break-all; }
</style>
</head>
<body>
<h1 id="title"></h1>
<div id="bar">
<button id="reset" type="button">Reset zoom</button>
<input id="search" type="search" placeholder="Search (regex)" aria-label="search frames">
<span id="status"></span>
</div>
<div id="graph"></div>
<div id="detail"></div>
<div id="tip"></div>
<script type="application/json" id="flamedata">@DATA@</script>
<script>
"use strict";
(function () {
  var data = JSON.parse(document.getElementById("flamedata").textContent);
  var root = data.root, unit = data.count_name;
  var graph = document.getElementById("graph"), tip = document.getElementById("tip");
  var detail = document.getElementById("detail"), status = document.getElementById("status");
  var search = document.getElementById("search");
  var ROW = 16, MIN_PCT = 0.05;
  var zoomed = root, pattern = null;
  document.getElementById("title").textContent = data.title;
  document.title = data.title;

  // Parent links and depth let a zoom keep the zoomed frame's ancestors visible.
  var maxDepth = 0;
  (function link(node, parent, depth) {
    node.p = parent; node.d = depth;
    if (depth > maxDepth) maxDepth = depth;
    (node.c || []).forEach(function (c) { link(c, node, depth + 1); });
  })(root, null, 0);

  function hash(s) {
    var h = 2166136261;
    for (var i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 16777619); }
    return (h >>> 0) / 4294967296;
  }
  // Memory palette (flamegraph.pl --colors=mem) for user frames, warm for kernel, grey
  // for placeholders; colour is a function of the name so it is stable across renders.
  function color(name) {
    var v = hash(name);
    if (/^\\[missed|^\\[unknown/.test(name)) return "rgb(190,190,190)";
    if (/_\\[k\\]$|\\[kernel\\]$/.test(name))
      return "rgb(230," + (120 + Math.round(80 * v)) + ",50)";
    return "rgb(" + Math.round(40 + 60 * v) + "," + Math.round(170 + 60 * v) + "," +
      Math.round(60 + 60 * (1 - v)) + ")";
  }
  function fmt(n) { return n.toString().replace(/\\B(?=(\\d{3})+(?!\\d))/g, ","); }
  function describe(node) {
    var pct = root.v ? (100 * node.v / root.v) : 0;
    return node.n + " (" + fmt(node.v) + " " + unit + ", " + pct.toFixed(2) + "%)";
  }
  function matches(node) {
    try { return pattern !== null && pattern.test(node.n); } catch (e) { return false; }
  }

  function draw() {
    graph.textContent = "";
    graph.style.height = ((maxDepth + 1) * ROW) + "px";
    var frag = document.createDocumentFragment();
    function box(node, x, w) {
      var el = document.createElement("div");
      el.className = "f";
      if (node.d < zoomed.d) el.className += " dim";
      if (matches(node)) el.className += " hit";
      el.style.left = x + "%";
      el.style.width = w + "%";
      el.style.top = ((maxDepth - node.d) * ROW) + "px";
      el.style.background = color(node.n);
      el.textContent = node.n;
      el.flameNode = node;
      frag.appendChild(el);
    }
    for (var a = zoomed.p; a; a = a.p) box(a, 0, 100);
    (function place(node, x, w) {
      box(node, x, w);
      var cx = x;
      (node.c || []).forEach(function (c) {
        var cw = w * c.v / node.v;
        if (cw >= MIN_PCT) place(c, cx, cw);
        cx += cw;
      });
    })(zoomed, 0, 100);
    graph.appendChild(frag);
    updateStatus();
  }

  function updateStatus() {
    if (pattern === null) { status.textContent = ""; return; }
    // Count each matched subtree once: below a match, nested matches are already inside.
    var total = 0;
    (function walk(node) {
      if (matches(node)) { total += node.v; return; }
      (node.c || []).forEach(walk);
    })(root);
    var pct = root.v ? (100 * total / root.v) : 0;
    status.textContent = "Matched: " + fmt(total) + " " + unit + " (" + pct.toFixed(2) + "%)";
  }

  graph.addEventListener("mousemove", function (ev) {
    var node = ev.target.flameNode;
    if (!node) { tip.style.display = "none"; return; }
    tip.textContent = describe(node);
    tip.style.display = "block";
    var left = ev.clientX + 12, top = ev.clientY + 12;
    if (left + tip.offsetWidth > window.innerWidth) left = ev.clientX - tip.offsetWidth - 12;
    tip.style.left = Math.max(0, left) + "px";
    tip.style.top = top + "px";
    detail.textContent = describe(node);
  });
  graph.addEventListener("mouseleave", function () { tip.style.display = "none"; });
  graph.addEventListener("click", function (ev) {
    var node = ev.target.flameNode;
    if (node) { zoomed = node; draw(); }
  });
  document.getElementById("reset").addEventListener("click", function () {
    zoomed = root; draw();
  });
  search.addEventListener("input", function () {
    var text = search.value;
    try { pattern = text ? new RegExp(text) : null; }
    catch (e) { pattern = new RegExp(text.replace(/[.*+?^${}()|[\\]\\\\]/g, "\\\\$&")); }
    draw();
  });
  draw();
})();
</script>
</body>
</html>
"""
