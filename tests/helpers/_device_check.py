import sys, json, time, torch
sys.path.insert(0, "tests/helpers")
from tiny_training import TinyNet, blob_data, tiny_config
from polydiff.training import Trainer
from polydiff import checkpoint
x, c = blob_data(512)
out = sys.argv[1]
def run(name, resume=False, **kw):
    torch.manual_seed(0)
    net = TinyNet(hidden=64)
    t = time.time()
    r = Trainer(net, x, c, tiny_config(**kw), f"{out}/{name}", modality="p", encoder_meta={}, progress=False).fit(resume=resume)
    print(name, "device", next(net.parameters()).device, "secs", round(time.time() - t, 2), r["step"], r["loss"])
    return [json.loads(l) for l in open(f"{out}/{name}/metrics.jsonl")]
a = run("full", steps=40, ckpt_every=10, batch_size=256)
run("part", steps=20, ckpt_every=10, batch_size=256)
b = run("part", resume=True, steps=40, ckpt_every=10, batch_size=256)
print("exact resume on cuda:", [r["loss"] for r in a] == [r["loss"] for r in b])
print("max diff", max(abs(p["loss"] - q["loss"]) for p, q in zip(a, b)))
bf = run("bf16", steps=30, ckpt_every=10, batch_size=256, bf16=True)
print("bf16 losses finite", all(r["loss"] == r["loss"] for r in bf), bf[0]["loss"], bf[-1]["loss"])
t, m = checkpoint.load_bundle(f"{out}/bf16/model.safetensors")
print("bundle", m["kind"], m["step"], sorted(t)[:3], t["model.out.weight"].device)
