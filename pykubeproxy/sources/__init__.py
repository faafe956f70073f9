"""Where API objects come from: the Kubernetes API (`kube.py`) or manifest files (`files.py`)."""

from __future__ import annotations

from typing import Protocol


class Source(Protocol):
    """Feeds the store. `synced` turns true once it has delivered a complete view."""

    @property
    def synced(self) -> bool: ...

    def start(self) -> None:
        """Begin delivering (sources with threads start them here)."""

    def poll(self) -> None:
        """Look for changes (sources with threads of their own do nothing here)."""

    def stop(self, timeout: float = 2.0) -> None:
        """Stop delivering; return within `timeout` seconds."""
