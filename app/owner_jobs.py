"""One running job per owner (a page's session): the Generate tab's runs and the Edit tab's edits."""

from __future__ import annotations

import threading


class OwnerJobs:
    """The running job of each owner; a job is anything with `stop()`. Thread-safe."""

    def __init__(self) -> None:
        self._jobs: dict[str, object] = {}
        self._lock = threading.Lock()

    def start(self, owner: str, job) -> None:
        """Records `job` as `owner`'s running job, stopping the one it had before (if any)."""
        with self._lock:
            previous = self._jobs.get(owner)
            if previous is not None:
                previous.stop()
            self._jobs[owner] = job

    def stop(self, owner: str) -> bool:
        """Stops `owner`'s running job; False if it has none."""
        with self._lock:
            job = self._jobs.get(owner)
        if job is None:
            return False
        job.stop()
        return True

    def finish(self, owner: str, job) -> None:
        """Forgets `job` once it has ended (unless `owner` has started another since)."""
        with self._lock:
            if self._jobs.get(owner) is job:
                del self._jobs[owner]
