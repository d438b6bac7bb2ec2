"""Table 1 of the report, Rows 5-6: 'SMPL with GAN regressor, Adam, resnet50, resample 0.5': the iterative regressor with
the adversarial prior (25 discriminators), every 2nd frame kept. Identical to configs/h36m_hmr.py.

Human3.6M data as in configs/h36m_hmr.py (see there for the data files).

Run:
    python -m hmr_jax.train --config=configs/table1_gan.py --workdir=workdirs/table1_gan \
        --config.data.dir=/data/h36m --config.data.joint_regressor=/data/J_spin24.npy
"""

from hmr_jax import config_files


def get_config(arg=None):
    del arg
    c = config_files.sibling(__file__, "h36m_hmr.py")
    return c
