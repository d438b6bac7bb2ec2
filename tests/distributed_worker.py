"""Run a few training steps of a config on a fixed global batch; write metrics as JSON.

Used by test_distributed.py in subprocesses (device count / process count set from outside):
    python tests/distributed_worker.py CONFIG DATA_DIR OUT_JSON [PROCESS_ID NUM_PROCESSES PORT]
CONFIG is the tests' tiny config (data.dir set to DATA_DIR); DATA_DIR/batch.npz holds the global
batch (data.batch_size samples), of which each process trains on its slice.
"""

import json
import sys

NUM_STEPS = 3


def main(argv):
    config_path, data_dir, out = argv[1], argv[2], argv[3]
    import jax  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top

    if len(argv) > 4:
        pid, nproc, port = int(argv[4]), int(argv[5]), int(argv[6])
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)

    from hmr_jax import body_model, config_files, sharding, smpl, steps  # pylint: disable=g-import-not-at-top
    from hmr_jax import state as state_lib

    config = config_files.load(config_path)
    config.data.dir = data_dir
    with np.load(f"{data_dir}/batch.npz") as f:
        batch = {k: f[k] for k in f.files}
    n, i = jax.process_count(), jax.process_index()
    per_host = config.data.batch_size // n
    local = {k: v[i * per_host : (i + 1) * per_host] for k, v in batch.items()}  # this host's slice
    mesh = sharding.make_mesh()
    with jax.set_mesh(mesh):
        models = state_lib.make_static_parts(config)
        state = state_lib.create_sharded_state(config, models, mesh)
        smpl_model = sharding.replicate(smpl.load(body_model.default_body_model_path()), mesh)
        step = jax.jit(steps.make_train_step(config, models, "smpl24"), donate_argnums=(0,))
        history = []
        for _ in range(NUM_STEPS):
            state, metrics = step(state, sharding.to_global(local, mesh), smpl_model, None, None)
            history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
        params = jax.tree.leaves(state.gen_params)
        checksum = float(sum(np.abs(np.asarray(jax.device_get(p), np.float64)).sum() for p in params))
    with open(out, "w") as f:
        json.dump({"devices": jax.device_count(), "processes": n, "metrics": history, "checksum": checksum}, f)


if __name__ == "__main__":
    main(sys.argv)
