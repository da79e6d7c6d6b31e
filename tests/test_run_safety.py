"""A training run's folder after kills and next to other runs (issue 13, items 5-7): a resumed
run with nothing left to train still ends with model_final.pth and its evaluation; one
training per OUTPUT_DIR (a lock naming the other process and host, taken over only from a
dead process on this host); the atomic writer's temporaries left by a kill are removed."""
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from detectron2.engine import HookBase

from duda_d2.engine import UDATrainer
from duda_d2.engine import run_lock as run_lock_module
from duda_d2.engine.run_lock import RunLockError, acquire_run_lock, release_run_lock, run_lock
from helpers import REPO, config

sys.path.insert(0, os.path.join(REPO, "tools"))
import train_net  # noqa: E402

OPTS = ["SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "2", "DATALOADER.NUM_WORKERS", "0",
        "MODEL.SEM_SEG_HEAD.EMBED_DIM", "32"]
CONFIG = os.path.join(REPO, "configs/synthetic/source_only.yaml")


def _train(out, *argv):
    args = train_net.default_argument_parser().parse_args(
        ["--config-file", CONFIG, *argv, "OUTPUT_DIR", out, *OPTS])
    return train_net.main(args)


def _metrics_lines(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return [json.loads(line) for line in f]


def _dead_pid():
    """The id of a process of this host that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def lock_holder(tmp_path):
    """Another live process of this host holding the lock of a folder: (folder, process)."""
    folder = str(tmp_path / "held")
    code = textwrap.dedent(f"""
        import sys, time
        from duda_d2.engine.run_lock import acquire_run_lock
        acquire_run_lock({folder!r})
        print("locked", flush=True)
        time.sleep(120)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    yield folder, process
    if process.poll() is None:
        process.kill()
        process.wait()


# -- item 5: killed after the last periodic checkpoint, before model_final.pth ----------------

def test_resume_with_nothing_left_to_train_writes_model_final_and_evaluates(synthetic_root,
                                                                            tmp_path):
    out = str(tmp_path / "run")
    _train(out, "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2")
    # The folder of a run killed after model_0000003.pth (the last iteration's periodic
    # checkpoint) was saved and before model_final.pth was.
    final = os.path.join(out, "model_final.pth")
    os.remove(final)
    with open(os.path.join(out, "last_checkpoint"), "w") as f:
        f.write("model_0000003.pth")
    written = len(_metrics_lines(out))

    _train(out, "--resume", "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2")
    assert open(os.path.join(out, "last_checkpoint")).read() == "model_final.pth"
    saved = torch.load(final, weights_only=False)
    periodic = torch.load(os.path.join(out, "model_0000003.pth"), weights_only=False)
    assert saved["iteration"] == 3
    for key, value in periodic["model"].items():
        torch.testing.assert_close(saved["model"][key], value, rtol=0, atol=0)
    new_lines = _metrics_lines(out)[written:]
    assert any("sem_seg/mIoU" in line for line in new_lines)  # the final evaluation ran
    assert not any("total_loss" in line for line in new_lines)  # and nothing was trained

    # Resuming a finished run again does not rewrite its model_final.pth.
    stamp = os.stat(final).st_mtime_ns
    _train(out, "--resume", "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2")
    assert os.stat(final).st_mtime_ns == stamp


# -- item 6: one training per OUTPUT_DIR -------------------------------------------------------

def test_a_second_run_on_a_live_runs_folder_fails_naming_it_and_a_killed_one_is_taken_over(
        lock_holder):
    folder, process = lock_holder
    host = socket.gethostname()
    with pytest.raises(RunLockError, match=rf"pid {process.pid} on host {host}"):
        acquire_run_lock(folder)
    with pytest.raises(RunLockError, match=rf"pid {process.pid}"):
        with run_lock(folder):
            pass
    process.kill()  # SIGKILL: the lock file stays behind
    process.wait()
    assert os.path.isfile(os.path.join(folder, ".lock"))
    with run_lock(folder):
        with open(os.path.join(folder, ".lock")) as f:
            assert json.load(f)["pid"] == os.getpid()
    assert not os.path.exists(os.path.join(folder, ".lock"))


def test_the_trainer_refuses_a_folder_another_training_holds(synthetic_root, lock_holder):
    folder, process = lock_holder
    temporary = os.path.join(folder, f".tmp_model_0000001.pth.{_dead_pid()}.0123abcd")
    open(temporary, "wb").close()
    cfg = config("configs/synthetic/source_only.yaml", *OPTS, "OUTPUT_DIR", folder)
    with pytest.raises(RunLockError, match=rf"pid {process.pid}"):
        UDATrainer(cfg)
    assert not os.path.exists(os.path.join(folder, "metrics.json"))
    assert os.path.exists(temporary)  # only the lock holder cleans up


def test_two_train_net_runs_on_one_folder_the_second_fails_at_once(synthetic_root, tmp_path):
    out = str(tmp_path / "run")
    command = [sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file",
               CONFIG, "SOLVER.MAX_ITER", "100000", "OUTPUT_DIR", out, *OPTS]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lock = os.path.join(out, ".lock")
        deadline = time.monotonic() + 120
        while not os.path.exists(lock) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert os.path.exists(lock), "the first run did not take the lock"
        second = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert second.returncode != 0
        assert f"pid {first.pid} on host {socket.gethostname()}" in second.stderr
        assert first.poll() is None  # the first run goes on
    finally:
        first.kill()
        first.wait()


def test_a_lock_of_another_host_is_never_taken_over(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / ".lock").write_text(json.dumps({"pid": _dead_pid(), "host": "node-7"}))
    with pytest.raises(RunLockError, match="on host node-7"):
        acquire_run_lock(str(folder))
    assert json.loads((folder / ".lock").read_text())["host"] == "node-7"


def test_the_lock_is_reentrant_in_one_process_and_only_taken_by_the_main_process(tmp_path,
                                                                              monkeypatch):
    folder = str(tmp_path / "run")
    lock = os.path.join(folder, ".lock")
    acquire_run_lock(folder)  # as tools/train_net.py does before default_setup
    with run_lock(folder):  # as the trainer does
        assert os.path.isfile(lock)
    assert os.path.isfile(lock)
    release_run_lock(folder)
    assert not os.path.exists(lock)

    monkeypatch.setattr(run_lock_module.comm, "is_main_process", lambda: False)
    with run_lock(folder):
        assert not os.path.exists(lock)


class _Crash(HookBase):
    def after_step(self):
        raise RuntimeError("crash in step")


def test_training_releases_the_lock_at_the_end_and_on_an_exception(synthetic_root, tmp_path):
    out = str(tmp_path / "run")
    lock = os.path.join(out, ".lock")
    cfg = config("configs/synthetic/source_only.yaml", *OPTS, "SOLVER.MAX_ITER", "2",
                 "TEST.EVAL_PERIOD", "0", "OUTPUT_DIR", out)
    trainer = UDATrainer(cfg)
    with open(lock) as f:
        owner = json.load(f)
    assert (owner["pid"], owner["host"]) == (os.getpid(), socket.gethostname())
    trainer.register_hooks([_Crash()])
    trainer.resume_or_load(resume=False)
    with pytest.raises(RuntimeError, match="crash in step"):
        trainer.train()
    assert not os.path.exists(lock)
    trainer = UDATrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert not os.path.exists(lock)


# -- item 7: temporaries of the atomic writer left by a kill ---------------------------------

def test_start_up_removes_the_atomic_writers_temporaries_of_dead_processes(synthetic_root,
                                                                          tmp_path):
    out = tmp_path / "run"
    (out / "inference").mkdir(parents=True)
    dead = _dead_pid()
    stale = [out / f".tmp_model_0000001.pth.{dead}.0123abcd",
             out / f".tmp_last_checkpoint.{dead}.89abcdef"]
    kept = [out / ".tmp_notes.txt",  # not the writer's name pattern
            out / "inference" / f".tmp_model_final.pth.{dead}.0123abcd",  # not in OUTPUT_DIR
            out / f".tmp_model_final.pth.{os.getpid()}.0123abcd"]  # a live writer's
    for path in stale + kept:
        path.write_bytes(b"partial")
    cfg = config("configs/synthetic/source_only.yaml", *OPTS, "OUTPUT_DIR", str(out))
    UDATrainer(cfg)
    try:
        assert [p for p in stale if p.exists()] == []
        assert [p for p in kept if not p.exists()] == []
    finally:
        release_run_lock(str(out))  # held from the trainer's start to the end of train()


def _hold_and_return(folder):
    acquire_run_lock(folder)  # never released: the process's exit releases it


def test_a_lock_taken_in_a_launched_worker_is_released_when_it_exits(tmp_path):
    import multiprocessing

    folder = str(tmp_path / "run")
    worker = multiprocessing.get_context("spawn").Process(target=_hold_and_return,
                                                          args=(folder,))
    worker.start()
    worker.join()
    assert worker.exitcode == 0
    assert not os.path.exists(os.path.join(folder, ".lock"))
