"""Run a few training steps of a config on a fixed global batch; write metrics as JSON.

Used by test_distributed.py in subprocesses (device count / process count set from outside):
    python tests/distributed_worker.py CONFIG DATA_DIR OUT_JSON [PROCESS_ID NUM_PROCESSES PORT]
CONFIG is the tests' tiny config (data.dir set to DATA_DIR); DATA_DIR/batch.npz holds the global
batch (data.batch_size samples), of which each process trains on its slice. With FIT_IN_LOOP=1 in
the environment, SPIN's fitting in the loop is on (a 16-row fit table; half the batch without SMPL
labels, each sample with its own rotation and flip) and the table's checksum is reported too.
"""

import json
import os
import sys

NUM_STEPS = 3


def main(argv):
    config_path, data_dir, out = argv[1], argv[2], argv[3]
    import jax  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top

    if len(argv) > 4:
        pid, nproc, port = int(argv[4]), int(argv[5]), int(argv[6])
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)

    from hmr_jax import body_model, config_files, fitting, sharding, smpl, steps  # pylint: disable=g-import-not-at-top
    from hmr_jax import state as state_lib
    from hmr_jax.fitting import prior  # pylint: disable=g-import-not-at-top

    config = config_files.load(config_path)
    config.data.dir = data_dir
    with np.load(f"{data_dir}/batch.npz") as f:
        batch = {k: f[k] for k in f.files}
    fit_in_loop = os.environ.get("FIT_IN_LOOP") == "1"
    fit_parts = None
    if fit_in_loop:
        b = len(batch["image"])
        config.train.fit_in_loop, config.train.fit_table_size = True, 16
        config.fitting.stage1_steps, config.fitting.stage2_steps = 5, 5
        batch.update(
            index=np.arange(b, dtype=np.int32) * 2,
            rot=np.linspace(-0.3, 0.3, b, dtype=np.float32),
            flip=(np.arange(b) % 2).astype(np.float32),
            has_smpl=(np.arange(b) % 2 == 0).astype(np.float32) * batch["has_smpl"],
        )
    n, i = jax.process_count(), jax.process_index()
    per_host = config.data.batch_size // n
    local = {k: v[i * per_host : (i + 1) * per_host] for k, v in batch.items()}  # this host's slice
    mesh = sharding.make_mesh()
    with jax.set_mesh(mesh):
        models = state_lib.make_static_parts(config)
        state = state_lib.create_sharded_state(config, models, mesh)
        host_model = smpl.load(body_model.default_body_model_path())
        smpl_model = sharding.replicate(host_model, mesh)
        if fit_in_loop:
            body = fitting.keypoint_body(host_model, ("smpl24",))
            fit_parts = sharding.replicate({"body": body, "prior": prior.default_prior()}, mesh)
        step = jax.jit(steps.make_train_step(config, models, "smpl24"), donate_argnums=(0,))
        history = []
        for _ in range(NUM_STEPS):
            state, metrics = step(state, sharding.to_global(local, mesh), smpl_model, None, None, fit_parts)
            history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
        checksum = lambda tree: float(  # noqa: E731
            sum(np.abs(np.asarray(jax.device_get(p), np.float64)).sum() for p in jax.tree.leaves(tree))
        )
        result = {
            "devices": jax.device_count(),
            "processes": n,
            "metrics": history,
            "checksum": checksum(state.gen_params),
        }
        if fit_in_loop:
            loss = np.asarray(jax.device_get(state.fits["loss"]))
            result["fits_checksum"] = checksum({k: v for k, v in state.fits.items() if k != "loss"})
            result["fits_rows"] = np.flatnonzero(np.isfinite(loss)).tolist()
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv)
