"""fitting.prior: SMPLify's max-mixture GMM pose prior, its files, EM fitting, the default and the CLI."""

import math
import os
import pickle
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from hmr_jax.fitting import prior as prior_lib

D = prior_lib.NUM_BODY_POSE


def _random_gmm(rng, m=4, d=D):
    """A mixture with random SPD covariances (eigenvalues 0.02..0.5 rad^2) and unequal weights."""
    means = rng.normal(0.0, 0.5, (m, d))
    covars = []
    for _ in range(m):
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        covars.append((q * rng.uniform(0.02, 0.5, d)) @ q.T)
    weights = rng.uniform(0.2, 1.0, m)
    return means, np.stack(covars), weights / weights.sum()


def _reference_penalty(x, means, covars, weights):
    """The max-mixture formula literally, float64 numpy: inv, sqrt(det), (2 pi)^(d/2)."""
    d = means.shape[1]
    sqrdets = np.sqrt(np.linalg.det(covars))
    nll_weights = weights / ((2 * np.pi) ** (d / 2) * sqrdets / sqrdets.min())
    terms = []
    for mu, cov, w in zip(means, covars, nll_weights):
        diff = x - mu
        terms.append(0.5 * np.einsum("...i,ij,...j->...", diff, np.linalg.inv(cov), diff) - np.log(w))
    return np.min(np.stack(terms, -1), -1)


def _scipy_penalty(x, means, covars, weights):
    """The same through scipy's log-densities: min_m [-log N_m(x) - log w_m] - 0.5 min_m logdet C_m."""
    logdets = np.array([np.linalg.slogdet(c)[1] for c in covars])
    nll = [-stats.multivariate_normal(mu, c).logpdf(x) - np.log(w) for mu, c, w in zip(means, covars, weights)]
    return np.min(np.stack(nll, -1), -1) - 0.5 * logdets.min()


@pytest.fixture(scope="module")
def gmm():
    return _random_gmm(np.random.default_rng(0))


def test_penalty_matches_the_formula(gmm):
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0.0, 0.6, (30, D)), gmm[0] + 0.01])  # near and at the means
    got = np.asarray(prior_lib.penalty(prior_lib.from_gmm(*gmm), jnp.asarray(x, jnp.float32)))
    np.testing.assert_allclose(got, _reference_penalty(x, *gmm), rtol=2e-5, atol=2e-3)
    np.testing.assert_allclose(got, _scipy_penalty(x, *gmm), rtol=2e-5, atol=2e-3)


def test_penalty_batches_jits_and_has_no_nan(gmm):
    p = prior_lib.from_gmm(*gmm)
    assert p.means.dtype == p.precisions.dtype == p.log_weights.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(p.precisions), np.linalg.inv(gmm[1]), rtol=1e-3, atol=1e-3)
    x = jnp.asarray(np.random.default_rng(2).normal(0.0, 0.5, (2, 3, D)), jnp.float32)
    batched = jax.jit(prior_lib.penalty)(p, x)  # the prior is a pytree argument
    assert batched.shape == (2, 3)
    np.testing.assert_allclose(batched, prior_lib.penalty(p, x.reshape(6, D)).reshape(2, 3), rtol=1e-5)
    zero = jnp.zeros(D)
    value, grad = jax.value_and_grad(prior_lib.penalty, argnums=1)(p, zero)
    assert value.shape == () and np.isfinite(value) and np.all(np.isfinite(grad))
    with pytest.raises(ValueError, match=r"body_pose must be \(\.\.\., 69\)"):
        prior_lib.penalty(p, jnp.zeros((4, 72)))


def test_penalty_gradient_matches_finite_differences(gmm):
    p = prior_lib.from_gmm(*gmm)
    rng = np.random.default_rng(3)
    grad = jax.jit(jax.grad(prior_lib.penalty, argnums=1))
    for _ in range(3):
        x = rng.normal(0.0, 0.4, D)
        g = np.asarray(grad(p, jnp.asarray(x, jnp.float32)))
        eps = 1e-5
        fd = np.array(
            [
                (_reference_penalty(x + eps * e, *gmm) - _reference_penalty(x - eps * e, *gmm)) / (2 * eps)
                for e in np.eye(D)
            ]
        )
        np.testing.assert_allclose(g, fd, rtol=1e-3, atol=1e-3 * np.abs(fd).max())


def test_smplify_pickle_loads_like_from_gmm(gmm, tmp_path):
    path = tmp_path / "gmm_08.pkl"
    with open(path, "wb") as f:
        pickle.dump({"means": gmm[0], "covars": gmm[1], "weights": gmm[2]}, f, protocol=2)
    x = jnp.asarray(np.random.default_rng(4).normal(0.0, 0.5, (5, D)), jnp.float32)
    expected = prior_lib.penalty(prior_lib.from_gmm(*gmm), x)
    np.testing.assert_allclose(prior_lib.penalty(prior_lib.load(path), x), expected, rtol=1e-6)
    # .npz round trip through save (atomic: nothing else left in the folder)
    out = prior_lib.save(tmp_path / "sub" / "prior.npz", *gmm)
    assert os.listdir(tmp_path / "sub") == ["prior.npz"]
    np.testing.assert_allclose(prior_lib.penalty(prior_lib.load(out), x), expected, rtol=1e-6)


class _Payload:
    """Unpickling this calls os.system, which creates `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_malicious_pickle_is_refused(gmm, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "gmm_08.pkl"
    with open(path, "wb") as f:
        pickle.dump({"means": _Payload(marker), "covars": gmm[1], "weights": gmm[2]}, f, protocol=2)
    with pytest.raises(ValueError, match=r"gmm_08\.pkl.*refusing to load global '(posix|os)\.system'"):
        prior_lib.load(path)
    assert not marker.exists()


def test_bad_files_are_named(gmm, tmp_path):
    means, covars, weights = gmm
    cases = {
        "shape.npz": (dict(means=means[:, :60], covars=covars, weights=weights), r"means must be \(M, 69\).*\(4, 60\)"),
        "covshape.pkl": (dict(means=means, covars=covars[:3], weights=weights), r"covars must be \(4, 69, 69\)"),
        "nan.npz": (dict(means=np.where(means > 1, np.nan, means), covars=covars, weights=weights), "NaN or inf"),
        "weight.npz": (dict(means=means, covars=covars, weights=weights - weights.max()), "weights must be > 0"),
        "spd.npz": (dict(means=means, covars=-covars, weights=weights), r"covars\[0\] is not positive definite"),
        "asym.npz": (dict(means=means, covars=covars + np.triu(np.ones((D, D)), 1), weights=weights), "not symmetric"),
        "keys.pkl": (dict(means=means, covars=covars), r"missing key\(s\) \['weights'\]"),
        "keys.npz": (dict(means=means, weights=weights), r"missing array\(s\) \['covars'\]"),
    }
    for name, (arrays, message) in cases.items():
        path = tmp_path / name
        if name.endswith(".pkl"):
            path.write_bytes(pickle.dumps(arrays, protocol=2))
        else:
            np.savez(path, **arrays)
        with pytest.raises(ValueError, match=rf"{name}.*{message}"):
            prior_lib.load(path)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        prior_lib.load(tmp_path / "missing.npz")
    (tmp_path / "prior.txt").write_text("")
    with pytest.raises(ValueError, match=r"prior\.txt.*unknown pose-prior file type"):
        prior_lib.load(tmp_path / "prior.txt")
    with pytest.raises(ValueError, match="from_gmm: weights must be"):
        prior_lib.from_gmm(means, covars, weights[:3])


def _known_mixture(rng, n=3000):
    means = np.array([[4.0, 0, 0, 0, 0], [0, 4.0, 0, 0, 0], [-3.0, -3.0, 2.0, 0, 0]])
    stds = np.array([0.3, 0.6, 1.0])
    labels = rng.choice(3, n, p=[0.5, 0.3, 0.2])
    return means, means[labels] + rng.standard_normal((n, 5)) * stds[labels, None], stds


def test_fit_gmm_recovers_a_known_mixture_and_is_deterministic():
    rng = np.random.default_rng(5)
    true_means, x, stds = _known_mixture(rng)
    means, covars, weights = prior_lib.fit_gmm(x, 3, seed=0)
    order = [int(np.argmin(np.linalg.norm(means - mu, axis=1))) for mu in true_means]
    assert sorted(order) == [0, 1, 2]
    np.testing.assert_allclose(means[order], true_means, atol=0.15)
    np.testing.assert_allclose(weights[order], [0.5, 0.3, 0.2], atol=0.04)
    np.testing.assert_allclose(np.sqrt(np.diagonal(covars[order], axis1=1, axis2=2)).mean(1), stds, rtol=0.1)
    again = prior_lib.fit_gmm(x, 3, seed=0)
    for a, b in zip((means, covars, weights), again):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="NaN or inf"):
        prior_lib.fit_gmm(np.where(x > 4.5, np.inf, x), 3)


def test_cli_fits_amass_like_files(tmp_path, capsys):
    rng = np.random.default_rng(6)
    folder = tmp_path / "amass" / "subject"
    folder.mkdir(parents=True)
    poses = rng.normal(0.0, 0.3, (400, 156))
    poses[5] = np.nan
    np.savez(folder / "walk_poses.npz", poses=poses, trans=np.zeros((400, 3)))
    np.savez(folder / "shape.npz", betas=np.zeros(16))  # AMASS's per-subject file: no poses, skipped
    smpl_poses = rng.normal(0.0, 0.3, (100, 72))
    smpl_poses[:, 66:] = 0.0
    np.savez(tmp_path / "smpl.npz", poses=smpl_poses)
    out = tmp_path / "prior.npz"
    argv = [f"--poses={tmp_path / 'amass'}", f"--poses={tmp_path / 'smpl.npz'}", f"--out={out}", "--components=2"]
    assert prior_lib.main(argv) == 0
    printed = capsys.readouterr().out
    assert "499 poses from 2 file(s)" in printed and "skipped 1 file(s)" in printed and "dropped 1 row" in printed
    assert "EM iteration" in printed
    p = prior_lib.load(out)
    assert p.means.shape == (2, D)
    assert np.all(np.isfinite(np.asarray(prior_lib.penalty(p, jnp.zeros((3, D))))))
    # AMASS's hand joints are not SMPL's: joints 22, 23 are zero in its poses (and in smpl.npz's here).
    np.testing.assert_allclose(np.asarray(p.means)[:, 63:], 0.0, atol=1e-6)

    np.savez(tmp_path / "wide.npz", poses=np.zeros((3, 70)))
    assert prior_lib.main([f"--poses={tmp_path / 'wide.npz'}", f"--out={out}"]) == 2
    assert "wide.npz" in capsys.readouterr().err


def test_cli_missing_path_exits_2(tmp_path, cache_env):
    missing = tmp_path / "nowhere"
    res = subprocess.run(
        [sys.executable, "-m", "hmr_jax.fitting.prior", f"--poses={missing}", f"--out={tmp_path / 'p.npz'}"],
        capture_output=True,
        text=True,
        env={**os.environ, **cache_env()},
        timeout=120,
    )
    assert res.returncode == 2, res.stderr
    # runpy warns that the package's __init__ already imported the module: not the CLI's output.
    lines = [line for line in res.stderr.strip().splitlines() if "RuntimeWarning" not in line]
    assert len(lines) == 1 and "not found" in lines[0] and str(missing) in lines[0]


def test_default_prior_prefers_generator_poses():
    path = prior_lib.default_prior_path()
    assert path.name.startswith("pose_prior_") and path.suffix == ".npz" and path.exists()
    p = prior_lib.default_prior()
    assert p.means.shape == (prior_lib.DEFAULT_COMPONENTS, D)
    held_out = prior_lib.synthetic_poses(64, seed=1)  # not the poses it was fitted to
    uniform = np.random.default_rng(7).uniform(-math.pi, math.pi, (64, D))
    likely = np.asarray(prior_lib.penalty(p, jnp.asarray(held_out, jnp.float32)))
    unlikely = np.asarray(prior_lib.penalty(p, jnp.asarray(uniform, jnp.float32)))
    assert np.all(np.isfinite(likely)) and likely.mean() < unlikely.mean()
    assert np.median(likely) < np.min(unlikely)
