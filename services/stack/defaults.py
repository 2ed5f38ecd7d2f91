"""The stack's timing constants, in one place (settings a deployment changes are in config.py)."""

REDIS_START_TIMEOUT_S = 10.0  # the private Redis must answer within this
READY_TIMEOUT_S = 600.0  # the API must be ready within this (the first start may download a model)
STOP_TIMEOUT_S = 6.0  # a part gets this long to exit after SIGTERM, then SIGKILL
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # pause before restart n of a part that keeps dying
STABLE_S = 60.0  # a part that ran this long starts its backoff afresh
API_MAX_CRASHES = 5  # the API dying this often, each within STABLE_S of its start, stops the stack
