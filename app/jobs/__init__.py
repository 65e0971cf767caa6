"""The job engine: jobs are rows; workers claim them with a lease, a scheduler makes them.

``engine`` (claim/lease/finish on the jobs table: ``claiming``, ``states`` and
``transactions`` are its parts), ``context`` (what a handler gets),
``handlers`` (JobKind → handler), ``worker`` (the loop), ``scheduler`` (policies → jobs),
``enqueue`` (the one way to create a job), ``background`` (scheduler + worker threads).
What the jobs do is handed in by app/composition.py; nothing here imports a layer above.
"""

from app.jobs.background import BackgroundJobs
from app.jobs.context import JobCancelled, JobContext, JobResult, LeaseLost, PermanentError
from app.jobs.engine import ClaimedJob, JobEngine, ResourceLimits
from app.jobs.handlers import Handler, HandlerRegistry, register, registry
from app.jobs.scheduler import Scheduler
from app.jobs.worker import Worker

__all__ = [
    "BackgroundJobs",
    "ClaimedJob",
    "Handler",
    "HandlerRegistry",
    "JobCancelled",
    "JobContext",
    "JobEngine",
    "JobResult",
    "LeaseLost",
    "PermanentError",
    "ResourceLimits",
    "Scheduler",
    "Worker",
    "register",
    "registry",
]
