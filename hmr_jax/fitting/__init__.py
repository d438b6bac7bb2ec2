"""SMPLify in JAX: fit SMPL to 2D keypoints, batched and compiled end to end.

    from hmr_jax.fitting import Camera, fit, keypoint_body
    kb = keypoint_body(model, ("openpose25",))       # which body points the keypoints are
    result = fit(kb, keypoints_2d, confidence, Camera(focal, center))

Modules: `keypoints` (OpenPose BODY_25 and the 24-joint sets on the body), `prior` (SMPLify's GMM
pose prior: read, fit, default; also a CLI), `objective` (SMPLify's two stages, `FitConfig`),
`solver` (`fit`), `in_loop` (SPIN's per-sample best fits during training). The names below are
imported on first use, so `python -m hmr_jax.fitting.prior` runs its module once.
"""

import importlib

_EXPORTS = {
    "KeypointBody": "keypoints",
    "keypoint_body": "keypoints",
    "keypoints_3d": "keypoints",
    "FitConfig": "objective",
    "from_config": "objective",
    "Camera": "solver",
    "FitInit": "solver",
    "FitResult": "solver",
    "body_of": "solver",
    "estimate_translation": "solver",
    "fit": "solver",
    "mean_init": "solver",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"hmr_jax.fitting.{_EXPORTS[name]}"), name)
    if name in ("keypoints", "objective", "solver", "prior", "in_loop"):
        return importlib.import_module(f"hmr_jax.fitting.{name}")
    raise AttributeError(f"module 'hmr_jax.fitting' has no attribute {name!r}")
