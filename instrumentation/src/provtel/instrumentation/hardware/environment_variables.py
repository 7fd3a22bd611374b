"""Environment variables read by provtel's hardware instrumentors.

``opentelemetry-instrument`` turns each into a command-line flag once this module is registered
under the ``opentelemetry_environment_variables`` entry-point group:
``OTEL_PYTHON_PROVTEL_PUE`` becomes ``--provtel_pue``.
"""

OTEL_PYTHON_PROVTEL_CARBON_REGION = "OTEL_PYTHON_PROVTEL_CARBON_REGION"
"""
.. envvar:: OTEL_PYTHON_PROVTEL_CARBON_REGION

Where the electricity comes from, to choose a grid carbon intensity from the table shipped with
provtel (``grid_intensity.csv``): an ISO 3166 country code (``FR``, ``DE``, ``US``) or a cloud
region written ``<provider>:<region>`` (``aws:eu-west-3``, ``gcp:europe-west4``,
``azure:westeurope``). Case-insensitive. Default: ``WORLD``, the world average, recorded as such.
"""

OTEL_PYTHON_PROVTEL_CARBON_INTENSITY = "OTEL_PYTHON_PROVTEL_CARBON_INTENSITY"
"""
.. envvar:: OTEL_PYTHON_PROVTEL_CARBON_INTENSITY

Grid carbon intensity in gCO2eq/kWh, overriding the table (for a supplier's figure or a live
value). Recorded with the source ``configured (OTEL_PYTHON_PROVTEL_CARBON_INTENSITY)``.
"""

OTEL_PYTHON_PROVTEL_PUE = "OTEL_PYTHON_PROVTEL_PUE"
"""
.. envvar:: OTEL_PYTHON_PROVTEL_PUE

Power usage effectiveness of the data centre (>= 1). Default: ``1.0``, i.e. the energy of the
measured devices only.
"""

OTEL_PYTHON_PROVTEL_HW_SAMPLE_INTERVAL = "OTEL_PYTHON_PROVTEL_HW_SAMPLE_INTERVAL"
"""
.. envvar:: OTEL_PYTHON_PROVTEL_HW_SAMPLE_INTERVAL

Seconds between two reads of the energy counters by the hardware sampling thread, which keeps
the cumulative totals right across counter wrap-around (RAPL) and resets (NVML). Only started
when a counter is available. ``0`` disables the thread (the counters are then read only at
metric collections and activity boundaries). Default: ``5``.
"""

OTEL_PYTHON_PROVTEL_GPU_PROCESS_INTERVAL = "OTEL_PYTHON_PROVTEL_GPU_PROCESS_INTERVAL"
"""
.. envvar:: OTEL_PYTHON_PROVTEL_GPU_PROCESS_INTERVAL

Minimum seconds between two enumerations of the processes on the GPUs (for
``ml.process.gpu.memory.usage``), which take the driver's lock. Default: ``30``.
"""

OTEL_PYTHON_PROVTEL_RAPL_ROOT = "OTEL_PYTHON_PROVTEL_RAPL_ROOT"
"""
.. envvar:: OTEL_PYTHON_PROVTEL_RAPL_ROOT

The powercap directory that holds the RAPL zones, e.g. a read-only bind mount in a container.
Default: ``/sys/class/powercap``.
"""
