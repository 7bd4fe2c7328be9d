// The buyer page of seckill (served at `/` by the buyer listener).
//
// Plain JS, no build step, no other origin (the page's Content-Security-Policy
// allows scripts, styles and requests from this origin only). Every time on
// the page is the *server's*: `/api/v1/info` and every `/api/v1/activities`
// answer carry `now`, and the page keeps the offset between that clock and
// the visitor's, so a countdown ends when the server opens the sale, not when
// a wrong laptop clock says so. Every answer of the API is put into words a
// buyer understands (docs/API.md lists the codes).
'use strict';

(() => {
  const API = '/api/v1';
  const SALES_POLL_MS = 2000;
  // Order reads reach the engine (sales are answered from the front's
  // cache): rarer, and at once after every action of this page.
  const ORDERS_POLL_MS = 15000;
  const TICK_MS = 200;

  const $ = (id) => document.getElementById(id);
  const state = {
    token: sessionStorage.getItem('seckill.token') || '',
    user: sessionStorage.getItem('seckill.user') || '',
    info: null,
    offsetMs: 0, // server clock minus this browser's clock
    bestRttMs: Infinity,
    sales: new Map(), // activity id -> { view, el, parts, key, busy, blockedUntil, msg }
    orders: [],
    orderRows: new Map(), // order id -> { order, deadline, pay, cancel }
    salesBlockedUntil: 0,
    salesLoading: false,
  };

  // ---- the server's clock -------------------------------------------------

  const serverNow = () => Date.now() + state.offsetMs;

  // A sample of the server's clock taken between t0 and t1 (this browser's
  // clock): the midpoint is the best guess. Samples with a round trip much
  // longer than the best one seen are ignored (they say less).
  function syncClock(iso, t0, t1) {
    const s = Date.parse(iso);
    if (Number.isNaN(s)) return;
    const rtt = t1 - t0;
    if (rtt > state.bestRttMs + 100) return;
    state.bestRttMs = Math.min(state.bestRttMs, rtt);
    state.offsetMs = s - (t0 + t1) / 2;
  }

  const pad = (n) => String(n).padStart(2, '0');
  function clockText(ms) {
    const d = new Date(ms);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function dateTimeText(ms) {
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clockText(ms)}`;
  }
  // A duration as `1d 02:03:04` or `02:03:04`; rounded up, so "00:00:00"
  // shows only once the moment has come.
  function durationText(ms) {
    let s = Math.max(0, Math.ceil(ms / 1000));
    const days = Math.floor(s / 86400);
    s -= days * 86400;
    const hms = `${pad(Math.floor(s / 3600))}:${pad(Math.floor(s / 60) % 60)}:${pad(s % 60)}`;
    return days > 0 ? `${days}d ${hms}` : hms;
  }
  function waitText(ms) {
    const s = Math.max(1, Math.ceil(ms / 1000));
    if (s < 120) return `${s} s`;
    return `${Math.ceil(s / 60)} min`;
  }
  const money = (cents) => (cents / 100).toFixed(2);

  // ---- talking to the API ---------------------------------------------------

  // `Retry-After` is seconds or an HTTP date; milliseconds to wait, or null.
  function retryAfterMs(v) {
    if (v == null || v === '') return null;
    if (/^\d+$/.test(v.trim())) return Number(v) * 1000;
    const at = Date.parse(v);
    return Number.isNaN(at) ? null : Math.max(0, at - Date.now());
  }

  async function api(method, path, { body, auth = false, headers = {} } = {}) {
    const h = { Accept: 'application/json', ...headers };
    if (body !== undefined) h['Content-Type'] = 'application/json';
    if (auth && state.token) h.Authorization = `Bearer ${state.token}`;
    const t0 = Date.now();
    let res;
    try {
      res = await fetch(API + path, {
        method,
        headers: h,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        credentials: 'omit',
      });
    } catch (e) {
      return { ok: false, status: 0, code: 'network', message: String(e), retryMs: null };
    }
    const t1 = Date.now();
    let data = null;
    try {
      data = await res.json();
    } catch (_) {
      data = null;
    }
    const out = { ok: res.ok, status: res.status, data, t0, t1, retryMs: retryAfterMs(res.headers.get('Retry-After')) };
    if (!res.ok) {
      const err = data && data.error ? data.error : {};
      out.code = err.code || `http_${res.status}`;
      out.message = err.message || res.statusText || '';
    }
    return out;
  }

  // What an answer means, in words. `ctx.sale` is the sale's view when known.
  function explain(r, ctx = {}) {
    const sale = ctx.sale;
    const wait = r.retryMs != null ? waitText(r.retryMs) : null;
    switch (r.code) {
      case 'network':
        return 'Could not reach the shop. Check your connection and try again.';
      case 'sold_out':
        return 'Sold out: every unit of this sale has been taken.';
      case 'limit_reached':
        return sale
          ? `You already have the most one buyer may buy in this sale (${sale.per_user_limit}).`
          : 'You already have the most one buyer may buy in this sale.';
      case 'not_started':
        return 'This sale has not started yet. The button unlocks when the countdown ends.';
      case 'ended':
        return 'This sale has ended.';
      case 'paused':
        return 'The seller has paused this sale for a moment. Try again shortly.';
      case 'rate_limited':
        return `Too many clicks. You can try again in ${wait || 'a moment'}.`;
      case 'busy':
        return `The shop is very busy and could not confirm this. Try again in ${wait || '1 s'}; trying again will not buy twice.`;
      case 'group_unavailable':
        return `This sale's servers are unreachable for now; other sales are open. Try again in ${wait || '1 s'}; trying again will not buy twice.`;
      case 'unauthorized':
        return 'You are not signed in, or your sign-in has expired. Please log in again.';
      case 'buy_token_required':
        return 'This sale needs a ticket before buying. Please click again.';
      case 'invalid_state':
        return 'This order can no longer be changed that way: it has been paid, cancelled or has expired.';
      case 'order_not_found':
        return 'That order was not found.';
      case 'activity_not_found':
        return 'That sale does not exist any more.';
      case 'amount_mismatch':
        return 'The amount paid does not match the order.';
      case 'idempotency_key_reused':
        return 'That click was already used for another purchase. Please click again.';
      case 'payload_too_large':
      case 'bad_request':
        return `The shop did not accept that: ${r.message}.`;
      case 'not_found':
        return r.message ? `Not available: ${r.message}.` : 'Not available here.';
      case 'internal':
        return 'Something went wrong on our side. Please try again.';
      default:
        return `Unexpected answer from the shop (HTTP ${r.status}${r.message ? `: ${r.message}` : ''}).`;
    }
  }

  function notice(text, kind = 'info', source = '') {
    const n = $('notice');
    n.textContent = text;
    n.className = kind;
    n.dataset.source = source;
    n.hidden = !text;
  }

  // A 401 anywhere: the token is no good any more.
  function signedOutBy(r) {
    if (r.status !== 401) return false;
    setToken('', '');
    notice(explain(r), 'error');
    return true;
  }

  // ---- signing in -------------------------------------------------------------

  // The `sub` of a JWT, for showing who is signed in (the server checks the token).
  function subjectOf(token) {
    try {
      const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      const claims = JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
      return claims && claims.sub != null ? String(claims.sub) : '';
    } catch (_) {
      return '';
    }
  }

  function setToken(token, user) {
    state.token = token;
    state.user = user;
    if (token) {
      sessionStorage.setItem('seckill.token', token);
      sessionStorage.setItem('seckill.user', user);
    } else {
      sessionStorage.removeItem('seckill.token');
      sessionStorage.removeItem('seckill.user');
      state.orders = [];
      renderOrders();
    }
    renderAccount();
    renderSales();
  }

  function renderAccount() {
    const demo = !!(state.info && state.info.demo_login);
    $('signed-in').hidden = !state.token;
    $('signed-out').hidden = !!state.token;
    $('demo-login').hidden = !demo;
    $('token-login').hidden = demo;
    $('who').textContent = state.user ? `user ${state.user}` : 'a token holder';
    $('orders-section').hidden = !state.token;
  }

  async function demoLogin(ev) {
    ev.preventDefault();
    const raw = $('demo-user').value.trim();
    if (!/^\d+$/.test(raw) || Number(raw) < 1 || !Number.isSafeInteger(Number(raw))) {
      notice('A user id is a whole number from 1 up.', 'error');
      return;
    }
    const r = await api('POST', '/demo/token', { body: { user_id: Number(raw) } });
    if (!r.ok) {
      notice(r.code === 'rate_limited' ? `Too many logins. You can try again in ${waitText(r.retryMs || 1000)}.` : explain(r), 'error');
      return;
    }
    setToken(r.data.token, String(r.data.user_id));
    notice(`Signed in as user ${r.data.user_id} (demo login).`, 'ok');
    loadOrders();
  }

  async function tokenLogin(ev) {
    ev.preventDefault();
    const token = $('token-input').value.trim().replace(/^Bearer\s+/i, '');
    if (!token) return;
    state.token = token;
    const r = await api('GET', '/orders?limit=1', { auth: true });
    if (!r.ok) {
      state.token = '';
      notice(r.status === 401 ? 'That token was not accepted: it is wrong or has expired.' : explain(r), 'error');
      return;
    }
    $('token-input').value = '';
    setToken(token, subjectOf(token));
    notice('Signed in.', 'ok');
    loadOrders();
  }

  // ---- sales ---------------------------------------------------------------------

  function phaseOf(view, now) {
    if (view.phase === 'paused') return 'paused';
    if (view.status === 'disabled') return 'ended';
    if (now < Date.parse(view.starts_at)) return 'upcoming';
    if (now < Date.parse(view.ends_at)) return 'ongoing';
    return 'ended';
  }

  const PHASE_LABEL = { upcoming: 'Upcoming', ongoing: 'On sale', ended: 'Ended', paused: 'Paused' };

  function saleCard(id) {
    const el = $('sale-template').content.firstElementChild.cloneNode(true);
    el.id = `sale-${id}`;
    const part = (cls, suffix) => {
      const p = el.querySelector(`.${cls}`);
      p.id = `sale-${id}-${suffix}`;
      return p;
    };
    const parts = {
      title: part('title', 'title'),
      phase: part('phase', 'phase'),
      product: part('product', 'product'),
      price: part('price', 'price'),
      remaining: part('remaining', 'remaining'),
      total: part('total', 'total'),
      countdown: part('countdown', 'countdown'),
      qty: part('qty', 'qty'),
      buy: part('buy', 'buy'),
      msg: part('msg', 'msg'),
      qtyLabel: el.querySelector('.qty-label'),
    };
    parts.buy.addEventListener('click', () => buy(id));
    parts.qty.addEventListener('change', () => {
      const s = state.sales.get(id);
      if (s) s.key = null; // another quantity is another purchase
    });
    return { el, parts };
  }

  async function loadSales() {
    if (state.salesLoading || serverNow() < state.salesBlockedUntil) return;
    state.salesLoading = true;
    try {
      const r = await api('GET', '/activities?limit=100');
      if (!r.ok) {
        if (r.retryMs != null) state.salesBlockedUntil = serverNow() + r.retryMs;
        const again = r.retryMs != null ? ` in ${waitText(r.retryMs)}` : '';
        if (r.code === 'busy') {
          notice(`The shop is very busy right now. The list of sales will refresh by itself${again}.`, 'error', 'sales');
        } else if (r.code === 'rate_limited') {
          notice(`Too many page refreshes from your address. The list of sales will refresh by itself${again}.`, 'error', 'sales');
        } else if (r.code === 'network') {
          notice(`${explain(r)} The list of sales will refresh by itself.`, 'error', 'sales');
        } else {
          notice(explain(r), 'error');
        }
        return;
      }
      if (r.data.now) syncClock(r.data.now, r.t0, r.t1);
      const seen = new Set();
      for (const view of r.data.items) {
        seen.add(view.id);
        let s = state.sales.get(view.id);
        if (!s) {
          s = { ...saleCard(view.id), key: null, busy: false, blockedUntil: 0, msg: null };
          state.sales.set(view.id, s);
        }
        s.view = view;
        s.parts.title.textContent = view.title;
        // A sale made without a product names its product after itself.
        s.parts.product.textContent = view.product_name && view.product_name !== view.title ? view.product_name : '';
        s.parts.product.hidden = !s.parts.product.textContent;
        s.parts.price.textContent = `Price ${money(view.price_cents)} · at most ${view.per_user_limit} per buyer`;
        s.parts.remaining.textContent = String(view.remaining);
        s.parts.total.textContent = String(view.total_stock);
        s.parts.qty.max = String(view.per_user_limit);
        s.parts.qtyLabel.hidden = view.per_user_limit <= 1;
      }
      for (const [id, s] of state.sales) {
        if (!seen.has(id)) {
          s.el.remove();
          state.sales.delete(id);
        }
      }
      const list = $('sales');
      for (const s of [...state.sales.values()].sort((a, b) => a.view.id - b.view.id)) {
        if (s.el.parentNode !== list || list.lastElementChild !== s.el) list.appendChild(s.el);
      }
      $('sales-empty').hidden = state.sales.size > 0;
      // A list that loads again clears its own trouble notice (and only that).
      if ($('notice').dataset.source === 'sales') notice('');
      renderSales();
      renderOrders();
    } finally {
      state.salesLoading = false;
    }
  }

  function setSaleMsg(s, text, kind) {
    s.msg = text ? { text, kind } : null;
  }

  // Countdowns, phases and buttons, from the server's clock (every tick).
  function renderSales() {
    const now = serverNow();
    for (const s of state.sales.values()) {
      if (!s.view) continue;
      const v = s.view;
      const phase = phaseOf(v, now);
      if (s.el.dataset.phase && s.el.dataset.phase !== phase) {
        // The sale opened or closed just now: fetch its fresh stock.
        setTimeout(loadSales, 50);
      }
      s.el.dataset.phase = phase;
      s.parts.phase.textContent = v.sold_out && phase === 'ongoing' ? 'Sold out' : PHASE_LABEL[phase];
      s.parts.phase.className = `phase badge ${v.sold_out ? 'sold-out' : phase}`;
      let cd;
      const far = (ms) => ms - now > 7 * 86_400_000; // a week away: a date says more than a countdown
      const starts = Date.parse(v.starts_at);
      const ends = Date.parse(v.ends_at);
      if (phase === 'upcoming') cd = far(starts) ? `Starts ${dateTimeText(starts)}` : `Starts in ${durationText(starts - now)}`;
      else if (phase === 'ongoing') cd = far(ends) ? `Open until ${dateTimeText(ends)}` : `Ends in ${durationText(ends - now)}`;
      else if (phase === 'paused') cd = 'Paused by the seller';
      else cd = `Ended ${dateTimeText(Math.min(Date.parse(v.ends_at), now))}`;
      s.parts.countdown.textContent = cd;

      const blocked = s.blockedUntil > now;
      let label = 'Buy now';
      let enabled = false;
      if (!state.token) label = 'Log in to buy';
      else if (s.busy) label = 'Buying…';
      else if (phase === 'upcoming') label = 'Not started';
      else if (phase === 'ended') label = 'Ended';
      else if (phase === 'paused') label = 'Paused';
      else if (v.sold_out) label = 'Sold out';
      else if (blocked) label = `Wait ${waitText(s.blockedUntil - now)}`;
      else enabled = true;
      s.parts.buy.textContent = label;
      s.parts.buy.disabled = !enabled;

      let msg = s.msg;
      if (s.rateLimited) {
        msg = blocked
          ? { text: `Too many clicks. You can try again in ${waitText(s.blockedUntil - now)}.`, kind: 'error' }
          : { text: 'You can try again now.', kind: 'info' };
      } else if (!msg && v.sold_out && phase !== 'upcoming') {
        msg = { text: 'Sold out: every unit of this sale has been taken.', kind: 'info' };
      }
      s.parts.msg.textContent = msg ? msg.text : '';
      s.parts.msg.className = `msg ${msg ? msg.kind : ''}`;
    }
  }

  const newKey = () =>
    crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(36).slice(2)}`;

  async function buy(id) {
    const s = state.sales.get(id);
    if (!s || s.busy) return;
    if (!state.token) {
      notice('Log in first to buy.', 'error');
      return;
    }
    const quantity = Math.max(1, Math.floor(Number(s.parts.qty.value) || 1));
    // One key per purchase, kept until a final answer: a retry after "busy"
    // or a lost connection returns the first order instead of buying twice.
    s.key = s.key || newKey();
    s.busy = true;
    s.rateLimited = false;
    setSaleMsg(s, '', '');
    renderSales();
    try {
      const body = { quantity };
      if (s.view.require_buy_token) {
        const t = await api('POST', `/activities/${id}/token`, { auth: true });
        if (!t.ok) return failed(s, t);
        body.buy_token = t.data.buy_token;
      }
      const r = await api('POST', `/activities/${id}/buy`, { auth: true, body, headers: { 'Idempotency-Key': s.key } });
      if (!r.ok) return failed(s, r);
      s.key = null;
      const o = r.data;
      setSaleMsg(s, `Bought ${o.quantity}: order ${o.order_id}. Pay before ${clockText(Date.parse(o.pay_before))}.`, 'ok');
      await loadOrders(o.order_id);
      loadSales();
    } finally {
      s.busy = false;
      renderSales();
    }
  }

  function failed(s, r) {
    if (r.code !== 'busy' && r.code !== 'network') s.key = null;
    if (signedOutBy(r)) return;
    if (r.code === 'rate_limited' || r.code === 'busy') {
      s.blockedUntil = serverNow() + (r.retryMs != null ? r.retryMs : 1000);
    }
    s.rateLimited = r.code === 'rate_limited';
    if (r.code === 'sold_out') s.view = { ...s.view, sold_out: true, remaining: 0 };
    if (r.code === 'sold_out') s.parts.remaining.textContent = '0';
    setSaleMsg(s, explain(r, { sale: s.view }), r.code === 'sold_out' ? 'info' : 'error');
  }

  // ---- orders ------------------------------------------------------------------------

  const STATUS_LABEL = {
    pending_payment: 'Awaiting payment',
    paid: 'Paid',
    cancelled: 'Cancelled',
    expired: 'Expired (not paid in time)',
    refunded: 'Refunded',
    shipped: 'Shipped',
  };

  async function loadOrders(highlight) {
    if (!state.token) return;
    const r = await api('GET', '/orders?limit=50', { auth: true });
    if (!r.ok) {
      if (!signedOutBy(r)) notice(explain(r), 'error');
      return;
    }
    state.orders = r.data.items;
    state.highlight = highlight || state.highlight;
    renderOrders();
  }

  function renderOrders() {
    // Rebuilt only when something shown changed, so a button is never
    // replaced under a pointer (or a test) about to click it.
    const sandbox = !!(state.info && state.info.payment === 'sandbox');
    const titles = state.orders.map((o) => (state.sales.get(o.activity_id) || { view: {} }).view.title);
    const shown = JSON.stringify([state.orders, titles, sandbox, state.highlight]);
    if (shown === state.ordersShown) {
      tickOrders();
      return;
    }
    state.ordersShown = shown;
    const body = $('orders-body');
    body.textContent = '';
    state.orderRows.clear();
    $('orders').hidden = state.orders.length === 0;
    $('orders-empty').hidden = state.orders.length > 0;
    for (const o of state.orders) {
      const tr = document.createElement('tr');
      tr.id = `order-${o.order_id}`;
      if (o.order_id === state.highlight) tr.className = 'new';
      const cell = (text, suffix) => {
        const td = document.createElement('td');
        td.textContent = text;
        if (suffix) td.id = `order-${o.order_id}-${suffix}`;
        tr.appendChild(td);
        return td;
      };
      cell(o.order_id, 'id').className = 'mono';
      const sale = state.sales.get(o.activity_id);
      cell(sale ? sale.view.title : `sale ${o.activity_id}`, 'sale');
      cell(String(o.quantity), 'qty');
      cell(money(o.amount_cents), 'amount');
      cell(STATUS_LABEL[o.status] || o.status, 'status').className = `status ${o.status}`;
      const deadline = cell('', 'deadline');
      const actions = cell('', 'actions');
      const row = { order: o, deadline, pay: null, cancel: null };
      if (o.status === 'pending_payment') {
        if (sandbox) {
          row.pay = button('Pay', `order-${o.order_id}-pay`, () => orderAction(o, 'pay'));
          actions.appendChild(row.pay);
        }
        row.cancel = button('Cancel', `order-${o.order_id}-cancel`, () => orderAction(o, 'cancel'));
        row.cancel.className = 'secondary';
        actions.appendChild(row.cancel);
      }
      state.orderRows.set(o.order_id, row);
      body.appendChild(tr);
    }
    tickOrders();
  }

  function button(text, id, onClick) {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = text;
    b.id = id;
    b.addEventListener('click', onClick);
    return b;
  }

  function tickOrders() {
    const now = serverNow();
    for (const row of state.orderRows.values()) {
      const o = row.order;
      const before = Date.parse(o.pay_before);
      if (o.status !== 'pending_payment') {
        row.deadline.textContent = '—';
        continue;
      }
      const left = before - now;
      row.deadline.textContent =
        left > 0 ? `${clockText(before)} (${durationText(left)} left)` : `${clockText(before)} (time is up)`;
      row.deadline.className = left > 0 && left < 60_000 ? 'urgent' : '';
      if (row.pay) row.pay.disabled = left <= 0;
    }
  }

  async function orderAction(o, what) {
    const r = await api('POST', `/orders/${encodeURIComponent(o.order_id)}/${what}`, { auth: true });
    if (!r.ok) {
      if (!signedOutBy(r)) notice(explain(r), 'error');
      await loadOrders();
      return;
    }
    notice(what === 'pay' ? `Order ${o.order_id} is paid. Thank you!` : `Order ${o.order_id} is cancelled.`, 'ok');
    await loadOrders(o.order_id);
    if (what === 'cancel') loadSales();
  }

  // ---- start ----------------------------------------------------------------------------

  async function loadInfo() {
    const r = await api('GET', '/info');
    if (!r.ok) {
      notice(explain(r), 'error');
      return false;
    }
    state.info = r.data;
    syncClock(r.data.now, r.t0, r.t1);
    $('mode').textContent =
      r.data.payment === 'sandbox'
        ? 'Sandbox: payments are simulated and anyone may log in as any user id'
        : 'Payments are handled by the payment provider';
    document.body.dataset.payment = r.data.payment;
    renderAccount();
    return true;
  }

  function tick() {
    $('server-clock').textContent = clockText(serverNow());
    renderSales();
    tickOrders();
  }

  async function start() {
    $('demo-login').addEventListener('submit', demoLogin);
    $('token-login').addEventListener('submit', tokenLogin);
    $('logout').addEventListener('click', () => {
      setToken('', '');
      notice('Signed out.', 'info');
    });
    renderAccount();
    while (!(await loadInfo())) await new Promise((ok) => setTimeout(ok, 2000));
    await loadSales();
    await loadOrders();
    document.body.dataset.ready = 'true';
    setInterval(tick, TICK_MS);
    setInterval(loadSales, SALES_POLL_MS);
    setInterval(loadOrders, ORDERS_POLL_MS);
    // The clock is resampled now and then; the best recent sample wins.
    setInterval(() => {
      state.bestRttMs += 50;
    }, 10_000);
  }

  document.addEventListener('DOMContentLoaded', start);
})();
