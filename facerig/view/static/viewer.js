// facerig view: shows a glTF morph-target rig (rig.glb), plays its recorded animation beside the
// source video, lets the user set each expression shape, plots the active weights over time, and
// animates the rig from a live WebSocket (facerig's per-frame message format).
// Everything it loads comes from the local server (three.js is vendored under static/vendor).
//
// URL parameters: frame=N (show animation frame N, paused), weights=name=v,... (set shapes, paused),
// ws=ws://host:port/ (live data), play=0|1 (start playing; default: play when there is an animation
// and neither frame nor weights is given).
// window.facerigViewer exposes the state for scripts and tests: ready, error, frame, mode,
// weights(), setWeights({...}), setFrame(n), rendered() (a promise for the next drawn frame),
// live {count, status, lastFrame}.

import * as THREE from 'three';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const V = window.facerigViewer = {
  ready: false, error: null, frame: 0, mode: 'anim', renders: 0,
  live: { count: 0, status: 'off', lastFrame: null },
};
const STALE_MS = 2000;  // "no live data" after this long without a frame message

function fail(msg) {
  V.error = String(msg);
  $('error').textContent = 'facerig view: ' + V.error;
  $('error').hidden = false;
  console.error(V.error);
}
window.addEventListener('error', (e) => { if (!V.ready) fail(e.message); });
window.addEventListener('unhandledrejection', (e) => { if (!V.ready) fail(e.reason && e.reason.message || e.reason); });

// ---------------------------------------------------------------------------------------------
// scene
const info = await (await fetch('info.json', { cache: 'no-store' })).json();
$('rigname').textContent = info.name;
$('download').textContent = `Download ${info.download_name} (${(info.glb_bytes / 1e6).toFixed(1)} MB)`;
$('download').setAttribute('download', info.download_name);
const canvas = $('view');
const renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
const scene = new THREE.Scene();
scene.background = new THREE.Color(0x2a2d34);
const camera = new THREE.PerspectiveCamera(28, 1, 0.01, 50);
scene.add(new THREE.HemisphereLight(0xffffff, 0x4a4540, 2.2));
const key = new THREE.DirectionalLight(0xffffff, 2.2);
key.position.set(0.35, 0.45, 1.0);
scene.add(key);
const controls = new OrbitControls(camera, canvas);
controls.enableDamping = true;

let gltf;
try {
  gltf = await new GLTFLoader().loadAsync(info.glb);
} catch (err) {
  fail('cannot load ' + info.glb + ': ' + (err && err.message || err));
  throw err;
}
const root = gltf.scene;
scene.add(root);
let mesh = null;
root.traverse((o) => { if (!mesh && o.isMesh && o.morphTargetInfluences) mesh = o; });
if (!mesh) root.traverse((o) => { if (!mesh && o.isMesh) mesh = o; });
if (!mesh) { fail('the rig has no mesh'); throw new Error('no mesh'); }
const dict = mesh.morphTargetDictionary || {};
const K = mesh.morphTargetInfluences ? mesh.morphTargetInfluences.length : 0;
const names = new Array(K);
for (const [n, k] of Object.entries(dict)) names[k] = n;
for (let k = 0; k < K; k++) if (names[k] === undefined) names[k] = info.names[k] || 'shape' + k;

// the animated node (the mesh's node, or its parent group for multi-primitive meshes)
const clip = gltf.animations[0] || null;
let wTrack = null, qTrack = null, pTrack = null, poseNode = mesh;
if (clip) {
  for (const tr of clip.tracks) {
    const pb = THREE.PropertyBinding.parseTrackName(tr.name);
    const node = THREE.PropertyBinding.findNode(root, pb.nodeName) || mesh;
    if (pb.propertyName === 'morphTargetInfluences') wTrack = tr;
    else if (pb.propertyName === 'quaternion') { qTrack = tr; poseNode = node; }
    else if (pb.propertyName === 'position') { pTrack = tr; poseNode = node; }
  }
}
const restQ = poseNode.quaternion.clone(), restP = poseNode.position.clone();
const T = wTrack ? wTrack.times.length : (qTrack ? qTrack.times.length : 0);
const fps = info.fps || (T > 1 ? (T - 1) / wTrack.times[T - 1] : 30);

// frame the neutral head
const box = new THREE.Box3().setFromObject(root);
const centre = box.getCenter(new THREE.Vector3()), size = box.getSize(new THREE.Vector3());
const dist = 1.1 * Math.max(size.x, size.y) / (2 * Math.tan(THREE.MathUtils.degToRad(camera.fov) / 2)) + size.z / 2;
camera.position.set(centre.x, centre.y, centre.z + dist);
camera.near = dist / 50; camera.far = dist * 50; camera.updateProjectionMatrix();
controls.target.copy(centre);
controls.update();

// ---------------------------------------------------------------------------------------------
// state: the weights and pose shown come from the animation (mode 'anim'), the sliders ('manual')
// or the WebSocket ('live')
const animW = new Float32Array(K), manualW = new Float32Array(K), liveW = new Float32Array(K);
const animQ = new THREE.Quaternion(), animP = new THREE.Vector3();
const liveQ = new THREE.Quaternion(), liveP = new THREE.Vector3();
let liveP0 = null;
let time = 0, playing = false, lastTick = performance.now();

function sampleAnim(f) {  // f: fractional frame index
  f = Math.min(Math.max(f, 0), Math.max(T - 1, 0));
  const i = Math.floor(f), j = Math.min(i + 1, T - 1), a = f - i;
  if (wTrack) {
    const v = wTrack.values;
    for (let k = 0; k < K; k++) animW[k] = v[i * K + k] * (1 - a) + v[j * K + k] * a;
  }
  if (qTrack) {
    const v = qTrack.values;
    const qa = new THREE.Quaternion().fromArray(v, 4 * i), qb = new THREE.Quaternion().fromArray(v, 4 * j);
    animQ.copy(qa).slerp(qb, a);
  } else animQ.copy(restQ);
  if (pTrack) {
    const v = pTrack.values;
    animP.fromArray(v, 3 * i).lerp(new THREE.Vector3().fromArray(v, 3 * j), a);
  } else animP.copy(restP);
}

function currentWeights() {
  return V.mode === 'live' ? liveW : V.mode === 'manual' ? manualW : animW;
}

function apply() {
  const w = currentWeights();
  for (let k = 0; k < K; k++) mesh.morphTargetInfluences[k] = w[k];
  if (V.mode === 'live') { poseNode.quaternion.copy(liveQ); poseNode.position.copy(liveP); }
  else { poseNode.quaternion.copy(animQ); poseNode.position.copy(animP); }
}

// ---------------------------------------------------------------------------------------------
// sliders
const sliderEls = [];
for (let k = 0; k < K; k++) {
  const row = document.createElement('div');
  row.className = 'shape';
  row.dataset.name = names[k].toLowerCase();
  row.innerHTML = `<label title="${names[k]}">${names[k]}</label><output>0.00</output>` +
                  `<input type="range" min="0" max="1" step="0.01" value="0" aria-label="${names[k]}">`;
  const input = row.querySelector('input'), out = row.querySelector('output');
  input.addEventListener('input', () => {
    if (V.mode !== 'manual') { manualW.set(currentWeights()); }
    setPlaying(false);
    V.mode = 'manual';
    manualW[k] = parseFloat(input.value);
  });
  $('sliders').appendChild(row);
  sliderEls.push({ row, input, out, shown: -1 });
}
$('filter').addEventListener('input', () => {
  const q = $('filter').value.trim().toLowerCase();
  for (const s of sliderEls) s.row.hidden = q !== '' && !s.row.dataset.name.includes(q);
});
$('neutral').addEventListener('click', () => { setPlaying(false); V.mode = 'manual'; manualW.fill(0); });

function updateSliders() {
  const w = currentWeights();
  for (let k = 0; k < K; k++) {
    const s = sliderEls[k], v = Math.round(w[k] * 100) / 100;
    if (s.shown === v) continue;
    s.shown = v;
    if (document.activeElement !== s.input) s.input.value = v;
    s.out.textContent = v.toFixed(2);
    s.row.classList.toggle('active', v >= 0.05);
  }
}

// ---------------------------------------------------------------------------------------------
// transport: play / pause / scrub, the video beside the animation
const scrub = $('scrub');
scrub.max = Math.max(T - 1, 0);
if (T <= 1) { $('play').disabled = true; scrub.disabled = true; }
function setPlaying(on) {
  playing = on && T > 1;
  $('play').innerHTML = playing ? '&#10074;&#10074;' : '&#9654;';
  lastTick = performance.now();
}
$('play').addEventListener('click', () => {
  if (V.mode !== 'anim') V.mode = 'anim';
  setPlaying(!playing);
});
scrub.addEventListener('input', () => { V.mode = 'anim'; setPlaying(false); time = parseInt(scrub.value) / fps; });
window.addEventListener('keydown', (e) => {
  if (e.target.tagName === 'INPUT') return;
  if (e.code === 'Space') { e.preventDefault(); $('play').click(); }
  if (e.code === 'ArrowRight' || e.code === 'ArrowLeft') {
    V.mode = 'anim'; setPlaying(false);
    const f = Math.round(time * fps) + (e.code === 'ArrowRight' ? 1 : -1);
    time = Math.min(Math.max(f, 0), Math.max(T - 1, 0)) / fps;
  }
});

const video = $('video');
// one request at a time (playback never floods the server); the frame asked for last is shown
let videoWant = -1, videoAsked = -1, videoShown = -1, videoLoading = false;
if (info.video) {
  $('videowrap').hidden = false;
  $('videolabel').textContent = info.video.label;
  video.width = info.video.width; video.height = info.video.height;
  const done = () => { videoLoading = false; videoShown = videoAsked; };
  video.addEventListener('load', done);
  video.addEventListener('error', done);
}
function updateVideo(f) {
  if (!info.video || V.mode === 'live') return;
  f = Math.min(f, info.video.frames - 1);
  videoWant = f;
  if (!videoLoading && f !== videoShown) { videoLoading = true; videoAsked = f; video.src = `video/${f}.jpg`; }
}

// ---------------------------------------------------------------------------------------------
// plot of the active weights over time (the recording, or the last 10 s of live data)
const plot = $('plot'), pctx = plot.getContext('2d');
const COLORS = ['#ff6b6b', '#4dabf7', '#69db7c', '#ffd43b', '#da77f2', '#ff922b', '#3bc9db', '#f783ac'];
let top = [];
if (wTrack) {
  const mx = new Float32Array(K);
  for (let t = 0; t < T; t++) for (let k = 0; k < K; k++) mx[k] = Math.max(mx[k], wTrack.values[t * K + k]);
  top = [...Array(K).keys()].filter((k) => mx[k] > 0.05).sort((a, b) => mx[b] - mx[a]).slice(0, 8);
}
const liveHist = [];  // [{t, w: Float32Array}]
let plotKey = '';

function drawPlot(force) {
  const w = plot.clientWidth, h = plot.clientHeight;
  if (!w || !h) return;
  const dpr = Math.min(window.devicePixelRatio || 1, 2);
  if (plot.width !== Math.round(w * dpr) || plot.height !== Math.round(h * dpr)) {
    plot.width = Math.round(w * dpr); plot.height = Math.round(h * dpr); force = true;
  }
  const live = V.mode === 'live';
  const keyNow = live ? 'live' + V.live.count : 'anim' + V.frame + V.mode;
  if (!force && keyNow === plotKey) return;
  plotKey = keyNow;
  const c = pctx;
  c.setTransform(dpr, 0, 0, dpr, 0, 0);
  c.fillStyle = '#1f2227'; c.fillRect(0, 0, w, h);
  const L = 8, R = 140, Tm = 8, B = 16, pw = w - L - R, ph = h - Tm - B;
  c.strokeStyle = '#3a3f4a'; c.lineWidth = 1;
  for (const y of [0, 0.5, 1]) { c.beginPath(); c.moveTo(L, Tm + ph * (1 - y)); c.lineTo(L + pw, Tm + ph * (1 - y)); c.stroke(); }
  c.font = '11px system-ui, sans-serif';
  let series = [], n = 0, xOf;
  if (live) {
    const hist = liveHist;
    n = hist.length;
    if (n) {
      const mx = new Float32Array(K);
      for (const e of hist) for (let k = 0; k < K; k++) mx[k] = Math.max(mx[k], e.w[k]);
      const ks = [...Array(K).keys()].filter((k) => mx[k] > 0.05).sort((a, b) => mx[b] - mx[a]).slice(0, 8);
      const t1 = hist[n - 1].t, t0 = t1 - 10;
      xOf = (i) => L + pw * Math.max(0, (hist[i].t - t0) / 10);
      series = ks.map((k) => ({ k, y: (i) => hist[i].w[k] }));
    }
    c.fillStyle = '#9aa3b2'; c.fillText('live: last 10 s', L + 4, Tm + 10);
  } else if (wTrack && T > 1) {
    n = T;
    xOf = (i) => L + pw * i / (T - 1);
    series = top.map((k) => ({ k, y: (i) => wTrack.values[i * K + k] }));
    const xc = L + pw * V.frame / (T - 1);
    c.strokeStyle = '#e9ecef'; c.beginPath(); c.moveTo(xc, Tm); c.lineTo(xc, Tm + ph); c.stroke();
    c.fillStyle = '#9aa3b2'; c.fillText(`0 s`, L, h - 3);
    const end = `${((T - 1) / fps).toFixed(1)} s`;
    c.fillText(end, L + pw - c.measureText(end).width, h - 3);
  } else {
    c.fillStyle = '#9aa3b2'; c.fillText('no recorded animation', L + 4, Tm + 12);
  }
  const stride = Math.max(1, Math.floor(n / (2 * pw)));
  series.forEach((s, j) => {
    c.strokeStyle = COLORS[j % COLORS.length]; c.lineWidth = 1.5; c.beginPath();
    for (let i = 0; i < n; i += stride) {
      const x = xOf(i), y = Tm + ph * (1 - s.y(i));
      if (i === 0) c.moveTo(x, y); else c.lineTo(x, y);
    }
    c.stroke();
    c.fillStyle = COLORS[j % COLORS.length];
    c.fillText(names[s.k], L + pw + 8, Tm + 11 + 13 * j);
  });
}

// ---------------------------------------------------------------------------------------------
// live data over a WebSocket (facerig's per-frame messages)
const wsUrl = params.get('ws') || info.ws_url;
let lastMsg = 0, everConnected = false, ended = false;
function setStatus(text, cls) { const s = $('status'); s.textContent = text; s.className = 'status ' + (cls || ''); }
function connect() {
  let ws;
  try { ws = new WebSocket(wsUrl); } catch (err) { setStatus('live: bad WebSocket URL ' + wsUrl, 'stale'); return; }
  V.live.status = 'connecting';
  ws.onopen = () => { everConnected = true; ended = false; V.live.status = 'waiting'; lastMsg = performance.now(); };
  ws.onmessage = (e) => { try { onLive(JSON.parse(e.data)); } catch (err) { console.warn('bad live message', err); } };
  ws.onclose = () => { V.live.status = ended ? 'ended' : 'disconnected'; setTimeout(connect, 1000); };
}
function onLive(m) {
  if (m.type === 'hello') { liveP0 = null; ended = false; return; }
  if (m.type === 'end') { ended = true; V.live.status = 'ended'; liveWatch(); return; }
  if (m.type !== 'frame') return;
  lastMsg = performance.now();
  V.live.count++;
  V.live.lastFrame = m.frame;
  V.live.face = m.face !== false;
  if (V.mode !== 'live') { setPlaying(false); V.mode = 'live'; liveW.fill(0); }
  if (m.face !== false) {
    if (m.weights) for (const [n, v] of Object.entries(m.weights)) { const k = dict[n]; if (k !== undefined) liveW[k] = +v; }
    if (Array.isArray(m.rotation) && m.rotation.length === 3) {
      // camera frame (x right, y down, z forward) -> model/glTF frame (y up, z to the viewer):
      // R_model = M^T R M with M = diag(1, -1, -1), i.e. axis-angle (rx, -ry, -rz)
      const r = new THREE.Vector3(m.rotation[0], -m.rotation[1], -m.rotation[2]);
      const ang = r.length();
      if (ang > 1e-9) liveQ.setFromAxisAngle(r.divideScalar(ang), ang); else liveQ.identity();
    } else if (m.yaw !== undefined) {
      liveQ.setFromEuler(new THREE.Euler(THREE.MathUtils.degToRad(-(m.pitch || 0)),
        THREE.MathUtils.degToRad(m.yaw || 0), THREE.MathUtils.degToRad(m.roll || 0), 'YXZ'));
    }
    if (Array.isArray(m.translation) && m.translation.length === 3) {
      const p = new THREE.Vector3(m.translation[0], -m.translation[1], -m.translation[2]).multiplyScalar(0.01);
      if (!liveP0) liveP0 = p.clone();
      liveP.copy(restP).add(p.sub(liveP0));  // head motion relative to the first frame, like rig.glb
    }
  }
  liveHist.push({ t: lastMsg / 1000, w: Float32Array.from(liveW) });
  while (liveHist.length && liveHist[0].t < lastMsg / 1000 - 10) liveHist.shift();
  liveWatch();  // clear a "no live data" banner at once
}
function liveWatch() {
  if (!wsUrl) return;
  const age = performance.now() - lastMsg;
  let text, cls, banner = null;
  if (ended) { text = 'live: the source ended'; cls = 'stale'; banner = 'live source ended'; }
  else if (V.live.count > 0 && age < STALE_MS) {
    text = `live: frame ${V.live.lastFrame}` + (V.live.face ? '' : ' (no face)'); cls = 'live';
    V.live.status = 'live';
  } else {
    text = everConnected ? `live: no data for ${(age / 1000).toFixed(0)} s` : `live: connecting to ${wsUrl}`;
    cls = 'stale'; banner = 'no live data';
    if (V.live.status !== 'disconnected' && V.live.status !== 'connecting') V.live.status = 'no live data';
  }
  setStatus(text, cls);
  $('banner').hidden = banner === null;
  if (banner !== null) $('banner').textContent = banner;
}
if (wsUrl) { connect(); setInterval(liveWatch, 250); liveWatch(); }

// ---------------------------------------------------------------------------------------------
// start state from the URL
function parseWeights(s) {
  const out = {};
  for (const part of (s || '').split(',')) {
    if (!part.trim()) continue;
    const [n, v] = part.split('=');
    out[n.trim()] = parseFloat(v);
  }
  return out;
}
if (params.has('frame')) time = Math.min(Math.max(parseInt(params.get('frame')) || 0, 0), Math.max(T - 1, 0)) / fps;
sampleAnim(time * fps);
if (params.has('weights')) {
  manualW.set(animW);
  for (const [n, v] of Object.entries(parseWeights(params.get('weights')))) {
    if (dict[n] === undefined) { fail(`unknown shape ${n}; the rig has: ${names.join(', ')}`); continue; }
    manualW[dict[n]] = v;
  }
  V.mode = 'manual';
}
const autoplay = params.has('play') ? params.get('play') === '1' : !(params.has('frame') || params.has('weights'));
setPlaying(autoplay && !wsUrl);

// ---------------------------------------------------------------------------------------------
// render loop
let waiters = [];
V.rendered = () => new Promise((res) => waiters.push(res));
V.weights = () => Object.fromEntries(names.map((n, k) => [n, currentWeights()[k]]));
V.setWeights = (obj, base) => {
  manualW.set(base === 'zero' ? new Float32Array(K) : currentWeights());
  for (const [n, v] of Object.entries(obj)) {
    if (dict[n] === undefined) throw new Error('unknown shape ' + n);
    manualW[dict[n]] = v;
  }
  setPlaying(false); V.mode = 'manual';
  return V.rendered().then(() => V.rendered());
};
V.setFrame = (f) => { V.mode = 'anim'; setPlaying(false); time = f / fps; return V.rendered().then(() => V.rendered()); };
V.canvasRect = () => { const r = canvas.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; };
V.names = names; V.frames = T; V.fps = fps;

function resize() {
  const w = canvas.clientWidth, h = canvas.clientHeight;
  const dpr = renderer.getPixelRatio();
  if (canvas.width !== Math.floor(w * dpr) || canvas.height !== Math.floor(h * dpr)) {
    renderer.setSize(w, h, false);
    camera.aspect = w / Math.max(h, 1);
    camera.updateProjectionMatrix();
    drawPlot(true);
  }
}

function tick(now) {
  const dt = (now - lastTick) / 1000;
  lastTick = now;
  if (playing && V.mode === 'anim') {
    time += dt;
    if (time > (T - 1) / fps) time = 0;
  }
  if (V.mode !== 'live') sampleAnim(time * fps);
  V.frame = Math.round(time * fps);
  if (T > 0 && document.activeElement !== scrub) scrub.value = V.frame;
  $('frameinfo').textContent = T > 0 ? `frame ${V.frame} / ${T - 1}  ${(V.frame / fps).toFixed(2)} s` : 'no animation';
  apply();
  updateSliders();
  updateVideo(V.frame);
  resize();
  controls.update();
  renderer.render(scene, camera);
  drawPlot(false);
  V.renders++;
  const w = waiters; waiters = [];
  for (const r of w) r();
  if (!V.ready && V.renders >= 2 && !V.error && (!info.video || V.mode === 'live' || (videoShown === videoWant && !videoLoading))) {
    V.ready = true;
  }
  requestAnimationFrame(tick);
}
requestAnimationFrame(tick);
