"""Issue 13's silent-wrong-result and clear-message items: evaluation of nothing, exports of a
network a checkpoint lacks, evaluation that leaves a training run's config alone, refused
schedules, class-count mismatches, and one-line CLI errors (``--debug`` for tracebacks)."""
import errno
import io
import os
import re
import subprocess
import sys
import types

import pytest
import torch

from detectron2.modeling import build_model

from duda_d2.engine import AtomicCheckpointer
from duda_d2.utils.runs import finished_run
from duda_d2.utils.user_errors import UserError, is_user_error, user_message
from helpers import REPO, config

sys.path.insert(0, os.path.join(REPO, "tools"))
import export_student  # noqa: E402
import train_net  # noqa: E402

SOURCE_ONLY = os.path.join(REPO, "configs/synthetic/source_only.yaml")
SMALL = ["SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1", "DATALOADER.NUM_WORKERS",
         "0", "MODEL.SEM_SEG_HEAD.EMBED_DIM", "16", "INPUT.CROP.SIZE", "(32, 32)"]


def _main(*argv):
    return train_net.main(train_net.default_argument_parser().parse_args(list(argv)))


def test_eval_only_refuses_to_evaluate_a_random_network(synthetic_root, tmp_path):
    with pytest.raises(UserError, match="--eval-only needs MODEL.WEIGHTS"):
        _main("--config-file", SOURCE_ONLY, "--eval-only", "OUTPUT_DIR", str(tmp_path), *SMALL)
    # A backbone-only file: the head would stay random.
    model = build_model(config("configs/synthetic/source_only.yaml", *SMALL))
    torch.save({"model": {f"network.backbone.{k}": v
                          for k, v in model.network.backbone.state_dict().items()}},
               tmp_path / "backbone.pth")
    with pytest.raises(UserError, match=r"no value for \d+ of the \d+ tensors .*head.*"
                                        r"the file holds the networks network \(\d+ tensors"):
        _main("--config-file", SOURCE_ONLY, "--eval-only", "MODEL.WEIGHTS",
              str(tmp_path / "backbone.pth"), "OUTPUT_DIR", str(tmp_path), *SMALL)
    # Converted ImageNet weights (MODEL.BACKBONE.WEIGHTS' format) hold no network at all.
    torch.save({"model": model.network.backbone.state_dict()}, tmp_path / "mit_b0.pth")
    with pytest.raises(UserError, match=r"the file holds no network: \d+ tensors with keys "
                                        r"like \['block1"):
        _main("--config-file", SOURCE_ONLY, "--eval-only", "MODEL.WEIGHTS",
              str(tmp_path / "mit_b0.pth"), "OUTPUT_DIR", str(tmp_path), *SMALL)


def test_eval_only_leaves_the_training_runs_config_and_reuse_alone(synthetic_root, tmp_path):
    out = str(tmp_path / "run")
    opts = ["SOLVER.MAX_ITER", "2", *SMALL]
    _main("--config-file", SOURCE_ONLY, "OUTPUT_DIR", out, *opts)
    saved = open(os.path.join(out, "config.yaml")).read()
    assert finished_run(out, SOURCE_ONLY, opts) is not None
    assert not os.path.exists(os.path.join(out, ".lock"))  # main() leaves the folder free
    # Evaluated into the run's own folder with another test-time setting.
    _main("--config-file", SOURCE_ONLY, "--eval-only", "MODEL.WEIGHTS",
          os.path.join(out, "model_final.pth"), "OUTPUT_DIR", out, "INPUT.TEST_SIZE", "(48, 64)",
          *opts)
    assert open(os.path.join(out, "config.yaml")).read() == saved
    assert finished_run(out, SOURCE_ONLY, opts) is not None  # make demo would reuse it


def test_training_without_iterations_is_refused(tmp_path):
    with pytest.raises(UserError, match="SOLVER.MAX_ITER=0"):
        _main("--config-file", SOURCE_ONLY, "SOLVER.MAX_ITER", "0", "OUTPUT_DIR", str(tmp_path))


def test_class_count_mismatch_at_evaluation_says_so(synthetic_root, tmp_path):
    from duda_d2.engine import UDATrainer

    cfg = config("configs/synthetic/source_only.yaml", *SMALL, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 7,
                 "OUTPUT_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="predicts 7 classes but synthetic_uda_target_val has 19"):
        UDATrainer.test(cfg, build_model(cfg).eval())


def test_export_refuses_a_network_the_checkpoint_does_not_hold(tmp_path):
    cfg = config("configs/synthetic/source_only.yaml", *SMALL)
    model = build_model(cfg)
    AtomicCheckpointer(model, save_dir=str(tmp_path)).save("model_final")
    weights = str(tmp_path / "model_final.pth")
    holds = r"holds the networks network \(\d+ tensors\)"
    with pytest.raises(UserError, match=r"a UDASegmentor, which has no teacher.*" + holds):
        export_student.export(SOURCE_ONLY, weights, str(tmp_path / "e"), "teacher", opts=SMALL)
    st = os.path.join(REPO, "configs/synthetic/self_training.yaml")
    with pytest.raises(UserError, match=r"has no large_student.*" + holds):
        export_student.export(st, weights, str(tmp_path / "e"), "large_student", opts=SMALL)
    # A self-training config given a source-only checkpoint: it has no teacher.
    with pytest.raises(UserError, match=r"holds no weights for the teacher.*" + holds):
        export_student.export(st, weights, str(tmp_path / "e"), "teacher", opts=SMALL)
    # ... and a self-training run's checkpoint names its two networks.
    model = build_model(config("configs/synthetic/self_training.yaml", *SMALL))
    AtomicCheckpointer(model, save_dir=str(tmp_path / "st")).save("model_final")
    duda = os.path.join(REPO, "configs/synthetic/duda.yaml")
    with pytest.raises(UserError, match=r"pair\.student \(\d+ tensors\), pair\.teacher"):
        export_student.export(duda, str(tmp_path / "st" / "model_final.pth"),
                              str(tmp_path / "e"), "teacher", opts=SMALL)
    assert export_student.main(["--config-file", SOURCE_ONLY, "--weights", weights,
                                "--output-dir", str(tmp_path / "e"), "--network", "teacher",
                                *SMALL]) == 1
    assert not os.path.exists(tmp_path / "e" / "student.pth")


def test_user_errors_are_told_from_bugs():
    from duda_d2.data.datasets import DatasetNotFoundError

    def ours():
        raise DatasetNotFoundError("folder '/x' does not exist")

    for make, expected in [(ours, True), (lambda: torch.zeros(2).view(3), False),
                           (lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full", "/o/m.pth")),
                            True)]:
        try:
            make()
        except Exception as error:  # noqa: BLE001
            assert is_user_error(error) == expected, error
            if getattr(error, "errno", None) == errno.ENOSPC:
                assert user_message(error).endswith("No space left on device")


def _cli(*argv, env=None):
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_net.py"), *argv],
                          capture_output=True, text=True, env=env, cwd=REPO)


def test_cli_ends_a_user_error_with_one_line(tmp_path):
    env = {**os.environ, "DETECTRON2_DATASETS": str(tmp_path / "empty")}
    argv = ["--config-file", SOURCE_ONLY, "OUTPUT_DIR", str(tmp_path / "out"),
            "SOLVER.MAX_ITER", "1", "DATALOADER.NUM_WORKERS", "0"]
    result = _cli(*argv, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(tmp_path / "empty") in last
    debug = _cli("--debug", *argv, env=env)  # options before the KEY VALUE pairs
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    # A config key that does not exist: Detectron2's message, one line.
    bad = _cli("--config-file", SOURCE_ONLY, "OUTPUT_DIR", str(tmp_path / "o2"), "MODEL.NOPE", "1")
    assert bad.returncode == 1 and "Non-existent key: MODEL.NOPE" in bad.stderr.strip()
    assert "Traceback" not in bad.stderr


@pytest.fixture
def full_disk(monkeypatch):
    """Every file of the atomic writer fails with ENOSPC after 4 KiB, as on a full disk: torch
    then ends with its own RuntimeError ("unexpected pos"), the OSError as its context."""
    from duda_d2.utils import atomic_files

    class FullDisk(io.FileIO):
        def write(self, data):
            if self.tell() + len(data) > 4096:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return super().write(data)

    fake_os = types.ModuleType("os")
    fake_os.__dict__.update(os.__dict__)
    fake_os.fdopen = lambda fd, *args, **kwargs: FullDisk(fd, "w")
    monkeypatch.setattr(atomic_files, "os", fake_os)


def test_a_missing_config_file_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        train_net.cli(["--config-file", str(tmp_path / "nope.yaml")])
    assert exit_.value.code == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"error: Config file '{tmp_path / 'nope.yaml'}' does not exist!"


def test_full_disk_says_so_in_the_last_line(synthetic_root, tmp_path, full_disk, capsys):
    with pytest.raises(SystemExit) as exit_:
        train_net.cli(["--config-file", SOURCE_ONLY, "OUTPUT_DIR", str(tmp_path),
                       "SOLVER.MAX_ITER", "1", "TEST.EVAL_PERIOD", "0", *SMALL])
    assert exit_.value.code == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and last.endswith("No space left on device")
    assert os.path.join(str(tmp_path), "model_final.pth") in last


def test_a_bug_in_our_code_keeps_its_traceback():
    from duda_d2.modeling.meta_arch.segmentor import InferenceSettings
    from duda_d2.uda.ema import ema_update

    # A tensor operation that fails inside our code is a bug, even as a RuntimeError.
    with pytest.raises(RuntimeError) as bug:
        ema_update(torch.nn.Linear(2, 2), torch.nn.Linear(3, 3), 0.5)
    assert not is_user_error(bug.value)
    # What our code raises on purpose is for the user.
    with pytest.raises(ValueError) as deliberate:
        InferenceSettings("tiles")
    assert is_user_error(deliberate.value)
    assert train_net.default_argument_parser().parse_args(["--debug"]).debug


def test_backbone_weights_that_do_not_fit_end_the_cli_and_loads_reach_log_txt(tmp_path, capsys):
    from duda_d2.modeling.backbone.mit import MIT_SPECS, MixVisionTransformer

    backbone = MixVisionTransformer(MIT_SPECS["b0"]).state_dict()
    torch.save({"model": {f"network.backbone.{k}": v for k, v in backbone.items()}},
               tmp_path / "model_final.pth")
    with pytest.raises(SystemExit):
        train_net.cli(["--config-file", SOURCE_ONLY, "OUTPUT_DIR", str(tmp_path / "run"),
                       "MODEL.BACKBONE.WEIGHTS", str(tmp_path / "model_final.pth"), *SMALL])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(r"^error: backbone weights .* match only 0 of .*whole training run "
                     r"\(networks network\).*MODEL\.WEIGHTS", last), last
    # Fitting weights: the number loaded is in the run's log.txt.
    torch.save(backbone, tmp_path / "mit_b0.pth")
    out = tmp_path / "eval"
    cfg = train_net.setup(train_net.default_argument_parser().parse_args([
        "--config-file", SOURCE_ONLY, "--eval-only", "OUTPUT_DIR", str(out),
        "MODEL.BACKBONE.WEIGHTS", str(tmp_path / "mit_b0.pth"), *SMALL]))
    build_model(cfg)
    n = len(backbone)
    assert f"loaded {n} of {n} backbone tensors" in (out / "log.txt").read_text()


def test_checkpoint_contents_name_the_networks_a_file_holds():
    from duda_d2.modeling.network import checkpoint_contents

    duda = ["small_student.backbone.a", "small_student.head.b", "large_pair.student.backbone.a",
            "large_pair.teacher.backbone.a", "distillation.inconsistency.seen"]
    assert checkpoint_contents(duda) == ("the networks large_pair.student (1 tensors), "
                                         "large_pair.teacher (1 tensors), small_student "
                                         "(2 tensors)")
    assert checkpoint_contents(["backbone.a", "head.b"]).startswith("the networks (bare network)")
    # Backbone weights with a "backbone." prefix, or a classifier: no network.
    for keys in (["backbone.block1.w", "backbone.block2.w"], ["head.weight", "conv1.weight"]):
        assert checkpoint_contents(keys).startswith(f"no network: {len(keys)} tensors")
