"""GPU path of the student step (skipped on machines without CUDA)."""

import pytest
import torch

from distill.actors.student import StudentStep
from distill.config import load_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_student_step_on_gpu_lowers_loss(tiny_model):
    cfg = load_config("smoke", ["train.lr=1e-2", "train.use_gpu=true"])
    student = StudentStep(cfg.train, cfg.prompt, tiny_model, wrap=lambda m: m.to("cuda"))
    assert student.device.type == "cuda"
    rows = [{"trace_id": "a", "question": "2+3?", "text": "2 + 3 = 5.\nAnswer: 5"}] * 4
    losses = [student.step(rows)["loss"] for _ in range(8)]
    assert losses[-1] < losses[0] * 0.7
