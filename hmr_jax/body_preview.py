"""Preview of a body model: front and side views in T-pose and in a walking pose, rendered with
the software rasteriser (``python -m hmr_jax.body_model --png``)."""

import numpy as np

from hmr_jax import render, smpl
from hmr_jax.body_model import walking_pose
from hmr_jax.body_params import NUM_BETAS


def preview_image(model: dict, size: int = 400, betas=None, pose=None) -> np.ndarray:
    """Front and side views (T-pose, then `pose`; default walking_pose) as one uint8 image."""
    m = smpl.from_arrays(**model)
    betas = np.zeros(NUM_BETAS) if betas is None else np.asarray(betas)
    pose = walking_pose() if pose is None else np.asarray(pose)
    verts = np.asarray(smpl.forward(m, np.stack([betas, betas]), np.stack([np.zeros(72), pose])).vertices, np.float64)
    flip = np.diag([1.0, -1.0, -1.0])  # body frame -> camera frame
    side = np.array([[0.0, 0, -1], [0, 1, 0], [1, 0, 0]])  # subject's left towards the camera
    dist, focal = 20.0, size * 20.0 / 2.1
    views = []
    for v in verts:
        for rot in (flip, flip @ side):
            cam = (v - np.array([0.0, -0.3, 0.0])) @ rot.T + np.array([0.0, 0.0, dist])
            res = render.render_mesh(
                cam,
                model["f"],
                focal,
                (size / 2, size / 2),
                (size, size),
                background=np.full((size, size, 3), 255, np.uint8),
                color=(0.85, 0.7, 0.6),
                light_dir=(-0.3, 0.4, 1.0),
            )
            views.append(res.image)
    return render.contact_sheet(views, cols=4)


def save_preview(npz_path, png_path) -> None:
    """Write the preview of the body model file `npz_path` to `png_path`."""
    with np.load(npz_path, allow_pickle=False) as z:
        render.save_png(png_path, preview_image({k: z[k] for k in z.files}))
