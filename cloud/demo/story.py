"""The demo's story, step by step, on this machine only (loopback):

1. a secured mosquitto (`harken broker init` + `run`: TLS for devices, a loopback listener
   for the collector), the lab's signing key and a release key, a speech dataset and a first
   model (built or reused, released with `harken model release` at every run);
2. the collector (SQLite) with drift, rollouts, the HTTP API and the dashboard;
3. the first model registered, a simulated fleet of real agents running it on real speech;
4. drift injected (noise from an onset, once the devices have learnt their baselines) and the
   alert it raises shown with its evidence;
5. the data loop (``cloud.demo.loop``): the devices (opted in to uploads) send the utterances
   around the alert, a simulated labeller labels them from the simulator's ground truth, and
   the next model is trained on the base data plus those field samples;
6. that model canaried to the fleet under the default gates, promoted or rolled back by the
   controller with no person involved, and each model's accuracy on the drifted fleet;
7. a summary with the dashboard's address; everything stops on Ctrl-C or ``--duration``.
"""
from __future__ import annotations

import json
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cloud.demo.procs import Processes, free_port, harken_argv, wait_port
from cloud.lab.engines import ENGINES

TERMINAL = ("completed", "rolled_back", "aborted", "failed")


@dataclass
class DemoSettings:
    workdir: Path
    devices: int = 8
    per_word: int = 120
    speed: float = 20.0
    onset_s: float | None = None  # audio seconds before the noise starts (default: warm-up + 3 drift steps)
    scenario: str = "sudden-noise"
    window_s: float = 10.0
    drift_step_s: float = 10.0
    warmup_s: float = 120.0  # wall seconds a device learns its own baseline (the collector's drift_warmup_s)
    http_port: int = 8080
    bake: str = "20s"
    steps: str = "50,100"
    alert_timeout_s: float = 240.0
    rollout_timeout_s: float = 420.0
    field_samples: int = 600  # labelled field samples to wait for before training the next model
    samples_timeout_s: float = 120.0


class Demo:
    def __init__(self, settings: DemoSettings, say: Callable[[str], None]):
        self.s = settings
        self.say = say
        self.work = settings.workdir.resolve()
        self.procs = Processes(self.work / "logs")
        self.token = secrets.token_urlsafe(16)
        self.started = time.monotonic()
        self.db_url = f"sqlite:///{self.work / 'harken.db'}"
        self.outcome: dict = {"alert": None, "rollout": None, "field_samples": None, "quality": None}
        self.injected_t: float | None = None  # wall time the drift starts on the devices
        if settings.onset_s is None:  # the devices learn their baselines on healthy audio first
            settings.onset_s = (settings.warmup_s + 3 * settings.drift_step_s) * settings.speed

    # -- helpers ---------------------------------------------------------------------------
    def step(self, text: str) -> None:
        self.say(f"[{time.monotonic() - self.started:6.1f}s] {text}")

    def path(self, *parts: str) -> Path:
        return self.work.joinpath(*parts)

    def _fresh(self, *names: str) -> None:
        """Per-run state starts empty; data, keys, models and runs are reused."""
        for name in names:
            p = self.path(name)
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    # -- 1. broker, keys, data, first model ------------------------------------------------
    def prepare(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self._fresh("broker", "registry", "devices", "logs", "samples", "field-export", "field", "data-2",
                    "harken.db", "harken.db-wal", "harken.db-shm", "models/kws-2.hkb")
        from cloud.broker import init_broker, start

        devices = [f"dev-{i:04d}" for i in range(1, self.s.devices + 1)]
        self.tls_port, self.plain_port = free_port(), free_port()
        result = init_broker(self.path("broker"), devices=devices, port=self.tls_port, plain_port=self.plain_port)
        self.broker = result.broker
        start(self.path("broker"))
        self.step(f"broker up: {self.broker.tls_url} (TLS, per-device passwords, ACL), "
                  f"collector listener mqtt://127.0.0.1:{self.plain_port}")
        from shared.keys import RELEASE_NAME, generate_keypair

        for name in ("signing", RELEASE_NAME):  # the lab's key signs manifests, the release key what devices run
            if not self.path("keys", f"{name}.key").exists():
                generate_keypair(self.path("keys"), name=name)
        self.private_key, self.public_key = self.path("keys", "signing.key"), self.path("keys", "signing.pub")
        self.release_key, self.release_public = self.path("keys", "release.key"), self.path("keys", "release.pub")
        if not self.path("data", "manifest.json").exists():
            self.step(f"synthesizing speech with {', '.join(ENGINES)} ({self.s.per_word} clips per label) ...")
            self.procs.run("data-synth", harken_argv("data", "synth", str(self.path("data")),
                                                     "--per-word", str(self.s.per_word)))
        self.model_v1 = self.train("1", seed=0)

    def train(self, version: str, seed: int, data: str = "data") -> Path:
        out = self.path("models", f"kws-{version}.hkb")
        if out.exists():
            self.step(f"reusing model kws:{version} ({out})")
        else:
            self.step(f"training model kws:{version} (seed {seed}) ...")
            self.procs.run(f"train-{version}", harken_argv(
                "model", "train", str(self.path(data)), "--out", str(out), "--seed", str(seed), "--name", "kws",
                "--version", version, "--key", str(self.private_key), "--runs-dir", str(self.path("runs"))))
        # devices run only released bundles: release (again, so its expiry is fresh) with the release key
        self.procs.run(f"release-{version}", harken_argv(
            "model", "release", str(out), "--release-key", str(self.release_key), "--version", version,
            "--expires", "30d", "--public-key", str(self.public_key)))
        self.step(f"released kws:{version} as version {version} for 30 days (release key {self.release_public})")
        return out

    # -- 2. collector ------------------------------------------------------------------------
    def start_collector(self) -> None:
        creds = self.broker.credentials()
        argv = harken_argv("collector", "run", "--broker", f"mqtt://127.0.0.1:{self.plain_port}",
                           "--db", self.db_url, "--username", "collector", "--client-id", "demo-collector",
                           "--registry-dir", str(self.path("registry")), "--public-keys", str(self.public_key),
                           "--http-port", str(self.s.http_port), "--drift-step-s", str(self.s.drift_step_s),
                           "--rollup-interval-s", "2", "--rollup-bucket-s", str(int(self.s.drift_step_s)),
                           "--drift-concept-step-s", str(int(6 * self.s.drift_step_s)),
                           "--drift-warmup-s", str(self.s.warmup_s), "--drift-settle-s", "3",
                           "--samples-dir", str(self.path("samples")),
                           "--samples-max-bytes-per-device-hour", str(256 * 1024 * 1024))
        env = {"HARKEN_COLLECTOR_PASSWORD": creds["collector"], "HARKEN_COLLECTOR_HTTP_TOKEN": self.token}
        proc = self.procs.start("collector", argv, env)
        wait_port(self.s.http_port, 60, proc)
        self.step(f"collector up: SQLite {self.path('harken.db')}, dashboard http://127.0.0.1:{self.s.http_port}/")

    def services(self):
        from cloud.registry import Registry
        from cloud.rollout.service import RolloutService
        from cloud.store import open_store

        store = open_store(self.db_url)
        registry = Registry(store, self.path("registry"), [_public(self.public_key)])
        return store, registry, RolloutService(store, registry)

    # -- 3. fleet ----------------------------------------------------------------------------
    def start_fleet(self) -> None:
        store, registry, _ = self.services()
        with store:
            record, _ = registry.register(self.model_v1)
            registry.set_alias("production", record.sha256)
        self.step(f"registered {record.label} ({record.sha256[:12]}) as production")
        argv = harken_argv("sim", "--devices", str(self.s.devices), "--scenario", self.s.scenario,
                           "--onset", str(self.s.onset_s), "--data", str(self.path("data")),
                           "--broker", self.broker.tls_url, "--credentials", str(self.broker.paths.credentials),
                           "--tls-ca", str(self.broker.ca_path), "--model", str(self.model_v1),
                           "--trust-key", str(self.public_key), "--release-key", str(self.release_public),
                           "--state-root", str(self.path("devices")),
                           "--speed", str(self.s.speed), "--feedback-rate", "0.3", "--truth-log",
                           "--agent-config", str(self._agent_config()))
        self.procs.start("fleet", argv)
        self.injected_t = time.time() + self.s.onset_s / self.s.speed
        self.step(f"fleet up: {self.s.devices} real agents on synthesized speech at {self.s.speed:g}x; "
                  f"'{self.s.scenario}' starts at audio {self.s.onset_s:g} s")

    def _agent_config(self) -> Path:
        """The devices opt in to sample uploads (a quota for 20x speed: an hour of audio is 3 minutes)."""
        path = self.path("agent.toml")
        path.write_text("samples_upload = true\nsamples_max_bytes_per_hour = 67108864\n")
        return path

    # -- 4. drift ------------------------------------------------------------------------------
    def await_alert(self) -> dict | None:
        """Wait for the injected drift: a fleet-wide alert; device alerts are shown as they come."""
        from cloud.store import open_store

        self.step("waiting for the drift alert ...")
        deadline = time.monotonic() + self.s.alert_timeout_s
        shown: set[str] = set()
        with open_store(self.db_url) as store:
            while time.monotonic() < deadline:
                self.procs.check_alive()
                for alert in sorted(store.alerts(), key=lambda a: a["opened_t"]):
                    if alert["id"] not in shown and alert["status"] != "resolved":
                        shown.add(alert["id"])
                        self.step(_describe_alert(alert))
                    if alert["cohort"] == "fleet" and alert["status"] != "resolved":
                        onset = (alert.get("evidence") or {}).get("onset_t") or alert["opened_t"]
                        alert["onset_after_injection_s"] = round(onset - self.injected_t, 1)
                        self.step(f"the alert dates the drift {alert['onset_after_injection_s']:+.0f} s from when "
                                  "it was injected")
                        self.outcome["alert"] = alert
                        return alert
                time.sleep(1.0)
        self.step(f"no fleet drift alert within {self.s.alert_timeout_s:.0f} s (see logs in {self.procs.log_dir})")
        return None

    # -- 5. the data loop ----------------------------------------------------------------------
    def collect_field_samples(self, alert: dict) -> dict:
        """Ask the alert's devices for the utterances around it; label what arrives."""
        from cloud.demo.loop import SimulatedLabeller, wait_for_labels
        from cloud.samples import control

        store, registry, _ = self.services()
        with store:
            request = control.request_alert(store, alert["id"], actor="demo", max_clips=200)
            self.step(f"asked {len(request['devices'])} device(s) for the utterances around alert {alert['id']}; "
                      f"a simulated labeller labels what arrives from the simulator's ground truth ...")
            labeller = SimulatedLabeller(store, self.path("devices"), registry, since=self.injected_t)
            labelled = wait_for_labels(labeller, self.s.field_samples, self.s.samples_timeout_s,
                                       self.procs.check_alive)
            summary = store.sample_summary()
        self.outcome["field_samples"] = {"labelled": labelled, "unknown": len(labeller.unknown), **summary}
        self.step(f"{labelled} field samples labelled by the simulated labeller ({len(labeller.unknown)} had no "
                  f"ground truth)")
        return self.outcome["field_samples"]

    def retrain_with_field_samples(self) -> Path:
        """export → import → merge with the base data → train: the commands an operator runs."""
        db = ["--db", self.db_url, "--samples-dir", str(self.path("samples"))]
        self.procs.run("samples-export", harken_argv("samples", "export", str(self.path("field-export")), *db))
        self.procs.run("data-import", harken_argv("data", "import", str(self.path("field-export")),
                                                  "--out", str(self.path("field")), "--source", "field"))
        self.procs.run("data-merge", harken_argv("data", "merge", str(self.path("data")), str(self.path("field")),
                                                 "--out", str(self.path("data-2"))))
        self.step("merged the base data and the field samples into data-2; training kws:2 on it ...")
        return self.train("2", seed=0, data="data-2")

    # -- 6. canary ----------------------------------------------------------------------------
    def canary(self, model_v2: Path) -> dict | None:
        from cloud.demo.loop import accuracy_gain, field_accuracy

        store, registry, rollouts = self.services()
        with store:
            record, _ = registry.register(model_v2)
            registry.set_alias("candidate", record.sha256)
            old = registry.resolve("production")
            rollout = rollouts.start(record.label, cohort="fleet", strategy="canary", steps=self.s.steps,
                                     bake=self.s.bake)
            started_t = time.time()
            self.step(f"canary of {record.label} started: rollout {rollout.id}, steps {self.s.steps} %, bake "
                      f"{self.s.bake} each, the default gates (errors, latency, no-answer rate, label mix, feedback)")
            deadline = time.monotonic() + self.s.rollout_timeout_s
            seen_log = 0
            while time.monotonic() < deadline:
                self.procs.check_alive()
                current = rollouts.get(rollout.id)
                entries = rollouts.log(rollout.id)
                for entry in entries[seen_log:]:
                    self.step(f"  rollout: {entry.get('from_status', '')} → {entry.get('to_status', '')} "
                              f"{entry.get('reason', '')}".rstrip())
                seen_log = len(entries)
                if current.status in TERMINAL:
                    self.outcome["rollout"] = {"id": current.id, "status": current.status, "reason": current.reason,
                                               "model": record.label}
                    self.step(f"rollout {current.id} {current.status}: {current.reason}")
                    break
                time.sleep(1.0)
            else:
                self.step(f"rollout still running after {self.s.rollout_timeout_s:.0f} s")
            # accuracy on the drifted fleet: the old model from the injection to the canary, the new since
            self.outcome["quality"] = {
                old.label: field_accuracy(store, old.sha256, self.injected_t, started_t),
                record.label: field_accuracy(store, record.sha256, started_t)}
        for label, q in self.outcome["quality"].items():
            acc = "-" if q["accuracy"] is None else f"{100 * q['accuracy']:.1f} %"
            self.step(f"accuracy of {label} on the drifted fleet (simulated people's answers): {acc} "
                      f"of {q['answers']}")
        gain = accuracy_gain(self.outcome["quality"][old.label], self.outcome["quality"][record.label])
        self.outcome["quality"]["gain"] = gain
        if gain is not None:
            self.step(f"the data loop changed accuracy on the drifted fleet by {100 * gain['estimate']:+.1f} points "
                      f"(95 % interval {100 * gain['low']:+.1f} to {100 * gain['high']:+.1f})")
        return self.outcome["rollout"]

    # -- 7. summary and the end -----------------------------------------------------------------
    def summary(self) -> dict:
        url = f"http://127.0.0.1:{self.s.http_port}/#token={self.token}"
        self.say(json.dumps({"dashboard": url, **self.outcome}, indent=1, default=str))
        return {"dashboard": url, **self.outcome}

    def stop(self) -> None:
        self.step("stopping the fleet, the collector and the broker ...")
        self.procs.stop("fleet", timeout_s=30)
        self.procs.stop_all()
        from cloud.broker import stop

        stop(self.path("broker"))
        self.step("stopped; nothing is left running")


def _public(path: Path):
    from shared.keys import load_public_key

    return load_public_key(path)


def _describe_alert(alert: dict) -> str:
    evidence = alert.get("evidence") or {}
    top = ", ".join(f"{t.get('signal')} {t.get('severity') or 0:.1f}× its floor"
                    for t in (evidence.get("top") or [])[:3])
    drivers = ", ".join(d["device"] for d in evidence.get("devices") or [] if d.get("driving"))[:80]
    return (f"DRIFT ALERT {alert['id']}: {alert['signal']} drift on {alert['cohort']}, "
            f"pattern {alert.get('pattern') or '?'}; top signals: {top or '-'}; devices: {drivers or '-'}")
