// The dashboard's live parts: the job list follows /v1/jobs, a job page follows the job's
// event stream (/v1/jobs/{id}/events) and draws its curves and weight heat maps. The
// session cookie authenticates these reads; nothing here writes (forms do, with CSRF).
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const page = document.body.dataset.page;
  if (page === "jobs") followJobList();
  if (page === "job") followJob();

  function node(tag, attrs = {}, text = null, ns = null) {
    const element = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) element.setAttribute(key, value);
    if (text !== null) element.textContent = text;
    return element;
  }

  function number(value, digits = 4) {
    return value === null || value === undefined ? "–" : Number(value.toPrecision(digits)).toString();
  }

  function stamp(iso) {
    return iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 19) : "–";
  }

  // --- the job list
  function followJobList() {
    const table = document.getElementById("jobs");
    const state = document.getElementById("live-state");
    const body = table.querySelector("tbody");
    let active = true;

    async function refresh() {
      try {
        const answer = await fetch(table.dataset.source, { headers: { Accept: "application/json" } });
        if (answer.status === 401) return location.reload(); // signed out elsewhere
        if (!answer.ok) throw new Error(`HTTP ${answer.status}`);
        const { jobs } = await answer.json();
        body.replaceChildren(...(jobs.length ? jobs.map(row) : [empty()]));
        active = jobs.some((job) => job.status === "queued" || job.status === "running");
        state.textContent = "live";
        state.classList.remove("stale");
      } catch (error) {
        state.textContent = "reconnecting…";
        state.classList.add("stale");
      }
      setTimeout(refresh, active ? 1000 : 3000);
    }

    function row(job) {
      const tr = node("tr", { "data-job-id": job.id, "data-status": job.status });
      const link = node("a", { href: table.dataset.jobUrl.replace("JOB_ID", job.id) }, job.name || job.id);
      const first = node("td");
      first.append(link, node("div", { class: "sub" }, job.structure.join("-")));
      const status = node("td");
      status.append(node("span", { class: `status status-${job.status}` }, job.status));
      const progress = node("td");
      progress.append(
        node("progress", { max: job.progress.epochs, value: job.progress.epoch }),
        node("span", { class: "epochs" }, ` ${job.progress.epoch}/${job.progress.epochs}`),
      );
      const metrics = job.metrics || {};
      tr.append(
        first,
        status,
        progress,
        node("td", {}, stamp(job.created_at)),
        node("td", {}, `${job.runtime_seconds.toFixed(1)} s`),
        node("td", {}, number(metrics.cost)),
        node("td", {}, number(metrics.accuracy)),
      );
      return tr;
    }

    function empty() {
      const tr = node("tr", { class: "empty" });
      tr.append(node("td", { colspan: 7 }, "No jobs yet."));
      return tr;
    }

    setTimeout(refresh, 1000);
  }

  // --- one job
  function followJob() {
    const root = document.getElementById("job");
    const progress = document.getElementById("progress");
    const rows = new Map();
    for (const row of JSON.parse(document.getElementById("metrics-data").textContent)) {
      rows.set(row.epoch, row);
    }
    let pending = false;
    const redraw = () => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => {
        pending = false;
        const sorted = [...rows.values()].sort((a, b) => a.epoch - b.epoch);
        const epochs = Number(progress.max);
        chart(document.getElementById("cost-chart"), sorted, "cost", "val_cost", epochs);
        chart(document.getElementById("accuracy-chart"), sorted, "accuracy", "val_accuracy", epochs);
        if (sorted.length) showProgress(sorted[sorted.length - 1].epoch, sorted[sorted.length - 1]);
      });
    };
    redraw();
    if (root.dataset.final === "true") {
      heatMaps(document.getElementById("weights"));
      return;
    }
    // a reconnect sends Last-Event-ID itself: the stream resumes after the last epoch seen
    const source = new EventSource(root.dataset.events);
    source.addEventListener("epoch", (event) => {
      const row = JSON.parse(event.data);
      rows.set(row.epoch, row);
      redraw(); // the progress with the chart, in one frame
    });
    source.addEventListener("status", (event) => showStatus(JSON.parse(event.data)));
    source.addEventListener("end", (event) => {
      source.close();
      showStatus(JSON.parse(event.data));
      setTimeout(() => location.reload(), 200); // the final page: model, weights, history
    });

    function showProgress(epoch, row) {
      progress.value = Math.max(progress.value, epoch);
      document.getElementById("epoch-text").textContent = `epoch ${progress.value} of ${progress.max}`;
      if (row) {
        document.getElementById("latest-cost").textContent = number(row.cost);
        document.getElementById("latest-accuracy").textContent = number(row.accuracy);
      }
    }

    function showStatus(job) {
      const badge = document.getElementById("status");
      badge.textContent = job.status;
      badge.className = `status status-${job.status}`;
      root.dataset.status = job.status;
      showProgress(job.progress.epoch, null);
    }
  }

  // a line chart of one metric, train and validation, over the job's epochs
  function chart(svg, rows, key, valKey, epochs) {
    const width = 640, height = 260, left = 56, right = 28, top = 12, bottom = 32;
    const train = rows.filter((r) => r[key] !== null && r[key] !== undefined);
    const val = rows.filter((r) => r[valKey] !== null && r[valKey] !== undefined);
    svg.replaceChildren();
    svg.dataset.points = String(train.length);
    if (!train.length) {
      const why = rows.length ? `no ${key} for this job` : "waiting for the first epoch";
      svg.append(node("text", { x: width / 2, y: height / 2, class: "placeholder" }, why, SVG));
      return;
    }
    const values = [...train.map((r) => r[key]), ...val.map((r) => r[valKey])];
    let low = key === "accuracy" ? 0 : Math.min(0, ...values);
    let high = key === "accuracy" ? 1 : Math.max(...values) * 1.05 || 1;
    if (high <= low) high = low + 1;
    const span = Math.max(epochs, 2);
    const x = (epoch) => left + ((epoch - 1) / (span - 1)) * (width - left - right);
    const y = (value) => top + (1 - (value - low) / (high - low)) * (height - top - bottom);

    for (let i = 0; i <= 4; i++) {
      const value = low + ((high - low) * i) / 4;
      svg.append(node("line", { x1: left, x2: width - right, y1: y(value), y2: y(value), class: "grid" }, null, SVG));
      svg.append(node("text", { x: left - 6, y: y(value) + 4, class: "tick y" }, number(value, 3), SVG));
    }
    for (const epoch of new Set([1, Math.round(span / 2), span])) {
      const label = epoch === span ? `epoch ${epoch}` : String(epoch);
      svg.append(node("text", { x: x(epoch), y: height - 10, class: "tick x" }, label, SVG));
    }

    const line = (points, field, cls) => {
      const path = points.map((r) => `${x(r.epoch).toFixed(1)},${y(r[field]).toFixed(1)}`).join(" ");
      svg.append(node("polyline", { points: path, class: `series ${cls}` }, null, SVG));
    };
    line(train, key, "train");
    if (val.length) line(val, valKey, "val");
    if (train.length <= 200) {
      for (const r of train) {
        const dot = node("circle", { cx: x(r.epoch), cy: y(r[key]), r: 2.5, class: "point train" }, null, SVG);
        dot.append(node("title", {}, `epoch ${r.epoch}: ${key} ${number(r[key], 6)}`, SVG));
        svg.append(dot);
      }
    }
  }

  // each layer's weight matrix as a heat map: blue negative, white zero, red positive
  async function heatMaps(box) {
    if (!box) return;
    const answer = await fetch(box.dataset.modelUrl, { headers: { Accept: "application/json" } });
    if (!answer.ok) {
      box.textContent = `The model could not be read (HTTP ${answer.status}).`;
      return;
    }
    const model = await answer.json();
    model.weights.forEach((W, layer) => {
      const rows = W.length, cols = W[0].length;
      const scale = Math.max(...W.map((r) => Math.max(...r.map(Math.abs)))) || 1;
      const canvas = node("canvas", { width: cols, height: rows, class: "heatmap", "data-layer": layer });
      const context = canvas.getContext("2d");
      const image = context.createImageData(cols, rows);
      W.forEach((r, i) =>
        r.forEach((value, j) => {
          const v = value / scale, k = 4 * (i * cols + j);
          const fade = Math.round(255 * (1 - Math.abs(v)));
          image.data.set(v >= 0 ? [255, fade, fade, 255] : [fade, fade, 255, 255], k);
        }),
      );
      context.putImageData(image, 0, 0);
      const cell = Math.max(1, Math.min(48, Math.floor(320 / Math.max(rows, cols))));
      canvas.style.width = `${cols * cell}px`;
      canvas.style.height = `${rows * cell}px`;
      const figure = node("figure", { class: "layer" });
      const caption = `W${layer}: ${rows} × ${cols}, |w| ≤ ${number(scale, 3)}`;
      figure.append(canvas, node("figcaption", {}, caption));
      box.append(figure);
    });
  }
})();
