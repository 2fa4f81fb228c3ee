"""Memory does not grow with video length: peak RSS of a 10-minute video within 10 % of a 1-minute one.

Each extraction runs in a fresh Python process that reports its own peak RSS, read as VmHWM from
/proc/self/status: getrusage's ru_maxrss would not do, Linux carries it across exec, so a child of
the (large) pytest process reports at least the parent's size. Cheap
videos (320x180, 10 fps, x264 ultrafast) keep encoding and decoding short; the inference of 600
windows with the small model is most of the time. Batch size 1: ONNX Runtime's arena for a batch
of 8 adds ~360 MiB whose peak varies by +-5 % from run to run whatever the length, which would
drown what this test looks for (frames kept longer than needed).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import videos
from runtime_helpers import small_bundle

MEASURE = """
import json, sys
from tsf.runtime.cli import main
try:
    code = main(sys.argv[2:])
except SystemExit as e:
    code = e.code
with open(sys.argv[1], "w") as f:
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    json.dump({"code": code, "peak_rss_kib": int(status["VmHWM"].split()[0])}, f)
"""


def peak_rss(tmp_path, video, bundle) -> int:
    report = tmp_path / (video.stem + ".rss.json")
    subprocess.run([sys.executable, "-c", MEASURE, str(report), str(video), "-o", str(tmp_path / (video.stem + ".npy")),
                    "--model", str(bundle), "--device", "cpu", "--decoder", "cpu", "--batch-size", "1", "-q"],
                   check=True, timeout=900)
    result = json.loads(report.read_text())
    assert result["code"] == 0
    return result["peak_rss_kib"]


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_memory_does_not_grow_with_video_length(tmp_path):
    bundle = small_bundle(4)
    kwargs = dict(fps=10, size=(320, 180), bframes=0)
    one = videos.make_video(tmp_path / "one_minute.mkv", seconds=60, **kwargs)
    ten = videos.make_video(tmp_path / "ten_minutes.mkv", seconds=600, **kwargs)
    short, long = peak_rss(tmp_path, one, bundle), peak_rss(tmp_path, ten, bundle)
    meta = json.loads((tmp_path / "ten_minutes.json").read_text())
    assert meta["rows"] == 600
    print(f"peak RSS: 1 min {short / 1024:.0f} MiB, 10 min {long / 1024:.0f} MiB")
    assert long <= short * 1.10, (short, long)
