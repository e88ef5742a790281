// kangae serve: the picture page. No libraries, no network beyond this server.
"use strict";

(function () {
  const info = JSON.parse(document.body.dataset.info);
  const classes = info.classes;
  const $ = (id) => document.getElementById(id);
  const state = { seq: 0, crop: null, predicted: null, abort: null };
  const pct = (p) => (100 * p).toFixed(1) + "%";

  async function post(path, body, signal) {
    const res = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" },
                                    body: JSON.stringify(body), signal });
    const data = await res.json();
    if (!res.ok) throw new Error(data.error || res.statusText);
    return data;
  }
  function status(text) { $("status").textContent = text; }
  function show(id, src) { const img = $(id); img.src = src; img.hidden = false; }
  function hide(id) { const img = $(id); img.hidden = true; img.removeAttribute("src"); }

  // ---- the picture: chosen or dropped ----
  function readFile(file) {
    return new Promise((resolve, reject) => {
      const r = new FileReader();
      r.onload = () => resolve(r.result);
      r.onerror = () => reject(new Error("cannot read " + file.name));
      r.readAsDataURL(file);
    });
  }
  async function use(file) {
    if (!file) return;
    const seq = ++state.seq;
    if (state.abort) state.abort.abort();  // stop waiting for the last picture's explanations
    state.abort = new AbortController();
    status(`Reading ${file.name}...`);
    for (const id of ["cam", "mask", "proto-pred"]) hide(id);
    try {
      const image = await readFile(file);
      const p = await post("/api/predict", { image });
      if (seq !== state.seq) return;  // another picture came meanwhile
      state.crop = p.crop;
      state.predicted = p.predicted;
      renderTop(p);
      show("crop", p.crop);
      $("prep").textContent = `${p.preprocessing}.`;
      status(`${file.name}: ${p.name} (${pct(p.confidence)}) in ${p.ms.toFixed(0)} ms.`);
      explain("gradcam", "cam", seq);
      explain("mask", "mask", seq);
      prototype(p.predicted, "proto-pred", "proto-pred-cap", "predicted", () => seq === state.seq);
    } catch (err) {
      if (seq === state.seq) status(`${file.name}: ${err.message}`);
    }
  }
  $("file").addEventListener("change", (ev) => use(ev.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    use(ev.dataTransfer.files[0]);
  });

  // ---- answers ----
  function renderTop(p) {
    const top = $("top");
    top.textContent = "";
    for (const c of p.top) {
      const row = document.createElement("div");
      row.className = "bar wide";
      row.innerHTML = '<span class="lab"></span><span class="track"><span class="fill"></span></span>' +
        '<span class="val"></span>';
      row.querySelector(".lab").textContent = c.name;
      row.querySelector(".fill").style.width = (100 * c.probability).toFixed(1) + "%";
      row.querySelector(".val").textContent = pct(c.probability);
      row.dataset.k = c.index;
      row.classList.toggle("top", c.index === p.predicted);
      top.appendChild(row);
    }
    $("verdict").textContent = `It sees ${p.name}.`;
  }
  async function explain(method, id, seq) {
    const note = $(id + "-note");
    if (!info.methods.includes(method)) {
      note.textContent = `No ${method}: this model has no convolutional layer.`;
      return;
    }
    note.textContent = method === "mask" ? `Optimizing the mask (${info.mask_steps} steps)...` : "Computing...";
    try {
      const e = await post("/api/explain", { image: state.crop, prepared: true, method, target: "auto" },
                           state.abort.signal);
      if (seq !== state.seq) return;
      show(id, e.overlay);
      const steps = e.metrics.steps ? `, ${e.metrics.steps} steps` : "";
      const summary = e.summary.replace(` (${e.method})`, "");  // the method is named once, below
      note.textContent = `${summary} (${e.method}${steps}, ${(e.ms / 1000).toFixed(1)} s).`;
    } catch (err) {
      if (seq === state.seq && err.name !== "AbortError") note.textContent = `No ${method}: ${err.message}`;
    }
  }
  // the model's idea of class k, polled until it is computed; dropped once current() is false
  async function prototype(k, id, capId, label, current) {
    const cap = $(capId);
    cap.textContent = `${label}: ${classes[k]} (computing...)`;
    for (;;) {
      let p;
      try {
        const res = await fetch(`/api/prototypes/${k}?wait=10`);
        p = await res.json();
        if (!res.ok) throw new Error(p.error || res.statusText);
      } catch (err) {
        if (current()) cap.textContent = `${label}: ${classes[k]}: ${err.message}`;
        return;
      }
      if (!current()) return;
      if (p.ready) {
        show(id, p.image);
        cap.textContent = `${label}: ${p.name} (p=${pct(p.probability)})`;
        return;
      }
      cap.textContent = `${label}: ${classes[k]} (` +
        (p.position > 1 ? `${p.position - 1} before it` : "computing") + "...)";
    }
  }

  // ---- the class you mean ----
  const select = $("meant");
  classes.forEach((name, k) => {
    const o = document.createElement("option");
    o.value = String(k);
    o.textContent = name;
    select.appendChild(o);
  });
  let meantSeq = 0;
  select.addEventListener("change", () => {
    const seq = ++meantSeq;
    hide("proto-meant");
    if (select.value === "") { $("proto-meant-cap").textContent = "you mean: -"; return; }
    prototype(Number(select.value), "proto-meant", "proto-meant-cap", "you mean", () => seq === meantSeq);
  });
})();
