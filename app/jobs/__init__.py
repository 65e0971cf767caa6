"""The job engine: jobs are rows; workers claim them with a lease, a scheduler makes them.

``engine`` (claim/lease/finish on the jobs table: ``claiming``, ``states`` and
``transactions`` are its parts), ``context`` (what a handler gets),
``handlers`` (JobKind → handler), ``worker`` (the loop), ``scheduler`` (policies → jobs),
``background`` (scheduler + worker inside ``bulwark serve``), ``cli`` (``bulwark worker``).
"""

from app.jobs.background import BackgroundJobs, start_background
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
    "start_background",
]
