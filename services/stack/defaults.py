"""The stack's timing constants, in one place (settings a deployment changes are in config.py)."""

REDIS_START_TIMEOUT_S = 10.0  # the private Redis must answer within this
READY_TIMEOUT_S = 600.0  # the API must be ready within this (the first start may download a model)
STOP_TIMEOUT_S = 6.0  # a part gets this long to exit after SIGTERM, then SIGKILL
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # pause before restart n of a part that keeps dying
STABLE_S = 60.0  # a part that ran this long starts its backoff afresh
API_MAX_CRASHES = 5  # the API dying this often, each within STABLE_S of its start, stops the stack
WORKER_STOP_S = 1.0  # a worker gets this long between its two SIGTERMs (the second stops a running job)
OUTPUT_DRAIN_S = 2.0  # a stopped part's output is relayed for at most this long after it exits
READY_POLL_S = 0.25  # start-up asks the API's /ready this often
READY_REQUEST_S = 2.0  # and waits this long for each answer
WATCH_EVERY_S = 0.5  # the supervisor looks for dead parts this often
REDIS_PING_S = 0.5  # start-up's ping of the private Redis waits this long for a connection
REDIS_POLL_S = 0.05  # and pings this often until it answers
REDIS_STOP_S = 10.0  # the private Redis gets this long to write its data and exit
