"""tf.data pipeline: batch format, determinism, resume, sharding, resampling, eval, bad data."""

import os
import warnings

import numpy as np
import pytest

from hmr_jax.data import pipeline

AUG = {"img_size": 32}


@pytest.fixture(scope="module")
def folder(tmp_path_factory, fake_dataset):
    tmp = tmp_path_factory.mktemp("fake")
    path, root, arrays = fake_dataset(str(tmp), n=14)
    return pipeline.FolderSource(path, root), arrays


def _collect(it, n=None):
    out = []
    for b in it:
        out.append(b)
        if n is not None and len(out) == n:
            break
    return out


def test_batch_format(folder):
    src, _ = folder
    b = next(pipeline.make_iterator(src, batch_size=4, train=True, augment=AUG))
    want = {
        "image": ((4, 32, 32, 3), np.float32),
        "keypoints_2d": ((4, 24, 3), np.float32),
        "joints_3d": ((4, 24, 4), np.float32),
        "pose": ((4, 72), np.float32),
        "shape": ((4, 10), np.float32),
        "has_smpl": ((4,), np.float32),
        "has_joints_3d": ((4,), np.float32),
        "index": ((4,), np.int64),
        "rot": ((4,), np.float32),
        "flip": ((4,), np.float32),
    }
    assert {k: (v.shape, v.dtype) for k, v in b.items()} == want
    assert all(isinstance(v, np.ndarray) for v in b.values())


def test_no_autotuning(folder):
    # Autotuning made releasing each epoch's iterator wait up to a minute (training stalls).
    src, _ = folder
    for train in (True, False):
        ds = pipeline.make_dataset(src, batch_size=4, train=train, augment=AUG)
        assert ds.options().autotune.enabled is False
        assert ds.options().deterministic is True


def test_deterministic_and_resume(folder):
    src, _ = folder
    kw = dict(batch_size=4, train=True, augment=AUG, seed=3)
    it = pipeline.make_iterator(src, num_epochs=2, **kw)
    full = _collect(it)
    assert it.steps_per_epoch == 3 and len(full) == 6
    assert [s.dropped_remainder for s in it.epoch_stats] == [2, 2]
    again = _collect(pipeline.make_iterator(src, num_epochs=1, **kw))
    for a, b in zip(full, again):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    # every epoch: no sample twice; different order per epoch
    for e in range(2):
        idx = np.concatenate([b["index"] for b in full[3 * e : 3 * e + 3]])
        assert len(set(idx.tolist())) == 12
    assert not np.array_equal(full[0]["index"], full[3]["index"])
    # restart at step 4 (epoch 1, second batch): identical continuation
    resumed = _collect(pipeline.make_iterator(src, num_epochs=2, start_step=4, **kw))
    assert len(resumed) == 2
    for a, b in zip(full[4:], resumed):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    other = next(pipeline.make_iterator(src, **dict(kw, seed=4)))
    assert not np.array_equal(other["image"], full[0]["image"])


def test_host_sharding_and_resampling(folder):
    src, _ = folder
    kw = dict(batch_size=2, train=True, augment=AUG, num_epochs=1, process_count=2)
    h0 = np.concatenate([b["index"] for b in pipeline.make_iterator(src, process_index=0, **kw)])
    h1 = np.concatenate([b["index"] for b in pipeline.make_iterator(src, process_index=1, **kw)])
    assert len(h0) == len(h1) == 6 and not set(h0) & set(h1)
    res = np.concatenate(
        [
            b["index"]
            for b in pipeline.make_iterator(
                src, batch_size=2, train=True, augment=AUG, num_epochs=1, resample_ratio=0.2
            )
        ]
    )
    assert len(res) == 2 and set(res.tolist()) <= {0, 5, 10}  # every 5th frame (one = remainder)
    ev = pipeline.make_iterator(src, batch_size=4, train=False, augment=AUG, resample_ratio=0.5)
    assert np.concatenate([b["index"][b["mask"] > 0] for b in ev]).tolist() == list(range(0, 14, 2))


def test_resampling_follows_frames(tmp_path, fake_dataset):
    path, root, arrays = fake_dataset(str(tmp_path), n=8)
    arrays = dict(arrays, frame=np.array([7, 6, 5, 4, 3, 2, 1, 0]), sequence=np.array(["a", "b"] * 4))
    np.savez(path, **arrays)
    src = pipeline.FolderSource(path, root)
    ev = pipeline.make_iterator(src, batch_size=4, train=False, augment=AUG, resample_ratio=0.5)
    got = np.concatenate([b["index"][b["mask"] > 0] for b in ev]).tolist()
    # seq a: rows 0 2 4 6 = frames 7 5 3 1 -> keep frames 1, 5 (rows 6, 2); seq b: frames 0, 4
    assert got == [2, 3, 6, 7]


def test_eval_mode_pads_and_does_not_augment(folder):
    src, arrays = folder
    it = pipeline.make_iterator(src, batch_size=4, train=False, augment=AUG, process_count=2, process_index=1)
    batches = _collect(it)
    assert it.num_batches == 2 and len(batches) == 2  # host 1 of 2 gets 7 samples
    np.testing.assert_array_equal(batches[1]["mask"], [1, 1, 1, 0])
    idx = np.concatenate([b["index"][b["mask"] > 0] for b in batches])
    np.testing.assert_array_equal(idx, np.arange(7, 14))
    # no augmentation: keypoints are the plain crop of the box
    b = batches[0]
    for r, i in enumerate(b["index"]):
        side = 200 * arrays["scale"][i]
        want = (arrays["part"][i, :, :2] - arrays["center"][i]) * 32 / side + 15.5
        np.testing.assert_allclose(b["keypoints_2d"][r, :, :2], want, atol=1e-3)
        np.testing.assert_allclose(b["pose"][r], arrays["pose"][i], atol=1e-6)
    both = [_collect(pipeline.make_iterator(src, batch_size=4, train=False, augment=AUG)) for _ in range(2)]
    np.testing.assert_array_equal(both[0][0]["image"], both[1][0]["image"])


def _assert_same_batches(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.keys() == b.keys()
        for k in a:  # images: the cached path's crop offsets round differently (float32)
            np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-4 if k == "image" else 0, err_msg=k)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_decoded_cache_gives_the_same_batches(tmp_path, fmt, fake_dataset, fake_images):
    path, root, arrays = fake_dataset(str(tmp_path), n=14)
    if fmt == "PNG":  # other formats: decoded whole, at full size, in both paths
        arrays = dict(arrays, imgname=np.array([n.replace(".jpg", ".png") for n in arrays["imgname"]]))
        fake_images(root, arrays["imgname"], np.random.default_rng(1), fmt="PNG")
        np.savez(path, **arrays)
    src = pipeline.FolderSource(path, root)
    kw = dict(batch_size=4, train=True, augment=AUG, seed=3, num_epochs=2)
    cached = pipeline.make_iterator(src, cache_mb=64.0, **kw)
    cache = cached._plan.cache
    assert cache is not None
    # 32 px crops of boxes up to ~2.5 x that: JPEGs also decoded at 1/2, as decode_crop would
    assert cache.max_ratio == (1 if fmt == "PNG" else 2)
    assert [v.shape for v in cache.images] == [(14, 160, 200, 3)] + [(14, 80, 100, 3)] * (fmt == "JPEG")
    want = _collect(pipeline.make_iterator(src, **kw))
    _assert_same_batches(_collect(cached), want)
    resumed = _collect(pipeline.make_iterator(src, cache_mb=64.0, start_step=4, **kw))
    _assert_same_batches(resumed, want[4:])
    ev = dict(batch_size=4, train=False, augment=AUG)
    _assert_same_batches(
        _collect(pipeline.make_iterator(src, cache_mb=64.0, **ev)), _collect(pipeline.make_iterator(src, **ev))
    )


def test_decoded_cache_falls_back_to_the_files(tmp_path, fake_dataset, fake_images):
    path, root, arrays = fake_dataset(str(tmp_path), n=9)
    arrays = dict(arrays, center=arrays["center"].copy())
    arrays["center"][2] = [5000.0, 5000.0]  # box outside the image: dropped at run time either way
    np.savez(path, **arrays)
    src = pipeline.FolderSource(path, root)
    kw = dict(batch_size=4, train=True, augment=AUG, num_epochs=1)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        files = pipeline.make_iterator(src, **kw)
        want = _collect(files)
        cached = pipeline.make_iterator(src, cache_mb=64.0, **kw)
        _assert_same_batches(_collect(cached), want)
    assert cached._plan.cache is not None and cached.epoch_stats[0].skipped_indices == (2,)
    assert files.epoch_stats[0].skipped_indices == (2,)
    with pytest.warns(UserWarning, match=r"9 images of 160 x 200 .* above the limit of 0\.5 MB"):
        it = pipeline.make_iterator(src, cache_mb=0.5, **kw)
    assert it._plan.cache is None
    fake_images(root, arrays["imgname"][5:6], np.random.default_rng(2), width=120)  # one other size
    with pytest.warns(UserWarning, match="not every image decodes, or not to one size"):
        it = pipeline.make_iterator(src, cache_mb=64.0, **kw)
    assert it._plan.cache is None
    assert len(_collect(it)) == 2


def _bad_dataset(fake_dataset, tmp):
    path, root, arrays = fake_dataset(str(tmp), n=10)
    with open(os.path.join(root, arrays["imgname"][3]), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 definitely not a jpeg" * 10)  # JPEG magic, corrupt body
    with open(os.path.join(root, arrays["imgname"][6]), "wb") as f:
        f.write(b"garbage")
    arrays = dict(arrays)
    arrays["S"] = arrays["S"].copy()
    arrays["S"][5, 2, 1] = np.nan
    arrays["center"] = arrays["center"].copy()
    arrays["center"][8] = [5000.0, 5000.0]  # box outside the image
    np.savez(path, **arrays)  # save_spin refuses NaN; write the raw npz
    return pipeline.FolderSource(path, root)


def test_bad_samples_skipped_and_counted(tmp_path, fake_dataset):
    src = _bad_dataset(fake_dataset, tmp_path)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        it = pipeline.make_iterator(src, batch_size=2, train=True, augment=AUG, num_epochs=1)
        got = np.concatenate([b["index"] for b in it])
    assert it.invalid == {5: "non-finite S"}
    st = it.epoch_stats[0]
    assert st.expected == 9 and st.skipped == 3 and sorted(st.skipped_indices) == [3, 6, 8]
    assert st.produced == 6 and st.dropped_remainder == 0 and len(got) == 6
    assert not {3, 5, 6, 8} & set(got.tolist())
    msgs = " ".join(str(x.message) for x in w)
    assert "non-finite S" in msgs and "skipped 3 of 9" in msgs and "img_0003.jpg" in msgs
    assert st.skipped_labels == 1 and "epoch 0: skipped 1 for their labels (non-finite S)" in msgs


def test_label_skips_reported_every_epoch(tmp_path, fake_dataset):
    src = _bad_dataset(fake_dataset, tmp_path)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        it = pipeline.make_iterator(src, batch_size=2, train=True, augment=AUG, num_epochs=2)
        for _ in it:
            pass
    assert [s.skipped_labels for s in it.epoch_stats] == [1, 1]
    msgs = [str(x.message) for x in w]
    for epoch in (0, 1):
        assert any(m.startswith(f"input pipeline: epoch {epoch}: skipped 1 for their labels") for m in msgs), msgs
    ev = pipeline.make_iterator(src, batch_size=4, train=False, augment=AUG)
    batches = _collect(ev)
    assert len(batches) == ev.num_batches == 3  # 9 usable by annotation -> 3 batches, padded
    assert sorted(np.concatenate([b["index"][b["mask"] > 0] for b in batches]).tolist()) == [0, 1, 2, 4, 7, 9]


def test_strict_mode_names_the_sample(tmp_path, fake_dataset, fake_images):
    src = _bad_dataset(fake_dataset, tmp_path)
    with pytest.raises(ValueError, match="img_0005.jpg: non-finite S"):
        pipeline.make_iterator(src, batch_size=2, train=True, augment=AUG, strict=True)
    path, root, arrays = fake_dataset(str(tmp_path / "b"), n=6)
    with open(os.path.join(root, arrays["imgname"][2]), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 corrupt")
    it = pipeline.make_iterator(pipeline.FolderSource(path, root), batch_size=2, train=False, augment=AUG, strict=True)
    with pytest.raises(RuntimeError, match="img_0002.jpg"):
        _collect(it)
    arrays = dict(arrays, center=arrays["center"].copy())
    arrays["center"][3] = [5000.0, 5000.0]
    np.savez(path, **arrays)
    os.remove(os.path.join(root, arrays["imgname"][2]))
    it = pipeline.make_iterator(
        pipeline.FolderSource(path, root, check_files=False), batch_size=2, train=False, augment=AUG, strict=True
    )
    with pytest.raises(RuntimeError, match="(?s)img_0002.jpg.*No such file"):
        _collect(it)
    fake_images(root, arrays["imgname"][2:3], np.random.default_rng(0))
    it = pipeline.make_iterator(pipeline.FolderSource(path, root), batch_size=2, train=False, augment=AUG, strict=True)
    with pytest.raises(RuntimeError, match="(?s)box outside the image.*img_0003.jpg"):
        _collect(it)
    os.remove(os.path.join(root, arrays["imgname"][4]))
    with pytest.raises(ValueError, match="missing image .*img_0004.jpg"):
        pipeline.make_iterator(pipeline.FolderSource(path, root), batch_size=2, train=False, augment=AUG, strict=True)
