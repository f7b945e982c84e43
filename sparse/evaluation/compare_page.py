"""The comparison page of ``sparse compare``: one static HTML file, inline CSS and JavaScript.

The data (``compare.comparison``) is embedded once as JSON in ``<script id="data">``; the script
renders the query table and, for the query clicked (or named in the address as ``#q=ID``), both
runs' top documents with their tokens' contributions. Text goes into the page with
``textContent`` only, so document text cannot inject markup. When the page is ready the script
writes the milliseconds since navigation started into ``#load-ms`` (``data-ready="1"`` on
``<body>``), which the tests read from headless Chromium.
"""

from __future__ import annotations

import html
import json

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em}h2{font-size:1.1em;margin:.8em 0 .3em}
table{border-collapse:collapse}td,th{padding:2px 8px;text-align:right;border-bottom:1px solid #eee}
td.t,th.t{text-align:left}
#queries{max-height:22em;overflow-y:auto;border:1px solid #ddd;display:inline-block}
#queries tr{cursor:pointer}#queries tr.sel{background:#fff3c4}
.up{color:#17803d}.down{color:#b3261e}
.runs{display:flex;gap:1.5em}.run{flex:1;min-width:0}
.hit{border:1px solid #ddd;border-radius:4px;padding:.4em .6em;margin:.4em 0}
.hit.judged{border-color:#17803d;background:#f3fbf5}
.badge{font-size:.85em;padding:0 .4em;border-radius:3px;background:#eee;margin-left:.4em}
.judged .badge.j{background:#17803d;color:#fff}
.snip{color:#555;font-size:.9em;margin:.2em 0}
.bar{display:inline-block;height:.7em;background:#6b8fd6;vertical-align:middle}
.tok td{font-size:.9em;padding:0 6px}
button{margin-right:.5em}
"""

SCRIPT = r"""
const D = JSON.parse(document.getElementById("data").textContent);
const M = D.metric;
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}
function fmt(v, n) { return v === null || v === undefined ? "-" : Number(v).toFixed(n === undefined ? 4 : n); }
function signed(v) { return (v > 0 ? "+" : "") + fmt(v); }

function renderQueries(order) {
  const rows = D.queries.slice();
  if (order === "losses") rows.reverse();
  const body = el("tbody");
  for (const q of rows) {
    const tr = el("tr", {"data-qid": q.id},
      el("td", {class: "t"}, q.id),
      el("td", {class: "t"}, q.query.length > 90 ? q.query.slice(0, 90) + "..." : q.query),
      el("td", {}, fmt(q.a[M])), el("td", {}, fmt(q.b[M])),
      el("td", {class: q.delta > 0 ? "up" : q.delta < 0 ? "down" : ""}, signed(q.delta)));
    tr.addEventListener("click", () => select(q.id));
    body.append(tr);
  }
  const head = el("tr", {}, el("th", {class: "t"}, "query"), el("th", {class: "t"}, "text"),
    el("th", {}, M + " " + D.labels[0]), el("th", {}, M + " " + D.labels[1]), el("th", {}, "change"));
  const table = document.getElementById("query-table");
  table.replaceChildren(el("thead", {}, head), body);
}

function hitCard(hit, judged, other, otherLabel) {
  const grade = judged[hit.doc_id];
  const where = other.get(hit.doc_id);
  const card = el("div", {class: "hit" + (grade > 0 ? " judged" : ""), "data-doc": hit.doc_id},
    el("b", {}, "#" + hit.rank + " " + hit.doc_id), " score ", el("span", {class: "score"}, fmt(hit.score, 6)),
    el("span", {class: "badge j"}, grade === undefined ? "not judged" : "judged " + grade),
    el("span", {class: "badge"}, where ? otherLabel + " #" + where : "not in " + otherLabel + "'s top " + other.size));
  card.append(el("div", {class: "snip"}, hit.text));
  const top = hit.tokens.length ? hit.tokens[0][1] * hit.tokens[0][2] : 1;
  const rows = el("tbody");
  let sum = 0;
  for (const [tok, wq, wd] of hit.tokens) {
    const c = wq * wd;
    sum += c;
    rows.append(el("tr", {},
      el("td", {class: "t"}, tok), el("td", {}, fmt(wq, 3) + " x " + fmt(wd, 3)), el("td", {class: "c"}, fmt(c, 4)),
      el("td", {class: "t"}, el("span", {class: "bar", style: "width:" + Math.max(1, 120 * c / top) + "px"}))));
  }
  card.append(el("table", {class: "tok"},
    el("thead", {}, el("tr", {}, el("th", {class: "t"}, "token"), el("th", {}, "w_q x w_d"), el("th", {}, "="),
      el("th", {class: "t"}, "sum " + fmt(sum, 6)))), rows));
  return card;
}

function select(qid) {
  const q = D.queries.find(r => r.id === qid);
  const d = D.details[qid];
  if (!q || !d) return;
  for (const tr of document.querySelectorAll("#query-table tr[data-qid]"))
    tr.classList.toggle("sel", tr.dataset.qid === qid);
  const ranks = side => new Map(d[side].map(h => [h.doc_id, h.rank]));
  const judgedIds = Object.keys(d.judged).filter(k => d.judged[k] > 0);
  const box = document.getElementById("detail");
  box.replaceChildren(
    el("h2", {}, "Query " + qid + ": " + q.query),
    el("p", {}, M + " " + D.labels[0] + " " + fmt(q.a[M]) + " -> " + D.labels[1] + " " + fmt(q.b[M]) +
      " (" + signed(q.delta) + "); judged relevant: " + (judgedIds.join(", ") || "none")));
  const runs = el("div", {class: "runs"});
  ["a", "b"].forEach((side, i) => {
    const other = ranks(side === "a" ? "b" : "a");
    const col = el("div", {class: "run", id: "run-" + side}, el("h2", {}, D.labels[i] + ": top " + d[side].length));
    for (const hit of d[side]) col.append(hitCard(hit, d.judged, other, D.labels[1 - i]));
    runs.append(col);
  });
  box.append(runs);
  const hash = "#q=" + encodeURIComponent(qid);
  if (location.hash !== hash) history.replaceState(null, "", hash);
}

document.getElementById("gains").addEventListener("click", () => renderQueries("gains"));
document.getElementById("losses").addEventListener("click", () => renderQueries("losses"));
renderQueries("gains");
const asked = decodeURIComponent((location.hash.match(/^#q=(.*)$/) || [])[1] || "");
if (D.queries.length) select(D.details[asked] ? asked : D.queries[0].id);
document.getElementById("load-ms").textContent = performance.now().toFixed(1);
document.body.dataset.ready = "1";
"""


def _json_for_script(data: dict) -> str:
    """JSON that cannot end its ``<script>`` element early (``</`` written as ``<\\/``)."""
    return json.dumps(data, separators=(",", ":")).replace("</", "<\\/")


def page_html(data: dict, marker: str) -> str:
    """The whole page for ``data`` (``compare.comparison``); ``marker`` names what wrote it."""
    la, lb = (html.escape(x) for x in data["labels"])
    means = "".join(f"<tr><td class='t'>{html.escape(label)}</td>"
                    + "".join(f"<td>{'-' if mean.get(m) is None else format(mean[m], '.4f')}</td>"
                              for m in data["metrics"]) + "</tr>"
                    for label, mean in zip(data["labels"], data["means"]))
    heads = "".join(f"<th>{html.escape(m)} (mean)</th>" for m in data["metrics"])
    c = data["counts"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="generator" content="{html.escape(marker)}">
<title>{lb} vs {la} on {html.escape(data['dataset'])}</title>
<style>{STYLE}</style></head>
<body>
<h1>{lb} vs {la} on {html.escape(data['dataset'])}, query by query</h1>
<table><thead><tr><th class="t">run</th>{heads}</tr></thead><tbody>{means}</tbody></table>
<p>{html.escape(data['metric'])} per query: <span class="up">{c['gains']} gained</span>,
<span class="down">{c['losses']} lost</span>, {c['ties']} unchanged. Click a query to see each run's top
documents; a document's score is the sum of its matching tokens' contributions
(query weight x document weight as the index stores it); judged documents are green.</p>
<p><button id="gains">largest gains first</button><button id="losses">largest losses first</button></p>
<div id="queries"><table id="query-table"></table></div>
<div id="detail"></div>
<p style="color:#888">page ready in <span id="load-ms">?</span> ms</p>
<script id="data" type="application/json">{_json_for_script(data)}</script>
<script>{SCRIPT}</script>
</body></html>
"""
