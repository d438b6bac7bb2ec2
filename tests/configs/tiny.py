"""The tests' own config: the full method (keypoint head with the lifting pass, 6D rotations, the
adversarial prior with its discriminators) shrunk to seconds: ResNet-18 at width 8 on 32 px crops,
batch 8, a 2-iteration regressor, 20 steps of fixed length. It starts from configs/h36m_hmr.py (the
method's defaults) and sets every value the tests rely on here, so that tuning the quickstart
changes nothing the tests cover. Set `data.dir` (a SPIN-layout folder: annotations.npz + images).
"""

from hmr_jax import config_files


def get_config(arg=None):
    del arg
    c = config_files.sibling(__file__, "../../configs/h36m_hmr.py")
    c.data.dir = ""
    c.data.annotations = "annotations.npz"
    c.data.image_root = ""
    c.data.train_split = "train"
    c.data.val_split = "validation"
    c.data.val_fraction = 0.25
    c.data.resample_ratio = 1.0
    c.data.synthetic.num = 0  # the tests bring their data (data.dir); a test may generate
    c.data.synthetic.frames_per_sequence = 1
    c.data.synthetic.seed = 0
    c.data.synthetic.yaw_range_deg = 20.0
    c.data.synthetic.render_size = 128
    c.data.cache_decoded_mb = 512.0
    c.data.img_size = 32
    c.data.batch_size = 8
    c.data.eval_batch_size = 8
    c.data.augment.enabled = False

    c.model.depth = 18
    c.model.width = 8
    c.model.hidden = (32,)
    c.model.dropout = 0.0
    c.model.rot_repr = "6d"
    c.model.n_iter = 2
    c.model.disc.joint_hidden = (8,)
    c.model.disc.pose_hidden = (16,)
    c.model.keypoint_head.enabled = True
    c.model.keypoint_head.input_scale = 8.0
    c.model.keypoint_head.stride = 4
    c.model.keypoint_head.channels = 48

    c.loss_weights.adversarial = 0.01
    c.adversarial.disc_loss_weight = 1.0
    c.loss_weights.keypoints_2d = 5.0
    c.loss_weights.keypoint_heatmap = 0.5
    c.train.heatmap_sigma_px = 2.0
    c.loss_weights.joints_3d_pa = 5.0
    c.loss_weights.lift = 2.0
    c.optim.gen.name = "adamw"
    c.optim.gen.weight_decay = 0.3
    c.optim.gen.learning_rate = 3e-3
    c.optim.gen.schedule = "constant"
    c.optim.gen.warmup_steps = 0
    c.optim.gen.clip_norm = 10.0
    c.optim.gen.lr_scale.regressor = 1 / 3
    c.optim.disc.learning_rate = 1e-4

    c.train.vertex_loss_stride = 4
    c.train.time_budget_min = 0.0  # a fixed length (tests/test_time_budget.py: the budget)
    c.train.num_steps = 20
    c.train.log_every = 5
    c.train.eval_every = 10
    c.train.checkpoint_every = 10
    c.train.image_every = 0
    c.train.num_images = 4
    c.train.progress_bar = False
    c.early_stopping.patience = 0
    return c
