#!/usr/bin/env python3
"""Chaos loop: a job's workload runs through the proxy while dockerd is
killed (SIGKILL) at a random moment inside it, round after round.

Each round runs the workload (create, start, logs, exec, build, save, rm)
with the docker CLI over mutual TLS. A step that fails is retried the way a
CI script's `retry` would: up to RETRIES more times, a second apart; a job
whose step still fails is run again from the start, up to JOB_RETRIES more
times, as GitLab's `retry:` would (a dockerd that dies without live-restore
takes the job's running containers with it). The round "recovered" when the
job succeeded in the end. Meanwhile dockerd is
killed once, at a random moment in the first KILL_WITHIN seconds, and the
time from the kill to /readyz answering 200 again is measured.

A step that runs longer than STEP_LIMIT seconds counts as hung: that is the
failure this loop exists to find (a job that waits for its CI timeout).

Usage: chaos.py --addr HOST:PORT --health HOST:PORT --certs CLIENT_CERT_DIR
                --image IMAGE --work DIR --dockerd-pid-cmd CMD
                [--rounds 20] [--time-limit 1800] [--settle 61] [--seed N]
                [--json OUT]
Exit status 1 when any round did not recover or any step hung.
"""
import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import threading
import time
import urllib.request

RETRIES = 3
JOB_RETRIES = 2
STEP_LIMIT = 60.0
KILL_WITHIN = 0.3
STEPS = ["rm-old", "create", "start", "logs", "exec", "build", "save", "rm", "rmi"]


def ready(health):
    try:
        with urllib.request.urlopen(f"http://{health}/readyz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


class Round:
    def __init__(self, cfg, n, env):
        self.cfg, self.n, self.env = cfg, n, env
        self.retries = 0
        self.job_retries = 0
        self.hung = []
        self.failed = None
        self.steps_done = 0
        self.kill_step = None
        self.kill_step_began = threading.Event()

    def docker(self, *args, stdin=None):
        return subprocess.run(
            [self.cfg.cli, *args], env=self.env, input=stdin, capture_output=True, timeout=STEP_LIMIT
        )

    def step(self, name, *args, stdin=None, check=None):
        """One step with its retries; raises on the last failure."""
        if name == self.kill_step:
            self.kill_step_began.set()
        for attempt in range(RETRIES + 1):
            try:
                p = self.docker(*args, stdin=stdin)
                ok = p.returncode == 0 and (check is None or check(p.stdout))
                why = p.stderr.decode(errors="replace").strip()[-300:]
            except subprocess.TimeoutExpired:
                self.hung.append(name)
                ok, why = False, f"still running after {STEP_LIMIT:.0f} s"
            if ok:
                self.steps_done += 1
                return p.stdout.decode(errors="replace").strip()
            if attempt < RETRIES:
                self.retries += 1
                time.sleep(1)
        raise RuntimeError(f"{name}: {why}")

    def workload(self):
        """The job, retried as a whole (GitLab's `retry:`) when a step fails
        for good: without live-restore a dockerd that dies takes the job's
        running containers with it, and no step retry brings them back."""
        for attempt in range(JOB_RETRIES + 1):
            try:
                self.job(attempt)
                self.failed = None
                return
            except RuntimeError as e:
                self.failed = str(e)
                if attempt < JOB_RETRIES:
                    self.job_retries += 1

    def job(self, attempt):
        tag = f"chaos{self.n}"
        ctx = os.path.join(self.cfg.work, tag)
        os.makedirs(ctx, exist_ok=True)
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write(f"FROM {self.cfg.image}\nCOPY payload /payload\nCMD [\"cat\", \"/payload\"]\n")
        with open(os.path.join(ctx, "payload"), "wb") as f:
            f.write(os.urandom(256 * 1024))
        saved = os.path.join(self.cfg.work, f"{tag}.tar")
        try:
            # `rm -f` first: a create that reached dockerd before a kill may
            # have made the container although its answer was lost.
            self.step("rm-old", "rm", "-f", tag, check=lambda _: True)
            self.step("create", "create", "--name", tag, self.cfg.image, "sh", "-c", "echo up; sleep 600")
            self.step("start", "start", tag)
            self.step("logs", "logs", tag, check=lambda out: b"up" in out)
            self.step("exec", "exec", tag, "echo", "exec-ok", check=lambda out: b"exec-ok" in out)
            self.step("build", "build", "-q", "-t", f"chaos/{tag}", ctx)
            self.step("save", "save", "-o", saved, f"chaos/{tag}")
            self.step("rm", "rm", "-f", tag)
            self.step("rmi", "rmi", "-f", f"chaos/{tag}")
        finally:
            if os.path.exists(saved):
                os.remove(saved)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--health", required=True)
    ap.add_argument("--certs", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--dockerd-pid-cmd", required=True)
    ap.add_argument("--cli", default="docker")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--time-limit", type=float, default=1800)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--settle", type=float, default=61)
    ap.add_argument("--json")
    cfg = ap.parse_args()
    seed = cfg.seed if cfg.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    env = dict(os.environ, DOCKER_HOST=f"tcp://{cfg.addr}", DOCKER_TLS_VERIFY="1",
               DOCKER_CERT_PATH=cfg.certs, DOCKER_CONFIG=os.path.join(cfg.work, "docker-config"),
               DOCKER_BUILDKIT="0")
    os.makedirs(cfg.work, exist_ok=True)
    started = time.monotonic()
    results = []
    for n in range(cfg.rounds):
        if time.monotonic() - started > cfg.time_limit:
            break
        while not ready(cfg.health):
            time.sleep(0.05)
        # A run Ready for 60 s resets the supervisor's restart count and
        # back-off (supervise.rs): with --settle 61 every round meets a
        # first crash, as a job meets a rare one; without, back-off grows.
        if n > 0:
            time.sleep(cfg.settle)
        rnd = Round(cfg, n, env)
        rnd.kill_step = rng.choice(STEPS[1:])
        started_round = time.monotonic()
        worker = threading.Thread(target=rnd.workload)
        worker.start()
        rnd.kill_step_began.wait(timeout=STEP_LIMIT)
        time.sleep(rng.uniform(0, KILL_WITHIN))
        kill_at = time.monotonic() - started_round
        steps_at_kill = rnd.steps_done
        pid = subprocess.run(cfg.dockerd_pid_cmd, shell=True, capture_output=True, text=True).stdout.split()
        if not pid:
            raise SystemExit(f"round {n + 1}: no dockerd to kill ({cfg.dockerd_pid_cmd!r} found none)")
        os.kill(int(pid[0]), signal.SIGKILL)
        killed = time.monotonic()
        # First the supervisor must see the death (/readyz turns 503), then
        # it restarts dockerd after its back-off; Ready means dockerd
        # answered /_ping again.
        while ready(cfg.health) and time.monotonic() - killed < 5:
            time.sleep(0.01)
        noticed = time.monotonic() - killed
        while not ready(cfg.health) and time.monotonic() - killed < 120:
            time.sleep(0.05)
        back = time.monotonic() - killed
        worker.join(timeout=STEP_LIMIT * 12)
        r = {
            "round": n + 1,
            "kill_in_step": rnd.kill_step,
            "kill_at_s": round(kill_at, 2),
            "steps_done_at_kill": steps_at_kill,
            "recovered": rnd.failed is None and not worker.is_alive(),
            "retries": rnd.retries,
            "job_retries": rnd.job_retries,
            "hung_steps": rnd.hung,
            "seconds_to_notice": round(noticed, 3),
            "seconds_back_to_ready": round(back, 2),
            "failure": rnd.failed,
        }
        results.append(r)
        print(f"round {n + 1}: kill at {kill_at:.2f} s in step {rnd.kill_step} ({steps_at_kill} done), Ready again after {back:.2f} s, "
              f"{'recovered' if r['recovered'] else 'NOT recovered'} with {rnd.retries} step and {rnd.job_retries} job retries"
              + (f", hung: {rnd.hung}" if rnd.hung else "")
              + (f" ({rnd.failed})" if rnd.failed else ""), flush=True)
    backs = sorted(r["seconds_back_to_ready"] for r in results)
    summary = {
        "seed": seed,
        "rounds": len(results),
        "recovered": sum(r["recovered"] for r in results),
        "rounds_needing_retries": sum(r["retries"] > 0 for r in results),
        "rounds_needing_a_job_retry": sum(r["job_retries"] > 0 for r in results),
        "hung_steps": sum(len(r["hung_steps"]) for r in results),
        "back_to_ready_s": {
            "median": round(statistics.median(backs), 2) if backs else None,
            "max": backs[-1] if backs else None,
        },
        "seconds": round(time.monotonic() - started, 1),
        "results": results,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "results"}, indent=2))
    if cfg.json:
        with open(cfg.json, "w") as f:
            json.dump(summary, f, indent=2)
    if summary["recovered"] < len(results) or summary["hung_steps"]:
        raise SystemExit("chaos loop failed: a round did not recover or a step hung")


if __name__ == "__main__":
    main()
