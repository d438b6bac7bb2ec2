"""SPIN (Kolotouros et al. 2019): HMR's regressor trained with SMPLify fitting in the loop.

From configs/h36m_hmr.py with SPIN's choices: 6D rotation output, a 3-iteration regressor without
an activation between its 1024-unit layers, no adversarial prior; losses as SPIN weighs them
(2D and 3D keypoints 5, pose 1, betas 0.001, no vertex term); Adam at 3e-5, batch 64. Every step,
SMPLify (config.fitting: 100 + 100 Adam steps, SPIN's weights) refits each sample's 2D keypoints
from the regressor's estimate; the best fit per sample is kept (train.fit_in_loop) and supervises
the samples without SMPL labels when its reprojection loss is below train.fit_threshold (SPIN's 100
on 224 px crops). The fit uses the dataset's own 2D keypoints (its joint set: smpl24, or spin24
through data.joint_regressor). Start from ImageNet weights (model.pretrained_encoder) and SPIN's
mean parameters (model.mean_params=.../smpl_mean_params.npz), or fine-tune an imported SPIN
checkpoint (model.init_from).

Run:
    python -m hmr_jax.train --config=configs/spin.py --workdir=workdirs/spin \
        --config.data.dir=/data/mixed --config.data.joint_regressor=/data/J_spin24.npy \
        --config.model.pretrained_encoder=/data/resnet50_imagenet.npz
"""

from hmr_jax import config_files


def get_config(arg=None):
    del arg
    c = config_files.sibling(__file__, "h36m_hmr.py")
    c.data.batch_size = 64
    c.data.resample_ratio = 1.0
    c.model.rot_repr = "6d"
    c.model.n_iter = 3
    c.model.hidden_activation = "none"
    c.loss_weights.vertex_l2 = 0.0
    c.loss_weights.vertex_l1 = 0.0
    c.loss_weights.beta = 0.001
    c.loss_weights.pose = 1.0
    c.loss_weights.joints_3d = 5.0
    c.loss_weights.joints_2d = 5.0
    c.loss_weights.adversarial = 0.0
    c.adversarial.disc_loss_weight = 0.0
    c.optim.gen.learning_rate = 3e-5
    c.train.fit_in_loop = True
    c.train.fit_threshold = 100.0
    return c
