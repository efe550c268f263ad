"""Start the real `veil` binary in demo mode on an ephemeral loopback port.

The binary comes from VEIL_BIN, or the cargo target directory's debug build.
"""

import importlib.util
import os
import pathlib
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

# The Spark tests run in their own virtualenv (scripts/test), where pyspark
# is installed; elsewhere they are not collected.
collect_ignore = [] if importlib.util.find_spec("pyspark") else ["test_spark.py"]


def _binary():
    if os.environ.get("VEIL_BIN"):
        return os.environ["VEIL_BIN"]
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    path = target / "debug" / "veil"
    if not path.exists():
        pytest.fail(f"no veil binary at {path}: run `cargo build -p veil` or set VEIL_BIN")
    return str(path)


class Server:
    def __init__(self, tmp, extra_config=None):
        """The demo under `tmp`; `extra_config` is appended to its config
        file (written by a first, short start) before it serves."""
        self.bin = _binary()
        self.dir = tmp
        if extra_config:
            Server(tmp).stop()
            with open(tmp / "veil.toml", "a") as f:
                f.write("\n" + extra_config + "\n")
        addr_file = tmp / "address"
        if addr_file.exists():
            addr_file.unlink()
        self.log = open(tmp / "veil.log", "wb")
        self.proc = subprocess.Popen(
            [self.bin, "serve", "--demo", "--data-dir", str(tmp), "--listen", "127.0.0.1:0", "--address-file", str(addr_file)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while not addr_file.exists() or not addr_file.read_text().strip():
            if self.proc.poll() is not None:
                raise RuntimeError(f"veil exited early:\n{(tmp / 'veil.log').read_text()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError("veil did not start within 60 s")
            time.sleep(0.05)
        self.address = addr_file.read_text().strip()

    def token(self, user, *extra):
        out = subprocess.run(
            [self.bin, "token", "--data-dir", str(self.dir), "--user", user, *extra],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("veil"))
    yield s
    s.stop()
