"""A fine-tune job on several devices: the work horse starts torchrun on this host, one rank per device.

Every rank builds the job's config as a one-device job does and watches Redis for a cancel; rank 0
reports progress to the job record, its events and `job.meta`, exactly as the horse does for one
device. The horse keeps beating, waits, and publishes what rank 0 wrote. torchrun and the ranks
are tied to the horse by the parent-death signal, so a killed worker leaves no rank behind; a rank's
failure is written to `error.<rank>.json` beside the staging folder for the horse to report.
"""

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from redis import Redis
from rq.job import Job

from diffusion_core import errors, jobs
from diffusion_core.errors import ConfigError, UnmaskError
from diffusion_core.store import Store

from .config import WorkerSettings
from .defaults import CANCEL_GRACE_S, CANCEL_POLL_S

log = logging.getLogger("unmask.trainer")
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Have the kernel send SIGTERM when the parent goes (Linux; it survives exec, so torchrun keeps it)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return


def run_ranks(record: dict[str, Any], rq_id: str, settings: WorkerSettings, staging: Path, watch: Any) -> Path:
    """Train on n_devices ranks of this host under torchrun; the staging checkpoint's path, or the ranks' error."""
    from diffusion_core.parallel import devices_here

    wanted, here = record["hyperparameters"]["n_devices"], devices_here(settings.device)
    if wanted > here:
        kind = "GPUs" if _cuda(settings.device) else "CPU cores"
        raise ConfigError(f"the job asks for {wanted} devices; this worker's host has {here} {kind}", "n_devices")
    folder = staging.parent
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("error.*.json"):
        old.unlink()
    command = [sys.executable, "-c", _LAUNCH, "--standalone", f"--nproc_per_node={wanted}"]
    command += ["-m", "services.trainer.ranks", record["id"], rq_id, str(staging)]
    threads = str(max(1, (os.cpu_count() or 1) // wanted))
    with (folder / "ranks.log").open("ab") as out:
        proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)},
            start_new_session=True,
        )
    _wait(proc, watch)
    if proc.returncode == 0:
        return staging
    raise _ranks_error(folder, proc.returncode)


# torchrun in a process that dies with the horse; sys.argv[1:] are torchrun's arguments.
_LAUNCH = (
    "import sys; from services.trainer.ranks import die_with_parent; die_with_parent(); "
    "from torch.distributed.run import main; sys.argv[0] = 'torchrun'; main()"
)


def _cuda(device: str) -> bool:
    from diffusion_core.model import pick_device

    return pick_device(device).type == "cuda"


def _wait(proc: subprocess.Popen, watch: Any) -> None:
    """Until torchrun ends. A dead worker ends the ranks at once; a cancel gives them a grace to stop."""
    cancelled_at = None
    while proc.poll() is None:
        time.sleep(CANCEL_POLL_S / 2)
        if watch.should_stop():
            if watch.orphaned:
                _end(proc, signal.SIGTERM)
            cancelled_at = cancelled_at or time.monotonic()
            if time.monotonic() - cancelled_at > CANCEL_GRACE_S:
                _end(proc, signal.SIGKILL)
    proc.wait()


def _end(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _ranks_error(folder: Path, code: int) -> Exception:
    """The lowest rank's recorded error, as the exception a one-device job would have raised."""
    from diffusion_core.training import TrainingCancelled

    recorded = sorted(folder.glob("error.*.json"), key=lambda p: int(p.stem.split(".")[1]))
    if not recorded:
        tail = (folder / "ranks.log").read_text(errors="replace").strip().splitlines()[-1:] if code else []
        return RuntimeError(f"the training ranks stopped with exit code {code}: {' '.join(tail)}")
    error = json.loads(recorded[0].read_text())
    if error["type"] == "TrainingCancelled":
        return TrainingCancelled(error["message"])
    kind = getattr(errors, error["type"], None)
    if isinstance(kind, type) and issubclass(kind, UnmaskError):
        return kind(error["message"], error["param"])
    return RuntimeError(f"{error['type']}: {error['message']}")


def _rank(job_id: str, rq_id: str, staging: Path) -> int:
    """One rank's part: train, rank 0 reporting; any failure recorded for the horse."""
    from diffusion_core.runtime import keep_freed_memory, quiet_transformers
    from diffusion_core.training import train

    from .jobs import Watch, job_config, report

    rank = int(os.environ["RANK"])
    settings = WorkerSettings()
    redis = Redis.from_url(settings.redis_url)
    quiet_transformers()
    keep_freed_memory()
    try:
        record = jobs.get(redis, job_id)
        assert record is not None, f"job {job_id} has no record"
        config = job_config(record, Store(settings.state_dir, redis), settings, staging)
        rq_job = Job.fetch(rq_id, connection=redis, serializer=jobs.SERIALIZER) if rank == 0 else None
        watch = Watch(redis, job_id, settings.heartbeat_ttl_s)  # not entered: the horse beats
        on_progress = (lambda p: report(redis, job_id, p, rq_job)) if rank == 0 else None
        train(config, on_progress=on_progress, should_stop=watch.should_stop, show_progress=False)
    except BaseException as exc:
        if not isinstance(exc, UnmaskError):
            log.exception("rank %d of job %s failed", rank, job_id)
        param = exc.param if isinstance(exc, UnmaskError) else None
        error = {"type": type(exc).__name__, "message": str(exc), "param": param}
        (staging.parent / f"error.{rank}.json").write_text(json.dumps(error))
        return 3
    return 0


if __name__ == "__main__":
    die_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(_rank(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
