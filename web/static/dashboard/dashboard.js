// The dashboard's live parts: the job list follows /v1/jobs, a job page follows the job's
// event stream (/v1/jobs/{id}/events) and draws its curves and weight heat maps, a sweep
// page follows /v1/sweeps/{id} and draws its leaderboard and objective charts. The session
// cookie authenticates these reads; nothing here writes (forms do, with CSRF).
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const page = document.body.dataset.page;
  if (page === "jobs") followJobList();
  if (page === "job") followJob();
  if (page === "sweep") followSweep();

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

  // --- one sweep: its leaderboard, the objective by trial and against each searched value
  function followSweep() {
    const root = document.getElementById("sweep");
    let sweep = JSON.parse(document.getElementById("sweep-data").textContent);
    draw(sweep);
    if (root.dataset.running !== "true") return;

    // each event carries the whole sweep; EventSource reconnects by itself when the stream
    // times out, and the first event after a reconnect is the current state
    const source = new EventSource(root.dataset.events);
    source.addEventListener("sweep", (event) => {
      sweep = JSON.parse(event.data);
      draw(sweep);
    });
    source.addEventListener("end", (event) => {
      source.close();
      draw(JSON.parse(event.data));
      setTimeout(() => location.reload(), 200); // the final page
    });
    source.onerror = () => {
      document.getElementById("summary").textContent = "reconnecting…";
    };

    function draw(s) {
      const badge = document.getElementById("status");
      badge.textContent = s.status;
      badge.className = `status status-${s.status}`;
      root.dataset.status = s.status;
      const c = s.counts, ended = c.succeeded + c.failed + c.cancelled;
      const paused = c.paused || (s.early_stopping && s.early_stopping.promotions) ? `, ${c.paused} paused` : "";
      document.getElementById("summary").textContent =
        `${ended} of ${s.trials} trials ended, ${c.running} running${paused}, ${c.queued} queued, ` +
        `${c.pending} not released yet · epochs ${s.epochs.run} of ${s.epochs.full} ` +
        `(${Math.round(100 * s.epochs.saved)}% saved by early stopping)`;
      const paths = Object.keys(s.search);
      if (s.configurations) configurations(s.configurations, paths);
      const body = document.querySelector("#leaderboard tbody");
      body.replaceChildren(
        ...s.leaderboard.map((t, i) => {
          const tr = node("tr", { "data-trial": t.trial, "data-status": t.status });
          const link = node("a", { href: root.dataset.jobUrl.replace("JOB_ID", t.job_id) }, `#${t.trial}`);
          const cell = node("td");
          cell.append(link);
          const status = node("td");
          status.append(node("span", { class: `status status-${t.status}` }, t.status));
          tr.append(
            node("td", {}, String(i + 1)),
            cell,
            status,
            node("td", {}, number(t.objective)),
            node("td", {}, `${t.progress.epoch}/${t.progress.epochs}`),
            node("td", {}, t.stopped_early ? `at epoch ${t.progress.epoch}` : ""),
            ...paths.map((p) => node("td", {}, value(t.params[p]))),
          );
          return tr;
        }),
      );
      const rows = s.leaderboard.filter((t) => t.objective !== null);
      const byTrial = rows.map((t) => ({ x: t.trial, y: t.objective, t }));
      scatter(document.getElementById("objective-chart"), byTrial, s, "trial", "linear");
      for (const svg of document.querySelectorAll(".param-chart")) {
        const path = svg.dataset.path, kind = svg.dataset.kind;
        if (kind === "choice") {
          const choices = s.search[path].choice.map((v) => JSON.stringify(v));
          const points = rows.map((t) => ({ x: choices.indexOf(JSON.stringify(t.params[path])), y: t.objective, t }));
          scatter(svg, points, s, path, "category", s.search[path].choice.map(value));
        } else {
          const points = rows.map((t) => ({ x: t.params[path], y: t.objective, t }));
          scatter(svg, points, s, path, kind.includes("log") ? "log" : "linear");
        }
      }
    }

    // each configuration's replicates: how many finished, their mean and sample std
    function configurations(rows, paths) {
      const body = document.querySelector("#configurations tbody");
      body.replaceChildren(
        ...rows.map((c, i) => {
          const tr = node("tr", {
            "data-configuration": c.configuration,
            "data-mean": c.mean === null ? "" : String(c.mean),
            "data-std": c.std === null ? "" : String(c.std),
          });
          const replicates = node("td", { class: "replicates" }, `${c.finished} of ${c.job_ids.length} `);
          c.job_ids.forEach((id, k) => {
            replicates.append(" ", node("a", { href: root.dataset.jobUrl.replace("JOB_ID", id), title: id }, `#${k + 1}`));
          });
          const spread = c.mean === null ? "–" : `${number(c.mean)} ± ${number(c.std)}`;
          tr.append(
            node("td", {}, String(i + 1)),
            node("td", {}, String(c.configuration)),
            ...paths.map((p) => node("td", {}, value(c.params[p]))),
            replicates,
            node("td", { class: "mean" }, spread),
          );
          return tr;
        }),
      );
    }

    function value(v) {
      return typeof v === "number" && !Number.isInteger(v) ? number(v, 4) : JSON.stringify(v);
    }

    // objective (y) against x: a trial's number, a searched value (log scale for log_uniform
    // ranges) or a choice (one column each); hollow points ran to the end, filled stopped early
    function scatter(svg, points, s, label, scale, categories = null) {
      const width = 640, height = 260, left = 56, right = 28, top = 12, bottom = 32;
      svg.replaceChildren();
      svg.dataset.points = String(points.length);
      if (!points.length) {
        svg.append(node("text", { x: width / 2, y: height / 2, class: "placeholder" }, "waiting for the first trial", SVG));
        return;
      }
      const accuracy = s.objective.metric.includes("accuracy");
      const ys = points.map((p) => p.y);
      let low = accuracy ? 0 : Math.min(...ys), high = accuracy ? 1 : Math.max(...ys);
      if (high <= low) high = low + 1;
      const f = scale === "log" ? Math.log10 : (v) => v;
      let xs = points.map((p) => f(p.x)), xlow = Math.min(...xs), xhigh = Math.max(...xs);
      if (scale === "category") [xlow, xhigh] = [-0.5, categories.length - 0.5];
      if (scale === "linear" && label === "trial") [xlow, xhigh] = [0, s.trials + 1];
      if (xhigh <= xlow) [xlow, xhigh] = [xlow - 1, xhigh + 1];
      const x = (v) => left + ((f(v) - xlow) / (xhigh - xlow)) * (width - left - right);
      const cx = scale === "category" ? (i) => left + ((i - xlow) / (xhigh - xlow)) * (width - left - right) : x;
      const y = (v) => top + (1 - (v - low) / (high - low)) * (height - top - bottom);
      for (let i = 0; i <= 4; i++) {
        const v = low + ((high - low) * i) / 4;
        svg.append(node("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: "grid" }, null, SVG));
        svg.append(node("text", { x: left - 6, y: y(v) + 4, class: "tick y" }, number(v, 3), SVG));
      }
      const ticks = scale === "category"
        ? categories.map((c, i) => [cx(i), c])
        : [xlow, (xlow + xhigh) / 2, xhigh].map((v) => {
            const shown = scale === "log" ? 10 ** v : v;
            return [left + ((v - xlow) / (xhigh - xlow)) * (width - left - right), number(shown, 3)];
          });
      for (const [at, text] of ticks) {
        svg.append(node("text", { x: at, y: height - 10, class: "tick x" }, text, SVG));
      }
      for (const p of points) {
        const cls = p.t.stopped_early ? "point val" : "point train";
        const dot = node("circle", { cx: cx(p.x), cy: y(p.y), r: 4, class: cls, "data-trial": p.t.trial }, null, SVG);
        dot.append(node("title", {}, `trial ${p.t.trial}: ${s.objective.metric} ${number(p.y, 5)}`, SVG));
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
