"""Times ../shared/bench/peer_segnet.py's MC loop and batched modes on a CUDA device, with the
device synchronised around each run (the peer script itself only runs on the CPU).
usage: python peer_gpu.py PATH/TO/peer_segnet.py [--height 360 --width 480 --samples 40] [--bf16]
--bf16: bf16 autocast and channels-last, the peer's fastest half-precision set-up."""
import contextlib
import argparse, importlib.util, time
import torch

ap = argparse.ArgumentParser()
ap.add_argument("peer")
ap.add_argument("--height", type=int, default=360)
ap.add_argument("--width", type=int, default=480)
ap.add_argument("--samples", type=int, default=40)
ap.add_argument("--runs", type=int, default=5)
ap.add_argument("--bf16", action="store_true")
a = ap.parse_args()
spec = importlib.util.spec_from_file_location("peer_segnet", a.peer)
peer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(peer)
torch.manual_seed(0)
model = peer.SegNet().cuda().eval()
x = torch.randn(1, 3, a.height, a.width, device="cuda")
if a.bf16:
    model = model.to(memory_format=torch.channels_last)
    x = x.to(memory_format=torch.channels_last)
cast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if a.bf16 else contextlib.nullcontext
for name, f in [("loop", peer.mc_loop), ("batched", peer.mc_batched)]:
    with torch.inference_mode(), cast():
        f(model, x, 2)
        torch.cuda.synchronize()
        ts = []
        for _ in range(a.runs):
            t = time.perf_counter(); f(model, x, a.samples); torch.cuda.synchronize()
            ts.append(time.perf_counter() - t)
    ts.sort()
    print(f"peer GPU segnet {a.height}x{a.width} T={a.samples} {name}{' bf16' if a.bf16 else ''}: median {ts[len(ts)//2]*1000:.1f} ms (min {ts[0]*1000:.1f}) {torch.cuda.get_device_name()}")
