"""What a panel running one job in a background thread shares: the thread, the stop flag
and the status line, so the kernel stays responsive while the job runs."""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from typing import Any

from labkit.errors import LabkitError


class BackgroundJob:
    """Mixed into a panel: ``start()`` (the panel's own) launches ``_launch(...)``; ``stop()``
    sets the flag the job watches; ``wait()`` joins it. ``status`` is an ipywidgets HTML."""

    result: Any = None
    error: str | None = None  # the message of a job that failed
    stopping = "stopping…"  # what the status line says once Stop is pressed

    def _init_job(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Ask the job to end (a training after its epoch, a sweep with its trials)."""
        self._stop.set()
        if self.running:
            self._say(self.stopping)

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the job ends (or ``timeout`` s pass); the result, if there is one."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.result

    def start(self) -> None:  # pragma: no cover - each panel defines its own
        raise NotImplementedError

    def _launch(self, target: Callable[..., None], args: tuple, name: str) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._guarded, args=(target, args), name=name, daemon=True
        )
        self._thread.start()

    def _guarded(self, target: Callable[..., None], args: tuple) -> None:
        """The job on its thread: a failure is shown in the panel (the kernel keeps running),
        and the buttons come back whatever happened."""
        try:
            target(*args)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self._say(html.escape(self.error), error=True)
        finally:
            self.start_button.disabled, self.stop_button.disabled = False, True

    def _start_from_screen(self) -> None:
        try:
            self.start()
        except LabkitError as exc:
            self._say(html.escape(str(exc)), error=True)

    def _say(self, message: str, error: bool = False) -> None:
        color = "#b00020" if error else "inherit"
        self.status.value = f"<span style='color:{color}'>{message}</span>"

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
