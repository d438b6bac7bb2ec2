"""Table 1 of the report, Row 4: 'SMPL with iterative regressor, Adam, resnet50': the 5-iteration error-feedback regressor
(2 x 1024, dropout 0.5) on ResNet-50, augmentation, no resampling, no adversarial prior.

Human3.6M data as in configs/h36m_hmr.py (see there for the data files).

Run:
    python -m hmr_jax.train --config=configs/table1_iterative.py --workdir=workdirs/table1_iterative \
        --config.data.dir=/data/h36m --config.data.joint_regressor=/data/J_spin24.npy
"""

from hmr_jax import config_files


def get_config(arg=None):
    del arg
    c = config_files.sibling(__file__, "h36m_hmr.py")
    c.data.resample_ratio = 1.0
    c.loss_weights.adversarial = 0.0
    c.adversarial.disc_loss_weight = 0.0
    return c
