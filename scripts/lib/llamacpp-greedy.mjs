// Greedy tokens from llama.cpp (the npm package node-llama-cpp) for one
// prompt, given as token ids or as text (tokenized with special tokens), as
// one JSON line: {"prompt": [...], "tokens": [...], "text": "..."}.
// The test data of crates/neuron/src/engine/model/tests.rs (Gemma 3) came
// from this script.
//
// usage: LLAMACPP_DIR=/work/tools/llamacpp node scripts/lib/llamacpp-greedy.mjs \
//          MODEL.gguf N_TOKENS (--ids '[2,105,...]' | --text '...') [--threads N]
// The KV cache is f32 (llama.cpp's default is f16), as the neuron's.
// LLAMACPP_DIR is a folder where `npm install node-llama-cpp` was run.
import path from "node:path";
import {pathToFileURL} from "node:url";

const dir = process.env.LLAMACPP_DIR || "/work/tools/llamacpp";
const {getLlama} = await import(
  pathToFileURL(path.join(dir, "node_modules/node-llama-cpp/dist/index.js")).href);
const [modelPath, n] = process.argv.slice(2, 4);
const args = process.argv.slice(4);
const get = (k) => { const i = args.indexOf(k); return i >= 0 ? args[i + 1] : undefined; };
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath});
const ids = get("--ids") ? JSON.parse(get("--ids")) : Array.from(model.tokenize(get("--text"), true));
// An f32 KV cache (llama.cpp's default is f16) keeps its numbers closest
// to the neuron's, which holds K and V in f32.
const context = await model.createContext({
  contextSize: 4096,
  threads: Number(get("--threads") || 2),
  experimentalKvCacheKeyType: "F32",
  experimentalKvCacheValueType: "F32",
  flashAttention: false,
});
const seq = context.getSequence();
const out = [];
for await (const t of seq.evaluate(ids, {temperature: 0})) {
  out.push(t);
  if (out.length >= Number(n)) break;
}
console.log(JSON.stringify({prompt: ids, tokens: out, text: model.detokenize(out)}));
