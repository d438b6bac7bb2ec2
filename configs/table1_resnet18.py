"""Table 1 of the report, Row 2: 'SMPL, SGD, resnet18': linear head on ResNet-18 (width 64), SGD, image augmentation,
no resampling, no adversarial prior. (The report's 'pose augmentation: false' has no
equivalent here: rotations and flips always transform image, keypoints and pose together.)

Human3.6M data as in configs/h36m_hmr.py (see there for the data files).

Run:
    python -m hmr_jax.train --config=configs/table1_resnet18.py --workdir=workdirs/table1_resnet18 \
        --config.data.dir=/data/h36m --config.data.joint_regressor=/data/J_spin24.npy
"""

from hmr_jax import config_files


def get_config(arg=None):
    del arg
    c = config_files.sibling(__file__, "h36m_hmr.py")
    c.model.depth = 18
    c.model.hidden = ()
    c.model.n_iter = 1
    c.model.dropout = 0.0
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
