"""Quickstart: HMR on a synthetic dataset, small enough to train on a 2-core laptop CPU.

On the first run the synthetic dataset (procedural body, rendered crops, SPIN-layout
annotations; 6,000 samples rendered at 128 px, every one a new pose, subject, camera and
background; the training crops are 96 px) is generated beside the workdir (or into
--config.data.dir); later runs reuse it. Bodies start within
+-20 deg of facing the camera (data.synthetic.yaw_range_deg; the generator's default is +-180 deg,
where the global orientation dominated the error of so short a run). ResNet-18 at width 16 on
96 px crops with the 2D keypoint head (48 channels, 24 x 24 heatmaps, 2 px targets) and the
lifting pass (hmr_jax/models/keypoint_head.py; the regressor reads the head's keypoints and is also
taught on the true ones each step), a 3-iteration regressor (2 x 512, dropout 0.2) with the 6D
rotation output and NO adversarial prior (no discriminator, so cheaper steps); the vertex terms on
every 4th vertex; a 3D-joint term after the similarity alignment (joints_3d_pa); AdamW (learning
rate 3e-3 after 100 warm-up steps, decayed linearly to 1 % at the run's end, a third of that for
the regressor; weight decay 0.3).
Goal: within about 15 minutes on 2 CPU cores, MPJPE and PA-MPJPE on the synthetic validation split
at most half of those of predicting the training set's mean pose and shape. The run's length is
set by train.time_budget_min (14 minutes from the process's start, generation included). Current
figures: the README's Results; why each setting: docs/training.md (the quickstart configuration).

Run:
    python -m hmr_jax.train --config=configs/quickstart.py --workdir=workdirs/quickstart
"""

from hmr_jax import config_files


def get_config(arg=None):
    del arg
    c = config_files.sibling(__file__, "h36m_hmr.py")
    c.data.dir = ""  # '' = <workdir>/../synthetic_<img_size>px_<num>
    c.data.annotations = "annotations.npz"
    c.data.image_root = ""
    c.data.train_split = "train"
    c.data.val_split = "validation"
    c.data.val_fraction = 0.1
    c.data.resample_ratio = 1.0
    c.data.img_size = 96
    c.data.batch_size = 32
    c.data.eval_batch_size = 64
    c.data.synthetic.num = 6000
    c.data.synthetic.frames_per_sequence = 1  # every image a new pose, camera and background
    c.data.synthetic.seed = 0
    c.data.synthetic.yaw_range_deg = 20.0  # bodies roughly face the camera (photo-like)
    c.data.synthetic.render_size = 128  # 96 px crops cut from 128 px renders (sharper than upsampled)
    c.data.cache_decoded_mb = 512.0  # the 5,400 training images decoded once (316 MB; docs/data.md)
    c.data.augment.rot_std_deg = 10.0
    c.data.augment.rot_max_deg = 20.0
    c.data.augment.scale_std = 0.1
    c.data.augment.scale_min = 0.9
    c.data.augment.scale_max = 1.1

    c.model.depth = 18
    c.model.width = 16
    c.model.hidden = (512, 512)  # the regressor is also the lifter: wider lifts better
    c.model.dropout = 0.2
    c.model.rot_repr = "6d"
    c.model.n_iter = 3
    c.model.disc.pose_hidden = (256, 256)
    c.model.keypoint_head.enabled = True  # 2D keypoints into the regressor (hmr_jax/models/keypoint_head.py)
    c.model.keypoint_head.input_scale = 8.0  # keypoints x8 into the regressor (HMR's docstring)
    c.model.keypoint_head.stride = 4  # 24 x 24 heatmaps (the 3x3 mix stays at stride 8: cheap)
    # 48 channels: as good as 64 at equal steps, for a ~6 % cheaper step.
    c.model.keypoint_head.channels = 48

    c.loss_weights.adversarial = 0.0  # no discriminator: too slow to pay off in a short CPU run
    c.adversarial.disc_loss_weight = 0.0
    c.loss_weights.keypoints_2d = 5.0  # the head's 2D L1, weighted as joints_2d
    c.loss_weights.keypoint_heatmap = 0.5  # single-peaked heatmaps: KL to a Gaussian at each joint,
    c.train.heatmap_sigma_px = 2.0  # of 2 px std (half a cell of the 24 x 24 maps on 96 px crops)
    c.loss_weights.joints_3d_pa = 5.0  # articulation after the similarity alignment (PA-MPJPE's), as joints_3d
    c.loss_weights.lift = 2.0  # the regressor also lifts GT 2D keypoints (+2 px noise) each step
    # AdamW's decoupled weight decay narrows the gap between the training split and unseen subjects.
    c.optim.gen.name = "adamw"
    c.optim.gen.weight_decay = 0.3
    # A linear decay to 1 % of the rate at the run's end; the encoder and the head at 3e-3, the
    # regressor held at 1e-3 (below): better than a cosine, 2e-3 or 4e-3 on short runs.
    c.optim.gen.learning_rate = 3e-3
    c.optim.gen.schedule = "warmup_linear"
    c.optim.gen.warmup_steps = 100
    c.optim.gen.clip_norm = 10.0
    # The regressor (the lifter, 2 x 512) at a third of the encoder's and head's rate.
    c.optim.gen.lr_scale.regressor = 1 / 3
    c.optim.disc.learning_rate = 1e-4

    c.train.vertex_loss_stride = 4  # vertex terms on every 4th vertex: ~1.2x cheaper steps
    # The run's length: as many steps as fit in 14 minutes from the start of the process (data
    # generation and compilation included; time_budget.BudgetPlanner), at most num_steps. A slow 2-core
    # machine gets ~3,100, a fast one ~5,500-6,000. --config.train.time_budget_min=0 and num_steps=N
    # repeat a run of N steps exactly (the log and config.json of a run name its N).
    c.train.time_budget_min = 14.0
    c.train.num_steps = 10_000
    c.train.log_every = 50
    c.train.eval_every = 1450
    c.train.checkpoint_every = 1450
    c.train.image_every = 1450
    c.train.num_images = 8
    c.early_stopping.patience = 0  # off: the run is short
    return c
