"""Table 1 of the report: one config per row, named by the argument after the colon.

Every row is configs/h36m_hmr.py (Human3.6M; see there for the data files) with these changes:

  linear_default  Row 1, 'SMPL, SGD, default backbone': a linear head (one linear layer from the
                  pooled features to the SMPL parameters, no iterations) on a small encoder
                  (ResNet-18 at width 16, standing in for the course's default encoder), SGD,
                  no augmentation
  resnet18        Row 2, 'SMPL, SGD, resnet18': linear head on ResNet-18 (width 64), SGD, image
                  augmentation (the report's 'pose augmentation: false' has no equivalent here:
                  rotations and flips always transform image, keypoints and pose together)
  resnet50        Row 3, 'SMPL, Adam, resnet50': linear head on ResNet-50, Adam, image and pose
                  augmentation
  iterative       Row 4, 'SMPL with iterative regressor, Adam, resnet50': the 5-iteration
                  error-feedback regressor (2 x 1024, dropout 0.5) on ResNet-50
  adversarial     + the adversarial prior (25 discriminators)
  resample        Rows 5-6, 'SMPL with GAN regressor, Adam, resnet50, resample 0.5': the
                  adversarial prior and every 2nd frame kept; identical to configs/h36m_hmr.py

All rows but `resample` keep every frame (no resampling); all rows before `adversarial` train
without the adversarial prior.

Run (ROW one of the names above):
    python -m hmr_jax.train --config=configs/table1.py:ROW --workdir=workdirs/table1_ROW \
        --config.data.dir=/data/h36m --config.data.joint_regressor=/data/J_spin24.npy
"""

from hmr_jax import config_files

ROWS = ("linear_default", "resnet18", "resnet50", "iterative", "adversarial", "resample")


def get_config(arg=None):
    if arg not in ROWS:
        raise ValueError(f"configs/table1.py: expected a row name after the colon, one of {ROWS}, found {arg!r}")
    c = config_files.sibling(__file__, "h36m_hmr.py")
    if arg == "resample":
        return c
    c.data.resample_ratio = 1.0
    if arg == "adversarial":
        return c
    c.loss_weights.adversarial = 0.0
    c.adversarial.disc_loss_weight = 0.0
    if arg == "iterative":
        return c
    # Linear head: one linear layer, no iterations.
    c.model.hidden = ()
    c.model.n_iter = 1
    c.model.dropout = 0.0
    if arg == "resnet50":
        return c
    c.model.depth = 18
    c.optim.gen.name = "sgd"
    c.optim.gen.learning_rate = 1e-3
    c.optim.gen.momentum = 0.9
    if arg == "linear_default":
        c.model.width = 16
        c.data.augment.enabled = False
    return c
