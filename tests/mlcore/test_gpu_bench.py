"""bench/gpu_bench.py runs where only torch, torchvision, numpy and Pillow are installed: its
CPU smoke run goes through mlcore's loader with Django, simplejpeg and boto3 made unimportable,
and without CUDA the real run says so and exits 2."""
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.mlcore.helpers import REPO, make_image

BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("django", "simplejpeg", "boto3", "botocore", "labeling"):
            raise ImportError(f"{name} is not installed on this GPU box")
sys.meta_path.insert(0, Block())
sys.argv = ["gpu_bench.py", *sys.argv[1:]]
import runpy
runpy.run_path("bench/gpu_bench.py", run_name="__main__")
"""


def _run(*args, env=None):
    return subprocess.run([sys.executable, "-c", BLOCK, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": "", **(env or {})})


def _jpegs(folder: Path) -> Path:
    folder.mkdir()
    for i in range(6):
        (folder / f"{i}.jpg").write_bytes(make_image((200, 40, 30), i, size=(90, 70), fmt="JPEG"))
    return folder


def test_cpu_smoke_runs_the_whole_path_with_only_torch_and_pillow(tmp_path):
    out = tmp_path / "gpu.json"
    done = _run("--cpu-smoke", "--workers", "0", "--images", str(_jpegs(tmp_path / "jpg")),
                "--work", str(tmp_path / "w"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["cpu_smoke"] and result["device"] == "cpu" and result["jpegs"] == 6
    for key in ("jpeg_images_per_s", "synthetic_images_per_s", "loader_only_images_per_s"):
        assert result[key] > 0, key
    assert result["machine"]["cores"] == os.cpu_count()


def test_without_cuda_the_real_run_exits_with_a_clear_message(tmp_path):
    done = _run("--images", str(tmp_path))
    assert done.returncode == 2
    assert "no CUDA device is available" in done.stderr and "--cpu-smoke" in done.stderr
