// kangae serve: the drawing page. No libraries, no network beyond this server.
"use strict";

(function () {
  const info = JSON.parse(document.body.dataset.info);
  const classes = info.classes;
  const $ = (id) => document.getElementById(id);
  const pad = $("pad");
  const ctx = pad.getContext("2d");
  const overlay = $("overlay");
  const state = { ink: false, drawing: false, last: null, seq: 0, shown: 0,
                  predicted: null, ideas: null, timer: null, version: 0 };

  // ---- drawing pad: pointer events cover mouse, pen and touch ----
  function resetPad() {
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, pad.width, pad.height);
    state.ink = false;
  }
  function point(ev) {
    const r = pad.getBoundingClientRect();
    return [(ev.clientX - r.left) * pad.width / r.width, (ev.clientY - r.top) * pad.height / r.height];
  }
  function line(a, b) {
    ctx.strokeStyle = "#000";
    ctx.lineWidth = pad.width / 14;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(a[0], a[1]);
    ctx.lineTo(b[0], b[1]);
    ctx.stroke();
    state.ink = true;
    state.version += 1;
  }
  pad.addEventListener("pointerdown", (ev) => {
    ev.preventDefault();
    pad.setPointerCapture(ev.pointerId);
    state.drawing = true;
    clearOverlay();
    state.last = point(ev);
    line(state.last, state.last);
    schedule();
  });
  pad.addEventListener("pointermove", (ev) => {
    if (!state.drawing) return;
    const p = point(ev);
    line(state.last, p);
    state.last = p;
    schedule();
  });
  function stop() {
    if (!state.drawing) return;
    state.drawing = false;
    clearTimeout(state.timer);
    state.timer = null;
    update(true);
  }
  pad.addEventListener("pointerup", stop);
  pad.addEventListener("pointercancel", stop);
  $("clear").addEventListener("click", () => {
    resetPad();
    state.seq += 1;
    state.shown = state.seq;  // drop answers still on their way
    state.version += 1;
    state.predicted = null;
    clearOverlay();
    renderBars(null);
    for (const id of ["seen", "mask", "fixed", "idea-pred"]) blank($(id));
    $("idea-pred-cap").textContent = "predicted: -";
    $("verdict").textContent = "";
    $("fix").disabled = true;
    status("Draw a digit with the mouse or a finger.");
  });

  // ---- talking to the server ----
  async function post(path, body) {
    const res = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" },
                                    body: JSON.stringify(body) });
    const data = await res.json();
    if (!res.ok) throw new Error(data.error || res.statusText);
    return data;
  }
  function status(text) { $("status").textContent = text; }
  function schedule() {  // live predictions while drawing, at most every 120 ms
    if (state.timer) return;
    state.timer = setTimeout(() => { state.timer = null; update(false); }, 120);
  }
  async function update(final) {
    if (!state.ink) return;
    const seq = ++state.seq;
    const version = state.version;
    const image = pad.toDataURL("image/png");
    try {
      const p = await post("/api/predict", { image });
      if (seq < state.shown || !state.ink) return;
      state.shown = seq;
      state.predicted = p.predicted;
      renderBars(p);
      draw28($("seen"), p.seen);
      $("prep").textContent = "MNIST-style preprocessing: " + p.preprocessing + ".";
      renderIdeas();
      updateFixButton();
      status(`Reads ${classes[p.predicted]} (${pct(p.confidence)}) in ${p.ms.toFixed(0)} ms.`);
      if (final) explain(image, version);
    } catch (err) {
      status(err.message);
    }
  }
  async function explain(image, version) {
    try {
      const e = await post("/api/explain", { image, target: "auto" });
      if (version !== state.version) return;  // the drawing changed meanwhile
      drawMask($("mask"), e.seen, e.attribution);
      if (e.frame) maskOverDrawing(e.attribution, e.frame);
      $("why").textContent = `${e.summary} (${e.method}). Red: what the answer rests on, at the ` +
        "model's 28x28 and over your drawing.";
    } catch (err) {
      $("why").textContent = "No explanation: " + err.message;
    }
  }

  // ---- rendering ----
  const pct = (p) => (100 * p).toFixed(1) + "%";
  function renderBars(p) {
    const bars = $("bars");
    if (!bars.children.length) {
      classes.forEach((name, k) => {
        const row = document.createElement("div");
        row.className = "bar";
        row.innerHTML = '<span class="lab"></span><span class="track"><span class="fill"></span></span>' +
          '<span class="val"></span>';
        row.querySelector(".lab").textContent = name;
        row.dataset.k = k;
        bars.appendChild(row);
      });
    }
    [...bars.children].forEach((row, k) => {
      const v = p ? p.probabilities[k] : 0;
      row.querySelector(".fill").style.width = (100 * v).toFixed(1) + "%";
      row.querySelector(".val").textContent = p ? pct(v) : "";
      row.classList.toggle("top", !!p && k === p.predicted);
    });
    $("verdict").textContent = p ? `It reads ${classes[p.predicted]}.` : "";
  }
  function blank(canvas) {
    const c = canvas.getContext("2d");
    c.fillStyle = "#000";
    c.fillRect(0, 0, canvas.width, canvas.height);
  }
  function paint(canvas, rgbAt) {
    const h = canvas.height, w = canvas.width;
    const c = canvas.getContext("2d");
    const img = c.createImageData(w, h);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      const [r, g, b] = rgbAt(y, x);
      const i = 4 * (y * w + x);
      img.data[i] = r; img.data[i + 1] = g; img.data[i + 2] = b; img.data[i + 3] = 255;
    }
    c.putImageData(img, 0, 0);
  }
  const gray = (v) => Math.round(255 * Math.min(1, Math.max(0, v)));
  function draw28(canvas, a) { paint(canvas, (y, x) => { const g = gray(a[y][x]); return [g, g, g]; }); }
  function drawMask(canvas, seen, attr) {
    let top = 0;
    for (const row of attr) for (const v of row) top = Math.max(top, Math.abs(v));
    top = top || 1;
    paint(canvas, (y, x) => {
      const m = Math.abs(attr[y][x]) / top, g = 0.45 * seen[y][x];
      return [gray(g + m), gray(g + 0.15 * m), gray(g + 0.1 * m)];
    });
  }
  function clearOverlay() { overlay.getContext("2d").clearRect(0, 0, overlay.width, overlay.height); }
  function maskOverDrawing(attr, frame) {  // the 28x28 mask, scaled back onto the canvas
    const h = attr.length, w = attr[0].length;
    let top = 0;
    for (const row of attr) for (const v of row) top = Math.max(top, Math.abs(v));
    top = top || 1;
    const small = document.createElement("canvas");
    small.width = w; small.height = h;
    const sc = small.getContext("2d");
    const img = sc.createImageData(w, h);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      const i = 4 * (y * w + x);
      img.data[i] = 230; img.data[i + 1] = 40; img.data[i + 2] = 20;
      img.data[i + 3] = Math.round(200 * Math.abs(attr[y][x]) / top);
    }
    sc.putImageData(img, 0, 0);
    const oc = overlay.getContext("2d");
    clearOverlay();
    oc.imageSmoothingEnabled = true;
    oc.drawImage(small, frame[0], frame[1], frame[2], frame[3]);
  }
  function drawFixed(canvas, image, changed) {
    paint(canvas, (y, x) => {
      if (!changed[y][x]) { const g = gray(image[y][x]); return [g, g, g]; }
      return image[y][x] > 0.5 ? [40, 220, 90] : [230, 40, 200];
    });
  }

  // ---- prototypes ("ideas") ----
  const select = $("intended");
  classes.forEach((name, k) => {
    const o = document.createElement("option");
    o.value = String(k);
    o.textContent = name;
    select.appendChild(o);
  });
  select.addEventListener("change", () => { renderIdeas(); updateFixButton(); });
  async function loadIdeas() {
    try {
      const res = await fetch("/api/ideas");
      const data = await res.json();
      if (!res.ok) { $("ideas-note").textContent = data.error; return; }
      if (!data.ready) { setTimeout(loadIdeas, 1000); return; }
      state.ideas = data;
      const how = { greedy: "greedy pixel search (post 000)", gradient: "gradient ascent (post 004)" };
      $("ideas-note").textContent = `The model's idea of each class: ${how[data.method] || data.method}` +
        (data.seconds ? ` (${data.seconds.toFixed(1)} s at start).` : ".");
      renderIdeas();
    } catch (err) {
      $("ideas-note").textContent = "No prototypes: " + err.message;
    }
  }
  function renderIdeas() {
    const ideas = state.ideas;
    if (!ideas) return;
    const show = (canvasId, capId, label, k) => {
      if (k === null || k === "") { blank($(canvasId)); $(capId).textContent = label + ": -"; return; }
      draw28($(canvasId), ideas.images[k]);
      $(capId).textContent = `${label}: ${classes[k]} (p=${pct(ideas.probabilities[k])})`;
    };
    show("idea-pred", "idea-pred-cap", "predicted", state.predicted);
    show("idea-meant", "idea-meant-cap", "meant", select.value === "" ? null : Number(select.value));
  }

  // ---- fix my drawing ----
  function updateFixButton() {
    const b = $("fix");
    b.disabled = !state.ink || select.value === "";
  }
  $("fix").addEventListener("click", async () => {
    const target = Number(select.value);
    const version = state.version;
    $("fix-note").textContent = "Searching for the fewest edits...";
    try {
      const f = await post("/api/fix", { image: pad.toDataURL("image/png"), target });
      if (version !== state.version) return;
      drawFixed($("fixed"), f.image, f.changed);
      const verb = f.success ? "reads" : "still does not read";
      $("fix-note").textContent = `${f.n_changed} pixel edit${f.n_changed === 1 ? "" : "s"}: ` +
        `p(${classes[target]}) ${pct(f.prob_before)} -> ${pct(f.prob_after)}; it ${verb} as ${classes[target]}.`;
    } catch (err) {
      $("fix-note").textContent = err.message;
    }
  });

  resetPad();
  renderBars(null);
  for (const id of ["seen", "mask", "fixed", "idea-pred", "idea-meant"]) blank($(id));
  updateFixButton();
  loadIdeas();
})();
