"""Where the local ``tritonserver`` lives and how it must be started.

The server binary and its libraries come from the ``nvidia-pytriton`` wheel,
installed apart from Shipway (``scripts/install-triton.sh``) because the wheel pins
numpy < 2. The Python backend's stub takes its interpreter and packages from the
``python3`` first on the server's PATH, so the Triton environment (numpy < 2,
onnxruntime) goes first there. Production points at the NVIDIA Triton image instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from shipway.errors import Unavailable

INSTALL_HINT = "run `make triton` (scripts/install-triton.sh) to install the local Triton"


@dataclass(frozen=True)
class TritonDistribution:
    home: Path

    @property
    def server_root(self) -> Path:
        return self.home / "dist" / "pytriton" / "tritonserver"

    @property
    def binary(self) -> Path:
        return self.server_root / "bin" / "tritonserver"

    @property
    def backends(self) -> Path:
        return self.server_root / "backends"

    @property
    def libs(self) -> Path:
        return self.home / "dist" / "nvidia_pytriton.libs"

    @property
    def python_bin(self) -> Path:
        return self.home / "pyenv" / "bin"

    def check(self) -> None:
        """Fail with the command that fixes it when a piece is missing."""
        needed = {
            "tritonserver binary": self.binary,
            "Python backend stub": self.backends / "python" / "triton_python_backend_stub",
            "Triton Python environment": self.python_bin / "python3",
        }
        missing = [f"{what} ({path})" for what, path in needed.items() if not path.exists()]
        if missing:
            raise Unavailable(
                f"local Triton is incomplete: missing {', '.join(missing)}; {INSTALL_HINT}"
            )

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env["PATH"] = f"{self.python_bin}:{env.get('PATH', '/usr/bin:/bin')}"
        env["LD_LIBRARY_PATH"] = ":".join(
            p for p in (str(self.libs), env.get("LD_LIBRARY_PATH", "")) if p
        )
        for leak in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(leak, None)  # the stub must see the Triton environment, not ours
        return env
