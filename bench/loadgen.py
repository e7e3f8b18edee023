"""Builds and starts bench/loadgen.c, scenario c's open-loop client (see the C file's header).

bench/run.py compiles it with gcc -O2 on first use into the bench cache, one binary per
source hash, and runs it where it runs wrk; it prints the BENCH_JSON line bench/lua/
timed.lua prints, plus its own CPU time.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "loadgen.c"
CACHE = Path(tempfile.gettempdir()) / "bookedbarber-bench"
# bench/lua/common.lua's user read, "{id}" drawn uniformly in 1..users.
USER_PATH = "/api/v1/users/{id}?include=appointments,payments,organizations"
FLAGS = ["-O2", "-Wall", "-Wextra", "-Werror"]


def build() -> Path:
    """The compiled client, built once per version of loadgen.c."""
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source + " ".join(FLAGS).encode()).hexdigest()[:12]
    binary = CACHE / f"loadgen-{digest}"
    if binary.exists():
        return binary
    if shutil.which("gcc") is None:
        raise RuntimeError("bench/loadgen.c needs gcc (apt-get install gcc), or --c10k-client wrk")
    CACHE.mkdir(mode=0o755, exist_ok=True)
    partial = binary.with_name(binary.name + ".partial")
    subprocess.run(["gcc", *FLAGS, "-o", str(partial), str(SOURCE), "-lm"], check=True)
    partial.replace(binary)
    return binary


@dataclass
class Load:
    """One client process: `connections` connections offering `rate` user reads per second."""

    port: int
    connections: int
    rate: float
    warmup: float
    duration: float
    storm: float
    ids: int
    seed: int
    series: Path | None = None
    timeout: float = 10.0

    def args(self, binary: Path) -> list[str]:
        args = [str(binary), "--host", "127.0.0.1", "--port", str(self.port), "--path", USER_PATH]
        args += ["--connections", str(self.connections), "--rate", f"{self.rate:g}"]
        args += ["--warmup", f"{self.warmup:g}", "--duration", f"{self.duration:g}"]
        args += ["--storm", f"{self.storm:g}", "--timeout", f"{self.timeout:g}"]
        args += ["--ids", str(self.ids), "--seed", str(self.seed), "--check-id"]
        if self.series is not None:
            args += ["--series", str(self.series)]
        return args
