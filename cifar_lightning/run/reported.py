"""A sweep job that failed with a message of its own ends without Hydra's second say.

Hydra's basic sweeper re-raises a failed job's exception through ``JobReturn.return_value``,
which first writes ``Error executing job with overrides: [...]`` to stderr. For a
:class:`JobFailed` the job has already printed its one message (``error: … fix: …``), so that
line only repeats it; other exceptions (bugs) keep it, and their traceback.
"""

from __future__ import annotations

from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback

from cifar_lightning.errors import JobFailed


class ReportedJobReturn(JobReturn):
    """A JobReturn whose failure raises as it is, the message being out already."""

    @property
    def return_value(self) -> Any:
        if self.status == JobStatus.FAILED:
            raise self._return_value
        return super().return_value

    @return_value.setter
    def return_value(self, value: Any) -> None:
        self._return_value = value


class QuietReportedFailures(Callback):
    """Hydra callback: mark each job that failed with :class:`JobFailed` as reported. Runs in
    the job's process (under any launcher), so the mark travels back with its JobReturn."""

    def on_job_end(self, config: Any, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status == JobStatus.FAILED and isinstance(
            job_return._return_value, JobFailed
        ):
            job_return.__class__ = ReportedJobReturn
