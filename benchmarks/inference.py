"""Whole-case CPU inference: PyTorch FP32 vs OpenVINO FP32 vs OpenVINO INT8, side by side.

Every backend runs in its own worker process (so its peak resident memory is its own: a
PyTorch worker imports torch, an OpenVINO worker does not), all workers stay up, and the
repeats are interleaved (case 1 on every backend, then case 2, ...) so that a noisy, shared
machine slows them alike. Latency is image-in-memory to label map (crop, z-score, sliding
window, blending, threshold), median over repeats after one warm-up run per worker; peak
RSS is the worker's maximum over its life (imports, model, one case). Dice columns compare
each backend's label maps with PyTorch FP32's (same tiling), and with the labels if present.

    python benchmarks/inference.py --cases SITE [--model M.pt] [--int8 DIR] [--fp32 DIR]

Without ``--model`` a FeTS-size network (30 filters, depth 4, tile 128) with random weights
is used; without ``--fp32``/``--int8`` the model is exported here (INT8 calibrated on the
``--calibration`` site, default ``--cases``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))


@dataclass(frozen=True)
class Backend:
    """A row of the table: how a worker loads the model and tiles the volume."""

    name: str
    model: Path
    fixed_tiles: bool = False  # True: the fixed-roi tiling of fedseg before this benchmark
    precision: str | None = None  # OpenVINO float precision override (f32/bf16)


# --- worker side ------------------------------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    """Serve requests on stdin: a case folder per line -> one JSON line of timings."""
    from fedseg.data.cases import discover_cases, load_case
    from fedseg.model.segmenter import Member, ModelSet, load_member, segment_volumes

    if args.precision:
        from fedseg.model.openvino_backend import load_exported

        predictor, meta = load_exported(Path(args.model), precision=args.precision)
        member = Member(predictor, meta.roi, "ov", meta.divisor)
    else:
        member = load_member(Path(args.model))
    divisor = None if args.fixed_tiles else member.divisor
    net_time = 0.0

    def timed(batch: np.ndarray) -> np.ndarray:
        nonlocal net_time
        t0 = time.perf_counter()
        out = member.predictor(batch)
        net_time += time.perf_counter() - t0
        return out

    models = ModelSet((Member(timed, member.roi, member.name, divisor),))
    print(json.dumps({"ready": True, "torch": "torch" in sys.modules}), flush=True)
    for line in sys.stdin:
        folder, out = line.split()
        case = discover_cases(Path(folder))[0]
        vol = load_case(case, with_label=False)
        net_time = 0.0
        t0 = time.perf_counter()
        labels = segment_volumes(vol, models).labels  # what `fedseg segment` computes
        total = time.perf_counter() - t0
        np.save(out, labels)
        del vol, labels
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
        print(json.dumps({"seconds": total, "net": net_time, "peak_mib": rss}), flush=True)


# --- driver side ------------------------------------------------------------------------------


class Worker:
    def __init__(self, backend: Backend) -> None:
        cmd = [sys.executable, __file__, "--worker", "--model", str(backend.model)]
        if backend.fixed_tiles:
            cmd.append("--fixed-tiles")
        if backend.precision:
            cmd += ["--precision", backend.precision]
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        self.backend = backend
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.hello = self._read()

    def _read(self) -> dict[str, float]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.backend.name} died (exit {self.proc.wait()})")
        return json.loads(line)

    def run(self, case: Path, out: Path) -> dict[str, float]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{case} {out}\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


def fets_model(path: Path) -> Path:
    """A FeTS-size model file (30 filters, depth 4, tile 128^3) with random weights."""
    import torch

    from fedseg.model.config import NetworkConfig
    from fedseg.model.model_file import ModelFile, save_model
    from fedseg.model.registry import build_network
    from fedseg.model.weights import get_weights

    torch.manual_seed(0)
    cfg = NetworkConfig()
    return save_model(path, ModelFile(cfg, get_weights(build_network(cfg)), (128, 128, 128)))


def export_in_subprocess(model: Path, out: Path, int8: bool, calibration: Path) -> Path:
    """`fedseg export` through the real CLI (its memory stays out of this process)."""
    cmd = [sys.executable, "-m", "fedseg", "export", str(model), "--out", str(out)]
    if int8:
        cmd += ["--int8", "--calibration", str(calibration)]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    subprocess.run(cmd, check=True, env=env)
    return out


def region_dice(a: np.ndarray, b: np.ndarray) -> float:
    from fedseg.model.metrics import case_metrics, mean_dice

    return mean_dice(case_metrics(a, b, (1, 1, 1), ("dice",)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=Path, help="site folder: every case is segmented")
    ap.add_argument("--model", type=Path, help="model file (.pt); default FeTS-size, random")
    ap.add_argument("--fp32", type=Path, help="exported OpenVINO FP32 model folder")
    ap.add_argument("--int8", type=Path, help="exported OpenVINO INT8 model folder")
    ap.add_argument("--calibration", type=Path, help="site for INT8 calibration (default cases)")
    ap.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed runs per case and backend after a warm-up "
        "(0: only the first run, which includes OpenVINO's compilation)",
    )
    ap.add_argument("--max-cases", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="add OpenVINO rows with bf16 precision")
    ap.add_argument("--no-fixed", action="store_true", help="skip the fixed-tiling PyTorch row")
    ap.add_argument("--work", type=Path, help="folder for exports and label maps")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--fixed-tiles", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--precision", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if args.cases is None:
        ap.error("--cases SITE is needed (e.g. from `fedseg data synth --spacing 1`)")

    from fedseg.data.cases import discover_cases, load_case

    work = args.work or Path(tempfile.mkdtemp(prefix="fedseg-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    model = args.model or fets_model(work / "fets_random.pt")
    calib = args.calibration or args.cases
    fp32 = args.fp32 or export_in_subprocess(model, work / "ov_fp32", False, calib)
    int8 = args.int8 or export_in_subprocess(model, work / "ov_int8", True, calib)
    backends = [Backend("PyTorch FP32", model)]
    if not args.no_fixed:
        backends.append(Backend("PyTorch FP32, fixed tiles", model, fixed_tiles=True))
    backends += [Backend("OpenVINO FP32", fp32), Backend("OpenVINO INT8", int8)]
    if args.bf16:
        backends += [
            Backend("OpenVINO FP32 bf16", fp32, precision="bf16"),
            Backend("OpenVINO INT8 bf16", int8, precision="bf16"),
        ]
    cases = [c for c in discover_cases(args.cases)][: args.max_cases]
    shapes = {c.case_id: load_case(c, with_label=False).image.shape[1:] for c in cases}
    print(f"{len(cases)} cases {sorted(set(shapes.values()))}, model {model.name}, "
          f"{args.repeats} repeats, load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip

    workers = [Worker(b) for b in backends]
    for w in workers:
        assert w.backend.model.suffix == ".pt" or not w.hello["torch"], "OpenVINO imported torch"
    times: dict[str, list[dict[str, float]]] = {b.name: [] for b in backends}
    labels: dict[tuple[str, str], np.ndarray] = {}
    for rep in range(args.repeats + 1):  # run 0 is the warm-up (OpenVINO compiles there)
        for c in cases:
            for w in workers:
                out = work / f"{w.backend.name.replace(' ', '_').replace(',', '')}_{c.case_id}.npy"
                r = w.run(c.folder, out)
                if rep > 0 or args.repeats == 0:  # --repeats 0: report the first run
                    times[w.backend.name].append(r)
                labels[(w.backend.name, c.case_id)] = np.load(out)
                load = os.getloadavg()[0]
                print(
                    f"  run {rep} {c.case_id} {w.backend.name}: {r['seconds']:.1f} s "
                    f"(network {r['net']:.1f} s), peak {r['peak_mib']:.0f} MiB, load {load:.1f}",
                    flush=True,
                )
    # A worker's peak RSS only grows: its last answer holds the peak over all its runs.
    peaks = {name: runs[-1]["peak_mib"] for name, runs in times.items()}
    for w in workers:
        w.close()

    refs = {c.case_id: load_case(c).label for c in cases}
    base = backends[0].name
    med = {b.name: statistics.median(r["seconds"] for r in times[b.name]) for b in backends}
    fixed = "PyTorch FP32, fixed tiles"
    print(
        f"{'backend':26s} {'latency s':>9s} {'network':>8s} {'speedup':>8s} {'vs fixed':>8s} "
        f"{'peak MiB':>8s} {'mem ratio':>9s} {'Dice vs PT':>10s} {'Dice label':>10s} {'drop':>7s}"
    )
    d_base = None
    for b in backends:
        t = med[b.name]
        net = statistics.median(r["net"] for r in times[b.name])
        vs_fixed = f"{med[fixed] / t:7.2f}x" if fixed in med else "       -"
        agree = np.mean([region_dice(labels[(b.name, c)], labels[(base, c)]) for c in shapes])
        lab = [region_dice(labels[(b.name, c)], refs[c]) for c in shapes if refs[c] is not None]
        d_lab = float(np.mean(lab)) if lab else float("nan")
        d_base = d_lab if d_base is None else d_base
        print(
            f"{b.name:26s} {t:9.2f} {net:8.2f} {med[base] / t:7.2f}x {vs_fixed} "
            f"{peaks[b.name]:8.0f} {peaks[base] / peaks[b.name]:8.2f}x {agree:10.4f} "
            f"{d_lab:10.4f} {d_base - d_lab:7.4f}"
        )
    print(f"ratios against {base}; load average now {os.getloadavg()[0]:.1f}; work dir {work}")
    if args.model is None:
        print("random weights: the Dice columns say nothing about accuracy; pass --model (a "
              "trained model) and --cases it has not seen for the Dice drop")  # fmt: skip


if __name__ == "__main__":
    main()
