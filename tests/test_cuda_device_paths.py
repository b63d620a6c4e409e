"""CUDA code paths checked on a CPU-only machine.

CUDA's presence is faked where the code asks for it (``torch.cuda.is_available``,
``device_count``, ``set_device``); a model "on an accelerator" is faked by
:class:`_FakeDevice`, under which ``.numpy()`` refuses a tensor that did not come back
through ``.cpu()``, as it refuses a CUDA tensor.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from cli import run
from PIL import Image
from torch.overrides import TorchFunctionMode

import afictl.train.distributed as D
import afictl.train.evaluate as E
from afictl.analysis.features import afi_block, dataset_attention, image_features
from afictl.analysis.selectivity import class_means
from afictl.checkpoint import save_checkpoint
from afictl.data import build_dataset
from afictl.data.decode import encoded_load, gpu_decodable, make_loader_fn, on_device
from afictl.errors import UserError
from afictl.models import create_model
from afictl.profiling.bench import bench
from afictl.profiling.memory import memory_report
from afictl.train.state import deterministic_mode


@pytest.fixture
def fake_cuda(monkeypatch):
    """``fake_cuda(n)``: torch sees ``n`` CUDA devices; returns the list of ``set_device`` calls."""
    calls: list[torch.device] = []

    def install(count: int) -> list[torch.device]:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "set_device", lambda dev: calls.append(torch.device(dev)))
        return calls

    return install


def _torchrun(monkeypatch, world: int, local_rank: int) -> list[str]:
    """torchrun's environment for one rank; returns the backends init_process_group got."""
    for key, value in (("WORLD_SIZE", world), ("RANK", local_rank), ("LOCAL_RANK", local_rank)):
        monkeypatch.setenv(key, str(value))
    backends: list[str] = []
    monkeypatch.setattr(D.dist, "init_process_group", lambda backend, **_: backends.append(backend))
    return backends


# 1. Device choice ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "count", "want"),
    [("cuda", 2, "cuda:0"), ("cuda:1", 2, "cuda:1"), ("auto", 1, "cuda:0")],
)
def test_single_process_sets_the_current_device(fake_cuda, monkeypatch, device, count, want):
    """One process, no torchrun: cuda:N is honoured and made current (pinned memory follows)."""
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    calls = fake_cuda(count)
    ctx = D.setup(device)
    assert ctx.device == torch.device(want) and not ctx.distributed
    assert calls == [torch.device(want)]


@pytest.mark.parametrize(
    ("count", "local_rank", "want"),
    [
        (4, 2, "cuda:2"),  # torchrun on a node with a GPU per rank: LOCAL_RANK indexes them
        (1, 3, "cuda:0"),  # SLURM --gpus-per-task=1: each rank sees its one GPU as cuda:0
        (8, 0, "cuda:0"),
    ],
)
def test_torchrun_rank_takes_its_gpu(fake_cuda, monkeypatch, count, local_rank, want):
    calls = fake_cuda(count)
    backends = _torchrun(monkeypatch, 4, local_rank)
    ctx = D.setup("cuda")
    assert ctx.device == torch.device(want) and ctx.world == 4 and ctx.local_rank == local_rank
    assert calls == [torch.device(want)]  # before NCCL starts: its communicator uses it
    assert backends == ["nccl"]


def test_more_ranks_than_gpus_is_one_line(fake_cuda, monkeypatch):
    fake_cuda(2)
    backends = _torchrun(monkeypatch, 4, 3)
    with pytest.raises(UserError, match=r"LOCAL_RANK 3 but this process sees 2 CUDA devices"):
        D.setup("cuda")
    assert backends == []


def test_explicit_gpu_under_torchrun_is_refused(fake_cuda, monkeypatch):
    calls = fake_cuda(2)
    _torchrun(monkeypatch, 2, 1)
    with pytest.raises(UserError, match=r"--device cuda:1 under torchrun") as err:
        D.setup("cuda:1")
    assert "\n" not in str(err.value) and calls == []


def test_explicit_gpu_under_torchrun_exits_2_from_the_cli(fake_cuda, monkeypatch, capsys, tmp_path):
    fake_cuda(2)
    _torchrun(monkeypatch, 2, 1)
    monkeypatch.chdir(tmp_path)
    args = ["--arch", "afi_resnet20", "--data", "shapes", "--epochs", "1"]
    code, _, err = run(capsys, "train", *args, "--device", "cuda:1")
    assert code == 2, err
    assert not any(tmp_path.iterdir())  # refused before any run folder
    assert err.strip().splitlines() == [
        "afictl: error: --device cuda:1 under torchrun would put all 2 ranks on one GPU; "
        "use --device cuda (each rank takes cuda:LOCAL_RANK)"
    ]


def test_missing_gpu_index_and_cpu(fake_cuda, monkeypatch):
    calls = fake_cuda(2)
    with pytest.raises(UserError, match=r"--device cuda:2: torch sees 2 CUDA device"):
        D.pick_device("cuda:2")
    assert D.pick_device("cpu", local_rank=1, world=2) == torch.device("cpu")
    assert calls == []  # no CUDA device chosen, none made current


# 2. --decode gpu screening ------------------------------------------------------------------


@pytest.fixture
def jpegs(tmp_path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    paths = {mode: tmp_path / f"{mode}.jpg" for mode in ("RGB", "L", "CMYK")}
    rgb.save(paths["RGB"], "JPEG")
    rgb.convert("L").save(paths["L"], "JPEG")
    rgb.convert("CMYK").save(paths["CMYK"], "JPEG")  # Adobe APP14, 4 components
    return paths


def test_screening_reads_the_header(jpegs):
    assert gpu_decodable(jpegs["RGB"].read_bytes()) and gpu_decodable(jpegs["L"].read_bytes())
    assert not gpu_decodable(jpegs["CMYK"].read_bytes())
    # a 12-bit frame and a lossless one (SOF3): what nvjpeg does not decode either
    sof = bytearray(jpegs["RGB"].read_bytes())
    at = sof.index(b"\xff\xc0")
    assert not gpu_decodable(bytes(sof[: at + 4]) + b"\x0c" + bytes(sof[at + 5 :]))
    assert not gpu_decodable(bytes(sof[: at + 1]) + b"\xc3" + bytes(sof[at + 2 :]))
    assert not gpu_decodable(b"\xff\xd8\xff")  # truncated: left to the CPU decoder


def test_cmyk_jpeg_is_decoded_in_the_worker(jpegs, fake_cuda, tmp_path):
    """Under --decode gpu the folder dataset yields an RGB JPEG's bytes but a CMYK JPEG's
    pixels, decoded on the CPU as PIL would."""
    for mode, path in jpegs.items():
        (tmp_path / "train" / mode).mkdir(parents=True)
        path.rename(tmp_path / "train" / mode / "0.jpg")
    fake_cuda(1)  # --decode gpu asks for CUDA
    ds = build_dataset("imagefolder", tmp_path, "train", input_size=8, decode="gpu")
    by_class = {ds.classes[y]: ds[i][0] for i, y in enumerate(t for _, t in ds.samples)}
    assert by_class["RGB"].ndim == 1 and by_class["L"].ndim == 1  # bytes: nvjpeg decodes them
    cmyk = by_class["CMYK"]
    assert cmyk.shape == (3, 12, 16) and cmyk.dtype == torch.uint8
    with Image.open(tmp_path / "train" / "CMYK" / "0.jpg") as img:
        want = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)
    assert (cmyk.int() - want.int()).abs().max() <= 1
    assert make_loader_fn("gpu", 8) is encoded_load


def test_jpeg_bytes_are_not_copied_to_the_device(jpegs, monkeypatch):
    """on_device decodes JPEG bytes from host memory; only decoded images are moved."""
    data = torch.from_numpy(np.frombuffer(jpegs["RGB"].read_bytes(), dtype=np.uint8).copy())
    cmyk = encoded_load(str(jpegs["CMYK"]))
    moved: list[int] = []
    real_to = torch.Tensor.to

    def spy(self, *args, **kwargs):
        moved.append(id(self))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", spy)
    batch = on_device([data, cmyk], "cpu")
    assert batch.shape == (2, 3, 12, 16)
    assert moved == [id(cmyk)]


# 3. bench / memory cuDNN settings, eval on the GPU, analyses of a GPU model ------------------


def _training_cudnn() -> bool:
    with deterministic_mode(False):  # what afictl train runs under without --deterministic
        return torch.backends.cudnn.benchmark


def test_bench_rows_use_trainings_cudnn_setting(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    seen = []
    monkeypatch.setattr(
        "afictl.profiling.bench._Runner.timed",
        lambda self, iters, clock=None: seen.append(torch.backends.cudnn.benchmark) or 1.0,
    )
    rows = bench(["afi_resnet20"], modes=("infer",), batch_size=2, input_size=16, repeats=1)
    assert [r.cudnn_benchmark for r in rows] == [_training_cudnn()] == [True]
    assert set(seen) == {True}  # in effect while timing
    assert torch.backends.cudnn.benchmark is False  # the process's setting comes back


def test_memory_rows_and_cuda_peaks_use_trainings_cudnn_setting(monkeypatch, fake_cuda):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    fake_cuda(1)
    seen = []

    def peaks(*_args, **_kwargs):
        seen.append(torch.backends.cudnn.benchmark)
        return 1, 1

    monkeypatch.setattr("afictl.profiling.memory.cuda_peaks", peaks)
    rows = memory_report(["afi_resnet20"], 2, input_size=16, device="cuda")
    assert rows[0].cudnn_benchmark is _training_cudnn() is True
    assert seen == [True, True]  # the AFI model and its baseline
    assert rows[0].to_dict()["cudnn_benchmark"] is True
    assert torch.backends.cudnn.benchmark is False


def _training_checkpoint(path: Path) -> Path:
    """A checkpoint with what training adds besides the model: optimizer state and EMA."""
    model = create_model("afi_resnet20", num_classes=8)
    weights = model.state_dict()
    return save_checkpoint(
        path,
        {
            "arch": "afi_resnet20",
            "num_classes": 8,
            "model_kwargs": {},
            "model": weights,
            "model_ema": {f"module.{k}": v for k, v in weights.items()},
            "optimizer": {"state": {0: {"momentum_buffer": torch.ones(3)}}, "param_groups": []},
            "epoch": 1,
            "config": {"arch": "afi_resnet20", "dataset": "shapes", "input_size": 32, "seed": 0},
        },
    )


def test_eval_loads_on_cpu_and_moves_only_the_model(tmp_path, monkeypatch, fake_cuda):
    calls = fake_cuda(1)
    path = _training_checkpoint(tmp_path / "last.pt")
    seen: dict[str, object] = {"moved": []}
    real_load, real_loader, real_eval = E.model_from_checkpoint, E.make_loader, E.evaluate

    def load(checkpoint, *, arch=None, map_location="cpu"):
        seen["map_location"] = map_location
        model, ckpt = real_load(checkpoint, arch=arch, map_location=map_location)
        seen["model"] = model
        # the CPU model stands in for the moved one: record the move, keep the model usable
        model.to = lambda *a, **k: seen["moved"].append(a) or model
        return model, ckpt

    def engine(*, ctx, model, **kwargs):
        seen["ctx_device"] = ctx.device
        return real_eval(ctx=D.DistContext(0, 1, 0, torch.device("cpu")), model=model, **kwargs)

    monkeypatch.setattr(E, "model_from_checkpoint", load)
    monkeypatch.setattr(E, "make_loader", lambda *a, **k: real_loader(*a, **k | {"pin_memory": 0}))
    monkeypatch.setattr(E, "evaluate", engine)
    # the DataLoader's path: the tensor pipeline would put the images on a GPU this test fakes
    monkeypatch.setattr(E, "eval_tensor_loader", lambda *a, **k: None)
    watch = E._Watch  # host clocks for the timing: CUDA events need the real driver
    monkeypatch.setattr(
        E, "_Watch", lambda model, dev, meter: watch(model, torch.device("cpu"), meter)
    )
    result = E.evaluate_checkpoint(path, data_size=8, batch_size=4, workers=0, device="cuda")
    assert seen["map_location"] == "cpu"  # the whole file: optimizer and EMA stay on the host
    assert seen["moved"] == [(torch.device("cuda", 0),)]  # the model alone goes to the GPU
    assert seen["ctx_device"] == torch.device("cuda", 0) and calls == [torch.device("cuda", 0)]
    assert result["images"] == 8 and result["arch"] == "afi_resnet20"
    _, kept = E._model_on(path, None, torch.device("cpu"))
    assert {"model", "model_ema", "optimizer"}.isdisjoint(kept) and kept["num_classes"] == 8


class _FakeDevice(TorchFunctionMode):
    """Tensors derived from the ones marked (a model's weights, its input) count as living on an
    accelerator: ``.numpy()`` refuses them, as it refuses CUDA tensors, and ``.cpu()`` gives an
    unmarked copy. What an op writes in place into a plain tensor becomes marked too."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        super().__init__()
        self.marked: dict[int, weakref.ref] = {}
        for t in tensors:
            self._mark(t)

    def _mark(self, t: torch.Tensor) -> None:
        self.marked[id(t)] = weakref.ref(t)

    def on_device(self, t: object) -> bool:
        ref = self.marked.get(id(t))
        return isinstance(t, torch.Tensor) and ref is not None and ref() is t

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat = [*args, *kwargs.values()]
        flat += [t for x in flat if isinstance(x, list | tuple) for t in x]
        marked = any(self.on_device(t) for t in flat)
        if marked and func in (torch.Tensor.numpy, torch.Tensor.__array__):
            raise TypeError("can't convert an accelerator tensor to numpy; use Tensor.cpu()")
        if marked and func is torch.Tensor.cpu:
            return args[0].clone()
        out = func(*args, **kwargs)
        if marked:
            for t in out if isinstance(out, list | tuple) else [out]:
                if isinstance(t, torch.Tensor):
                    self._mark(t)
        return out


@pytest.fixture(scope="module")
def afi_model():
    torch.manual_seed(0)
    return create_model("afi_resnet20", num_classes=4).eval()


def _on_fake_device(model: torch.nn.Module, *inputs: torch.Tensor) -> _FakeDevice:
    return _FakeDevice(*model.parameters(), *model.buffers(), *inputs)


def test_fake_device_refuses_numpy_without_cpu():
    x = torch.ones(2)
    with _FakeDevice(x), pytest.raises(TypeError, match="use Tensor.cpu"):
        (x * 2).numpy()
    with _FakeDevice(x):
        assert (x * 2).cpu().numpy().tolist() == [2.0, 2.0]


def test_features_of_a_model_on_an_accelerator(afi_model):
    _, _, name, module = afi_block(afi_model, None, None)
    x = torch.randn(1, 3, 32, 32)
    want = image_features(afi_model, name, module, x)
    with _on_fake_device(afi_model, x):
        got = image_features(afi_model, name, module, x)
        per_module, images = dataset_attention(afi_model, [(x, 0), (x, 1)])
    for a, b in zip([*want[0], want[1], want[2]], [*got[0], got[1], got[2]], strict=True):
        assert isinstance(b, np.ndarray) and np.allclose(a, b)
    assert images == 2 and np.allclose(per_module[name], want[2], atol=1e-6)


def test_selectivity_of_a_model_on_an_accelerator(afi_model):
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 1, 3])
    probes = afi_model.probes(afi_model.stage_names[-1])
    want = class_means(afi_model, probes, [(x, y)], 4)
    with _on_fake_device(afi_model, x):
        got = class_means(afi_model, probes, [(x, y)], 4)
    assert all(np.allclose(a, b) for a, b in zip(want.means, got.means, strict=True))
    assert np.array_equal(want.counts, got.counts)


def test_gradcam_of_a_model_on_an_accelerator(afi_model):
    from afictl.analysis.gradcam import grad_cam, resolve_layer

    layer, _ = resolve_layer(afi_model, None)
    x = torch.randn(2, 3, 32, 32)
    want, want_logits = grad_cam(afi_model, x, layer)
    with _on_fake_device(afi_model, x) as device:
        heat, logits = grad_cam(afi_model, x, layer)
        assert not device.on_device(logits)  # the logits come back to the host
    assert np.allclose(heat, want, atol=1e-5) and torch.allclose(logits, want_logits)
