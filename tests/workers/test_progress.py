"""A trial reports where it is (workers.progress): every stage of a real evaluation, epoch by
epoch, into a file the API reads; a progress file that cannot be written costs nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from workers import progress


def test_reports_replace_each_other_atomically(tmp_path: Path) -> None:
    path = tmp_path / "p" / "trial-00001.json"
    progress.report("nothing: no reporting block")
    assert not path.exists()
    with progress.reporting(path):
        progress.report("training parent epoch", 2, 5)
        assert progress.read(path)["text"] == "training parent epoch 2/5"  # type: ignore[index]
        progress.report("tuning tasks", 4, 18, detail="x86/local")
    body = progress.read(path)
    assert body is not None and body["text"] == "tuning tasks 4/18 (x86/local)"
    assert body["step"] == 4 and body["steps"] == 18
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporaries left


def test_an_unwritable_progress_file_is_not_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with progress.reporting(blocker / "sub" / "trial.json"):  # a file where a directory goes
        progress.report("training parent epoch", 1, 1)


def test_an_evaluation_reports_each_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from tests.workers.test_evaluate import _candidate, _request
    from workers.evaluate import evaluate
    from workers.records import EvalRequest

    seen: list[str] = []
    real = progress.report

    def spy(stage: str, step: Any = None, steps: Any = None, detail: str = "") -> None:
        seen.append(stage if step is None else f"{stage} {step}/{steps}")
        real(stage, step, steps, detail)

    monkeypatch.setattr(progress, "report", spy)
    payload = _request(_candidate(wbits=8, prune=0.0, rank=1.0), tmp_path, "b", ["x86/local"])
    req = EvalRequest.model_validate({**payload, "progress_path": str(tmp_path / "progress.json")})
    threads = torch.get_num_threads()
    try:
        evaluate(req)
    finally:
        torch.set_num_threads(threads)
    epochs = req.recipe["epochs"]
    assert [s for s in seen if s.startswith("training parent epoch")] == [
        f"training parent epoch {k}/{epochs}" for k in range(1, epochs + 1)
    ]
    order = ["loading data", "dense parent", "compressing", "evaluating", "measuring latency 1/1"]
    assert [s for s in seen if s in order] == order
    assert seen[-1] == "exporting and scoring the bundle"
    assert progress.read(tmp_path / "progress.json")["text"] == seen[-1]  # type: ignore[index]
