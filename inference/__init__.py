"""Framework-free model handling: file formats, backends, runner processes.

Nothing in this package imports Django or anything under ``opsdash``.
"""
