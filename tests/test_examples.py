"""The runnable examples in examples/: each runs as its README describes (here on 2 CPU processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import metricopt

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("loss", ["f1", pytest.param("ap", marks=pytest.mark.slow)])
def test_lightning_ddp_example_trains_on_two_processes_with_exact_gradients(tmp_path: Path, loss: str) -> None:
    pytest.importorskip("lightning", reason="the Lightning example needs `pip install lightning` (in .[test])")
    out = tmp_path / "lightning.json"
    # the metricopt this test imports (a source checkout or the installed package); gloo on the loopback
    # interface, as CI machines have no network
    path = os.pathsep.join([str(Path(metricopt.__file__).parents[1]), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHONPATH": path, "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "lightning_ddp.py"), "--devices", "2", "--epochs", "5",
         "--loss", loss, "--float64", "--output", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["world_size"] == 2 and results["global_batch"] == 128  # 2 processes x 64
    # DDP inside Lightning, with the loss gathering the batch itself: one process's full-batch gradient
    assert results["gradient_error"] < 1e-6
    # the control: the loss of each process's share alone is a different function
    assert results["share_only_gradient_error"] > 1e-3
    assert results["test_ap"] > 0.9  # breast cancer is easy: a model that trained at all ranks well
