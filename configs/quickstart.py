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
Goal (issue): within about 15 minutes on 2 CPU cores, MPJPE and PA-MPJPE on the synthetic
validation split at most half of those of predicting the mean pose and shape. The run's length is
set by train.time_budget_min (14 minutes from the process's start, generation included).
Measured (2026-12-02, session 18, fresh clone and workdir, idle 2-core AVX-512 machine): 6,059
steps fit, 13 min 48 s wall with the pip step; MPJPE 85.3 mm vs 189.8 mm for the training-set mean
pose/shape (ratio 0.450), PA-MPJPE 63.9 vs 137.1 mm (ratio 0.466). The slowest machine so far
(session 20, AVX2, ~158 images/s) fit 3,088 steps in 13 min 59 s: 0.488 / 0.498; at fixed 3,000
steps 0.486-0.491 / 0.501-0.505 (two seeds), at 3,300 0.477-0.488 / 0.491-0.500 (three seeds): under
the goal on MPJPE, at its edge on PA-MPJPE on so slow a machine (README, Quickstart results).
Tuning runs and what moved the numbers: docs/quickstart_tuning.md.

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
    c.data.cache_decoded_mb = 512.0  # the 5,400 training images decoded once (316 MB; README, Data)
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
    # 48 channels (was 64): as good at equal steps (3,300 steps, three seeds: PA-MPJPE ratio
    # 0.004-0.006 lower, MPJPE equal) for a ~6 % cheaper step (docs/quickstart_tuning.md, session 15).
    c.model.keypoint_head.channels = 48

    c.loss_weights.adversarial = 0.0  # no discriminator: too slow to pay off in a short CPU run
    c.adversarial.disc_loss_weight = 0.0
    c.loss_weights.keypoints_2d = 5.0  # the head's 2D L1, weighted as joints_2d
    c.loss_weights.keypoint_heatmap = 0.5  # single-peaked heatmaps: KL to a Gaussian at each joint,
    c.train.heatmap_sigma_px = 2.0  # of 2 px std (half a cell of the 24 x 24 maps on 96 px crops)
    c.loss_weights.joints_3d_pa = 5.0  # articulation after the similarity alignment (PA-MPJPE's), as joints_3d
    c.loss_weights.lift = 2.0  # the regressor also lifts GT 2D keypoints (+2 px noise) each step
    # AdamW's decoupled weight decay narrows the gap between the training split and unseen
    # subjects (0.1 and 0.3 both help over a whole run; docs/quickstart_tuning.md, session 10).
    c.optim.gen.name = "adamw"
    c.optim.gen.weight_decay = 0.3
    # A linear decay to 1 % (end_factor): at 3,000 steps (what a slow machine fits) 0.506 / 0.515 at
    # 2e-3 vs 0.522 / 0.531 with 1.5e-3 and a cosine (docs/quickstart_tuning.md, session 13).
    # With the regressor held at 1e-3 (below), the encoder and the head take 3e-3: at 3,300 steps
    # 0.477 / 0.491, 0.487 / 0.500, 0.488 / 0.491 (seeds 0-2) vs 0.489 / 0.502, 0.493 / 0.504,
    # 0.501 / 0.507 with all at 2e-3 but the regressor at 1e-3; 4e-3 (regressor 1e-3) 0.483 / 0.499,
    # the head alone at 2e-3 0.487 / 0.498, at 4e-3 0.494 / 0.509 (docs/quickstart_tuning.md, session 18).
    c.optim.gen.learning_rate = 3e-3
    c.optim.gen.schedule = "warmup_linear"
    c.optim.gen.warmup_steps = 100
    c.optim.gen.clip_norm = 10.0
    # The regressor (the lifter, 2 x 512) at a lower rate than the encoder and head (1e-3): with all
    # at 2e-3, halving the regressor's gave at a fixed 3,300 steps 0.489 / 0.502, 0.493 / 0.504,
    # 0.501 / 0.507 (seeds 0-2) vs 0.498 / 0.507, 0.507 / 0.517, 0.504 / 0.509;
    # x0.25 0.492 / 0.506, x2 0.524 / 0.534 (docs/quickstart_tuning.md, session 17).
    c.optim.gen.lr_scale.regressor = 1 / 3
    c.optim.disc.learning_rate = 1e-4

    c.train.vertex_loss_stride = 4  # vertex terms on every 4th vertex: ~1.2x cheaper steps
    # The run's length: as many steps as fit in 14 minutes from the start of the process (data
    # generation and compilation included; trainer.BudgetPlanner), at most num_steps. A slow 2-core
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
