const units = document.querySelectorAll(".unit"), info = document.getElementById("info");
const fmt = v => (v >= 0 ? "+" : "") + v.toFixed(4);
const show = s => s.replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5");
let current = -1;
function colour(v) {
  const end = v >= 0 ? DATA.pos : DATA.neg, a = Math.min(Math.abs(v), 1);
  return "rgb(" + end.map(c => Math.round(255 + (c - 255) * a)).join(", ") + ")";
}
function values(t) { return t < 0 ? DATA.total : DATA.relevance.map(row => row[t]); }
function rank(id, scored) {  // scored: [value, text] pairs; the top ones, highest first
  const ranked = scored.sort((a, b) => b[0] - a[0]).slice(0, DATA.top);
  document.getElementById(id).replaceChildren(...ranked.map(([v, text]) => {
    const li = document.createElement("li");
    li.textContent = fmt(v) + "  " + show(text);
    return li;
  }));
}
function selectTarget(t) {  // t: a target token index, or -1 for all target tokens (their sum)
  current = t === "all" ? -1 : Number(t);
  const vals = values(current), scale = vals.reduce((m, v) => Math.max(m, Math.abs(v)), 0) || 1;
  units.forEach(el => {
    const i = Number(el.dataset.index);
    el.style.background = colour(vals[i] / scale);
    el.style.color = Math.abs(vals[i] / scale) > 0.6 ? "#fff" : "#000";
    el.title = show(el.textContent) + " \u00b7 " + fmt(vals[i]);
  });
  document.getElementById("lo").textContent = fmt(-scale);
  document.getElementById("hi").textContent = fmt(scale);
  document.getElementById("for").textContent =
    current < 0 ? "all of the target (sum)" : DATA.noun + " \u201c" + show(DATA.tokens[current]) + "\u201d";
  rank("sources", DATA.sources.map((text, k) => [vals[DATA.source_index[k]], text]));
  DATA.coarse.forEach((level, k) => rank("sources-" + k, level.sources.map((text, u) =>
    [current < 0 ? level.relevance[u].reduce((a, b) => a + b, 0) : level.relevance[u][current], text])));
  document.querySelectorAll(".selector button").forEach(b => b.classList.toggle("active", +b.dataset.t === current));
}
function inspect(el) {
  const i = Number(el.dataset.index);
  units.forEach(u => u.classList.toggle("picked", u === el));
  const where = el.classList.contains("target") ? "target" : el.classList.contains("box") ? "image" : "prompt";
  info.textContent = "#" + i + " \u201c" + show(el.textContent) + "\u201d (" + where + "): relevance " +
    fmt(values(current)[i]) + " for " + document.getElementById("for").textContent;
}
const pick = e => { const el = e.target.closest(".unit"); if (el) inspect(el); };  // hover (desktop), tap (mobile)
document.querySelectorAll(".heatmap, .images").forEach(area => {
  area.addEventListener("mouseover", pick);
  area.addEventListener("click", pick);
});
document.querySelector(".selector").addEventListener("click", e => {
  const b = e.target.closest("button"); if (b) selectTarget(b.dataset.t);
});
selectTarget(-1);
