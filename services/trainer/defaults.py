"""The trainer's timing constants, in one place (settings a deployment changes are in config.py)."""

CANCEL_POLL_S = 0.5  # how often a running job asks Redis whether it was cancelled
