"""Search for a `bench` scale with headroom (issue #15, docs/bench.md): one configuration per call,
printed as one JSON line per method with φ0's and the final round's TAR@FAR on unseen identities.

    .venv/bin/python bench/bench_scale_search.py '{"difficulty": 0.0, "pub": 100, "clients": 20,
        "ipc": 10, "imgs": 12, "rounds": 20, "local_epochs": 2, "lr": 0.05}' out/bench-search

Keys: difficulty (generator), pub (φ0's public identities), pub_imgs, pub_epochs, dim, res,
clients, ipc (identities per client), imgs (images per identity), test (test identities, 6 images
each; 30,000 impostor and 3,000 genuine pairs), rounds, local_epochs, lr, methods, seed.
"""

import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

import privaudit as pa  # noqa: E402
from privaudit.scenario import AttackSpec, DataSpec, MethodSpec  # noqa: E402

cfg = json.loads(sys.argv[1])
out = sys.argv[2]
base = pa.Scenario.demo()
sc = dataclasses.replace(
    base, name="bx", out=out, seed=cfg.get("seed", 0),
    data=DataSpec(resolution=cfg.get("res", 32), difficulty=cfg.get("difficulty")),
    pretrain=dataclasses.replace(base.pretrain, identities=cfg["pub"], images_per_identity=cfg.get("pub_imgs", 16), epochs=cfg.get("pub_epochs", 10), embedding_dim=cfg.get("dim", 128)),
    federation=dataclasses.replace(base.federation, num_clients=cfg["clients"], identities_per_client=cfg["ipc"],
        images_per_identity=cfg.get("imgs", 8), test_identities=cfg.get("test", 200), test_images_per_identity=6,
        rounds=cfg["rounds"], local_epochs=cfg.get("local_epochs", 1), lr=cfg.get("lr", 0.01), impostor_pairs=30000, genuine_pairs=3000),
    methods=[MethodSpec(m) for m in cfg.get("methods", ["fedpe"])],
    attacks=AttackSpec(run=[]),
)
t = time.time()
res = pa.run_audit(sc, progress=False)
for m in res.methods:
    r0 = m.utility_per_round[0]; rl = m.utility_per_round[-1]
    keys = [k for k in rl if k.startswith("tar@far")]
    print(json.dumps({"cfg": cfg, "method": m.name, "phi0": {k: round(r0[k], 3) for k in keys + ["accuracy"]},
                      "final": {k: round(rl[k], 3) for k in keys + ["accuracy"]}, "timings": {k: round(v) for k, v in res.timings.items()}}))
print("wall", round(time.time() - t))
