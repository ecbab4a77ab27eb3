"""Knowledge distillation, QAT and int8 ONNX in the DSMN recipe (soundcl.ondevice.distill, soundcl.ondevice.export)."""
import os

import pytest
import torch

from conftest import REPO_ROOT, run_recipe
from soundcl.ondevice import distill
from soundcl.data.manifest import read_manifest


def test_kd_loss_is_zero_on_the_teachers_logits_and_scales_with_t_squared():
    torch.manual_seed(0)
    teacher = torch.randn(4, 5)
    assert float(distill.kd_loss(teacher.clone(), teacher, 2.0)) == pytest.approx(0.0, abs=1e-6)
    student = torch.randn(4, 5)
    kl = torch.nn.functional.kl_div(torch.log_softmax(student / 3.0, -1), torch.softmax(teacher / 3.0, -1),
                                    reduction="batchmean")
    assert float(distill.kd_loss(student, teacher, 3.0)) == pytest.approx(9.0 * float(kl), rel=1e-5)
    # Mixup mixes the soft targets like the inputs.
    perm = torch.tensor([1, 0, 3, 2])
    mixed = 0.3 * torch.softmax(teacher, -1) + 0.7 * torch.softmax(teacher[perm], -1)
    expected = torch.nn.functional.kl_div(torch.log_softmax(student, -1), mixed, reduction="batchmean")
    assert float(distill.kd_loss(student, teacher, 1.0, perm, 0.3)) == pytest.approx(float(expected), rel=1e-5)


def test_a_sit_teacher_gives_its_last_stages_logits():
    assert distill.teacher_class_offset({"n_classes": 10}, 10) == 0
    assert distill.teacher_class_offset({"n_classes": 23, "stage_n_classes": [13, 10]}, 10) == 13
    with pytest.raises(ValueError, match="same classes"):
        distill.teacher_class_offset({"n_classes": 23, "stage_n_classes": [13, 10]}, 13)


def test_teacher_logits_are_computed_once_and_cached(tmp_path, monkeypatch):
    rows = [{"ID": f"clip{i}", "class_idx": i % 3} for i in range(6)]
    teacher_dir = tmp_path / "teacher_run"
    teacher_dir.mkdir()
    calls = []

    def fake_run_teacher(folder, wanted, n_classes, batch_size=16):
        calls.append([row["ID"] for row in wanted])
        return {row["ID"]: torch.nn.functional.one_hot(torch.tensor(row["class_idx"]), n_classes).float()
                for row in wanted}

    monkeypatch.setattr(distill, "run_teacher", fake_run_teacher)
    first = distill.teacher_logits(str(teacher_dir), rows[:4], 3, str(tmp_path / "save"))
    again = distill.teacher_logits(str(teacher_dir), rows[:4], 3, str(tmp_path / "save"))  # e.g. a resumed run
    more = distill.teacher_logits(str(teacher_dir), rows, 3, str(tmp_path / "save"))
    assert calls == [["clip0", "clip1", "clip2", "clip3"], ["clip4", "clip5"]]  # each clip scored once
    assert set(first) == set(again) == {"clip0", "clip1", "clip2", "clip3"} and len(more) == 6
    assert distill.accuracy(more, rows) == 1.0

    stored = tmp_path / "logits.pt"
    torch.save({"clip0": torch.zeros(3)}, stored)
    with pytest.raises(ValueError, match="lacks 1 of the 2 clips"):
        distill.teacher_logits(str(stored), rows[:2], 3, str(tmp_path / "save2"))
    with pytest.raises(FileNotFoundError, match="not found"):
        distill.teacher_logits(str(tmp_path / "absent"), rows[:2], 3, str(tmp_path / "save3"))


def test_dsmn_recipe_distills_quantizes_aware_and_exports_int8_onnx(tmp_path, synth_data_folder):
    """Synthetic data, a stored-logits teacher that names the NEXT class of each clip, kd_weight=1 (no
    label loss): the student learns the teacher's labelling, not the data's; QAT int8 is reported
    beside float32 and PTQ; the int8 ONNX model agrees with PyTorch's int8 model; the run's own
    folder works as a teacher (its final logits)."""
    pytest.importorskip("onnxruntime")
    from soundcl.data import synthetic

    # The run's manifests (its prepare, on the same clips), to write the teacher's logits file.
    info = synthetic.prepare(synth_data_folder, str(tmp_path / "prepare"), task_classes=[list(range(10))],
                             train_folds=[1, 2], valid_folds=[9], test_folds=[10], clips_per_class_per_fold=8,
                             seed=1234)
    rows = [row for split in ("train", "test") for path in info["manifests"][split] for row in read_manifest(path)]
    shifted = {row["ID"]: (int(row["class_idx"]) + 1) % 10 for row in rows}
    logits_file = tmp_path / "teacher_logits.pt"
    torch.save({i: 8.0 * torch.nn.functional.one_hot(torch.tensor(c), 10).float() for i, c in shifted.items()},
               logits_file)

    results = run_recipe("dsmn_train", [
        os.path.join(REPO_ROOT, "hparams", "synth", "dsmn_train.yaml"), f"--data_folder={synth_data_folder}",
        f"--output_base={tmp_path}", f"--audio_cache={tmp_path}/audio_cache", "--clips_per_class_per_fold=8",
        "--train_folds=[1, 2]", "--number_of_epochs=3", "--dsmn_channels=[8, 16, 16]", "--calibration_batches=4",
        f"--teacher={logits_file}", "--kd_weight=1.0", "--kd_temperature=1.0", "--mix_rate=1.0",
        "--qat=True", "--qat_epochs=1", "--noprogressbar",
    ])
    out = tmp_path / "dsmn_train" / "1986"
    assert (out / "save" / distill.TEACHER_LOGITS_FILE).is_file()
    quantized = results["quantized"]
    assert quantized["teacher_accuracy"] == 0.0
    # The run's final model as a teacher: its logits score the test set as the recipe did ...
    test_rows = read_manifest(str(out / "save" / "test_task0.csv"))
    student = distill.run_teacher(str(out), test_rows, 10)
    assert distill.accuracy(student, test_rows) == pytest.approx(quantized["fp32_accuracy"], abs=1e-6)
    # ... and follow the teacher's labelling (chance: 0.1; the true labels alone give ~0.3 here).
    teacher_labels = [dict(row, class_idx=shifted[row["ID"]]) for row in test_rows]
    followed = distill.accuracy(student, teacher_labels)
    assert followed > 0.25 and followed > quantized["fp32_accuracy"] + 0.1, (followed, quantized)
    qat_state = torch.load(out / "model_int8_qat.pt", weights_only=False)
    assert any(torch.is_tensor(v) and v.dtype == torch.qint8 for v in qat_state.values())
    assert 0.0 <= quantized["qat_int8_accuracy"] <= 1.0

    # This 3-epoch student has small logit margins (near ties flip between int8 schemes): 0.9 here;
    # the trained synthetic DSMN agrees on 100 % of the test clips (docs/ondevice.md), the default 0.99.
    check = run_recipe("export", [str(out), "--format=onnx_int8", "--min_agreement=0.9"])
    assert check["ok"] and check["onnx_int8_torch_int8_agreement"] >= 0.9 and check["n_clips"] == 80
    assert (out / "model_int8.onnx").is_file() and check["min_agreement"] == 0.9
    assert check["onnx_int8_initializer_bytes"]["int8"] < 0.5 * check["onnx_fp32_initializer_bytes"]["float"]
    assert check["params"] > 0 and check["macs_per_clip"] > 0
