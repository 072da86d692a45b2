#!/usr/bin/env python3
"""The Helm chart, checked without a cluster.

For every values file under helm/noc/ci/: `helm lint --strict`, `helm template`, and
kubernetes-validate (strict schema checking, the current Kubernetes version) over the
output; the TOML the chart renders into its ConfigMap is given to the real `noc` binary,
which must start with it and become ready; the preStop and drain times fit in the
termination grace period; secrets stay out of the ConfigMap. values.schema.json refuses
wrong values. The alert rules pass `promtool check rules` and their unit tests, each
alert has a runbook in docs/operations.md, and every metric the dashboard and the rules
query is exported by a running relay.

Needs `helm` (scripts/install-helm.sh), the PyPI package kubernetes-validate and PyYAML,
and the debug `noc` binary (`cargo build -p noc`). scripts/test.sh provides them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.request

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "helm", "noc")
CI_VALUES = sorted(os.path.join(CHART, "ci", f) for f in os.listdir(os.path.join(CHART, "ci")) if f.endswith(".yaml"))
NOC = os.environ.get("NOC_BIN", os.path.join(ROOT, "target", "debug", "noc"))
HELM = os.environ.get("HELM_BIN") or shutil.which("helm") or os.path.expanduser("~/.local/bin/helm")


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([HELM, *args], capture_output=True, text=True, check=check, timeout=120)


def render(values: str | None = None, *sets: str) -> list[dict]:
    args = ["template", "noc", CHART]
    if values:
        args += ["-f", values]
    for s in sets:
        args += ["--set", s]
    out = helm(*args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Chart(unittest.TestCase):
    def test_lint_and_render_every_values_file_into_valid_manifests(self):
        self.assertGreaterEqual(len(CI_VALUES), 4)
        for values in CI_VALUES:
            with self.subTest(values=os.path.basename(values)):
                lint = helm("lint", "--strict", CHART, "-f", values, check=False)
                self.assertEqual(lint.returncode, 0, lint.stdout + lint.stderr)
                out = helm("template", "noc", CHART, "-f", values).stdout
                with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
                    f.write(out)
                try:
                    check = subprocess.run(
                        ["kubernetes-validate", "--strict", "--quiet", f.name],
                        capture_output=True, text=True, timeout=300,
                    )
                finally:
                    os.unlink(f.name)
                errors = [l for l in check.stdout.splitlines() + check.stderr.splitlines() if l.startswith("ERROR")]
                self.assertEqual((check.returncode, errors), (0, []), check.stdout + check.stderr)

    def test_every_value_is_documented_in_the_readme(self):
        check = subprocess.run(
            ["python3", os.path.join(ROOT, "helm", "tests", "values_table.py"), "--check"],
            capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(check.returncode, 0, check.stderr)

    def test_the_schema_refuses_wrong_values(self):
        for bad in [
            "replicaCount=0",
            "replicaCount=three",
            "service.type=ClusterIP",
            "config.accounts.msisdnApproval=maybe",
            "redis.mode=memcached",
            "unknownKey=1",
            "config.device.unknownSetting=1",
            "public.url=http://plain.example",
            "config.shutdown.drainSeconds=-1",
            "config.web.browseTimeoutSeconds=0",
            "config.alerts.smppSourceAddr=TwelveChars!",
            "config.alerts.smppPassword=inline",
            "links.key=tooshort",
            "links.port=0",
        ]:
            with self.subTest(bad=bad):
                r = helm("template", "noc", CHART, "--set", bad, check=False)
                self.assertNotEqual(r.returncode, 0, f"{bad} was accepted")
                self.assertIn("schema", (r.stderr + r.stdout).lower())

    def test_backends_are_required_outside_embedded_mode(self):
        r = helm("template", "noc", CHART, "--set", "postgres.url=", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("postgres.url or postgres.existingSecret is required", r.stderr)

    def test_embedded_mode_is_one_pod_with_its_store_in_a_claim(self):
        docs = render(os.path.join(CHART, "ci", "embedded-values.yaml"), "replicaCount=5")
        (deploy,) = of_kind(docs, "Deployment")
        self.assertEqual(deploy["spec"]["replicas"], 1)
        self.assertEqual(deploy["spec"]["strategy"]["type"], "Recreate")
        self.assertEqual(of_kind(docs, "HorizontalPodAutoscaler") + of_kind(docs, "PodDisruptionBudget"), [])
        self.assertEqual(len(of_kind(docs, "PersistentVolumeClaim")), 1)
        env = [e["name"] for e in deploy["spec"]["template"]["spec"]["containers"][0].get("env", [])]
        self.assertNotIn("NOC_POSTGRES_URL", env)

    def test_secrets_stay_out_of_the_config_map_and_changes_roll_the_pods(self):
        docs = render(None, "postgres.url=postgres://noc:s3cret-pw@db:5432/noc", "grafanaDashboard.enabled=true")
        self.assertEqual(len(of_kind(docs, "ConfigMap")), 2)
        config = next(c for c in of_kind(docs, "ConfigMap") if "noc.toml" in c["data"])
        self.assertNotIn("s3cret-pw", yaml.safe_dump(config))
        (secret,) = of_kind(docs, "Secret")
        self.assertIn("s3cret-pw", secret["stringData"]["postgres-url"])
        (deploy,) = of_kind(docs, "Deployment")
        pod = deploy["spec"]["template"]
        env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        self.assertEqual(env["NOC_POSTGRES_URL"]["valueFrom"]["secretKeyRef"]["name"], secret["metadata"]["name"])
        before = pod["metadata"]["annotations"]
        (after,) = of_kind(render(None, "postgres.url=postgres://noc:other@db:5432/noc"), "Deployment")
        after = after["spec"]["template"]["metadata"]["annotations"]
        self.assertNotEqual(before["checksum/secret"], after["checksum/secret"])
        self.assertEqual(before["checksum/config"], after["checksum/config"])
        # With existing Secrets the chart makes none of its own.
        ext = render(os.path.join(CHART, "ci", "external-secrets-values.yaml"))
        self.assertEqual(of_kind(ext, "Secret"), [])
        (deploy,) = of_kind(ext, "Deployment")
        env = {e["name"]: e for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
        for var, secret, key in [("NOC_CLUSTER__LINK_KEY", "noc-links", "link-key"),
                                 ("NOC_MAIL__SMTP_PASSWORD", "noc-smtp", "smtp-password"),
                                 ("NOC_ALERTS__SMPP_PASSWORD", "noc-smpp", "smpp-password")]:
            self.assertEqual(env[var]["valueFrom"]["secretKeyRef"], {"name": secret, "key": key})
        self.assertIn('smpp_host = "smsc.carrier.internal"', config_toml(ext))
        # The device CA from its Secret, mounted where the TOML says.
        self.assertIn('cert_path = "/etc/noc/device-ca/tls.crt"', config_toml(ext))
        volumes = {v["name"]: v for v in deploy["spec"]["template"]["spec"]["volumes"]}
        self.assertEqual(volumes["device-ca"]["secret"]["secretName"], "noc-device-ca")
        self.assertNotIn("device_ca", config_toml(render()), "none by default")

    def test_a_load_test_campaign_is_an_indexed_job_of_workers_starting_together(self):
        docs = render(os.path.join(CHART, "ci", "loadtest-values.yaml"))
        (job,) = of_kind(docs, "Job")
        spec = job["spec"]
        self.assertEqual((spec["completionMode"], spec["completions"], spec["parallelism"]), ("Indexed", 8, 8))
        (c,) = spec["template"]["spec"]["containers"]
        args = dict(a.removeprefix("--").split("=", 1) for a in c["args"][1:] if "=" in a)
        self.assertEqual(args["relay-url"], "https://relay.example.net")
        self.assertIn("$(JOB_COMPLETION_INDEX)", args["out"])
        self.assertIn("$(JOB_COMPLETION_INDEX)", args["credentials"])
        self.assertGreater(int(args["start-at-unix-ms"]), int(time.time() * 1000))
        self.assertEqual(c["env"][0]["name"], "LOADTEST_LICENSE_PASSWORD")
        scenario = next(d for d in of_kind(docs, "ConfigMap") if "scenario.toml" in d["data"])
        import tomllib

        self.assertEqual(tomllib.loads(scenario["data"]["scenario.toml"])["name"], "campaign")
        # Without a license Secret or a results claim: a clear refusal.
        for missing, message in [("loadtest.licenseSecret=", "licenseSecret is required"),
                                 ("loadtest.resultsClaim=", "resultsClaim is required")]:
            r = helm("template", "noc", CHART, "-f", os.path.join(CHART, "ci", "loadtest-values.yaml"),
                     "--set", missing, check=False)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn(message, r.stderr)
        self.assertEqual(of_kind(render(), "Job"), [], "off by default")

    def test_pods_are_locked_down(self):
        (deploy,) = of_kind(render(), "Deployment")
        spec = deploy["spec"]["template"]["spec"]
        (c,) = spec["containers"]
        self.assertTrue(spec["securityContext"]["runAsNonRoot"])
        self.assertEqual(spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault")
        self.assertFalse(c["securityContext"]["allowPrivilegeEscalation"])
        self.assertTrue(c["securityContext"]["readOnlyRootFilesystem"])
        self.assertEqual(c["securityContext"]["capabilities"]["drop"], ["ALL"])
        self.assertEqual(c["readinessProbe"]["httpGet"]["path"], "/readyz")
        self.assertEqual(c["livenessProbe"]["httpGet"]["path"], "/healthz")
        self.assertIn("startupProbe", c)

    def test_the_grace_period_covers_the_pre_stop_wait_and_the_drain(self):
        for values in CI_VALUES:
            with self.subTest(values=os.path.basename(values)):
                docs = render(values)
                (deploy,) = of_kind(docs, "Deployment")
                spec = deploy["spec"]["template"]["spec"]
                pre_stop = spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
                toml = config_toml(docs)
                drain = toml_int(toml, "shutdown", "drain_seconds")
                grace = toml_int(toml, "shutdown", "grace_seconds")
                self.assertGreater(spec["terminationGracePeriodSeconds"], pre_stop + drain + grace)

    def test_pods_link_to_each_other_with_a_key_from_a_secret_and_only_relay_pods_reach_the_port(self):
        docs = render()
        (deploy,) = of_kind(docs, "Deployment")
        container = deploy["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e for e in container["env"]}
        self.assertEqual(env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"], "status.podIP")
        self.assertEqual(env["NOC_CLUSTER__LINK_LISTEN"]["value"], "0.0.0.0:9445")
        self.assertEqual(env["NOC_CLUSTER__LINK_ADVERTISE"]["value"], "$(POD_IP):9445")
        (secret,) = of_kind(docs, "Secret")
        self.assertEqual(env["NOC_CLUSTER__LINK_KEY"]["valueFrom"]["secretKeyRef"],
                         {"name": secret["metadata"]["name"], "key": "link-key"})
        self.assertRegex(secret["stringData"]["link-key"], r"^[A-Za-z0-9]{48}$", "generated at install")
        self.assertIn({"name": "link", "containerPort": 9445}, container["ports"])
        self.assertNotIn("link_", config_toml(docs), "addresses and key come from the environment")
        (policy,) = of_kind(docs, "NetworkPolicy")
        (rule,) = [r for r in policy["spec"]["ingress"] if {"port": "link", "protocol": "TCP"} in r["ports"]]
        self.assertEqual(rule["from"], [{"podSelector": {"matchLabels": deploy["spec"]["selector"]["matchLabels"]}}])
        # A given key is used as it is; an existing Secret leaves the chart's without one.
        (secret,) = of_kind(render(None, "links.key=" + "k" * 40), "Secret")
        self.assertEqual(secret["stringData"]["link-key"], "k" * 40)
        docs = render(None, "links.existingSecret=noc-links")
        (secret,) = of_kind(docs, "Secret")
        self.assertNotIn("link-key", secret["stringData"])
        (deploy,) = of_kind(docs, "Deployment")
        env = {e["name"]: e for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
        self.assertEqual(env["NOC_CLUSTER__LINK_KEY"]["valueFrom"]["secretKeyRef"], {"name": "noc-links", "key": "link-key"})
        # Off, or in embedded mode: no links at all.
        for sets in (["links.enabled=false"], ["embedded.enabled=true"]):
            docs = render(None, *sets)
            (deploy,) = of_kind(docs, "Deployment")
            names = [e["name"] for e in deploy["spec"]["template"]["spec"]["containers"][0].get("env", [])]
            self.assertFalse([n for n in names if "LINK" in n], sets)
            self.assertFalse([s for s in of_kind(docs, "Secret") if "link-key" in s.get("stringData", {})], sets)

    def test_the_rendered_configuration_starts_the_real_relay(self):
        self.assertTrue(os.access(NOC, os.X_OK), f"{NOC}: cargo build -p noc")
        with tempfile.TemporaryDirectory() as tmp:
            # A certificate for the cases whose TOML points at the mounted TLS Secret.
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                 "-keyout", os.path.join(tmp, "tls.key"), "-out", os.path.join(tmp, "tls.crt")],
                check=True, capture_output=True, timeout=60,
            )
            # And a device CA, for the cases that mount the device CA's Secret.
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-days", "2", "-subj", "/CN=NOC device CA", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                 "-keyout", os.path.join(tmp, "device-ca.key"), "-out", os.path.join(tmp, "device-ca.crt")],
                check=True, capture_output=True, timeout=60,
            )
            for values in CI_VALUES:
                with self.subTest(values=os.path.basename(values)):
                    self.start_with(config_toml(render(values)), tmp)

    def start_with(self, toml: str, tmp: str):
        name = f"noc-{time.monotonic_ns()}"
        path = os.path.join(tmp, f"{name}.toml")
        with open(path, "w") as f:
            f.write(toml)
        # The configuration as the chart renders it; only what the pod's mounts and
        # Secrets would give is replaced: the data directory, the certificate's path, and
        # loopback ports instead of 0.0.0.0 (no PostgreSQL or Redis URL: the embedded store
        # and bus, so the test needs no backends).
        checked = subprocess.run([NOC, "config", "--config", path], capture_output=True, text=True, timeout=60)
        self.assertEqual(checked.returncode, 0, checked.stderr)
        http, device, admin = free_ports(3)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOC_")}
        if "/etc/noc/tls/" in toml:
            env["NOC_TLS__CERT_PATH"] = os.path.join(tmp, "tls.crt")
            env["NOC_TLS__KEY_PATH"] = os.path.join(tmp, "tls.key")
        if "/etc/noc/device-ca/" in toml:
            env["NOC_DEVICE_CA__CERT_PATH"] = os.path.join(tmp, "device-ca.crt")
            env["NOC_DEVICE_CA__KEY_PATH"] = os.path.join(tmp, "device-ca.key")
        proc = subprocess.Popen(
            [NOC, "serve", "--config", path, "--data-dir", os.path.join(tmp, name),
             "--http-listen", f"127.0.0.1:{http}", "--device-listen", f"127.0.0.1:{device}",
             "--admin-listen", f"127.0.0.1:{admin}", "--console-listen", "127.0.0.1:0"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            ready = False
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=2) as r:
                        ready = r.status == 200
                except OSError:
                    pass
                if ready:
                    break
                time.sleep(0.2)
            if not ready:
                proc.kill()
                out = proc.communicate(timeout=10)[0].decode(errors="replace")
                self.fail(f"the relay did not become ready with the rendered configuration:\n{toml}\n{out[-3000:]}")
            proc.send_signal(signal.SIGTERM)
            out = proc.communicate(timeout=60)[0].decode(errors="replace")
            self.assertEqual(proc.returncode, 0, out[-3000:])
            if 'format = "json"' in toml:
                # Log lines are JSON objects a pipeline can read (stdout carries one banner line).
                logs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
                self.assertTrue(logs, out[-3000:])
                self.assertTrue(all("level" in l and "timestamp" in l for l in logs), logs[:3])
                # Every line names the node that wrote it, the id the banner shows.
                node = re.search(r"^noc relay \S+ \(node (\S+)\)$", out, re.M)
                self.assertIsNotNone(node, out[-3000:])
                self.assertEqual({l.get("node") for l in logs}, {node.group(1)}, logs[:3])
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


class Monitoring(unittest.TestCase):
    FILES = os.path.join(CHART, "files")

    def test_the_alert_rules_check_and_their_unit_tests_pass(self):
        rules = os.path.join(self.FILES, "prometheus-rules.yaml")
        check = subprocess.run(["promtool", "check", "rules", rules], capture_output=True, text=True, timeout=60)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        tests = os.path.join(ROOT, "helm", "tests", "prometheus-rules.test.yaml")
        run = subprocess.run(["promtool", "test", "rules", tests], capture_output=True, text=True, timeout=120)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        # Every alert has a unit test and a runbook section.
        with open(rules) as f:
            alerts = [r["alert"] for g in yaml.safe_load(f)["groups"] for r in g["rules"]]
        with open(tests) as f:
            tested = {t["alertname"] for case in yaml.safe_load(f)["tests"] for t in case["alert_rule_test"]}
        with open(os.path.join(ROOT, "docs", "operations.md")) as f:
            runbooks = f.read().lower()
        for alert in alerts:
            self.assertIn(alert, tested)
            self.assertIn(f"### {alert.lower()}", runbooks)

    def test_every_metric_the_dashboard_and_the_alerts_use_exists_in_a_running_relay(self):
        with open(os.path.join(self.FILES, "grafana-dashboard.json")) as f:
            dashboard = json.load(f)
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        with open(os.path.join(self.FILES, "prometheus-rules.yaml")) as f:
            exprs += [r["expr"] for g in yaml.safe_load(f)["groups"] for r in g["rules"]]
        used = {m for e in exprs for m in re.findall(r"\bnoc_[a-z_]+", e)}
        self.assertGreater(len(used), 10)
        exposed = relay_metric_names()
        # A histogram's series are its family's name with a suffix.
        used = {re.sub(r"_(bucket|sum|count)$", "", m) if m not in exposed else m for m in used}
        self.assertEqual(sorted(used - exposed), [], f"queried but not exported; exported: {sorted(exposed)}")


def relay_metric_names() -> set[str]:
    """The metric families a freshly started relay exports on /metrics."""
    http, device, admin = free_ports(3)
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOC_")}
        proc = subprocess.Popen(
            [NOC, "serve", "--data-dir", tmp, "--http-listen", f"127.0.0.1:{http}",
             "--device-listen", f"127.0.0.1:{device}", "--admin-listen", f"127.0.0.1:{admin}", "--console-listen", "127.0.0.1:0"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=2) as r:
                        text = r.read().decode()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.2)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def config_toml(docs: list[dict]) -> str:
    (config,) = [c for c in of_kind(docs, "ConfigMap") if "noc.toml" in c.get("data", {})]
    return config["data"]["noc.toml"]


def toml_int(toml: str, section: str, key: str) -> int:
    import tomllib

    return int(tomllib.loads(toml)[section][key])


if __name__ == "__main__":
    unittest.main(verbosity=2)
