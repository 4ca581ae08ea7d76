#!/usr/bin/env bash
# The issue #13 comparison in one command: our exact DeepLift (`fleet explain --input`, marginal s/text) under
# tcmalloc, tuned glibc (FLEET_NATIVE_ALLOCATOR=system) and untuned glibc (system-untuned), against Captum 0.8
# LayerDeepLift batched 8 on the same model weights and the same token ids (PyTorch 1.13), in one run.
#
#   bench/captum/run.sh                      # 12-layer bert-base-sized random model, 33 texts of 115-129 tokens
#   LAYERS=2 TEXTS=5 FEW=2 bench/captum/run.sh   # the quick end-to-end check
#
# Needs: Debian's python3-torch python3-numpy python3-matplotlib python3-tqdm libopenblas0-openmp, and Captum's v0.8.0
# source in CAPTUM_SRC (default ~/.cache/attributionfleet/captum-0.8.0), or a git mirror of pytorch/captum in
# CAPTUM_MIRROR to export it from (git --git-dir=MIRROR archive refs/tags/v0.8.0 captum setup.py | tar -x -C CAPTUM_SRC).
# Marginal s/text of ours = (time for all texts - time for the first FEW) / (TEXTS - FEW): process start and model
# load cancel. Captum's figure is its time per text after one warm-up batch, in one process (nothing to cancel).
# Absolute times only mean something on a quiet machine; the ratios come from one run.
set -euo pipefail
cd "$(dirname "$0")/../.."
LAYERS=${LAYERS:-12}
TEXTS=${TEXTS:-33}
FEW=${FEW:-5}
BATCH=${BATCH:-8}
LENGTHS=${LENGTHS:-115-129}
THREADS=${THREADS:-$(nproc)} # Captum's torch threads; ours uses libtorch's default (one per core)
OUT=${OUT:-$(mktemp -d /tmp/captum-bench.XXXXXX)}
CAPTUM_SRC=${CAPTUM_SRC:-$HOME/.cache/attributionfleet/captum-0.8.0}
PY=/usr/bin/python3
mkdir -p "$OUT"

if [ ! -d "$CAPTUM_SRC/captum" ]; then
  if [ -n "${CAPTUM_MIRROR:-}" ]; then
    mkdir -p "$CAPTUM_SRC"
    git --git-dir="$CAPTUM_MIRROR" archive refs/tags/v0.8.0 captum setup.py | tar -x -C "$CAPTUM_SRC"
  else
    echo "run.sh: Captum 0.8.0 source not found in CAPTUM_SRC=$CAPTUM_SRC; set CAPTUM_MIRROR to a git mirror of pytorch/captum" >&2
    exit 2
  fi
fi
if ! "$PY" -c "import torch, numpy, matplotlib, tqdm" 2>/dev/null; then
  echo "run.sh: $PY lacks torch/numpy/matplotlib/tqdm: apt-get install python3-torch python3-numpy python3-matplotlib python3-tqdm libopenblas0-openmp" >&2
  exit 2
fi
if [ "$FEW" -ge "$TEXTS" ]; then echo "run.sh: FEW ($FEW) must be below TEXTS ($TEXTS)" >&2; exit 2; fi

dotnet build src/Cli -c Release -nologo -v q >/dev/null
FLEET=src/Cli/bin/Release/net10.0/fleet

# (a) the model (made once in the cache) and (b) the texts, with our tokenizer's ids for the PyTorch side.
"$FLEET" bench job --layers "$LAYERS" --texts "$TEXTS" --lengths "$LENGTHS" --write-texts "$OUT/texts.txt" | tee "$OUT/texts.log"
MODEL=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['model'])" "$OUT/texts.txt.ids.json")
head -n "$FEW" "$OUT/texts.txt" > "$OUT/few.txt"

# (c) ours: all texts and the first FEW, per allocator; marginal seconds per text.
seconds() { "$PY" -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$@"; }
explain() { # allocator input output -> seconds
  local start end
  start=$(date +%s.%N)
  FLEET_NATIVE_ALLOCATOR=$1 "$FLEET" explain --model "$MODEL" --input "$2" --json --batch-size "$BATCH" > "$3" 2>> "$OUT/stderr.log"
  end=$(date +%s.%N)
  seconds "$start" "$end"
}
declare -A MARGINAL DELTA
for alloc in auto system system-untuned; do
  FLEET_NATIVE_ALLOCATOR=$alloc "$FLEET" bench allocator >> "$OUT/allocators.log" 2>&1
  few=$(explain "$alloc" "$OUT/few.txt" "$OUT/few.$alloc.jsonl")
  all=$(explain "$alloc" "$OUT/texts.txt" "$OUT/ours.$alloc.jsonl")
  MARGINAL[$alloc]=$("$PY" -c "import sys; print(f'{(float(sys.argv[1]) - float(sys.argv[2])) / (int(sys.argv[3]) - int(sys.argv[4])):.4f}')" "$all" "$few" "$TEXTS" "$FEW")
  DELTA[$alloc]=$("$PY" -c "import json,sys; print(f\"{max(abs(json.loads(l)['delta']) for l in open(sys.argv[1]) if l.strip()):.3g}\")" "$OUT/ours.$alloc.jsonl")
done

# (d) Captum on the same weights and ids (checks the logits agree within 1e-4 first).
CAPTUM=$(PYTHONPATH="$CAPTUM_SRC" "$PY" bench/captum/captum_deeplift.py "$OUT/texts.txt.ids.json" "$OUT/ours.auto.jsonl" --batch "$BATCH" --threads "$THREADS")
echo "$CAPTUM" > "$OUT/captum.log"
CAPTUM_S=$(sed -E 's/.*s_per_text=([^ ]+).*/\1/' <<< "$CAPTUM")
CAPTUM_D=$(sed -E 's/.*delta_max=([^ ]+).*/\1/' <<< "$CAPTUM")
# (e) Captum again with OpenBLAS on its AVX-512 kernels, where the CPU has them: OpenBLAS 0.3.21 does not know every
# CPU (Zen 5 gets its Haswell AVX2 kernels), and our products run on MKL's AVX-512 kernels there (MklKernels).
CAPTUM512=
if grep -qw avx512f /proc/cpuinfo; then
  CAPTUM512=$(OPENBLAS_CORETYPE=SkylakeX PYTHONPATH="$CAPTUM_SRC" "$PY" bench/captum/captum_deeplift.py "$OUT/texts.txt.ids.json" "$OUT/ours.auto.jsonl" --batch "$BATCH" --threads "$THREADS")
  echo "$CAPTUM512" > "$OUT/captum-avx512.log"
  CAPTUM512_S=$(sed -E 's/.*s_per_text=([^ ]+).*/\1/' <<< "$CAPTUM512")
fi

echo
echo "issue #13 comparison: $LAYERS layers, $TEXTS texts ($LENGTHS tokens), batch $BATCH, float32; files in $OUT"
grep -h "allocator:\|matrix kernels:" "$OUT/allocators.log" | awk '!seen[$0]++' | sed "s/^/  /"
echo "  $CAPTUM"
echo "  captum's BLAS: $(OPENBLAS_VERBOSE=2 "$PY" -c 'import torch; torch.ones(2, 2) @ torch.ones(2, 2)' 2>&1 | grep -m1 '^Core' || echo 'not OpenBLAS, or it did not say')"
printf '%-34s %10s %14s %12s\n' "run" "s/text" "Captum/this" "|delta| max"
for alloc in auto system system-untuned; do
  case $alloc in auto) name="ours (auto: tcmalloc if installed)";; system) name="ours (system: tuned glibc)";; *) name="ours (system-untuned: glibc)";; esac
  ratio=$("$PY" -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}x')" "$CAPTUM_S" "${MARGINAL[$alloc]}")
  printf '%-34s %10s %14s %12s\n' "$name" "${MARGINAL[$alloc]}" "$ratio" "${DELTA[$alloc]}"
done
printf '%-34s %10s %14s %12s\n' "Captum 0.8 LayerDeepLift" "$CAPTUM_S" "1.00x" "$CAPTUM_D"
if [ -n "$CAPTUM512" ]; then
  echo
  echo "against Captum with OpenBLAS forced to its AVX-512 kernels (OPENBLAS_CORETYPE=SkylakeX): $CAPTUM512"
  for alloc in auto system system-untuned; do
    case $alloc in auto) name="ours (auto: tcmalloc if installed)";; system) name="ours (system: tuned glibc)";; *) name="ours (system-untuned: glibc)";; esac
    ratio=$("$PY" -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}x')" "$CAPTUM512_S" "${MARGINAL[$alloc]}")
    printf '%-34s %10s %14s\n' "$name" "${MARGINAL[$alloc]}" "$ratio"
  done
  printf '%-34s %10s %14s\n' "Captum 0.8, OpenBLAS AVX-512" "$CAPTUM512_S" "1.00x"
fi
