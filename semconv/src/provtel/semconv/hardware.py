"""Hardware, energy and carbon names (issue 4).

OpenTelemetry's hardware (``hw.*``), process (``process.*``) and system (``system.*``) conventions
are used for every reading they cover; they are declared here too so that the README lists what
provtel actually emits. ``ml.*`` names cover what OpenTelemetry has no convention for: energy
per activity, carbon, the hardware description of a run, the GPU SM clock and the GPU memory of
one process.

Device keys: ``<device>`` is ``<hw.type>.<index>``, e.g. ``gpu.0`` (the job's first GPU, the same
ordinal as ``cuda:0``), ``cpu.0`` (CPU package 0) and ``memory.0`` (the DRAM of package 0).
"""

from __future__ import annotations

from provtel.semconv._registry import attribute, metric

# -- OpenTelemetry hardware attributes (on metric points) ----------------------------------------
HW_ID = attribute(
    "hw.id",
    "string",
    "",
    "OpenTelemetry `hw.id`: GPU UUID (`GPU-…`, `MIG-…`), RAPL zone (`intel-rapl:0`).",
)
HW_TYPE = attribute(
    "hw.type", "string", "", "OpenTelemetry `hw.type`: `gpu`, `cpu`, `memory`, `temperature`."
)
HW_NAME = attribute("hw.name", "string", "", "OpenTelemetry `hw.name`: RAPL zone name.")
HW_PARENT = attribute(
    "hw.parent",
    "string",
    "",
    "OpenTelemetry `hw.parent`: the physical GPU of a MIG slice or of a temperature sensor.",
)
HW_STATE = attribute(
    "hw.state", "string", "", "OpenTelemetry `hw.state` on `hw.status`: `ok` or `failed`."
)
HW_GPU_TASK = attribute(
    "hw.gpu.task", "string", "", "OpenTelemetry `hw.gpu.task` on `hw.gpu.utilization`: `general`."
)
HW_SENSOR_LOCATION = attribute(
    "hw.sensor_location", "string", "", "OpenTelemetry `hw.sensor_location`: `gpu`."
)
CPU_MODE = attribute(
    "cpu.mode",
    "string",
    "",
    "OpenTelemetry `cpu.mode`: `user`, `system`, `nice`, `idle`, `iowait`, `interrupt`, `steal`.",
)
SYSTEM_MEMORY_STATE = attribute(
    "system.memory.state",
    "string",
    "",
    "OpenTelemetry `system.memory.state`: `used`, `free`, `cached`, `buffers`.",
)

# -- hardware description of the run (run span) ---------------------------------------------------
HOST_CPU_MODEL_NAME = attribute(
    "host.cpu.model.name", "string", "", "OpenTelemetry `host.cpu.model.name`: the CPU model."
)
ML_HOST_CPU_LOGICAL_COUNT = attribute(
    "ml.host.cpu.logical_count", "int", "{cpu}", "Logical CPUs of the host."
)
ML_HOST_CPU_PHYSICAL_COUNT = attribute(
    "ml.host.cpu.physical_count", "int", "{cpu}", "Physical CPU cores of the host."
)
ML_HOST_CPU_AVAILABLE = attribute(
    "ml.host.cpu.available", "int", "{cpu}", "Logical CPUs the process may run on (affinity)."
)
ML_HOST_MEMORY_SIZE = attribute("ml.host.memory.size", "int", "By", "Physical memory of the host.")
ML_HW_GPU_COUNT = attribute(
    "ml.hw.gpu.count", "int", "{gpu}", "GPUs the job uses (after `CUDA_VISIBLE_DEVICES`)."
)
ML_HW_GPU_ID = attribute(
    "ml.hw.gpu.<index>.id", "string", "", "UUID of the job's GPU `<index>` (its `hw.id`)."
)
ML_HW_GPU_MODEL = attribute("ml.hw.gpu.<index>.model", "string", "", "Model of GPU `<index>`.")
ML_HW_GPU_VENDOR = attribute("ml.hw.gpu.<index>.vendor", "string", "", "Vendor of GPU `<index>`.")
ML_HW_GPU_DRIVER = attribute(
    "ml.hw.gpu.<index>.driver_version", "string", "", "Driver version of GPU `<index>`."
)
ML_HW_GPU_MEMORY_LIMIT = attribute(
    "ml.hw.gpu.<index>.memory.limit", "int", "By", "Memory of GPU `<index>` (of the MIG slice)."
)
ML_HW_GPU_PARENT = attribute(
    "ml.hw.gpu.<index>.parent",
    "string",
    "",
    "UUID of the physical GPU when GPU `<index>` is a MIG slice.",
)
ML_HW_UNAVAILABLE = attribute(
    "ml.hw.unavailable",
    "string[]",
    "",
    "Readings that are not available, each `<reading> <device>: <reason>`, reported once.",
)

# -- energy per activity (run, epoch, evaluation and step-block spans) ----------------------------
ML_ENERGY_DEVICE = attribute(
    "ml.energy.<device>",
    "double",
    "J",
    "Energy one device used during the activity: difference of its cumulative counter.",
)
ML_ENERGY_TOTAL = attribute(
    "ml.energy.total", "double", "J", "Sum of `ml.energy.<device>` over the measured devices."
)
ML_ENERGY_METHOD = attribute(
    "ml.energy.method",
    "string",
    "",
    "How the energy was measured: `counter:nvml`, `counter:amdsmi`, `counter:rapl` "
    "(comma-separated), or `unavailable`.",
)
ML_ENERGY_STATUS = attribute(
    "ml.energy.<component>.status",
    "string",
    "",
    "Measurement of a kind of device (`gpu`, `cpu`, `memory`) or one device (`gpu.1`): "
    "`counter:<source>`, `unavailable: <reason>`, `partial: <reason>` or `shared: <reason>`.",
)

# -- carbon (run span) ----------------------------------------------------------------------------
ML_CARBON_EMISSIONS = attribute(
    "ml.carbon.emissions",
    "double",
    "g{CO2eq}",
    "Emissions of the run: `ml.energy.total` (kWh) x `ml.carbon.intensity` x `ml.carbon.pue`.",
)
ML_CARBON_INTENSITY = attribute(
    "ml.carbon.intensity", "double", "g{CO2eq}/kWh", "Grid carbon intensity used."
)
ML_CARBON_INTENSITY_SOURCE = attribute(
    "ml.carbon.intensity.source", "string", "", "Where the intensity comes from."
)
ML_CARBON_INTENSITY_YEAR = attribute(
    "ml.carbon.intensity.year", "int", "", "Year the intensity describes."
)
ML_CARBON_REGION = attribute(
    "ml.carbon.region", "string", "", "Country or cloud region of the intensity (`FR`, `aws:…`)."
)
ML_CARBON_PUE = attribute(
    "ml.carbon.pue", "double", "1", "Power usage effectiveness applied (1.0: IT energy only)."
)
ML_CARBON_METHOD = attribute("ml.carbon.method", "string", "", "How the emissions were computed.")
ML_CARBON_STATUS = attribute(
    "ml.carbon.status",
    "string",
    "",
    "`unavailable: <reason>` when no emissions could be computed.",
)

# -- metrics --------------------------------------------------------------------------------------
HW_ENERGY = metric(
    "hw.energy", "counter", "J", "OpenTelemetry: energy used by a GPU, CPU package or DRAM."
)
HW_POWER = metric("hw.power", "gauge", "W", "OpenTelemetry: power drawn by a GPU.")
HW_GPU_UTILIZATION = metric(
    "hw.gpu.utilization", "gauge", "1", "OpenTelemetry: share of time a kernel was running."
)
HW_GPU_MEMORY_USAGE = metric(
    "hw.gpu.memory.usage", "updowncounter", "By", "OpenTelemetry: GPU memory in use."
)
HW_GPU_MEMORY_LIMIT = metric(
    "hw.gpu.memory.limit", "updowncounter", "By", "OpenTelemetry: GPU memory size."
)
HW_TEMPERATURE = metric("hw.temperature", "gauge", "Cel", "OpenTelemetry: GPU temperature.")
HW_STATUS = metric(
    "hw.status", "updowncounter", "1", "OpenTelemetry: 1 for the GPU's state (`ok`, `failed`)."
)
ML_HW_GPU_CLOCK_SPEED = metric(
    "ml.hw.gpu.clock.speed", "gauge", "Hz", "SM clock of a GPU (no OpenTelemetry convention)."
)
ML_PROCESS_GPU_MEMORY_USAGE = metric(
    "ml.process.gpu.memory.usage",
    "updowncounter",
    "By",
    "GPU memory used by this process, by `hw.id` (no OpenTelemetry convention).",
)
PROCESS_CPU_TIME = metric(
    "process.cpu.time", "counter", "s", "OpenTelemetry: CPU time of this process, by `cpu.mode`."
)
PROCESS_CPU_UTILIZATION = metric(
    "process.cpu.utilization",
    "gauge",
    "1",
    "OpenTelemetry: CPU time / (elapsed time x CPUs available) since the last collection.",
)
PROCESS_MEMORY_USAGE = metric(
    "process.memory.usage", "updowncounter", "By", "OpenTelemetry: resident memory (RSS)."
)
PROCESS_MEMORY_VIRTUAL = metric(
    "process.memory.virtual", "updowncounter", "By", "OpenTelemetry: virtual memory size."
)
PROCESS_THREAD_COUNT = metric(
    "process.thread.count", "updowncounter", "{thread}", "OpenTelemetry: threads of the process."
)
SYSTEM_CPU_UTILIZATION = metric(
    "system.cpu.utilization",
    "gauge",
    "1",
    "OpenTelemetry: share of all CPUs' time in each `cpu.mode` since the last collection.",
)
SYSTEM_MEMORY_USAGE = metric(
    "system.memory.usage", "updowncounter", "By", "OpenTelemetry: memory by `system.memory.state`."
)
SYSTEM_MEMORY_LIMIT = metric(
    "system.memory.limit", "updowncounter", "By", "OpenTelemetry: total physical memory."
)
ML_CARBON_EMISSIONS_METRIC = metric(
    "ml.carbon.emissions",
    "counter",
    "g{CO2eq}",
    "Emissions so far of each device (`hw.id`): its energy x grid intensity x PUE.",
)
