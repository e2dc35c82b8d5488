"""Running models: the runner protocol, the runner process, its handle, the pool, the supervisor.

``protocol`` (the TypedDict messages and what callers pass in), ``runner`` (the child process,
``python -m inference.runtime.runner``), ``process`` (the parent's handle on one runner),
``pool`` (queues, memory budget, eviction), ``supervisor`` (the async API Django calls) and
``trial`` (the install path's short use of a runner). Import from the modules themselves.
"""
