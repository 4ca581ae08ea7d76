# Run: apt-get install python3-torch libopenblas0-pthread && /usr/bin/python3 bench/pytorch_anchor.py
# PyTorch (Debian python3-torch 1.13) plain forward of a bert-base-sized encoder on this machine, to scale the
# issue's anchors (measured elsewhere): same shapes as `fleet bench attribute` (batch 16, 12 layers, 768, 12 heads, 3072).
import time, statistics, torch
torch.set_num_threads(2)
torch.manual_seed(0)
layer = torch.nn.TransformerEncoderLayer(768, 12, 3072, dropout=0.0, activation="gelu", batch_first=True)
enc = torch.nn.TransformerEncoder(layer, 12, enable_nested_tensor=False).eval()
emb = torch.nn.Embedding(30522, 768)
for length in (32, 128):
    ids = torch.randint(1000, 30522, (16, length))
    with torch.no_grad():
        enc(emb(ids))
        times = []
        for _ in range(5):
            t = time.perf_counter(); enc(emb(ids)); times.append(time.perf_counter() - t)
    print(f"pytorch {torch.__version__} forward, batch 16 x {length}: {statistics.median(times) / 16:.3f} s/text (median of 5)")
