import json, sys, time, subprocess, os
from pathlib import Path
sys.path.insert(0, "/work/main/tests"); sys.path.insert(0, "/work/main")
import numpy as np
from runtime_helpers import write_bundle
from reference.pdparams import reference_state
from benchmarks import common

root = Path("/tmp/ratebench")
bundle = root / "full"
if not bundle.exists():
    write_bundle(bundle, reference_state(np.random.default_rng(0)), heads=12)
video = common.test_video(root / "cache", "224p", 60)
rows = []
for round_ in range(2):
    for rate in (1, 2):
        out = root / f"out-{round_}-{rate}.npy"
        for f in root.glob(f"out-{round_}-{rate}.*"):
            f.unlink()
        cmd = [sys.executable, "-m", "tsf.runtime", str(video), "-o", str(out), "--model", str(bundle), "--device", "cpu", "--rate", str(rate), "-q"]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, env={**os.environ, "TSF_HOME": str(root / "home")})
        wall = time.perf_counter() - t
        meta = json.loads(out.with_suffix(".json").read_text())
        rows.append({"round": round_, "rate": rate, "rows": meta["rows"], "wall_s": round(wall, 1),
                     "realtime_factor": meta["timings"]["realtime_factor"], "precision": meta["precision"],
                     "backend": meta["backend"]})
        print(rows[-1], flush=True)
(root / "rate.json").write_text(json.dumps(rows, indent=2))
