"""GPU hosts: the NVML inventory (``inventory``) and the slot allocator that pins cells to whole GPUs (``packing``).

Both are stdlib-only: NVML is reached through ``nvidia-ml-py`` imported lazily, and packing is pure logic that a
test drives with a faked inventory.
"""
