"""Where a run executes: the devices JAX sees and their peaks, hosts of a multi-host
job, device meshes and sharding, and the ``devices`` check (doctor)."""
