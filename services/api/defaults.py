"""The API's timing and buffer constants, in one place (settings a user may change live in config.py)."""

STREAM_BUFFER = 32  # frames held for a slow reader before older intermediate ones are dropped
DISCONNECT_POLL_S = 0.05  # how often a waiting /generate checks that its client is still there
RESULT_TTL_S = 7 * 24 * 3600  # RQ keeps a finished job's result this long (the job record stays)
FAILURE_TTL_S = 30 * 24 * 3600  # and a failed job's traceback this long
SWAP_WAIT_S = 60.0  # activation waits this long for this process to serve the new version
JOB_STREAM_POLL_S = 0.5  # a fine-tune job's SSE stream looks for new events this often
REAP_EVERY_S = 2.0  # running jobs whose worker stopped beating are failed as abandoned this often
UPLOAD_CHUNK = 1 << 20  # bytes read at a time from an uploaded training file
REDIS_SOCKET_TIMEOUT_S = 5.0  # a Redis call waits this long before the route answers 503
REDIS_CONNECT_TIMEOUT_S = 2.0  # and a new connection this long
REDIS_HEALTH_CHECK_S = 10  # an idle connection is pinged before use after this long
RELOAD_STOP_S = 10.0  # shutdown waits this long for the reloader thread
LOADED_POLL_S = 0.1  # the reloader waits for the base model in steps of this
ENGINE_STOP_S = 30.0  # shutdown waits this long for the engine thread to finish its batch
ENGINE_IDLE_S = 0.5  # an engine with nothing to do wakes this often (and returns freed memory once idle)
SWAP_POLL_S = 0.05  # activation checks this often whether this process serves the new version
