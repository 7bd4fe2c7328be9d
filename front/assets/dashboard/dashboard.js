// The live sale dashboard: polls /api/dashboard.json once a second, shows
// `stats` (the object `seckill admin stats` answers) as plain numbers with
// stable ids, and the per-second series as uPlot charts. No build step.
//
// Stable ids (docs/API.md, "Dashboard"):
//   engine-durable-lsn, engine-written-lsn, engine-fsyncs, engine-wal-failed,
//   engine-shards, engine-queue-depths, engine-wal-queue-depth,
//   persister-lag-records, persister-lag-ms, mirror-lag-records, mirror-lag-ms,
//   act-<id>-title, act-<id>-phase, act-<id>-stock-total, act-<id>-stock-left,
//   act-<id>-sold, act-<id>-orders-<status>, act-<id>-buys-<outcome>,
//   act-<id>-answers-<class> (front in this process only),
//   act-<id>-buys-per-s, act-<id>-p50-ms, act-<id>-p99-ms.
"use strict";

(function () {
  const POLL_MS = 1000;
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#6b7280"];
  const charts = new Map(); // element id -> uPlot
  const byId = (id) => document.getElementById(id);

  function setText(id, value) {
    const el = byId(id);
    if (!el) return;
    const text = value === null || value === undefined ? "–" : String(value);
    if (el.textContent !== text) el.textContent = text;
  }

  function el(tag, attrs, children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else e.setAttribute(k, v);
    }
    for (const c of children || []) e.append(c);
    return e;
  }

  function figure(id, label) {
    return el("div", {}, [el("dt", {}, [label]), el("dd", { id }, ["–"])]);
  }

  function last(arr) {
    if (!arr) return null;
    for (let i = arr.length - 1; i >= 0; i--) if (arr[i] !== null) return arr[i];
    return null;
  }

  function round(x, digits) {
    if (x === null || x === undefined) return null;
    const f = Math.pow(10, digits);
    return Math.round(x * f) / f;
  }

  const HEIGHT = 170;
  const zeroBased = (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1];
  // Charts follow their box's width.
  const resizer = new ResizeObserver((entries) => {
    for (const e of entries) {
      const u = charts.get(e.target.id);
      const w = Math.floor(e.contentRect.width);
      if (u && w > 0 && Math.abs(u.width - w) > 1) u.setSize({ width: w, height: HEIGHT });
    }
  });

  // A chart in `containerId` with one line per series; created once, then
  // fed. `rightAxis`: the last series is read on its own scale, on the right.
  function chart(containerId, names, t, columns, rightAxis) {
    const box = byId(containerId);
    if (!box) return;
    const data = [t].concat(columns);
    let u = charts.get(containerId);
    if (!u) {
      const scales = { x: { time: true }, y: { range: zeroBased } };
      const axes = [{}, { size: 55 }];
      const series = [{}].concat(
        names.map((n, i) => ({ label: n, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false }))
      );
      if (rightAxis) {
        scales.r = { range: zeroBased };
        axes.push({ scale: "r", side: 1, size: 55, grid: { show: false } });
        series[series.length - 1].scale = "r";
      }
      u = new uPlot(
        {
          width: Math.max(280, Math.floor(box.getBoundingClientRect().width) || 340),
          height: HEIGHT,
          legend: { show: true, live: false },
          cursor: { drag: { x: false, y: false } },
          scales,
          axes,
          series,
        },
        data,
        box
      );
      charts.set(containerId, u);
      resizer.observe(box);
    } else {
      u.setData(data);
    }
  }

  function activityCard(a, answersFromFront) {
    const id = a.id;
    const p = "act-" + id;
    const orders = Object.keys(a.orders).map((s) => figure(p + "-orders-" + s, s.replace("_", " ")));
    const buys = Object.keys(a.buys).map((o) => figure(p + "-buys-" + o, o.replace(/_/g, " ")));
    const parts = [
      el("h2", {}, [
        el("span", { id: p + "-title" }, ["#" + id]),
        el("span", { id: p + "-phase", class: "badge" }, ["–"]),
        el("span", { id: p + "-status", class: "muted" }, [""]),
      ]),
      el("dl", { class: "figures" }, [
        figure(p + "-stock-left", "stock left"),
        figure(p + "-stock-total", "stock total"),
        figure(p + "-sold", "units sold"),
        figure(p + "-buys-per-s", "buys/s"),
        figure(p + "-p50-ms", "p50 ms"),
        figure(p + "-p99-ms", "p99 ms"),
      ]),
      el("div", { class: "group-title" }, ["orders by status"]),
      el("dl", { class: "figures small" }, orders),
      el("div", { class: "group-title" }, ["buys decided by the engine, by outcome"]),
      el("dl", { class: "figures small" }, buys),
    ];
    if (answersFromFront) {
      const classes = ["201", "200", "409", "429", "503", "4xx", "5xx"];
      parts.push(el("div", { class: "group-title" }, ["answers buyers got from this process's front"]));
      parts.push(el("dl", { class: "figures small" }, classes.map((c) => figure(p + "-answers-" + c, c))));
    }
    parts.push(
      el("div", { class: "charts" }, [
        el("figure", {}, [el("figcaption", {}, ["buys/s and orders/s"]), el("div", { id: p + "-chart-rate" })]),
        el("figure", {}, [el("figcaption", {}, ["answers per second by status"]), el("div", { id: p + "-chart-answers" })]),
        el("figure", {}, [el("figcaption", {}, ["buy latency p50 / p99 (ms)"]), el("div", { id: p + "-chart-latency" })]),
        el("figure", {}, [el("figcaption", {}, ["stock left"]), el("div", { id: p + "-chart-stock" })]),
      ])
    );
    return el("section", { id: p, class: "card activity" }, parts);
  }

  function render(d) {
    const s = d.stats;
    setText("process", "(" + d.process + ")");
    setText("now", s.now);
    setText("engine-durable-lsn", s.durable_lsn);
    setText("engine-written-lsn", s.written_lsn);
    setText("engine-fsyncs", s.fsyncs);
    setText("engine-wal-failed", s.wal_failed);
    byId("engine-wal-failed").classList.toggle("bad-value", !!s.wal_failed);
    setText("engine-shards", s.shards);
    setText("engine-queue-depths", (s.queue_depths || []).join(" "));
    setText("engine-wal-queue-depth", s.wal_queue_depth);
    setText("persister-lag-records", s.persister ? s.persister.lag_records : "off");
    setText("persister-lag-ms", s.persister ? s.persister.lag_ms : "off");
    setText("mirror-lag-records", s.mirror ? s.mirror.lag_records : "off");
    setText("mirror-lag-ms", s.mirror ? s.mirror.lag_ms : "off");

    const t = d.series.t;
    const e = d.series.engine;
    chart("chart-fsync", ["p50", "p99"], t, [e.fsync_p50_ms, e.fsync_p99_ms]);
    chart("chart-group", ["records/fsync", "fsyncs/s (right)"], t, [e.records_per_fsync, e.fsyncs_per_s], true);
    chart("chart-queues", ["shard queues", "WAL writer queue"], t, [e.queue_depth, e.wal_queue_depth]);
    chart("chart-lag", ["persister", "mirror"], t, [e.persister_lag_records, e.mirror_lag_records]);

    const fromFront = d.answers_source === "front";
    const shown = (s.activities || []).filter((a) => d.series.activities[String(a.id)]);
    const list = byId("activities");
    const keep = new Set(shown.map((a) => "act-" + a.id));
    for (const card of Array.from(list.children)) {
      if (!keep.has(card.id)) {
        for (const k of Array.from(charts.keys())) {
          if (k.startsWith(card.id + "-")) {
            const box = byId(k);
            if (box) resizer.unobserve(box);
            charts.get(k).destroy();
            charts.delete(k);
          }
        }
        card.remove();
      }
    }
    byId("no-activities").hidden = shown.length > 0;
    // Newest first.
    shown.sort((x, y) => y.id - x.id);
    for (const a of shown) {
      const p = "act-" + a.id;
      if (!byId(p)) list.append(activityCard(a, fromFront));
      setText(p + "-title", "#" + a.id + " " + a.title);
      setText(p + "-phase", a.phase);
      byId(p + "-phase").className = "badge " + a.phase;
      setText(p + "-status", a.status === "active" ? "" : a.status);
      setText(p + "-stock-total", a.stock_total);
      setText(p + "-stock-left", a.stock_left);
      setText(p + "-sold", a.sold);
      for (const [k, v] of Object.entries(a.orders)) setText(p + "-orders-" + k, v);
      for (const [k, v] of Object.entries(a.buys)) setText(p + "-buys-" + k, v);
      const answers = fromFront && s.front && s.front.buy_answers ? s.front.buy_answers[String(a.id)] : null;
      if (fromFront) {
        for (const c of ["201", "200", "409", "429", "503", "4xx", "5xx"]) {
          setText(p + "-answers-" + c, answers ? answers[c] : 0);
        }
      }
      const ser = d.series.activities[String(a.id)];
      setText(p + "-buys-per-s", round(last(ser.buys_per_s), 1));
      setText(p + "-p50-ms", round(last(ser.p50_ms), 2));
      setText(p + "-p99-ms", round(last(ser.p99_ms), 2));
      const ans = ser.answers_per_s;
      chart(p + "-chart-rate", ["buys/s", "orders/s"], t, [ser.buys_per_s, ser.orders_per_s]);
      chart(p + "-chart-answers", ["201", "409", "429", "503"], t, [ans["201"], ans["409"], ans["429"], ans["503"]]);
      chart(p + "-chart-latency", ["p50", "p99"], t, [ser.p50_ms, ser.p99_ms]);
      chart(p + "-chart-stock", ["stock left"], t, [ser.stock_left]);
    }
  }

  async function poll() {
    const status = byId("status");
    try {
      const r = await fetch("/api/dashboard.json", { cache: "no-store" });
      if (!r.ok) throw new Error("HTTP " + r.status);
      render(await r.json());
      status.textContent = "live";
      status.className = "status ok";
    } catch (err) {
      status.textContent = "no data: " + err.message + " (retrying)";
      status.className = "status bad";
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  poll();
})();
