#!/usr/bin/env bash
# GPU benchmark of the engine on the lent machine: .NET runtime and the published CLI travel as tarballs;
# libtorch with CUDA comes from the machine's PyTorch (TorchSharp-cuda-linux is not served to the build host).
set -u
G=$(pwd)/.gpu
mkdir -p /opt/dn /tmp/x && tar -xJf $G/dotnet.tar.xz -C /opt/dn && tar -xJf $G/app.tar.xz -C /tmp/x
TL=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__)+"/lib")')
python3 -c 'import torch;print("python torch", torch.__version__, torch.cuda.get_device_name(0))'
export DOTNET_ROOT=/opt/dn LD_LIBRARY_PATH=$TL DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1 ATTRIBUTIONFLEET_CACHE=$G/cache DOTNET_NOLOGO=1
F="/opt/dn/dotnet /tmp/x/gpuapp/fleet.dll"
run() { echo "== fleet $*"; timeout ${T:-120} $F "$@" 2>&1 | grep -v '^\s*at ' | head -40; }
T=90 run bench attribute --device cuda --layers 2 --batch 4 --length 32 --repeats 1 --ig-texts 0 | tee $OUT/smoke.txt
grep -q "deeplift/Exact" $OUT/smoke.txt || { echo "smoke failed: no GPU figures"; exit 3; }
T=150 run bench attribute --device cuda --batch 16 --length 128 --repeats 5 --ig-texts 2 --rules | tee $OUT/bench128.txt
T=90 run bench attribute --device cuda --batch 16 --length 32 --repeats 5 --ig-texts 2 | tee $OUT/bench32.txt
T=90 run bench attribute --device cuda --batch 64 --length 128 --repeats 5 --ig-texts 0 | tee $OUT/bench128b64.txt
# The job benchmark (#13): the 33-text log-normal job at batch 8, and 128 texts at batch 64 (mixed lengths packed).
T=120 run bench job --device cuda --layers 12 --texts 33 --repeats 4 | tee $OUT/job-b8.txt
T=120 run bench job --device cuda --layers 12 --texts 128 --batch 64 --repeats 2 | tee $OUT/job-b64.txt
for p in float64 bfloat16; do T=90 run bench attribute --device cuda --batch 16 --length 128 --repeats 3 --ig-texts 0 --precision $p | tee $OUT/bench128-$p.txt; done
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
