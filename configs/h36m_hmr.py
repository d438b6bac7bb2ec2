"""HMR with the adversarial prior on Human3.6M (the report's best row of Table 1).

ResNet-50 encoder, 5-iteration regressor (2 x 1024, dropout 0.5), Adam, SPIN-style image and
pose augmentation, every 2nd frame kept (resample 0.5), 25 discriminators (LSGAN) fed with the
training set's ground-truth SMPL parameters. Every other config file starts from this one.

Data: a SPIN-layout annotation file of the H36M subjects (train S1, S5, S6, S7, S8; validation
S9, S11, chosen by `annotations.split_indices`; or a separate validation file in
`data.val_annotations` when, as SPIN's h36m_train.npz, the file holds the training subjects only),
its images under `data.image_root`, and SPIN's
24-joint GT set as one joint file (`data.joint_regressor`), made once from SPIN's
J_regressor_extra.npy by tools/make_spin24_regressor.py.

Run:
    python -m hmr_jax.train --config=configs/h36m_hmr.py --workdir=workdirs/h36m_hmr \
        --config.data.dir=/data/h36m --config.data.joint_regressor=/data/J_spin24.npy
"""

import dataclasses

import ml_collections

from hmr_jax.fitting import objective


def get_config(arg=None):
    del arg
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.body_model_path = ""  # '' = the procedural default body (hmr_jax.body_model); or SMPL .pkl/.npz

    c.data = ml_collections.ConfigDict()
    c.data.source = "folder"  # 'folder' (images + annotation npz) or 'tfds' (records in data.dir)
    c.data.dir = "data/h36m"
    c.data.annotations = "h36m_train.npz"  # relative to data.dir unless absolute
    c.data.image_root = "images"  # relative to data.dir unless absolute
    c.data.train_split = "train"  # folder: 'train' / 'validation' of split_indices; '' = whole file
    c.data.val_split = "validation"  # '' = no validation
    c.data.val_annotations = ""  # folder: a file read whole for validation, e.g. h36m_valid_protocol1.npz
    c.data.val_fraction = 0.1  # files without subjects: the last 10% validate
    c.data.resample_ratio = 0.5  # keep every 2nd frame of the training split
    c.data.img_size = 224
    c.data.batch_size = 64  # global (all hosts)
    c.data.eval_batch_size = 64
    c.data.shuffle_buffer = 4096  # tfds source only
    c.data.threads = 0  # tf.data private threads (0 = default)
    # > 0: the training split's images decoded once and held in memory when they all have one size
    # and fit in this many MB (folder sources; small-image sets like the synthetic one), else read
    # and decoded per sample (pipeline.make_dataset)
    c.data.cache_decoded_mb = 0.0
    c.data.strict = False  # True: a corrupt image stops training
    # Hide the SMPL parameters and 3D joints of this fraction of the training samples (chosen by
    # sample index), e.g. to measure what fitting in the loop recovers from 2D keypoints alone.
    c.data.hide_labels_fraction = 0.0
    c.data.joint_regressor = ""  # (24, V) .npy for 'spin24' annotation files
    c.data.augment = ml_collections.ConfigDict(
        dict(
            enabled=True,
            rot_std_deg=30.0,
            rot_max_deg=60.0,
            rot_prob_zero=0.6,
            scale_std=0.25,
            scale_min=0.75,
            scale_max=1.25,
            flip_prob=0.5,
            noise_min=0.6,
            noise_max=1.4,
        )
    )
    # num > 0: generate the synthetic set if missing (hmr_jax.data.synthetic.generate's options)
    # render_size: the generated images' side in px (0 = data.img_size); larger renders give crops
    # downsampled from more detail, as crops of real photographs are.
    c.data.synthetic = ml_collections.ConfigDict(
        dict(num=0, seed=0, yaw_range_deg=180.0, frames_per_sequence=8, render_size=0)
    )

    c.model = ml_collections.ConfigDict()
    c.model.depth = 50
    c.model.width = 64
    c.model.dtype = "float32"  # encoder compute dtype ('bfloat16' on accelerators)
    c.model.rot_repr = "aa"  # regressor's rotation output: 'aa' (report) or '6d' (SPIN)
    c.model.hidden = (1024, 1024)
    c.model.hidden_activation = "relu"  # between the regressor's hidden layers: 'relu' (HMR) or 'none' (SPIN)
    c.model.dropout = 0.5
    c.model.n_iter = 5
    c.model.final_init_gain = 0.01
    c.model.bn_momentum = 0.9
    c.model.zero_init_residual = False
    # The regressor's starting pose/shape: 'train' (mean of the training split's SMPL labels), 'zero'
    # (upright, zero body pose, mean betas 0) or an .npz with pose ((72,) axis-angle or (144,) 6d) and
    # shape (10,), e.g. SPIN's data/smpl_mean_params.npz. Resolved at the start of training into
    # mean_pose / mean_betas (72 and 10 numbers, written to the run's config.json; an imported
    # checkpoint's mean_pose: 144 numbers, 6d in the regressor's layout).
    c.model.mean_params = "train"
    c.model.mean_pose = ()
    c.model.mean_betas = ()
    c.model.mean_cam = (0.9, 0.0, 0.0)  # weak-perspective (s, tx, ty) start of the camera
    c.model.pretrained_encoder = ""  # .npz from tools/convert_resnet50_weights.py
    # A workdir (written by hmr_jax.train or hmr_jax.import_checkpoint) whose latest checkpoint's
    # generator weights, and mean parameters, a new run starts from (fine-tuning); '' = none.
    c.model.init_from = ""
    # Optional 2D keypoint head (hmr_jax/models/keypoint_head.py; not in the report): heatmaps from
    # stages 2-4 (stride 8; and stage 1 with stride 4), soft-argmax keypoints times input_scale
    # concatenated to the regressor's input, trained by loss_weights.keypoints_2d (and
    # keypoint_heatmap). num_keypoints must equal the dataset's joints (24: smpl24 / spin24).
    c.model.keypoint_head = ml_collections.ConfigDict(
        dict(enabled=False, channels=32, num_keypoints=24, stride=8, input_scale=8.0)
    )
    c.model.disc = ml_collections.ConfigDict(
        dict(joint_hidden=(32, 32), pose_hidden=(1024, 1024), shape_hidden=(10, 5))
    )

    c.loss_weights = ml_collections.ConfigDict(
        dict(
            vertex_l2=1.0,
            vertex_l1=1.0,
            beta=0.001,
            pose=1.0,
            joints_3d=5.0,
            joints_2d=5.0,
            adversarial=0.1,
            joints_3d_pa=0.0,  # the 3D joints after PA-MPJPE's similarity alignment (not in the report)
            # With the keypoint head: its 2D L1 (as joints_2d), its heatmaps' KL to a Gaussian of
            # train.heatmap_sigma_px around each joint, and the lifting pass (the 3D terms above, with
            # their weights, on the regressor run from GT 2D keypoints + train.lift_noise_px noise).
            keypoints_2d=0.0,
            keypoint_heatmap=0.0,
            lift=0.0,
        )
    )
    c.adversarial = ml_collections.ConfigDict()
    c.adversarial.disc_loss_weight = 1.0  # 0 with loss_weights.adversarial 0: no discriminator
    c.adversarial.prior_file = ""  # npz with pose (N, 72), shape (N, 10); '' = the batch's GT

    c.optim = ml_collections.ConfigDict()
    c.optim.gen = _optimizer("adam", 5e-5)
    # Per-module learning rates, relative to learning_rate (its schedule included).
    c.optim.gen.lr_scale = ml_collections.ConfigDict(dict(encoder=1.0, keypoint_head=1.0, regressor=1.0))
    c.optim.disc = _optimizer("adam", 1e-4)
    c.optim.plateau = ml_collections.ConfigDict(
        dict(enabled=False, factor=0.5, patience=5, cooldown=0, rtol=1e-3, min_scale=0.01)
    )

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 200_000
    # > 0: the whole run (from the process's start: data generation and compilation included) ends
    # within this many minutes; train.num_steps is then the most steps, the run's length (and the
    # learning-rate schedules) set from the measured speed (trainer.BudgetPlanner). 0: off.
    c.train.time_budget_min = 0.0
    c.train.log_every = 100
    c.train.eval_every = 5_000
    c.train.checkpoint_every = 5_000
    c.train.keep_checkpoints = 3
    c.train.image_every = 5_000
    c.train.num_images = 8
    c.train.nan_policy = "stop"  # 'stop' (report the term) or 'skip' (drop that update)
    c.train.progress_bar = True
    c.train.lift_noise_px = 2.0  # std (crop px) of the Gaussian noise on the lifting pass's GT keypoints
    c.train.heatmap_sigma_px = 4.0  # std (crop px) of loss_weights.keypoint_heatmap's target
    c.train.vertex_loss_stride = 1  # >1: the vertex terms on every k-th vertex (data.setup.loss_body)
    # SPIN's fitting in the loop (hmr_jax/fitting/in_loop.py): every step, SMPLify (config.fitting)
    # refits each sample's 2D keypoints from the regressor's estimate and keeps the best fit per
    # sample (checkpointed with the state); samples without SMPL labels are supervised by their
    # best fit when its reprojection loss (mean over keypoints of conf^2 x GMcClure, crop px) is
    # below fit_threshold (in 224 px crop units, as SPIN: the fit is scaled to them whatever
    # data.img_size). fit_table_size: the training set's index space (0: set from the data).
    c.train.fit_in_loop = False
    c.train.fit_threshold = 100.0
    c.train.fit_table_size = 0
    c.train.fit_pose_prior = ""  # a GMM pose prior (.pkl / .npz, hmr_jax.fitting.prior); '' = the default

    # SMPLify's settings (fitting in the loop, hmr_jax.fit): hmr_jax.fitting.FitConfig's fields, SPIN's
    # numbers (100 + 100 Adam steps at 1e-2, sigma 100 px, prior weights 4.78 / 15.2 / 5, depth 100).
    c.fitting = ml_collections.ConfigDict(dataclasses.asdict(objective.FitConfig()))

    c.early_stopping = ml_collections.ConfigDict(dict(metric="val/v2v_l2", patience=10, min_delta=0.0))
    # Flip test: validation, hmr_jax.evaluate and hmr_jax.predict average each prediction with the
    # mirrored prediction for the mirror image (twice the inference cost; off as in HMR and SPIN).
    # h36m_regressor: a (17, V) J_regressor_h36m.npy for hmr_jax.evaluate's Human3.6M protocols.
    c.eval = ml_collections.ConfigDict(dict(flip_test=False, h36m_regressor=""))
    # The crop camera's focal length at 224 px (scaled to data.img_size): drawing, predict, fitting in the loop.
    c.images = ml_collections.ConfigDict(dict(focal_length_224=5000.0))
    return c


def _optimizer(name, learning_rate):
    # schedule: constant | warmup_cosine | warmup_linear (to end_factor * lr) | step (trainer.learning_rate)
    return ml_collections.ConfigDict(
        dict(
            name=name,
            learning_rate=learning_rate,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            weight_decay=0.0,
            momentum=0.9,
            clip_norm=0.0,
            schedule="constant",
            warmup_steps=0,
            end_factor=0.01,
            decay_every=50_000,
            decay_factor=0.1,
        )
    )
