"""TFDS builder: folder -> records offline (subject split, bad images skipped); reading them through
the pipeline gives the same batches as reading the folder."""

import os

import numpy as np
import pytest

from hmr_jax import mean_params
from hmr_jax.data import annotations as ann_lib
from hmr_jax.data import pipeline

AUG = {"img_size": 32}


def _collect(it):
    return list(it)


def test_tfds_build_and_read(tmp_path, fake_arrays, fake_images, tiny_config):
    from hmr_jax.data import tfds_builder

    rng = np.random.default_rng(0)
    arrays = fake_arrays(12, rng)
    subjects = [1, 5, 9, 1, 5, 11, 6, 7, 8, 9, 1, 1]
    arrays["imgname"] = np.array([f"S{s}_Eating.54138969_{i:06d}.jpg" for i, s in enumerate(subjects)])
    fake_images(tmp_path / "img", arrays["imgname"], rng)
    with open(tmp_path / "img" / arrays["imgname"][4], "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 corrupt")
    ann_lib.save_spin(tmp_path / "ann.npz", arrays)
    with pytest.warns(UserWarning, match="skipping 1 unusable"):
        tfds_builder.main(
            [
                "--data-dir",
                str(tmp_path / "tfds"),
                "--image-root",
                str(tmp_path / "img"),
                "--annotations",
                str(tmp_path / "ann.npz"),
            ]
        )  # the CLI
    meta = tfds_builder.load_builder(str(tmp_path / "tfds")).info.metadata
    assert meta["joint_set"] == "smpl24" and meta["skipped_train"] == 1
    assert meta["indices_validation"] == [0, 1, 2]  # S9, S11, S9 rows 2, 5, 9
    # the training split's mean SMPL parameters (model.mean_params='train'), the corrupt row 4 left out
    train_rows = [0, 1, 3, 6, 7, 8, 10, 11]
    want = ann_lib.mean_smpl_axis_angle(arrays["pose"][train_rows], arrays["shape"][train_rows])
    np.testing.assert_allclose(meta["mean_pose_train"], want[0], atol=1e-6)
    np.testing.assert_allclose(meta["mean_shape_train"], want[1], atol=1e-6)

    config = tiny_config(tmp_path / "tfds", **{"data.source": "tfds"})  # the trainer reads them from there
    resolved = mean_params.resolve_mean_params(config, (str(tmp_path / "tfds"), "", ""))
    np.testing.assert_allclose(resolved.model.mean_pose, want[0], atol=1e-6)
    np.testing.assert_allclose(resolved.model.mean_betas, want[1], atol=1e-6)
    # same eval batches from the records as straight from the folder (corrupt file removed there)
    os.remove(tmp_path / "img" / arrays["imgname"][4])
    folder = pipeline.FolderSource(str(tmp_path / "ann.npz"), str(tmp_path / "img"), split="train")
    kw = dict(batch_size=4, train=False, augment=AUG)
    with pytest.warns(UserWarning, match="missing image"):
        a = _collect(pipeline.make_iterator(folder, **kw))
    b = _collect(pipeline.make_iterator(pipeline.TfdsSource(str(tmp_path / "tfds"), "train"), **kw))
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    # resampling: frames (from the H36M names) ranked within each sequence, the same both ways
    meta = tfds_builder.load_builder(str(tmp_path / "tfds")).info.metadata
    assert len(meta["resample_rank_train"]) == len(meta["indices_train"])
    kw = dict(batch_size=2, train=False, augment=AUG, resample_ratio=0.5)
    with pytest.warns(UserWarning, match="missing image"):
        a = _collect(pipeline.make_iterator(folder, **kw))
    b = _collect(pipeline.make_iterator(pipeline.TfdsSource(str(tmp_path / "tfds"), "train"), **kw))
    ia, ib = ([int(i) for x in batches for i in x["index"][x["mask"] > 0]] for batches in (a, b))
    # train positions (frame = name number): S1 0 2 7 8 (frames 0 3 10 11: keep 0, 10), S5 1 3
    # (frames 1 4: keep 1; 4 is the corrupt image), S6 4, S7 5, S8 6
    assert ia == ib == [0, 1, 4, 5, 6, 7]
    tr = pipeline.make_iterator(
        pipeline.TfdsSource(str(tmp_path / "tfds"), "train"),
        batch_size=2,
        train=True,
        augment=AUG,
        num_epochs=1,
        seed=1,
    )
    first = _collect(tr)
    again = _collect(
        pipeline.make_iterator(
            pipeline.TfdsSource(str(tmp_path / "tfds"), "train"),
            batch_size=2,
            train=True,
            augment=AUG,
            num_epochs=1,
            seed=1,
            start_step=2,
        )
    )
    assert len(first) == 4 and len(again) == 2
    np.testing.assert_array_equal(first[2]["image"], again[0]["image"])
    with pytest.raises(FileNotFoundError, match="expected a built"):
        tfds_builder.load_builder(str(tmp_path / "nothing"))
