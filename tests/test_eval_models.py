"""Every model the evaluation accepts reaches the same backbone weights."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from mosic.pipeline.export import export_backbone
from mosic.stages.evaluation.models import load_eval_backbone
from mosic.stages.model.backbone import create_backbone


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x, y = a.state_dict(), b.state_dict()
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_name_with_plain_and_paper_style_weights(tmp_path):
    torch.manual_seed(3)
    source = create_backbone("vit-tiny-test")
    torch.save(source.state_dict(), tmp_path / "plain.pth")
    paper = {f"module.backbone.{k}": v for k, v in source.state_dict().items()}
    paper["module.head.weight"] = torch.zeros(3)  # other entries of the paper's checkpoints
    save_file(paper, str(tmp_path / "paper.safetensors"))
    for weights in ("plain.pth", "paper.safetensors"):
        loaded = load_eval_backbone("vit-tiny-test", str(tmp_path / weights))
        assert same_weights(loaded, source), weights
        assert not any(p.requires_grad for p in loaded.parameters())


def test_training_checkpoint_and_its_export(tmp_path):
    torch.manual_seed(4)
    backbone = create_backbone("vit-tiny-test")
    student = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    student["head.mlp.0.weight"] = torch.zeros(2, 2)
    state = {"config": {"backbone": "vit-tiny-test"}, "student": student, "step": 7}
    torch.save(state, tmp_path / "checkpoint.pt")
    from_checkpoint = load_eval_backbone(str(tmp_path / "checkpoint.pt"))
    export, _ = export_backbone(tmp_path / "checkpoint.pt", tmp_path / "model.safetensors")
    from_export = load_eval_backbone(str(export))
    assert same_weights(from_checkpoint, backbone) and same_weights(from_export, backbone)
