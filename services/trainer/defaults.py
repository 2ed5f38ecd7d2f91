"""The trainer's timing constants, in one place (settings a deployment changes are in config.py)."""

CANCEL_POLL_S = 0.5  # how often a running job asks Redis whether it was cancelled
CANCEL_GRACE_S = 30.0  # a multi-device job's ranks get this long to stop after a cancel before they are killed
BEATS_PER_TTL = 3  # heartbeats per UNMASK_HEARTBEAT_TTL_S, so one late beat does not mark a job abandoned
BEAT_STOP_S = 5.0  # a finished job waits this long for its heartbeat thread
