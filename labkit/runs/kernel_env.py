"""Environment variables for one notebook's kernel, without touching this process's own.

A worker runs several notebooks at once in threads, so ``os.environ`` cannot carry one run's
settings; the kernel manager papermill starts is given them instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any


def kernel_manager_with_env(env: Mapping[str, str]) -> type:
    """A jupyter_client kernel manager class whose kernels also get ``env``."""
    from jupyter_client.manager import AsyncKernelManager

    extra = {str(k): str(v) for k, v in env.items()}

    class KernelManagerWithEnv(AsyncKernelManager):
        async def start_kernel(self, **kw: Any) -> None:
            kw["env"] = {**kw.get("env", os.environ), **extra}
            await super().start_kernel(**kw)

    return KernelManagerWithEnv
