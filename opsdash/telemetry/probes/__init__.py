"""The hardware probe layer: psutil (``host``), NVML (``nvml``), RAPL (``rapl``) and the energy
counters' recent past (``energy``). Framework-free: nothing here imports Django or any other part
of OpsDash (tests/telemetry/test_probes.py walks the package to make sure). The one sampler per
host (``opsdash.telemetry.sampler``) is the only reader of the probes.
"""
