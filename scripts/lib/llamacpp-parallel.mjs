// llama.cpp's side of scripts/bench-neuron's batching figures, through the
// npm package node-llama-cpp: S sequences of one context generating at once
// (its own batching of parallel sequences), and the inter-token gap of one
// sequence while another sequence's long prompt is evaluated. Same prompts
// and counting as scripts/lib/bench_batching.py; one JSON line per figure.
//
// usage: LLAMACPP_DIR=/work/tools/llamacpp node scripts/lib/llamacpp-parallel.mjs \
//          MODEL.gguf THREADS GEN "1 4 8" LONG
import path from "node:path";
import {pathToFileURL} from "node:url";

const dir = process.env.LLAMACPP_DIR || "/work/tools/llamacpp";
const {getLlama} = await import(
  pathToFileURL(path.join(dir, "node_modules/node-llama-cpp/dist/index.js")).href);
const [modelPath, threadsArg, genArg, streamsArg, longArg] = process.argv.slice(2);
const threads = Number(threadsArg), gen = Number(genArg), long = Number(longArg);
const streams = streamsArg.split(/\s+/).filter(Boolean).map(Number);
const TOPICS = ["the sea", "the moon", "mountains", "rivers", "forests", "cities", "deserts", "islands",
  "bridges", "trains", "gardens", "libraries"];

const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath});
const chat = (text) => model.tokenize(
  "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n" +
  `<|im_start|>user\n${text}<|im_end|>\n<|im_start|>assistant\n`, true);
const essay = (topic) => chat(`Write a long, detailed essay about ${topic}, with many examples.`);
const now = () => Number(process.hrtime.bigint()) / 1e9;

async function generate(seq, tokens, max, onToken) {
  const times = [];
  for await (const t of seq.evaluate(tokens, {temperature: 0})) {
    if (model.isSpecialToken(t)) break;
    const n = now();
    times.push(n);
    onToken?.(n);
    if (times.length >= max) break;
  }
  return times;
}

for (const s of streams) {
  const ctx = await model.createContext({sequences: s, contextSize: 2048 * s, threads});
  const seqs = Array.from({length: s}, () => ctx.getSequence());
  const results = await Promise.all(seqs.map((q, i) => generate(q, essay(TOPICS[i % TOPICS.length]), gen)));
  const firsts = results.filter((r) => r.length).map((r) => r[0]);
  const lasts = results.filter((r) => r.length).map((r) => r[r.length - 1]);
  const tokens = results.reduce((a, r) => a + r.length, 0);
  console.log(JSON.stringify({kind: "streams", engine: "llama.cpp", threads, streams: s,
    completion_tokens: tokens, tok_s: tokens / (Math.max(...lasts) - Math.min(...firsts))}));
  await ctx.dispose();
}

// The gap test.
const WARM = 16, ALONE = 48;
const ctx = await model.createContext({sequences: 2, contextSize: 8192, threads});
const [a, b] = [ctx.getSequence(), ctx.getSequence()];
const seen = [];
let release;
const ready = new Promise((r) => { release = r; });
const first = generate(a, essay("the history of clocks"), 600, (t) => {
  seen.push(t);
  if (seen.length === WARM + ALONE) release();
});
await ready;
let user = "Read these notes, then summarise them in one sentence. ";
const filler = "The river that runs through the old town was used for centuries to carry wool and grain to the coast. ";
while (chat(user).length < long) user += filler;
const longTokens = chat(user);
const sent = now();
const longTimes = await generate(b, longTokens, 1);
const firstToken = longTimes.length ? longTimes[0] : now();
await first;
const gaps = (xs) => xs.slice(1).map((x, i) => [xs[i], x]);
const alone = gaps(seen.slice(WARM, WARM + ALONE)).map(([p, q]) => q - p).sort((p, q) => p - q);
const during = gaps(seen).filter(([p, q]) => q > sent && p < firstToken).map(([p, q]) => q - p);
const median = alone[Math.floor(alone.length / 2)];
const worst = Math.max(...during);
console.log(JSON.stringify({kind: "gap", engine: "llama.cpp", threads, prefill_tokens: longTokens.length,
  prefill_s: firstToken - sent, median_gap_ms: median * 1e3, worst_gap_ms: worst * 1e3,
  ratio: worst / median, gaps_during: during.length}));
await ctx.dispose();
