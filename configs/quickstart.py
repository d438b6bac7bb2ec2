"""Quickstart: HMR on a synthetic dataset, small enough to train on a 2-core laptop CPU.

On the first run the synthetic dataset (procedural body, rendered crops, SPIN-layout
annotations) is generated beside the workdir (or into --config.data.dir); later runs reuse it.
ResNet-18 at width 16 on 64 px crops, a 3-iteration regressor and the adversarial prior.
Goal: within about 15 minutes on 2 CPU cores, MPJPE and PA-MPJPE on the synthetic validation
split at most half of those of predicting the mean pose and shape.

Run:
    python -m hmr_jax.train --config=configs/quickstart.py --workdir=workdirs/quickstart
"""

import importlib.util
import os


def _base():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "h36m_hmr.py")
    spec = importlib.util.spec_from_file_location("hmr_jax_configs_h36m_hmr", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config(arg=None):
    del arg
    c = _base()
    c.data.dir = ""  # '' = <workdir>/../synthetic_<img_size>px_<num>
    c.data.annotations = "annotations.npz"
    c.data.image_root = ""
    c.data.train_split = "train"
    c.data.val_split = "validation"
    c.data.val_fraction = 0.1
    c.data.resample_ratio = 1.0
    c.data.img_size = 64
    c.data.batch_size = 32
    c.data.eval_batch_size = 64
    c.data.synthetic.num = 3000
    c.data.synthetic.seed = 0
    c.data.augment.rot_std_deg = 10.0
    c.data.augment.rot_max_deg = 20.0
    c.data.augment.scale_std = 0.1
    c.data.augment.scale_min = 0.9
    c.data.augment.scale_max = 1.1

    c.model.depth = 18
    c.model.width = 16
    c.model.hidden = (256, 256)
    c.model.dropout = 0.1
    c.model.n_iter = 3
    c.model.disc.pose_hidden = (256, 256)

    c.loss_weights.adversarial = 0.01
    c.optim.gen.learning_rate = 1e-3
    c.optim.gen.schedule = "warmup_cosine"
    c.optim.gen.warmup_steps = 100
    c.optim.gen.clip_norm = 10.0
    c.optim.disc.learning_rate = 1e-4

    c.train.num_steps = 3000
    c.train.log_every = 50
    c.train.eval_every = 500
    c.train.checkpoint_every = 500
    c.train.image_every = 500
    c.train.num_images = 8
    c.early_stopping.patience = 0  # off: the run is short
    return c
