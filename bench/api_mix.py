#!/usr/bin/env python3
"""Runs a CI job's Docker API mix with the docker CLI against two addresses of
one engine, round by round, and prints a markdown table of step medians.

Each round runs the whole job once per target; the order of the two targets
alternates every round (AB, BA, AB, ...), or stays AB with --order abab, so
drift on the machine hits both alike. Every step is checked (exit status and
output); a failed step stops the run with exit status 1 and is never timed.

Usage: api_mix.py --work DIR --certs CLIENT_CERT_DIR --image IMAGE
                  --target NAME=HOST:PORT --target NAME=HOST:PORT [options]
"""
import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import time


class StepFailed(Exception):
    pass


class Job:
    """One run of the job's steps against one target."""

    def __init__(self, cfg, target: str, env: dict, tag: str):
        self.cfg = cfg
        self.target = target
        self.env = env
        self.tag = tag  # unique per target and round: names and image tags
        self.times = {}  # step -> milliseconds

    def docker(self, step, args, cli=None, stdin=None, extra_env=None, timed=True):
        """Runs one CLI command; times it when `timed`; raises on failure."""
        env = dict(self.env, **(extra_env or {}))
        cmd = [cli or self.cfg.cli, *args]
        started = time.monotonic_ns()
        proc = subprocess.run(cmd, env=env, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        took = (time.monotonic_ns() - started) / 1e6
        if proc.returncode != 0:
            raise StepFailed(
                f"{self.target} {self.tag} step {step}: {' '.join(cmd)} exited {proc.returncode}\n"
                f"stderr: {proc.stderr.decode(errors='replace')[-2000:]}"
            )
        if timed:
            self.times[step] = took
        return proc.stdout

    def expect(self, step, ok, what):
        if not ok:
            self.times.pop(step, None)
            raise StepFailed(f"{self.target} {self.tag} step {step}: {what}")

    def build_context(self, name):
        """A small build context whose payload changes every build, so the
        COPY layer is rebuilt as in a CI job after a commit."""
        ctx = os.path.join(self.cfg.work, f"ctx-{self.tag}-{name}")
        os.makedirs(ctx, exist_ok=True)
        with open(os.path.join(ctx, "payload"), "wb") as f:
            f.write(os.urandom(self.cfg.context_kib * 1024))
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            # No RUN step: the engine has no network (--bridge=none), and a
            # RUN would measure the container runtime, not the API.
            f.write(f'FROM {self.cfg.image}\nCOPY payload /payload\nCMD ["cat", "/payload"]\n')
        return ctx

    def run(self):
        c, s = self.cfg, self.tag
        name = f"mix-{s}"
        classic, kit = f"mix/classic:{s}", f"mix/buildkit:{s}"
        steps = c.steps

        if "version" in steps:
            out = self.docker("version", ["version"])
            self.expect("version", b"Server:" in out, "no server section in docker version")
        if "info" in steps:
            out = self.docker("info", ["info"])
            self.expect("info", b"Server Version" in out, "no server version in docker info")
        built = []
        if "build-classic" in steps:
            ctx = self.build_context("classic")
            self.docker("build-classic", ["build", "-t", classic, ctx], extra_env={"DOCKER_BUILDKIT": "0"})
            built.append(classic)
            shutil.rmtree(ctx)
        if "build-buildkit" in steps:
            ctx = self.build_context("buildkit")
            self.docker(
                "build-buildkit",
                ["build", "--progress=plain", "-t", kit, ctx],
                cli=c.buildkit_cli,
                extra_env={"DOCKER_BUILDKIT": "1"},
            )
            built.append(kit)
            shutil.rmtree(ctx)
        if "run-i" in steps:
            payload = os.urandom(c.stdin_kib * 1024)
            out = self.docker("run-i", ["run", "--rm", "-i", c.image, "cat"], stdin=payload)
            self.expect(
                "run-i",
                hashlib.sha256(out).digest() == hashlib.sha256(payload).digest(),
                f"run -i cat returned {len(out)} bytes, not the {len(payload)} sent",
            )
        if "create" in steps:
            # create, start, wait, logs, rm: one container's life, call by call.
            self.docker("create", ["create", "--name", name, c.image, "sh", "-c", "echo mix-log-line"])
            self.docker("start", ["start", name])
            out = self.docker("wait", ["wait", name])
            self.expect("wait", out.strip() == b"0", f"container exit status {out.strip()!r}, not 0")
            out = self.docker("logs", ["logs", name])
            self.expect("logs", out == b"mix-log-line\n", f"logs were {out[:200]!r}")
            self.docker("rm", ["rm", name])
        if "exec" in steps:
            out = self.docker("exec", ["exec", c.exec_container, "echo", "exec-ok"])
            self.expect("exec", out == b"exec-ok\n", f"exec printed {out[:200]!r}")
        if "save-load" in steps:
            # The image this job built (or the base image when nothing was
            # built): inspect, save, remove, load it back, as a CI cache does.
            image = built[0] if built else c.image
            out = self.docker("image-inspect", ["image", "inspect", image])
            self.expect("image-inspect", b'"Id"' in out, "no Id in image inspect")
            tar = os.path.join(c.work, f"save-{s}.tar")
            self.docker("save", ["save", "-o", tar, image])
            if image != c.image:
                self.docker("rmi", ["rmi", image])
                built.remove(image)
            out = self.docker("load", ["load", "-i", tar])
            self.expect("load", f"Loaded image: {image}".encode() in out, f"load printed {out[:300]!r}")
            os.unlink(tar)
            if image != c.image:
                built.append(image)
        if built:
            self.docker("cleanup", ["rmi", *built], timed=False)
        return self.times


ALL_STEPS = [
    "version", "info", "build-classic", "build-buildkit", "run-i", "create", "exec", "save-load",
]
# The table's rows: what one job step expands to, in order.
ROWS = [
    "version", "info", "build-classic", "build-buildkit", "run-i",
    "create", "start", "wait", "logs", "rm", "exec", "image-inspect", "save", "rmi", "load",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--certs", required=True, help="client certificate directory (DOCKER_CERT_PATH)")
    ap.add_argument("--image", required=True)
    ap.add_argument("--target", action="append", required=True, help="NAME=HOST:PORT, twice")
    ap.add_argument("--label", action="append", default=[], help="NAME=column heading")
    ap.add_argument("--cli", default="docker")
    ap.add_argument("--buildkit-cli", default="docker")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--order", choices=["alternate", "abab"], default="alternate")
    ap.add_argument("--stdin-kib", type=int, default=8)
    ap.add_argument("--context-kib", type=int, default=64)
    ap.add_argument("--steps", default=" ".join(ALL_STEPS))
    cfg = ap.parse_args()
    cfg.steps = set(cfg.steps.replace(",", " ").split())
    unknown = cfg.steps - set(ALL_STEPS)
    if unknown:
        sys.exit(f"unknown steps {sorted(unknown)}; known: {' '.join(ALL_STEPS)}")
    targets = [t.split("=", 1) for t in cfg.target]
    if len(targets) != 2:
        sys.exit("two --target NAME=HOST:PORT are needed")
    labels = dict(lab.split("=", 1) for lab in cfg.label)
    os.makedirs(cfg.work, exist_ok=True)

    base = {k: v for k, v in os.environ.items() if k not in ("DOCKER_CONTEXT", "DOCKER_BUILDKIT")}
    base.update(DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=cfg.certs, DOCKER_CONFIG=os.path.join(cfg.work, "config"))
    envs = {name: dict(base, DOCKER_HOST=f"tcp://{addr}") for name, addr in targets}
    names = [name for name, _ in targets]

    # One long-running container for the exec step, shared by both targets.
    cfg.exec_container = "mix-exec"
    setup = Job(cfg, names[0], envs[names[0]], "setup")
    if "exec" in cfg.steps:
        setup.docker("setup", ["run", "-d", "--name", cfg.exec_container, cfg.image, "sleep", "1000000"], timed=False)

    times = {name: {row: [] for row in ROWS} for name in names}
    totals = {name: [] for name in names}
    try:
        for r in range(-cfg.warmup, cfg.rounds):
            order = names if cfg.order == "abab" or r % 2 == 0 else names[::-1]
            for name in order:
                tag = f"{name}-w{-r}" if r < 0 else f"{name}-{r}"
                job_times = Job(cfg, name, envs[name], tag).run()
                if r < 0:
                    continue
                for step, ms in job_times.items():
                    times[name][step].append(ms)
                totals[name].append(sum(job_times.values()))
            if r < 0:
                print("warm-up done", file=sys.stderr)
            else:
                each = ", ".join(f"{n} {totals[n][-1]:.0f} ms" for n in order)
                print(f"round {r + 1}/{cfg.rounds}: {each}", file=sys.stderr)
    finally:
        if "exec" in cfg.steps:
            setup.docker("teardown", ["rm", "-f", cfg.exec_container], timed=False)

    a, b = names
    la, lb = labels.get(a, a), labels.get(b, b)
    med = {n: {row: statistics.median(v) for row, v in times[n].items() if v} for n in names}
    print(f"## A CI job's API mix with the docker CLI ({cfg.rounds} rounds, "
          f"{'alternating order' if cfg.order == 'alternate' else 'ABAB'}, median ms)")
    print()
    # Besides the ratio of medians: the median of the differences within a
    # round, where both targets met the same state of the machine.
    print(f"| step | {la} (ms) | {lb} (ms) | {a} / {b} | {a} − {b}, median of round pairs (ms) |")
    print("|---|---|---|---|---|")
    for row in ROWS:
        if row in med[a] and row in med[b]:
            diff = statistics.median(x - y for x, y in zip(times[a][row], times[b][row]))
            print(f"| {row} | {med[a][row]:.1f} | {med[b][row]:.1f} | {med[a][row] / med[b][row]:.2f} | {diff:+.1f} |")
    sa, sb = sum(med[a].values()), sum(med[b].values())
    print(f"| job, sum of step medians | {sa:.0f} | {sb:.0f} | {sa / sb:.2f} | |")
    ta, tb = statistics.median(totals[a]), statistics.median(totals[b])
    diff = statistics.median(x - y for x, y in zip(totals[a], totals[b]))
    print(f"| job, median of round totals | {ta:.0f} | {tb:.0f} | {ta / tb:.2f} | {diff:+.0f} |")
    print()


if __name__ == "__main__":
    try:
        main()
    except StepFailed as e:
        print(f"step failed: {e}", file=sys.stderr)
        sys.exit(1)
