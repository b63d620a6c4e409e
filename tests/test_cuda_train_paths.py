"""Training's CUDA-only paths, run on the CPU: ``--decode gpu`` gives each split its own device
transform, a resume restores the CUDA generator of the process's own device (CUDA faked), and
``--amp fp16``'s skipped optimizer steps leave the schedule alone (GradScaler on the CPU)."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from cli import run
from PIL import Image
from torch import nn

from afictl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from afictl.data import Batch, build_dataset
from afictl.train import TrainParts, load_resume, resolve_config, train
from afictl.train.build import build_parts, runtime_config
from afictl.train.distributed import DistContext
from afictl.train.ema import ModelEma
from afictl.train.engine import RunProgress, evaluate, optimizer_step, train_epoch
from afictl.train.state import (
    DeviceLayoutError,
    StopFlag,
    cuda_state_problem,
    get_rng_state,
    set_rng_state,
)

CPU = DistContext(0, 1, 0, torch.device("cpu"))


def _cfg(run_dir: Path, **kw):
    options = {
        "arch": "resnet20",
        "dataset": "shapes",
        "data_size": 8,
        "batch_size": 2,
        "epochs": 1,
        "workers": 0,
        "device": "cpu",
        "run_dir": str(run_dir),
        **kw,
    }
    return resolve_config(options)


# --- 1. --decode gpu: the train split's transform trains, the eval split's evaluates --------


class Counted:
    """A split's device transform that counts the images it transforms."""

    def __init__(self, transform):
        self.transform, self.calls = transform, 0

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.transform(img)


def _jpegs(folder: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        (folder / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        low = (rng.random((6, 6, 3)) * 255).astype(np.uint8)  # smooth: a photo's statistics
        Image.fromarray(low).resize((80, 64), Image.BICUBIC).save(folder / f"c{i % 2}" / f"{i}.jpg")


def _gpu_decoded(root: Path, monkeypatch) -> tuple:
    """6 train and 4 eval JPEGs as ``--decode gpu`` datasets (encoded files, transforms on the
    device), each transform counted. CUDA is faked only while they are built."""
    _jpegs(root / "train", 6, seed=0)
    _jpegs(root / "val", 4, seed=1)
    with monkeypatch.context() as m:
        m.setattr(torch.cuda, "is_available", lambda: True)
        splits = [
            build_dataset("imagenet", root, split, input_size=32, decode="gpu", on_error="mark")
            for split in ("train", "eval")
        ]
    for ds in splits:
        assert ds.transform is None  # the images reach the loop encoded
        ds.device_transform = Counted(ds.device_transform)
    return tuple(splits)


def test_build_parts_gives_each_split_its_device_transform(tmp_path):
    train_ds = build_dataset("shapes", None, "train", size=4)
    eval_ds = build_dataset("shapes", None, "eval", size=4)
    train_ds.device_transform, eval_ds.device_transform = Counted(None), Counted(None)
    cfg = runtime_config(_cfg(tmp_path), CPU, list(train_ds.classes), None)
    parts, _ = build_parts(cfg, CPU, (train_ds, eval_ds), None)
    assert parts.train_device_transform is train_ds.device_transform
    assert parts.eval_device_transform is eval_ds.device_transform


def test_a_run_trains_with_the_train_transform_and_evaluates_with_the_eval_one(
    tmp_path, monkeypatch
):
    train_ds, eval_ds = _gpu_decoded(tmp_path / "data", monkeypatch)
    result = train(_cfg(tmp_path / "run", epochs=2), datasets=(train_ds, eval_ds))
    assert result.completed and result.epochs == 2
    # every image through its own split's transform, once per epoch
    assert (train_ds.device_transform.calls, eval_ds.device_transform.calls) == (12, 8)


def test_evaluation_under_decode_gpu_is_deterministic(tmp_path, monkeypatch):
    datasets = _gpu_decoded(tmp_path / "data", monkeypatch)
    cfg = runtime_config(_cfg(tmp_path / "run"), CPU, list(datasets[0].classes), None)
    parts, _ = build_parts(cfg, CPU, datasets, None)

    def loss(transform) -> float:
        sums = evaluate(
            ctx=CPU, model=parts.module, loader=parts.eval_loader, device_transform=transform
        )
        assert sums.n == 4
        return sums.mean_loss()

    assert len({loss(parts.eval_device_transform) for _ in range(3)}) == 1  # bit-equal
    # the train split's augmentation (random crops and flips) would make it a random number
    assert len({loss(parts.train_device_transform) for _ in range(3)}) > 1


# --- 2. resume: the CUDA generator of the process's own device -------------------------------


class FakeCuda:
    """``count`` CUDA devices, the current one ``current``, each with its own generator state;
    records every ``set_rng_state`` as (state, device index)."""

    def __init__(self, monkeypatch, count: int, current: int) -> None:
        self.states = [torch.full((16,), 10 + i, dtype=torch.uint8) for i in range(count)]
        self.current, self.set_calls = current, []
        cuda = torch.cuda
        monkeypatch.setattr(cuda, "is_available", lambda: True)
        monkeypatch.setattr(cuda, "device_count", lambda: count)
        monkeypatch.setattr(cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(cuda, "get_rng_state", self.get)
        monkeypatch.setattr(cuda, "set_rng_state", self.set)
        monkeypatch.setattr(cuda, "get_rng_state_all", self._no_all)
        monkeypatch.setattr(cuda, "set_rng_state_all", self._no_all)

    def _index(self, device) -> int:
        index = device if isinstance(device, int) else torch.device(device).index
        return self.current if index is None else index

    def get(self, device="cuda") -> torch.Tensor:
        return self.states[self._index(device)].clone()

    def set(self, state: torch.Tensor, device="cuda") -> None:
        index = self._index(device)
        if index >= len(self.states):  # what torch does: no generator there
            raise IndexError("list index out of range")
        self.set_calls.append((state.clone(), index))

    def _no_all(self, *args):
        raise AssertionError("every device's state: the process uses one")


def _old_style(state: dict, states: list[torch.Tensor]) -> dict:
    """A state as checkpoints held it before: every visible device's CUDA state, no index."""
    old = {k: v for k, v in state.items() if k != "cuda_device"}
    return {**old, "cuda": states}


def test_the_saved_cuda_state_is_the_own_devices_with_its_index(monkeypatch):
    fake = FakeCuda(monkeypatch, count=2, current=1)
    state = get_rng_state()
    assert torch.equal(state["cuda"], fake.states[1]) and state["cuda_device"] == 1
    on0 = get_rng_state(torch.device("cuda", 0))  # the run's device, when told it
    assert torch.equal(on0["cuda"], fake.states[0]) and on0["cuda_device"] == 0
    assert cuda_state_problem(state) is None and cuda_state_problem(on0) is None


def test_restore_puts_the_state_on_the_own_device_whatever_its_index(monkeypatch):
    fake = FakeCuda(monkeypatch, count=2, current=1)
    state = get_rng_state()
    fake.current = 0
    set_rng_state(state)
    ((restored, index),) = fake.set_calls
    assert index == 0 and torch.equal(restored, fake.states[1])
    # a state saved on cuda:1 resumed where the process sees one GPU: it continues there
    single = FakeCuda(monkeypatch, count=1, current=0)
    set_rng_state(state, torch.device("cuda", 0))
    assert [(s.tolist(), i) for s, i in single.set_calls] == [(fake.states[1].tolist(), 0)]


def test_old_checkpoints_restore_their_entry_of_the_device_or_say_the_layout_changed(
    monkeypatch,
):
    two = [torch.full((16,), 20 + i, dtype=torch.uint8) for i in range(2)]
    fake = FakeCuda(monkeypatch, count=1, current=0)  # fewer generators than saved states
    old = _old_style(get_rng_state(), two)
    assert cuda_state_problem(old) is None
    set_rng_state(old)
    assert [(s.tolist(), i) for s, i in fake.set_calls] == [(two[0].tolist(), 0)]
    fake = FakeCuda(monkeypatch, count=2, current=1)  # no saved state of cuda:1
    with pytest.raises(DeviceLayoutError) as exc:
        set_rng_state(_old_style(get_rng_state(), two[:1]))
    message = str(exc.value)
    assert "\n" not in message and "device layout changed" in message and "cuda:1" in message
    assert isinstance(exc.value, CheckpointError) and fake.set_calls == []


@pytest.fixture(scope="module")
def last_pt(tmp_path_factory) -> Path:
    """A finished one-epoch run's last.pt (written without CUDA: no CUDA state in it)."""
    run_dir = tmp_path_factory.mktemp("run")
    train(_cfg(run_dir, data_size=4))
    return run_dir / "last.pt"


def _with_rng(last_pt: Path, dest: Path, cuda: dict) -> Path:
    ckpt = load_checkpoint(last_pt)
    ckpt["rng"] = [{**ckpt["rng"][0], **cuda}]
    dest.mkdir()
    for name in ("config.json", "metrics.csv"):
        (dest / name).write_bytes((last_pt.parent / name).read_bytes())
    save_checkpoint(dest / "last.pt", ckpt)
    return dest


def test_a_changed_layout_is_one_line_exit_2_on_resume(last_pt, tmp_path, capsys, monkeypatch):
    old = _with_rng(last_pt, tmp_path / "old", {"cuda": [torch.zeros(16, dtype=torch.uint8)]})
    FakeCuda(monkeypatch, count=2, current=1)
    code, out, err = run(capsys, "train", "--resume", old, "--epochs", "2", "--device", "cpu")
    assert code == 2 and err.count("\n") == 1 and "device layout changed" in err, err
    assert "Traceback" not in err and load_checkpoint(old / "last.pt")["epoch"] == 1


@pytest.mark.parametrize(
    ("cuda", "says"),
    [
        ({"cuda": torch.zeros(16), "cuda_device": 0}, "not a CUDA generator state"),
        ({"cuda": torch.zeros(2, 8, dtype=torch.uint8), "cuda_device": 0}, "not a CUDA"),
        ({"cuda": torch.zeros(5, dtype=torch.uint8), "cuda_device": 0}, "not a CUDA"),
        ({"cuda": torch.zeros(16, dtype=torch.uint8)}, "no device index"),
        ({"cuda": torch.zeros(16, dtype=torch.uint8), "cuda_device": -1}, "no device index"),
        ({"cuda": torch.zeros(16, dtype=torch.uint8), "cuda_device": True}, "no device index"),
        ({"cuda": [torch.zeros(16, dtype=torch.uint8), "x"]}, "not a list of CUDA"),
        ({"cuda": []}, "not a list of CUDA"),
        ({"cuda": "state"}, "not a CUDA generator state"),
        ({"cuda_device": 0}, "device index but no state"),
    ],
)
def test_resume_checks_the_cuda_state_before_use(last_pt, tmp_path, cuda, says):
    bad = _with_rng(last_pt, tmp_path / "bad", cuda)
    with pytest.raises(CheckpointError, match=f"CUDA RNG state of process 0 .*{says}"):
        load_resume(bad, {})


@pytest.mark.parametrize(
    "cuda",
    [
        {"cuda": torch.arange(16, dtype=torch.uint8), "cuda_device": 3},
        {"cuda": [torch.zeros(16, dtype=torch.uint8)] * 2},  # written before: a list
    ],
)
def test_resume_accepts_both_cuda_state_forms(last_pt, tmp_path, cuda):
    ok = _with_rng(last_pt, tmp_path / "ok", cuda)
    cfg, ckpt = load_resume(ok, {})  # weights-only load, then checked
    assert cfg.epochs == 1 and set(cuda) <= set(ckpt["rng"][0])


# --- 3. --amp fp16: a step the GradScaler skips does not move the schedule -------------------


def _scaled_parts(batches=(), init_scale: float = 2.0**10, ema: bool = False):
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)  # fp16's scaler, on the CPU
    return TrainParts(
        model, list(batches), [], opt, sched, scaler, ema=ModelEma(model, 0.9) if ema else None
    )


def _inf_for_first(model: nn.Module, n: int) -> None:
    """The first ``n`` backward passes give the weight an infinite gradient (an fp16
    overflow)."""
    seen = [0]

    def hook(grad: torch.Tensor) -> torch.Tensor:
        seen[0] += 1
        return torch.full_like(grad, float("inf")) if seen[0] <= n else grad

    model.weight.register_hook(hook)


def _scheduler_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if "lr_scheduler.step()" in str(w.message)]


def test_a_skipped_step_leaves_the_schedule_and_a_taken_one_advances_it():
    cfg = resolve_config({"arch": "resnet20", "dataset": "shapes"})
    parts = _scaled_parts()
    _inf_for_first(parts.model, 1)
    before = [p.detach().clone() for p in parts.model.parameters()]
    x, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            parts.optimizer.zero_grad()
            loss = nn.functional.cross_entropy(parts.model(x), y)
            parts.scaler.scale(loss).backward()
            taken = optimizer_step(parts, cfg)
            if not taken:  # the skip: scale halved, weights, lr and step count as they were
                assert parts.scaler.get_scale() == 2.0**9 and parts.scheduler.last_epoch == 0
                assert all(map(torch.equal, before, parts.model.parameters()))
                assert parts.optimizer.param_groups[0]["lr"] == 0.1
    assert _scheduler_warnings(caught) == []
    assert parts.scheduler.last_epoch == 1  # one step taken, one skipped
    assert parts.optimizer.param_groups[0]["lr"] == pytest.approx(0.05, rel=1e-12)
    assert not all(map(torch.equal, before, parts.model.parameters()))


def test_skipped_steps_under_accumulation_in_an_epoch():
    """4 batches, 2 per optimizer step: the first step overflows (both of its batches), the
    second is taken; the schedule and the EMA count one step."""
    cfg = resolve_config({"arch": "resnet20", "dataset": "shapes", "grad_accum_steps": 2})
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
    batches = [Batch(x[i : i + 4], y[i : i + 4], []) for i in range(0, 16, 4)]
    parts = _scaled_parts(batches, ema=True)
    _inf_for_first(parts.model, 2)
    with warnings.catch_warnings(record=True) as caught, StopFlag() as stop:
        warnings.simplefilter("always")
        out = train_epoch(parts, cfg, CPU, RunProgress(), stop=stop)
    assert _scheduler_warnings(caught) == [] and not out.nonfinite and out.step == 4
    assert parts.scheduler.last_epoch == 1 and parts.ema.n_averaged.item() == 1
    assert parts.scaler.get_scale() == 2.0**9


def test_without_fp16_every_step_advances_the_schedule():
    cfg = resolve_config({"arch": "resnet20", "dataset": "shapes"})
    parts = _scaled_parts()
    parts.scaler = torch.amp.GradScaler("cpu", enabled=False)  # --amp none/bf16
    parts.optimizer.zero_grad()
    nn.functional.cross_entropy(
        parts.model(torch.randn(4, 6)), torch.tensor([0, 1, 2, 0])
    ).backward()
    assert optimizer_step(parts, cfg) is True and parts.scheduler.last_epoch == 1
