"""Synthetic training data: the body model rendered in varied poses, shapes, cameras and scenes.

    python -m hmr_jax.data.synthetic --out DIR --num N --seed S [--img-size 256]
        [--body-model PATH] [--workers 2] [--val-fraction 0.1]

    from hmr_jax.data import synthetic
    summary = synthetic.generate(out_dir, num, seed, img_size=256)

Output (DIR):
  images/<name>.jpg    one JPEG per sample (img_size x img_size)
  annotations.npz      all samples in SPIN layout (annotations.save_spin): train rows first, then the
                       validation rows as the LAST round(num * val_fraction) rows, so
                       `annotations.split_indices(ann, split, val_fraction=...)` (no `subject` field in
                       this file, so it splits by position) gives the subject-disjoint split
  train.npz, validation.npz   the same rows split in two files, with `subject` (str) and `action`
                       (sequence id, str); validation subjects never appear in train
  meta.json            counts, seed, generator version, body model path + sha256, timing, layout
  preview.png          16 samples spread over the set, with box, 2D joints and skeleton drawn

Every npz also holds the optional annotation fields `sequence` (N,) int64 (sequence id) and
`frame` (N,) int64 (frame index inside its sequence), read by `annotations.load`; resampling
(`annotations.resample_keep`) thins frames within each sequence.

Annotation fields (joint_set 'smpl24': the 24 SMPL kinematic joints, `smpl.forward(...).joints`):
  pose (72,)   axis-angle; pose[:3] is the global orientation in the CAMERA frame (OpenCV: +x right,
               +y down, +z forward), so an upright body facing the camera has pose[:3] ~ [pi, 0, 0]
  shape (10,)  betas
  S (24, 4)    camera-frame joints minus the root (pelvis) joint, metres; column 3 = 1:
               S[:, :3] == smpl.forward(shape, pose).joints - joints[0]
  cam_t (3,)   camera-frame position of the root joint. Camera-frame joints = S[:, :3] + cam_t and
               camera-frame vertices = forward(shape, pose).vertices - joints[0] + cam_t
  cam_focal (2,) fx = fy, pixels; cam_center (2,) principal point, pixels
  part (24, 3) perspective projection of S[:, :3] + cam_t: x = fx X / Z + cx, y = fy Y / Z + cy
               (pixel centres at integer coordinates); visibility 1 inside the image
               ([-0.5, size - 0.5]), 0 outside (self-occlusion is not considered)
  center, scale  square box around the projected mesh (all vertices), side = 1.2 x the larger
               extent, scale = side / 200 (SPIN)
  has_smpl 1; subject 'sub00012'; action (sequence) 'seq00037'

Structure (Human3.6M-like temporal redundancy): subjects (one body shape, skin and clothing each)
perform `sequences_per_subject` sequences of `frames_per_sequence` consecutive frames; within a
sequence the camera, scene and lighting are fixed and the pose moves smoothly (per-joint slerp,
eased) from one sampled pose to another while the body turns a little, so keeping every k-th row
(`annotations.resample_mask`) thins out near-duplicate frames as with Human3.6M.

Poses: a hand-written library of key poses (standing, walking, running, sitting, crouching, arms up,
reaching, waving, T/A-pose, ...) blended pairwise, mirrored at random and perturbed per joint with
moderate noise; knees and elbows bend about their hinge axis only. A pose is kept when every joint
is within the `skeleton` joint limits (with a margin) and a coarse capsule test finds no gross
self-intersection (limbs through the torso or each other), otherwise it is redrawn.
The body turns +-180 deg about the vertical (option `yaw_range_deg`), tilts a little, and the
camera (elevation -8..25 deg, field of view 35..65 deg) frames it at a random size and position.

Determinism: every random draw comes from a generator seeded by (seed, kind, id) where kind is
subject / sequence / sample and id its number, so results do not depend on the worker count or
order; the same seed gives identical annotations and identical JPEG bytes.

Workers are separate processes ('spawn'; safe under a parent that already runs jax); they use only
numpy (a numpy port of `smpl.forward`) and the software rasteriser `hmr_jax.render`.

Modules: `poses` (key-pose library, sampling within joint limits, self-contact test), `body`
(numpy SMPL for the workers), `scenes` (subjects, sequences and cameras, backgrounds), `samples`
(which subject / sequence / frame a sample is; rendering one), `writer` (workers, files,
`generate`), `__main__` (the command line).
"""

from hmr_jax.data.synthetic.writer import generate

__all__ = ["generate"]
