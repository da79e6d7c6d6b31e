"""tools/benchmark_train.py, tools/benchmark_uda.py and the run reuse of the tools, on tiny inputs."""
import json
import os
import sys

from helpers import REPO

sys.path.insert(0, os.path.join(REPO, "tools"))
import benchmark_train  # noqa: E402
import benchmark_uda  # noqa: E402

ST = os.path.join(REPO, "configs/synthetic/self_training.yaml")
DUDA = os.path.join(REPO, "configs/synthetic/duda.yaml")
TINY = ["MODEL.SEM_SEG_HEAD.EMBED_DIM", "16",
        "MODEL.DUDA.LARGE_NETWORK_OPTS", "['MODEL.MIT.VARIANT', 'b0']"]


def test_benchmark_config_needs_no_weight_files_and_uses_synthetic_data():
    args = benchmark_train.parse_args(["--config-file", "configs/gta2cs/duda.yaml", "--crop",
                                       "64", "--opts", "SOLVER.MAX_ITER", "10"])
    cfg = benchmark_train.benchmark_config(os.path.join(REPO, "configs/gta2cs/duda.yaml"),
                                           ["MODEL.DUDA.BETA_MAX", "0.5"], args)
    assert cfg.MODEL.BACKBONE.WEIGHTS == "" and cfg.MODEL.WEIGHTS == ""
    assert list(cfg.MODEL.DUDA.LARGE_NETWORK_OPTS) == ["MODEL.BACKBONE.WEIGHTS", ""]
    assert cfg.DATASETS.SOURCE_TRAIN == ("synthetic_uda_source_train",)
    assert tuple(cfg.INPUT.CROP.SIZE) == (64, 64) and tuple(cfg.INPUT.SOURCE_SIZE) == (64, 86)
    assert cfg.SOLVER.MAX_ITER == 10 and cfg.MODEL.DUDA.BETA_MAX == 0.5
    assert cfg.DATALOADER.SOURCE_IMS_PER_BATCH == cfg.DATALOADER.TARGET_IMS_PER_BATCH == 2


def test_benchmark_train_times_each_config_in_its_own_process(synthetic_root, tmp_path, capsys):
    out = str(tmp_path / "bench")
    assert benchmark_train.main([
        "--config-file", ST, "--config-file", DUDA, "SOLVER.BACKWARD_PER_STAGE", "False",
        "--crop", "32", "--rounds", "1", "--steps", "1", "--warmup", "0", "--output-dir", out,
        "--opts", *TINY]) == 0
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("| configs")
            or line.startswith(f"| {ST}") or line.startswith(f"| {DUDA}")]
    assert len(rows) == 2
    cells = [c.strip() for c in rows[1].strip("|").split("|")]
    assert cells[0] == f"{DUDA} SOLVER.BACKWARD_PER_STAGE False"
    assert float(cells[5]) > 0 and float(cells[6]) > 0  # ratios to the first config
    assert "peak RSS" in printed and os.path.isfile(os.path.join(out, "results.md"))
    result = json.load(open(os.path.join(out, "round0_config1.json")))
    assert len(result["times"]) == 1 and result["images_per_step"] == 4
    assert result["peak_mib"] >= result["after_build_mib"] > 0


def test_benchmark_train_compares_one_and_two_processes(synthetic_root, tmp_path, capsys):
    out = str(tmp_path / "bench")
    assert benchmark_train.main([
        "--config-file", ST, "--processes", "1", "2", "--crop", "32", "--rounds", "1",
        "--steps", "1", "--warmup", "0", "--output-dir", out, "--opts", *TINY]) == 0
    printed = capsys.readouterr().out
    assert f"| {ST} [1 proc]" in printed and f"| {ST} [2 proc]" in printed
    one, two = (json.load(open(os.path.join(out, f"round0_config{i}.json"))) for i in (0, 1))
    assert one["processes"] == 1 and two["processes"] == 2
    assert two["images_per_step"] == one["images_per_step"] == 4  # the same global batch
    assert two["peak_mib"] > 0 and len(two["times"]) == 1


def _run(miou, seconds=0.5):
    return {"sem_seg/mIoU": miou, "sem_seg/IoU-road": miou + 1, "seconds_per_iter": seconds}


def test_benchmark_uda_reads_the_teacher_evaluation_and_summarises(tmp_path):
    run_dir = tmp_path / "duda" / "seed0"
    (run_dir / "eval_teacher" / "inference" / "val").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("MODEL:\n  META_ARCHITECTURE: DUDA\n")
    (run_dir / "eval_teacher" / "inference" / "val" / "sem_seg_evaluation.json").write_text(
        json.dumps({"mIoU": 50.0, "IoU-road": 80.0}))
    assert benchmark_uda.teacher_evaluation(str(run_dir)) == (
        "MODEL.DUDA.INFERENCE_NETWORK", "large EMA teacher")
    teacher = benchmark_uda.evaluate_teacher(DUDA, str(run_dir), _run(45.0, 0.7), [])
    assert teacher == {"sem_seg/mIoU": 50.0, "sem_seg/IoU-road": 80.0, "seconds_per_iter": 0.7}
    report = benchmark_uda.summarise({"self_training": [_run(40.0), _run(42.0)],
                                      "duda (large EMA teacher)": [teacher, teacher]})
    assert "| self_training " in report and "41.0 ± 1.4" in report
    assert "duda (large EMA teacher)" in report and "80.0" in report


def _panoptic_run(pq, car=None):
    run = {**_run(pq + 10), "panoptic_seg/PQ": pq, "panoptic_seg/PQ_th": pq - 5,
           "panoptic_seg/PQ_st": pq + 5, "panoptic_seg/SQ": 70.0, "panoptic_seg/RQ": pq + 20,
           "panoptic_seg/PQ-car": car if car is not None else pq,
           "panoptic_seg/PQ-train": float("nan")}
    return run


def test_benchmark_uda_summarises_panoptic_runs_with_pq(tmp_path):
    run_dir = tmp_path / "duda" / "seed0"
    inference = run_dir / "eval_teacher" / "inference" / "val"
    inference.mkdir(parents=True)
    (inference / "sem_seg_evaluation.json").write_text(json.dumps({"mIoU": 50.0}))
    (inference / "panoptic_evaluation.json").write_text(json.dumps({"PQ": 33.0, "PQ-car": 20.0}))
    teacher = benchmark_uda.evaluate_teacher(DUDA, str(run_dir), _panoptic_run(30.0), [])
    assert teacher["panoptic_seg/PQ"] == 33.0 and teacher["sem_seg/mIoU"] == 50.0
    report = benchmark_uda.summarise({"self_training_b0": [_panoptic_run(20.0, car=10.0),
                                                           _panoptic_run(22.0, car=14.0)]})
    header = report.splitlines()[0]
    assert "PQ_th" in header and "PQ_st" in header and "mIoU" in header
    assert "21.0 ± 1.4" in report and "20.0 22.0" in report  # PQ mean ± std, per seed
    assert "per-class PQ" in report and "12.0" in report  # car's mean
    assert "| train" not in report.split("per-class PQ")[1]  # a class never seen (NaN)
    benchmark_uda.plot({"a": [_panoptic_run(20.0)]}, str(tmp_path / "plot.png"))
    assert os.path.isfile(tmp_path / "plot.png")


def test_demo_reuses_a_finished_run_only_while_its_config_is_unchanged(tmp_path):
    from duda_d2 import load_config
    from duda_d2.utils.runs import finished_run, trained_with

    out = str(tmp_path / "run")
    os.makedirs(out)
    assert not trained_with(out, ST, [])  # nothing trained yet
    with open(os.path.join(out, "config.yaml"), "w") as f:
        f.write(load_config(ST, ["OUTPUT_DIR", out, "SOLVER.MAX_ITER", "600"]).dump())
    assert trained_with(out, ST, ["SOLVER.MAX_ITER", "600"])
    assert not trained_with(out, ST, ["SOLVER.MAX_ITER", "700"])
    assert finished_run(out, ST, ["SOLVER.MAX_ITER", "600"]) is None  # no final mIoU yet
    with open(os.path.join(out, "metrics.json"), "w") as f:
        f.write(json.dumps({"iteration": 0, "time": 0.5}) + "\n")
        f.write(json.dumps({"iteration": 599, "sem_seg/mIoU": 40.0}) + "\n")
    merged, times = finished_run(out, ST, ["SOLVER.MAX_ITER", "600"])
    assert merged["sem_seg/mIoU"] == 40.0 and times == [0.5]
    assert finished_run(out, ST, ["SOLVER.MAX_ITER", "700"]) is None
