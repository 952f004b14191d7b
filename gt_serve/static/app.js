// gt serve's page: audio in (microphone or a file), frames + their audio out, played in sync.
// Plain JS, no build step. Protocol: docs/PROTOCOL.md. window.gtStats is read by the browser test.
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const token = params.get("token");
const AUDIO_BYTES = 1280;                  // 640 s16le samples at 16 kHz per frame
const stats = window.gtStats = { frames: 0, speechFrames: 0, fps: 0, latencyMs: null, connected: false,
                                 error: null, drawn: 0, arrivals: [] };

let ws = null, ctx = null, playhead = 0, mic = null, feeder = null;
let sentLog = [];                          // [{utt, seconds: input audio sent so far in this utterance, t}]
let utt = 0, uttSent = 0, inRate = 16000;   // the server numbers utterances 0, 1, ... per connection
const pending = [];                        // frames waiting for their audio to start: {bitmap, at}

function setStatus(text, err) { $("status").textContent = text; $("status").className = err ? "err" : ""; }

async function loadAvatars() {
  const q = token ? `?token=${encodeURIComponent(token)}` : "";
  const r = await fetch(`/v1/avatars${q}`);
  if (!r.ok) { setStatus(`avatars: HTTP ${r.status} (a token? open /?token=T)`, true); return []; }
  const list = await r.json();
  $("avatar").innerHTML = list.map((a) => `<option value="${a.name}">${a.name} (${a.width}x${a.height})</option>`).join("");
  const want = params.get("avatar");
  if (want) $("avatar").value = want;
  setStatus(`${list.length} avatar(s); choose the microphone or a speech file`);
  return list;
}

function audioContext() {
  if (!ctx) ctx = new AudioContext();
  if (ctx.state === "suspended") ctx.resume();
  return ctx;
}

function connect(pace) {
  return new Promise((resolve, reject) => {
    if (ws) ws.close();
    const q = new URLSearchParams({ avatar: $("avatar").value });
    if (token) q.set("token", token);
    const proto = location.protocol === "https:" ? "wss" : "ws";
    ws = new WebSocket(`${proto}://${location.host}/v1/stream?${q}`);
    ws.binaryType = "arraybuffer";
    ws.onmessage = (ev) => {
      if (typeof ev.data === "string") {
        const m = JSON.parse(ev.data);
        if (m.type === "ready") {
          stats.connected = true;
          utt = 0; uttSent = 0; sentLog = [];
          $("view").width = m.width; $("view").height = m.height;
          $("size").textContent = `${m.width}x${m.height}`;
          ws.send(JSON.stringify({ type: "start", sample_rate: inRate, encoding: "f32le", pace }));
          resolve(m);
        } else if (m.type === "error") {
          stats.error = m.message; setStatus(m.message, true);
        } else if (m.type === "speech_start") {
          $("state").textContent = "speaking";
        } else if (m.type === "speech_end") {
          $("state").textContent = m.interrupted ? "interrupted" : "at rest";
        }
        return;
      }
      onFrame(ev.data);
    };
    ws.onclose = (ev) => {
      stats.connected = false;
      if (ev.code !== 1000 && ev.code !== 1005) setStatus(`closed (${ev.code}) ${stats.error || ""}`, true);
      reject(new Error(`closed ${ev.code}`));
    };
  });
}

function onFrame(buf) {
  const now = performance.now();
  const n = new DataView(buf).getUint32(0, true);
  const head = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, n)));
  const jpeg = new Blob([new Uint8Array(buf, 4 + n, buf.byteLength - 4 - n - AUDIO_BYTES)], { type: "image/jpeg" });
  const pcm = new Int16Array(buf.slice(buf.byteLength - AUDIO_BYTES));
  stats.frames++;
  stats.arrivals.push(now);
  while (stats.arrivals.length && stats.arrivals[0] < now - 2000) stats.arrivals.shift();
  if (head.speech) {
    stats.speechFrames++;
    latency(head, now);
  }
  // Audio: this frame's 40 ms right after the previous frame's; the picture is shown when it starts.
  let at = null;
  if (ctx && ctx.state === "running") {
    const b = ctx.createBuffer(1, pcm.length, 16000);
    const ch = b.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) ch[i] = pcm[i] / 32768;
    const src = ctx.createBufferSource();
    src.buffer = b;
    src.connect(ctx.destination);
    if (playhead < ctx.currentTime + 0.03) playhead = ctx.currentTime + 0.06;   // (re)start with a small buffer
    src.start(playhead);
    at = playhead;
    playhead += pcm.length / 16000;
  }
  createImageBitmap(jpeg).then((bitmap) => { pending.push({ bitmap, at }); });
}

function latency(head, now) {
  // The frame's audio ends (frame + 1) x 40 ms into its utterance: when did this page send that much?
  const need = (head.frame + 1) * 0.04;
  const rec = sentLog.find((r) => r.utt === head.utterance && r.seconds >= need);
  if (rec) {
    const ms = now - rec.t;
    stats.latencyMs = stats.latencyMs === null ? ms : 0.9 * stats.latencyMs + 0.1 * ms;
  }
  sentLog = sentLog.filter((r) => r.utt > head.utterance || (r.utt === head.utterance && r.seconds >= need));
}

function draw() {
  const c = $("view").getContext("2d");
  let show = null;
  while (pending.length && (pending[0].at === null || !ctx || pending[0].at <= ctx.currentTime)) {
    if (show) show.bitmap.close();
    show = pending.shift();
  }
  if (show) { c.drawImage(show.bitmap, 0, 0, $("view").width, $("view").height); show.bitmap.close(); stats.drawn++; }
  const a = stats.arrivals;
  stats.fps = a.length > 1 ? (a.length - 1) * 1000 / (a[a.length - 1] - a[0]) : 0;
  $("fps").textContent = stats.fps.toFixed(1);
  $("frames").textContent = stats.frames;
  $("speech").textContent = stats.speechFrames;
  $("lat").textContent = stats.latencyMs === null ? "-" : `${stats.latencyMs.toFixed(0)} ms`;
  requestAnimationFrame(draw);
}

function sendAudio(f32) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  ws.send(f32.buffer.slice(f32.byteOffset, f32.byteOffset + f32.byteLength));
  uttSent += f32.length / inRate;
  sentLog.push({ utt, seconds: uttSent, t: performance.now() });
  if (sentLog.length > 4000) sentLog.splice(0, sentLog.length - 4000);
}

function endUtterance(type) {   // finish or interrupt: the next audio opens the server's next utterance
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type }));
  if (uttSent > 0) { utt += 1; uttSent = 0; }
}

async function startMic() {
  await stop();
  const ac = audioContext();
  inRate = ac.sampleRate;
  const media = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true } });
  await connect("realtime");
  const src = ac.createMediaStreamSource(media);
  const proc = ac.createScriptProcessor(1024, 1, 1);   // ~21 ms chunks at 48 kHz
  proc.onaudioprocess = (e) => sendAudio(new Float32Array(e.inputBuffer.getChannelData(0)));
  const mute = ac.createGain(); mute.gain.value = 0;
  src.connect(proc); proc.connect(mute); mute.connect(ac.destination);
  mic = { media, src, proc };
  $("stop").disabled = false;
  setStatus("microphone on: speak");
}

async function startFile(file) {
  await stop();
  const ac = audioContext();
  const decoded = await ac.decodeAudioData(await file.arrayBuffer());
  inRate = decoded.sampleRate;
  const pcm = new Float32Array(decoded.length);
  for (let c = 0; c < decoded.numberOfChannels; c++) {
    const ch = decoded.getChannelData(c);
    for (let i = 0; i < ch.length; i++) pcm[i] += ch[i] / decoded.numberOfChannels;
  }
  await connect("realtime");
  // Send in real time, 2 s ahead at most, so the server's queue stays small and stop acts at once.
  const step = Math.round(inRate / 10);
  let pos = 0;
  const t0 = performance.now();
  feeder = setInterval(() => {
    const due = ((performance.now() - t0) / 1000 + 2) * inRate;
    while (pos < pcm.length && pos < due) { sendAudio(pcm.subarray(pos, pos + step)); pos += step; }
    if (pos >= pcm.length) {
      clearInterval(feeder); feeder = null;
      endUtterance("finish");
    }
  }, 50);
  $("stop").disabled = false;
  setStatus(`playing ${file.name} (${decoded.duration.toFixed(1)} s)`);
}

async function stop() {
  if (feeder) { clearInterval(feeder); feeder = null; }
  if (mic) { mic.proc.disconnect(); mic.src.disconnect(); mic.media.getTracks().forEach((t) => t.stop()); mic = null; }
  endUtterance("interrupt");
  if (ctx) playhead = 0;
  $("stop").disabled = true;
}

$("mic").onclick = () => startMic().catch((e) => setStatus(`microphone: ${e.message}`, true));
$("file").onchange = (e) => { if (e.target.files[0]) startFile(e.target.files[0]).catch((err) => setStatus(err.message, true)); };
$("stop").onclick = () => { stop(); setStatus("stopped"); };
window.gtStartMic = startMic;

// How much of the canvas differs from a flat colour (0 = blank): the browser test's face check.
window.gtCanvasSpread = () => {
  const c = $("view"); const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let s = 0, s2 = 0; const n = d.length / 4;
  for (let i = 0; i < d.length; i += 4) { const y = (d[i] + d[i + 1] + d[i + 2]) / 3; s += y; s2 += y * y; }
  return Math.sqrt(Math.max(0, s2 / n - (s / n) ** 2));
};

requestAnimationFrame(draw);
loadAvatars().then(() => {
  if (params.get("auto") === "mic") startMic().catch((e) => { stats.error = e.message; setStatus(`microphone: ${e.message}`, true); });
});
