"""Fitting in the loop on the synthetic set: what SMPLify's fits add when most samples have only
2D keypoints (as in-the-wild data beside a small 3D-labelled set).

The quickstart (configs/quickstart.py) with the SMPL parameters and 3D joints of 90% of the training
samples hidden (data.hide_labels_fraction 0.9: those samples keep their 2D keypoints only) and
SPIN's fitting in the loop on (train.fit_in_loop): every step SMPLify refits each sample's 24 2D
keypoints from the regressor's estimate, and the best fit per sample supervises the hidden ones
(pose, betas, vertices) when its reprojection loss is below train.fit_threshold (SPIN's 100; the
fit runs in 224 px crop units whatever the crop size). A fixed number of steps, so that the run
without fitting is the same length:

    python -m hmr_jax.train --config=configs/fit_in_loop_synthetic.py --workdir=workdirs/fit_in_loop
    python -m hmr_jax.train --config=configs/fit_in_loop_synthetic.py --workdir=workdirs/no_fit_in_loop \
        --config.train.fit_in_loop=False

The README's Results give both runs' validation errors.
"""

from hmr_jax import config_files


def get_config(arg=None):
    del arg
    c = config_files.sibling(__file__, "quickstart.py")
    c.data.hide_labels_fraction = 0.9
    c.train.fit_in_loop = True
    c.train.fit_threshold = 100.0
    c.train.time_budget_min = 0.0
    c.train.num_steps = 4000
    c.train.eval_every = 1000
    c.train.checkpoint_every = 1000
    c.train.image_every = 2000
    return c
