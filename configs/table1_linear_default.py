"""Table 1 of the report, Row 1: 'SMPL, SGD, default backbone': a linear head (one linear layer from the pooled features
to the SMPL parameters, no iterations) on a small encoder (ResNet-18 at width 16, standing in for
the course's default encoder), SGD, no augmentation, no resampling, no adversarial prior.

Human3.6M data as in configs/h36m_hmr.py (see there for the data files).

Run:
    python -m hmr_jax.train --config=configs/table1_linear_default.py --workdir=workdirs/table1_linear_default \
        --config.data.dir=/data/h36m --config.data.joint_regressor=/data/J_spin24.npy
"""

from hmr_jax import config_files


def get_config(arg=None):
    del arg
    c = config_files.sibling(__file__, "h36m_hmr.py")
    c.model.depth = 18
    c.model.width = 16
    c.model.hidden = ()
    c.model.n_iter = 1
    c.model.dropout = 0.0
    c.data.augment.enabled = False
    c.data.resample_ratio = 1.0
    c.optim.gen = _sgd(c.optim.gen, 1e-3)
    c.loss_weights.adversarial = 0.0
    c.adversarial.disc_loss_weight = 0.0
    return c


def _sgd(opt, learning_rate):
    opt.name = "sgd"
    opt.learning_rate = learning_rate
    opt.momentum = 0.9
    return opt
