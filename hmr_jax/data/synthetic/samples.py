"""One sample: where sample `index` sits (subject, sequence, frame) and its rendering."""

import dataclasses
import io
import os

import numpy as np

from hmr_jax import render
from hmr_jax.data.synthetic import body as body_lib
from hmr_jax.data.synthetic import scenes

FRAMES_PER_SEQUENCE = 8
SEQUENCES_PER_SUBJECT = 3
YAW_RANGE_DEG = 180.0
BOX_MARGIN = 1.2


@dataclasses.dataclass(frozen=True)
class Layout:
    """Which subject / sequence / frame each sample index is (train rows first, then validation)."""

    num: int
    num_train: int
    frames_per_sequence: int = FRAMES_PER_SEQUENCE
    sequences_per_subject: int = SEQUENCES_PER_SUBJECT
    yaw_range_deg: float = YAW_RANGE_DEG  # a sequence's start yaw is uniform in +-this (degrees)

    @property
    def frames_per_subject(self) -> int:
        return self.frames_per_sequence * self.sequences_per_subject

    @property
    def train_subjects(self) -> int:
        return -(-self.num_train // self.frames_per_subject)

    @property
    def train_sequences(self) -> int:
        return -(-self.num_train // self.frames_per_sequence)

    def locate(self, index: int) -> tuple[str, int, int, int]:
        """(split, subject id, sequence id, frame) of sample `index` (ids global, split-disjoint)."""
        if not 0 <= index < self.num:
            raise IndexError(f"sample index: expected in [0, {self.num}), found {index}")
        val = index >= self.num_train
        local = index - self.num_train if val else index
        subject = local // self.frames_per_subject + (self.train_subjects if val else 0)
        sequence = local // self.frames_per_sequence + (self.train_sequences if val else 0)
        return ("validation" if val else "train"), subject, sequence, local % self.frames_per_sequence


def image_name(split: str, subject: int, sequence: int, frame: int) -> str:
    """The image file of one sample, relative to the data set directory."""
    return f"images/{split[:3]}_sub{subject:05d}_seq{sequence:05d}_f{frame:02d}.jpg"


def render_sample(
    body: body_lib.Body, out_dir: str, seed: int, img_size: int, layout: Layout, index: int, cache: dict
) -> dict:
    """Render sample `index` into out_dir/images and return its annotation row.

    `cache` (one dict per worker) keeps the current subject's body and sequence between calls.
    """
    split, sid, qid, frame = layout.locate(index)
    if cache.get("sid") != sid:
        subj = scenes.subject(seed, sid)
        v_shaped, rest = body_lib.shaped(body, subj.betas)
        cache.clear()
        albedo = subj.colors[body.part_label].astype(np.float32)
        if subj.hair is not None:
            albedo[body.hair] = subj.hair
        cache.update(sid=sid, subj=subj, v_shaped=v_shaped, rest=rest, albedo=albedo)
    subj, v_shaped, rest = cache["subj"], cache["v_shaped"], cache["rest"]
    if cache.get("qid") != qid:
        cache.update(
            qid=qid,
            seq=scenes.sequence_setup(seed, qid, rest, img_size, layout.frames_per_sequence, layout.yaw_range_deg),
            background=scenes.background(scenes.seeded_rng(seed, scenes.KIND_BACKGROUND, qid), img_size),
        )
    seq: scenes.SequenceSetup = cache["seq"]
    rng = scenes.seeded_rng(seed, scenes.KIND_SAMPLE, index)

    body_pose, t = scenes.frame_pose(seq, frame, layout.frames_per_sequence)
    pose = scenes.camera_pose(seq, body_pose, t)
    verts, joints = body_lib.forward(body, v_shaped, rest, pose.reshape(24, 3))
    root = joints[0].copy()
    cam_t = np.array([seq.root_xy[0], seq.root_xy[1], seq.distance])
    verts_cam = verts - root + cam_t
    s_rel = joints - root
    center_px = np.array([img_size / 2.0, img_size / 2.0])
    res = render.render_mesh(
        verts_cam,
        body.faces,
        seq.focal,
        center_px,
        (img_size, img_size),
        background=cache["background"],
        vertex_colors=cache["albedo"],
        light_dir=seq.light_dir,
        ambient=seq.ambient,
        cull_backfaces=True,
    )
    img = res.image
    if seq.noise_sigma > 0:
        noisy = img + seq.noise_sigma * rng.standard_normal(img.shape, dtype=np.float32)
        img = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)

    def project(p):
        return seq.focal * p[:, :2] / p[:, 2:3] + center_px

    uv = project(s_rel + cam_t)
    vis = np.all((uv >= -0.5) & (uv <= img_size - 0.5), axis=1) & (s_rel[:, 2] + cam_t[2] > 0)
    vuv = project(verts_cam)
    lo, hi = vuv.min(0), vuv.max(0)
    box_center = 0.5 * (lo + hi)
    side = BOX_MARGIN * float(np.max(hi - lo))

    name = image_name(split, sid, qid, frame)
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=seq.jpeg_quality)
    path = os.path.join(out_dir, name)
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    return dict(
        index=index,
        imgname=name,
        split=split,
        subject=f"sub{sid:05d}",
        action=f"seq{qid:05d}",
        sequence=qid,
        frame=frame,
        center=box_center,
        scale=side / 200.0,
        part=np.concatenate([uv, vis[:, None].astype(np.float64)], axis=1),
        S=np.concatenate([s_rel, np.ones((24, 1))], axis=1),
        pose=pose,
        shape=subj.betas,
        cam_focal=np.array([seq.focal, seq.focal]),
        cam_center=center_px,
        cam_t=cam_t,
    )
