#!/usr/bin/env bash
# Side-by-side benchmark of the embedded local model (crates/local-llm) and llama.cpp
# (llama-cpp-python from the package registry, built for AVX2) on the same GGUF file and the
# same prompt token ids (issue 17). Prints prompt tok/s, generation tok/s, time per planned
# mission, peak and steady RSS for both, and the load average around each run.
#
# Usage: scripts/bench-local-vs-llamacpp.sh
# Environment:
#   MANA_AI_LOCAL_MODEL  GGUF file (default: $TARGET/local-model/models/SmolLM2-135M-Instruct.Q4_1.gguf)
#   CARGO_TARGET_DIR     cargo target dir; the venv goes to $TARGET/llamacpp-venv
#   ROUNDS               alternate ours / llama.cpp this many times (default 1)
#   PROFILE              cargo profile of our bench: bench (default, optimised) or dev
#                        (faster to build: the model crate is opt-level 3 there)
#   MANA_AI_BENCH_MISSIONS  first N of the 24 missions only
#   MANA_AI_BENCH_TOOLS     "all": offer the whole tool catalog (no narrowing: ~2,900-token prompts)
#   THREADS              llama.cpp threads (default: nproc, as ours)
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
MODEL="${MANA_AI_LOCAL_MODEL:-$TARGET/local-model/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
VENV="$TARGET/llamacpp-venv"
ROUNDS="${ROUNDS:-1}"
PROFILE="${PROFILE:-bench}"
THREADS="${THREADS:-$(nproc)}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
[ -f "$MODEL" ] || { echo "model missing: $MODEL (run: mana-ai model fetch)" >&2; exit 1; }
export MANA_AI_LOCAL_MODEL="$MODEL"

# 1. llama-cpp-python in a venv. The registry ships only a source distribution for Linux:
#    pip builds llama.cpp (~5 min on 2 cores). The default native build crashes on these VMs
#    (AMX/AVX-512 reported but not allowed), so it is built for AVX2.
if ! "$VENV/bin/python" -c 'import llama_cpp' 2>/dev/null; then
  python3 -m venv "$VENV"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF" \
    "$VENV/bin/pip" install --no-cache-dir llama-cpp-python
fi
echo "llama-cpp-python $("$VENV/bin/python" -c 'import llama_cpp; print(llama_cpp.__version__)')"

# 2. Our bench binary (built first, so the build is not measured).
if [ "$PROFILE" = dev ]; then
  BUILD=(cargo test -p mana-ai-local-llm --bench local_model --no-run)
else
  BUILD=(cargo bench -p mana-ai-local-llm --bench local_model --no-run)
fi
BIN="$("${BUILD[@]}" --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="local_model" and m.get("executable"): print(m["executable"])' | tail -1)"
[ -x "$BIN" ] || { echo "could not build the bench" >&2; exit 1; }

cat > "$WORK/llamacpp.py" <<'PY'
import json, os, sys, time
from llama_cpp import Llama

def mib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return float("nan")

prompts = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
threads = int(sys.argv[2])
t0 = time.perf_counter()
llm = Llama(model_path=os.environ["MANA_AI_LOCAL_MODEL"], n_ctx=4096, n_batch=512,
            n_threads=threads, n_threads_batch=threads, verbose=False)
print(f"llama.cpp load: {time.perf_counter() - t0:.2f} s; RSS after load {mib('VmRSS:'):.0f} MiB")

def run(ids, n):
    """Cold prompt, then n greedy tokens: (prompt s, generation s)."""
    llm.reset()
    start = time.perf_counter()
    first = None
    got = 0
    for _ in llm.generate(ids, temp=0.0, top_k=1, reset=True):
        if first is None:
            first = time.perf_counter()
        got += 1
        if got > n:
            break
    return first - start, time.perf_counter() - first

p_tok = g_tok = 0
p_s = g_s = total = 0.0
for p in prompts:
    ps, gs = run(p["prompt"], p["gen_tokens"])
    p_tok += len(p["prompt"]); g_tok += p["gen_tokens"]; p_s += ps; g_s += gs; total += ps + gs
print(f"prompt (cold): {p_tok} tokens in {p_s:.2f} s = {p_tok / p_s:.1f} tok/s")
print(f"generation (same token counts as ours, unconstrained): {g_tok} tokens in {g_s:.2f} s = {g_tok / g_s:.1f} tok/s")
print(f"time per mission (prompt + same number of tokens): {total / len(prompts):.2f} s")
raw_t = raw_s = 0
for p in prompts[:3]:
    _, gs = run(p["prompt"], 64)
    raw_t += 64; raw_s += gs
print(f"generation (raw greedy, no constraint): {raw_t} tokens in {raw_s:.2f} s = {raw_t / raw_s:.1f} tok/s")
print(f"peak RSS: {mib('VmHWM:'):.0f} MiB (resident now: {mib('VmRSS:'):.0f} MiB)")
PY

for round in $(seq 1 "$ROUNDS"); do
  echo; echo "=== round $round: ours ($PROFILE profile) — load: $(cut -d' ' -f1-3 /proc/loadavg)"
  MANA_AI_BENCH_DUMP="$WORK/prompts.jsonl" "$BIN"
  echo "=== round $round: llama.cpp ($THREADS threads) — load: $(cut -d' ' -f1-3 /proc/loadavg)"
  "$VENV/bin/python" "$WORK/llamacpp.py" "$WORK/prompts.jsonl" "$THREADS"
  echo "=== load after round $round: $(cut -d' ' -f1-3 /proc/loadavg)"
done
