// llama.cpp's side of scripts/bench-agent, through the npm package
// node-llama-cpp: one conversation of TURNS turns, each re-sending the whole
// history, on one context sequence that keeps its KV between turns; each
// turn evaluates only what follows the longest common token prefix with
// what the sequence holds (the rest of the sequence is erased), as
// llama-server's prompt cache does. Reads the conversation (the chat-
// templated prompt text of each turn) as JSON on stdin; prints one JSON line
// per turn: prompt tokens, tokens reused, time to first token.
//
// usage: LLAMACPP_DIR=/work/tools/llamacpp node scripts/lib/llamacpp-agent.mjs \
//          MODEL.gguf THREADS GEN < turns.json
import path from "node:path";
import {pathToFileURL} from "node:url";

const dir = process.env.LLAMACPP_DIR || "/work/tools/llamacpp";
const {getLlama} = await import(
  pathToFileURL(path.join(dir, "node_modules/node-llama-cpp/dist/index.js")).href);
const [modelPath, threadsArg, genArg] = process.argv.slice(2);
const threads = Number(threadsArg), gen = Number(genArg);
const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const prompts = JSON.parse(Buffer.concat(chunks).toString("utf8"));

const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath});
const ctx = await model.createContext({sequences: 1, contextSize: 8192, threads});
const seq = ctx.getSequence();
const now = () => Number(process.hrtime.bigint()) / 1e9;

for (const [turn, text] of prompts.entries()) {
  const tokens = model.tokenize(text, true);
  const held = seq.contextTokens;
  let common = 0;
  // At least one token is evaluated: its logits are needed.
  while (common < held.length && common < tokens.length - 1 && held[common] === tokens[common]) common++;
  if (common < seq.nextTokenIndex) {
    await seq.eraseContextTokenRanges([{start: common, end: seq.nextTokenIndex}]);
  }
  const start = now();
  let ttft = null, n = 0;
  for await (const t of seq.evaluate(tokens.slice(common), {temperature: 0})) {
    if (ttft === null) ttft = now() - start;
    if (model.isSpecialToken(t) || ++n >= gen) break;
  }
  console.log(JSON.stringify({engine: "llama.cpp", turn: turn + 1, prompt_tokens: tokens.length,
    reused_tokens: common, ttft_s: ttft}));
}
await ctx.dispose();
