"""A FeTS-size federation on one machine: 1, 8, 32 and 71 sites against one real coordinator.

Sites are hosted nodes (``sites.host``: each its own CURVE keys, DEALER, state lock, ledger and
learner, built by ``sites.cli.open_site`` from a ``secgan provision`` kit) in two host processes;
the coordinator (``coordinator.service.Coordinator``) runs in its own process, one per size, so its
peak memory is its own. CURVE on, 127.0.0.1, tiny models at 32 px, mode "off" (and one DP-SGD row
in full runs). Reported as ratios to one site, measured side by side in one run:

- coordinator CPU time per site per step (process CPU, every thread: CURVE in ZeroMQ's I/O thread
  included), over the steps after the first (steady state);
- coordinator peak memory: growth of its peak RSS over its RSS before the run started;
- step time: wall time per step;
- bytes per step (both directions, every site; from run.json).

``python bench/bench_scale.py [--quick] [--profile N]`` or ``main(argv) -> list[dict]``.
``--profile N``: cProfile the coordinator at N sites and print its top functions.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
SIZES = (1, 8, 32, 71)
HOSTS = 2  # host processes (one per core of the 2-core reference machine)
DISTINCT = 16  # phantom sites written; the others link to them
IMAGE_SIZE = 32  # at 16 px most phantom slices hold under 10 tumour pixels and are skipped
MODEL = {"g_width": 4, "g_depth": 1, "d_width": 4, "d_layers": 1, "noise_dim": 2, "d_arch": "patch"}
TRAIN = {"batch_size": 2, "checkpoint_every": 10**6, "seed": 3, "loss": "bce"}
POLICIES = {
    "off": {"mode": "off", "allow_off": True},
    "dpsgd": {"mode": "dpsgd", "allow_off": False, "target_epsilon": 10.0, "delta": 1e-5, "expected_batch_size": 2},
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(tmp: Path, n_sites: int) -> Path:
    """Phantom data (``DISTINCT`` sites written, the others linked to them: a site's data is only
    read) and one provisioned kit of ``n_sites``; returns the kit folder."""
    from secgan.commands.provision import provision
    from secgan.data.phantom import write_phantom

    data = tmp / "data"
    distinct = min(n_sites, DISTINCT)
    write_phantom(data, sites=distinct, patients=5, seed=11, size=IMAGE_SIZE, slices=8)
    for k in range(distinct + 1, n_sites + 1):
        os.symlink(data / f"site-{(k - 1) % distinct + 1}", data / f"site-{k}")
    provision(tmp / "kit", sites=n_sites, port=_free_port(), data_root=data, image_size=IMAGE_SIZE)
    return tmp / "kit"


# --------------------------------------------------------------------------------------------
# a host process: the first n sites of the kit, endpoint and state folder of this size


def host_main(spec: dict[str, Any]) -> int:
    import dataclasses

    import torch

    torch.set_num_threads(1)
    from secgan.core.logs import setup_logging
    from secgan.gan.config import ModelConfig, TrainConfig
    from secgan.core.spec import ImageSpec
    from secgan.privacy.policy import PrivacyPolicy
    from secgan.settings import load_site_config

    from sites.host import SiteHost, open_sites

    setup_logging("WARNING")
    policy = dict(POLICIES[spec["mode"]], planned_steps=spec["steps"])
    configs = []
    for name in spec["sites"]:
        cfg = load_site_config(Path(spec["kit"]) / name / "site.toml")
        configs.append(dataclasses.replace(
            cfg, coordinator_endpoint=spec["endpoint"], state_dir=str(Path(spec["state"]) / name),
            image=ImageSpec(size=IMAGE_SIZE), model=ModelConfig(**MODEL),
            train=TrainConfig(steps=spec["steps"], **TRAIN), policy=PrivacyPolicy(**policy),
            heartbeat_interval_s=2.0, status_every_s=30.0))
    opened, refused = open_sites(configs)
    return SiteHost(opened, refused=refused).serve()


# --------------------------------------------------------------------------------------------
# one size: the coordinator in this process, the sites in HOSTS host processes


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def one_size(kit: Path, n_sites: int, *, steps: int, mode: str, profile: bool = False) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from secgan.core.logs import setup_logging
    from secgan.gan.config import ModelConfig, TrainConfig
    from secgan.core.spec import ImageSpec
    from secgan.keys.curve import load_curve_keypair
    from secgan.keys.manifest import load_manifest
    from secgan.keys.signing import load_signing_key

    from coordinator.config import CoordinatorConfig, ServiceConfig
    from coordinator.service import Coordinator

    setup_logging("WARNING")
    cdir = kit / "coordinator"
    manifest = load_manifest(cdir / "manifest.json",
                             coordinator_verify_key=load_signing_key(cdir / "signing.pem").public_key())
    spub, ssec = load_curve_keypair(cdir / "keys", "coordinator")
    names = [f"site-{k}" for k in range(1, n_sites + 1)]
    keys = {s.site_id: s.curve_public for s in manifest.sites if s.site_id in names}
    work = Path(tempfile.mkdtemp(prefix=f"scale-{n_sites}-", dir=kit.parent))
    port = _free_port()
    settings = CoordinatorConfig(port=port, state_dir=str(work / "coord"), run_id="bench-scale",
                                 image=ImageSpec(size=IMAGE_SIZE), model=ModelConfig(**MODEL),
                                 train=TrainConfig(steps=steps, **TRAIN), min_sites=n_sites,
                                 round_deadline_s=120.0, heartbeat_timeout_s=120.0, startup_grace_s=120.0,
                                 self_check=False)
    service = ServiceConfig(settings=settings, server_public=spub, server_secret=ssec, site_keys=keys)
    hosts = []
    for i in range(min(HOSTS, n_sites)):
        spec = {"kit": str(kit), "sites": names[i::HOSTS], "endpoint": f"tcp://127.0.0.1:{port}",
                "state": str(work / "sites"), "steps": steps, "mode": mode}
        hosts.append(subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--host", json.dumps(spec)],
                                      cwd=ROOT, env=_env()))
    marks: list[tuple[float, float]] = []  # (process CPU, wall) at each step's end

    class Measured(Coordinator):
        def _on_step(self, result: Any, now: float) -> None:
            super()._on_step(result, now)
            marks.append((time.process_time(), time.monotonic()))

    coord = Measured(service)
    rss0 = _rss_bytes()
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    try:
        result = coord.serve(install_signals=False)
    finally:
        if prof is not None:
            prof.disable()
        for h in hosts:
            try:
                h.wait(timeout=120)
            except subprocess.TimeoutExpired:
                h.kill()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if prof is not None:
        import pstats

        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(45)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(30)
    if result["steps_done"] != steps or len(marks) < 2:
        raise RuntimeError(f"{n_sites} sites: {result['steps_done']} of {steps} steps ({result['status']})")
    (c0, w0), (c1, w1) = marks[0], marks[-1]
    k = len(marks) - 1
    sites = result["sites"]
    bytes_step = sum((s.get("mean_bytes_in_per_step") or 0) + (s.get("mean_bytes_out_per_step") or 0)
                     for s in sites.values())
    return {"sites": n_sites, "mode": mode, "cpu_per_site_step": (c1 - c0) / (k * n_sites), "step_s": (w1 - w0) / k,
            "rss_growth": max(0, peak - rss0), "bytes_per_step": bytes_step,
            "host_codes": [h.returncode for h in hosts]}


# --------------------------------------------------------------------------------------------


def _run_size(kit: Path, n: int, steps: int, mode: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--size", str(n), "--kit", str(kit),
                           "--steps", str(steps), "--mode", mode], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{n} sites ({mode}): {(proc.stderr.strip().splitlines() or ['?'])[-1][:300]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", type=int, default=None, metavar="N", help="cProfile the coordinator at N sites")
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--kit", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="off", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.host:
        raise SystemExit(host_main(json.loads(args.host)))
    if args.size:
        print(json.dumps(one_size(Path(args.kit), args.size, steps=args.steps, mode=args.mode)))
        return []
    steps = 3 if args.quick else 10
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        kit = prepare(Path(d), max(SIZES))
        print(f"kit and data for {max(SIZES)} sites: {time.perf_counter() - t0:.1f} s", flush=True)
        if args.profile:
            one_size(kit, args.profile, steps=steps, mode="off", profile=True)
            return []
        runs = [("off", n) for n in SIZES]
        if not args.quick:  # each DP host first calibrates its noise (~10 s of CPU, once per process)
            runs += [("dpsgd", 1), ("dpsgd", max(SIZES))]
        results = {}
        for mode, n in runs:
            t1 = time.perf_counter()
            results[(mode, n)] = r = _run_size(kit, n, steps, mode)
            print(f"  {mode:6s} {n:3d} sites: coordinator {r['cpu_per_site_step'] * 1e3:6.2f} ms CPU per site-step, "
                  f"step {r['step_s'] * 1e3:7.1f} ms, peak RSS growth {r['rss_growth'] / 2**20:6.1f} MiB, "
                  f"{r['bytes_per_step'] / 1024:7.1f} KiB per step ({time.perf_counter() - t1:.0f} s)", flush=True)
    for mode in ("off", "dpsgd"):
        if (mode, 1) not in results:
            continue
        base = results[(mode, 1)]
        for mode_n, n in runs:
            if mode_n != mode or n == 1:
                continue
            r = results[(mode, n)]
            tag = f"{n} sites / 1 site, mode {mode}"
            rows += [
                {"metric": f"coordinator CPU per site per step, {tag}",
                 "ratio": r["cpu_per_site_step"] / base["cpu_per_site_step"],
                 "note": f"{r['cpu_per_site_step'] * 1e3:.2f} ms vs {base['cpu_per_site_step'] * 1e3:.2f} ms"},
                {"metric": f"coordinator peak RSS growth, {tag}",
                 "ratio": (r["rss_growth"] + 2**20) / (base["rss_growth"] + 2**20),
                 "note": f"{r['rss_growth'] / 2**20:.1f} MiB vs {base['rss_growth'] / 2**20:.1f} MiB"},
                {"metric": f"step time, {tag}", "ratio": r["step_s"] / base["step_s"],
                 "note": f"{r['step_s'] * 1e3:.0f} ms vs {base['step_s'] * 1e3:.0f} ms, {HOSTS} host processes, "
                         f"{os.cpu_count()} cores"},
                {"metric": f"bytes per step, {tag}", "ratio": r["bytes_per_step"] / base["bytes_per_step"],
                 "note": f"{r['bytes_per_step'] / 1024:.0f} KiB vs {base['bytes_per_step'] / 1024:.1f} KiB"},
            ]
    for r in rows:
        print(f"{r['metric']:<70} {r['ratio']:8.3f}  {r['note']}", flush=True)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
