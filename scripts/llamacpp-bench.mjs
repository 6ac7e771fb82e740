// llama.cpp's side of the speed comparison, through node-llama-cpp's
// prebuilt CPU binaries (llama.cpp picks its kernels at run time too: its
// `haswell` build on an AVX2 machine).
//
// For one GGUF and one thread count: prompt tokens/s (a ~200-token prompt
// evaluated at once, no sampling), generation tokens/s (128 greedy tokens
// after that prompt; EOS ignored), the first token's latency, peak RSS, and
// optionally the greedy continuations of a prompt set. Prints one JSON
// object: every run, the medians, and the prompt's token ids.
//
// usage: node scripts/llamacpp-bench.mjs MODEL.gguf [--threads 1]
//          [--runs 3] [--prompt-tokens 200] [--gen-tokens 128]
//          [--context 4096] [--prompt-ids FILE.json]
//          [--greedy FILE.json] [--greedy-tokens 32]
//
// --prompt-ids: the benchmark prompt as token ids (a JSON array), e.g. the
//   neuron's own rendering of its chat prompt, so both sides run the same
//   tokens; without it the prompt is plain text grown to --prompt-tokens.
// --greedy: a JSON array of {"name", "ids"} (or {"name", "text"}); for each,
//   the first --greedy-tokens greedy tokens (issue 16: the neuron's must match).
//
// Run it through scripts/bench-llamacpp, which installs node-llama-cpp into
// .bench/ (git-ignored) and runs the neuron side beside it.
import {getLlama} from "node-llama-cpp";
import {readFileSync} from "node:fs";

const args = process.argv.slice(2);
const modelPath = args[0];
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
if (!modelPath || modelPath.startsWith("--")) {
  console.error("usage: node llamacpp-bench.mjs MODEL.gguf [--threads N] [--runs N] ...");
  process.exit(2);
}
const threads = Number(opt("--threads", "1"));
const runs = Number(opt("--runs", "3"));
const promptTokens = Number(opt("--prompt-tokens", "200"));
const genTokens = Number(opt("--gen-tokens", "128"));
const contextSize = Number(opt("--context", "4096"));
const greedyTokens = Number(opt("--greedy-tokens", "32"));

// Resident and peak resident memory of this process, in MB.
const status = (field) => {
  const line = readFileSync("/proc/self/status", "utf8").split("\n").find((l) => l.startsWith(field + ":"));
  return line ? Number(line.split(/\s+/)[1]) / 1024 : 0;
};
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const now = () => Number(process.hrtime.bigint()) / 1e9;
// CPU seconds of the process (every thread): on a shared machine, a
// one-thread run's CPU time is its cost whatever else runs.
const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

const FILLER = [
  "The river that runs through the old town was used for centuries to carry wool and grain to the coast.",
  "In the spring the meadows flood, and the farmers move their sheep to the higher pastures on the hills.",
  "A stone bridge with seven arches was built in the fourteenth century and still carries traffic today.",
  "The town hall keeps a ledger of every market held on the square since the year the charter was granted.",
  "Travellers often remark on the bells of the abbey, which ring a different tune on each day of the week.",
  "Most of the houses along the quay are built of red brick, with steep roofs and narrow wooden shutters.",
];

const llama = await getLlama({gpu: false, build: "never", logLevel: "error", maxThreads: 0});
const rssBeforeModel = status("VmRSS");
let t = now();
const model = await llama.loadModel({modelPath});
const context = await model.createContext({contextSize, threads, sequences: 1, batchSize: 512});
const loadS = now() - t;
const seq = context.getSequence();

let ids;
if (opt("--prompt-ids")) {
  ids = JSON.parse(readFileSync(opt("--prompt-ids"), "utf8"));
} else {
  let text = "Read the following notes about a small town, then write a long, detailed essay about its history.";
  for (let i = 0; Array.from(model.tokenize(text)).length < promptTokens; i++) {
    text += " " + FILLER[i % FILLER.length];
  }
  ids = Array.from(model.tokenize(text));
}

const perRun = [];
for (let run = 0; run < runs; run++) {
  // Prompt: one evaluation of every prompt token, no sampling.
  await seq.clearHistory();
  t = now();
  let c = cpu();
  await seq.evaluateWithoutGeneratingNewTokens(ids);
  const promptS = now() - t;
  const promptCpu = cpu() - c;
  // Generation: the same prompt, then greedy tokens; the first token's
  // latency includes the prefill, the rate counts the tokens after it.
  await seq.clearHistory();
  t = now();
  const it = seq.evaluate(ids, {temperature: 0});
  await it.next();
  const ttftS = now() - t;
  t = now();
  c = cpu();
  for (let i = 0; i < genTokens; i++) await it.next();
  const genS = now() - t;
  const genCpu = cpu() - c;
  await it.return();
  perRun.push({
    prompt_tok_s: ids.length / promptS,
    gen_tok_s: genTokens / genS,
    ttft_ms: ttftS * 1e3,
    prompt_cpu_tok_s: ids.length / promptCpu,
    gen_cpu_tok_s: genTokens / genCpu,
  });
}

const greedy = [];
if (opt("--greedy")) {
  for (const p of JSON.parse(readFileSync(opt("--greedy"), "utf8"))) {
    const pids = p.ids ?? Array.from(model.tokenize(p.text, true));
    await seq.clearHistory();
    const out = [];
    for await (const tok of seq.evaluate(pids, {temperature: 0})) {
      out.push(tok);
      if (out.length >= greedyTokens) break;
    }
    greedy.push({name: p.name, prompt_ids: pids, tokens: out});
  }
}

console.log(JSON.stringify({
  engine: "llama.cpp",
  model: modelPath.split("/").pop(),
  threads,
  context: contextSize,
  prompt_tokens: ids.length,
  gen_tokens: genTokens,
  load_s: loadS,
  prompt_tok_s: median(perRun.map((r) => r.prompt_tok_s)),
  gen_tok_s: median(perRun.map((r) => r.gen_tok_s)),
  ttft_ms: median(perRun.map((r) => r.ttft_ms)),
  prompt_cpu_tok_s: median(perRun.map((r) => r.prompt_cpu_tok_s)),
  gen_cpu_tok_s: median(perRun.map((r) => r.gen_cpu_tok_s)),
  peak_rss_mb: status("VmHWM"),
  rss_before_model_mb: rssBeforeModel,
  runs: perRun,
  prompt_ids: ids,
  greedy,
}));
process.exit(0);
