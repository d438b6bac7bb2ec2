"""SMPLify's Gaussian-mixture pose prior: read, evaluate, fit to a pose set, and a default.

    from hmr_jax.fitting import prior
    p = prior.load("gmm_08.pkl")          # SMPLify's file (read safely), or an .npz of ours
    p = prior.default_prior()             # fitted to the synthetic pose generator, cached
    prior.penalty(p, body_pose)           # (..., 69) -> (...): the max-mixture negative log-likelihood

    python -m hmr_jax.fitting.prior --poses=AMASS_DIR [--poses=more.npz ...] --out=prior.npz \
        [--components=8] [--max-poses=100000] [--seed=0]

The mixture is over the 69 body-pose axis-angle values (SMPL joints 1..23, 3 each; no global
orientation). Its penalty is SMPLify's "max-mixture" (merged) negative log-likelihood, as
smplify-x and SPIN compute it: with P_m = inv(C_m), s_m = sqrt(det C_m) and c = (2 pi)^(69/2),

    w'_m = w_m / (c s_m / min_k s_k)
    penalty(x) = min_m [ 0.5 (x - mu_m)^T P_m (x - mu_m) - log w'_m ]

The constants are computed in float64 from log-determinants (det C_m of a 69 x 69 pose covariance
underflows); the quadratic is |F_m (x - mu_m)|^2 with F_m = inv(chol(C_m)), so F_m^T F_m = P_m.

Files: SMPLify's `gmm_08.pkl` (a Python-2 pickle of a dict `means` (M, 69), `covars` (M, 69, 69),
`weights` (M,)) is read by `model_files.read_pickle_dict` (no code from the file runs); an `.npz`
holds the same three arrays (read with allow_pickle=False, written by `save`). The project ships no
licensed prior: `default_prior()` is a GMM fitted (`fit_gmm`, EM) to poses drawn from the
synthetic data generator and cached under `body_model.cache_dir()`. The CLI fits one to a user's
pose files instead (AMASS .npz, SPIN annotations, or plain (N, 69) / (N, 72) arrays).
"""

import argparse
import dataclasses
import math
import os
import pathlib
import sys
import time
import uuid
import zipfile
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float
from scipy import linalg, special

from hmr_jax import body_model, model_files

NUM_BODY_POSE = 69  # SMPL joints 1..23, axis-angle
GMM_KEYS = ("means", "covars", "weights")
MAX_COMPONENTS = 1024
MAX_NPZ_BYTES = 256 << 20  # means + covars + weights of MAX_COMPONENTS components in float64 fit easily
DEFAULT_COMPONENTS = 8
DEFAULT_NUM_POSES = 10_000  # drawn from the synthetic generator for the default prior
DEFAULT_SEED = 0
DEFAULT_REG_COVAR = 1e-4  # added to each covariance's diagonal (rad^2): a 0.01 rad floor on every std
DEFAULT_MAX_POSES = 100_000  # the CLI's subsample of a large pose set (0: all)
PRIOR_VERSION = "v1"  # part of the default's cache name: change when its poses or fitting change
_SYMMETRY_RTOL = 1e-5


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PosePrior:
    """A Gaussian mixture over the 69 body-pose values, laid out for `penalty` (float32).

    means (M, 69); precisions (M, 69, 69) = inv(covars); log_weights (M,) = -log w'_m, the constant
    added to component m's quadratic (see the module docstring); precision_factors (M, 69, 69)
    = F_m with F_m^T F_m = precisions_m (the inverse Cholesky factor of the covariance).
    """

    means: Float[Array, "m 69"]
    precisions: Float[Array, "m 69 69"]
    log_weights: Float[Array, " m"]
    precision_factors: Float[Array, "m 69 69"]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]


def check_gmm(
    means: Float[np.ndarray, "m d"],
    covars: Float[np.ndarray, "m d d"],
    weights: Float[np.ndarray, " m"],
    where: str,
    dim: int | None = NUM_BODY_POSE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(means, covars, weights) as float64 arrays, checked; covariances symmetrised.

    Raises ValueError starting with `where` (a file name, or the caller): shapes other than (M, d),
    (M, d, d), (M,) with d = `dim` (any d when None) and 1 <= M <= MAX_COMPONENTS, values that are
    not finite numbers, weights <= 0, or covariances not symmetric positive definite.
    """
    arrays = {}
    for key, value in zip(GMM_KEYS, (means, covars, weights)):
        arr = np.asarray(value)
        if arr.dtype.kind not in "iuf":
            raise ValueError(f"{where}: {key} must hold real numbers, found dtype {arr.dtype}")
        arrays[key] = arr.astype(np.float64)
    means, covars, weights = arrays["means"], arrays["covars"], arrays["weights"]
    m = means.shape[0] if means.ndim == 2 else None
    d = means.shape[1] if means.ndim == 2 else None
    want_d = "d" if dim is None else dim
    if means.ndim != 2 or (dim is not None and d != dim) or not 1 <= m <= MAX_COMPONENTS:
        raise ValueError(
            f"{where}: means must be (M, {want_d}) with 1 <= M <= {MAX_COMPONENTS}, found shape {means.shape}"
        )
    if covars.shape != (m, d, d):
        raise ValueError(f"{where}: covars must be ({m}, {d}, {d}) for {m} components, found shape {covars.shape}")
    if weights.shape != (m,):
        raise ValueError(f"{where}: weights must be ({m},) for {m} components, found shape {weights.shape}")
    for key, arr in (("means", means), ("covars", covars), ("weights", weights)):
        bad = int(np.sum(~np.isfinite(arr)))
        if bad:
            raise ValueError(f"{where}: {key} holds {bad} NaN or inf value(s)")
    if np.any(weights <= 0):
        raise ValueError(f"{where}: weights must be > 0, found {np.array2string(weights, precision=4)}")
    scale = np.maximum(np.abs(covars).max(axis=(1, 2)), np.finfo(np.float64).tiny)  # (M,)
    asym = np.abs(covars - covars.transpose(0, 2, 1)).max(axis=(1, 2)) / scale
    if np.any(asym > _SYMMETRY_RTOL):
        k = int(np.argmax(asym))
        raise ValueError(
            f"{where}: covars[{k}] is not symmetric (max |C - C^T| / max |C| = {asym[k]:.2e}, "
            f"tolerance {_SYMMETRY_RTOL:.0e})"
        )
    covars = 0.5 * (covars + covars.transpose(0, 2, 1))
    for k in range(m):
        try:
            np.linalg.cholesky(covars[k])
        except np.linalg.LinAlgError:
            low = float(np.linalg.eigvalsh(covars[k])[0])
            raise ValueError(f"{where}: covars[{k}] is not positive definite (smallest eigenvalue {low:.3e})") from None
    return means, covars, weights


def _prior_from_checked(means: np.ndarray, covars: np.ndarray, weights: np.ndarray) -> PosePrior:
    """The float64 constants of SMPLify's max-mixture, then float32 arrays."""
    dim = means.shape[1]
    eye = np.eye(dim)
    factors, logdets = [], []
    for cov in covars:
        chol = np.linalg.cholesky(cov)  # C = L L^T
        factors.append(linalg.solve_triangular(chol, eye, lower=True))  # F = L^-1: F^T F = C^-1
        logdets.append(2.0 * np.sum(np.log(np.diag(chol))))
    factors, logdets = np.stack(factors), np.asarray(logdets)  # (M, d, d), (M,)
    precisions = np.einsum("mki,mkj->mij", factors, factors)
    # log w'_m = log w_m - log c - log s_m + log min s, with log s_m = logdet_m / 2.
    log_nll_weights = np.log(weights) - 0.5 * dim * math.log(2.0 * math.pi) - 0.5 * logdets + 0.5 * logdets.min()
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    return PosePrior(
        means=f32(means), precisions=f32(precisions), log_weights=f32(-log_nll_weights), precision_factors=f32(factors)
    )


def from_gmm(
    means: Float[np.ndarray, "m 69"], covars: Float[np.ndarray, "m 69 69"], weights: Float[np.ndarray, " m"]
) -> PosePrior:
    """The pose prior of a Gaussian mixture over the 69 body-pose values (checked as `check_gmm`)."""
    return _prior_from_checked(*check_gmm(means, covars, weights, "from_gmm"))


def penalty(prior: PosePrior, body_pose: Float[Array, "*b 69"]) -> Float[Array, "*b"]:
    """SMPLify's max-mixture negative log-likelihood of body poses (joints 1..23, axis-angle).

    min over components m of 0.5 (x - mu_m)^T P_m (x - mu_m) + log_weights_m, for any leading batch
    shape; jit- and grad-safe (the gradient is that of the nearest component).
    """
    body_pose = jnp.asarray(body_pose)
    if body_pose.shape[-1:] != (prior.means.shape[-1],):
        raise ValueError(f"body_pose must be (..., {prior.means.shape[-1]}) axis-angle, found shape {body_pose.shape}")
    m, d = prior.means.shape
    # F_m (x - mu_m) for every component as one (.., 69) @ (69, M * 69) product (a GEMM: several
    # times faster than a batched contraction over components on CPU).
    stacked = jnp.transpose(prior.precision_factors, (2, 0, 1)).reshape(d, m * d)  # [j, m*d + i] = F_m[i, j]
    offset = jnp.einsum("mij,mj->mi", prior.precision_factors, prior.means).reshape(m * d)
    white = (body_pose @ stacked - offset).reshape(body_pose.shape[:-1] + (m, d))  # (*b, M, 69)
    per_component = 0.5 * jnp.sum(jnp.square(white), axis=-1) + prior.log_weights  # (*b, M)
    return jnp.min(per_component, axis=-1)


# --- files


def _read_npz(path: str) -> tuple[np.ndarray, ...]:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in GMM_KEYS if k not in z.files]
            if missing:
                raise ValueError(
                    f"{path}: missing array(s) {missing}; a pose-prior .npz holds {list(GMM_KEYS)}, found {z.files}"
                )
            total = sum(z.zip.getinfo(f"{k}.npy").file_size for k in GMM_KEYS)
            if total > MAX_NPZ_BYTES:
                raise ValueError(f"{path}: the GMM arrays declare {total:,} bytes, more than {MAX_NPZ_BYTES:,}")
            return tuple(z[k] for k in GMM_KEYS)
    except ValueError as e:
        msg = str(e)
        raise ValueError(msg if msg.startswith(path) else f"{path}: not a usable pose-prior .npz: {msg}") from None
    except (OSError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise ValueError(f"{path}: not a readable pose-prior .npz (truncated or corrupt?): {e!r}") from None


def read_gmm(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(means, covars, weights), float64 and checked (`check_gmm`), of a .pkl (SMPLify) or .npz file.

    Raises FileNotFoundError (also a ValueError) for a missing file, ValueError naming the file for
    anything else: an unknown extension, a refused or corrupt pickle, missing keys, bad values.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if not os.path.exists(path):
        raise model_files.ModelFileNotFoundError(f"pose prior file not found: {path}")
    if ext == ".pkl":
        arrays = model_files.read_pickle_dict(path, "pose-prior pickle (SMPLify's gmm_08.pkl layout)", GMM_KEYS)
        means, covars, weights = (arrays[k] for k in GMM_KEYS)
    elif ext == ".npz":
        means, covars, weights = _read_npz(path)
    else:
        raise ValueError(f"{path}: unknown pose-prior file type {ext!r}; expected .pkl (SMPLify) or .npz")
    return check_gmm(means, covars, weights, path)


def load(path: str | os.PathLike) -> PosePrior:
    """The pose prior of a .pkl (SMPLify's gmm_08.pkl, read safely) or .npz (`save`) file."""
    return _prior_from_checked(*read_gmm(path))


def _write_npz_atomic(path: pathlib.Path, arrays: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # In the same folder, so os.replace is atomic; opened "xb" to get the umask's permissions.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save(
    path: str | os.PathLike,
    means: Float[np.ndarray, "m 69"],
    covars: Float[np.ndarray, "m 69 69"],
    weights: Float[np.ndarray, " m"],
) -> pathlib.Path:
    """Write a Gaussian mixture (checked as `check_gmm`) to an .npz, float64, atomically; returns the path."""
    path = pathlib.Path(path)
    if path.suffix.lower() != ".npz":
        raise ValueError(f"{path}: a pose prior is saved as .npz, found suffix {path.suffix!r}")
    means, covars, weights = check_gmm(means, covars, weights, f"save({path})")
    _write_npz_atomic(path, dict(means=means, covars=covars, weights=weights))
    return path


# --- EM for a full-covariance Gaussian mixture


def _log_gaussians(x: np.ndarray, means: np.ndarray, covars: np.ndarray) -> np.ndarray:
    """(N, M) log N(x_n; mu_m, C_m), through Cholesky factors."""
    n, d = x.shape
    out = np.empty((n, len(means)))
    for k, (mu, cov) in enumerate(zip(means, covars)):
        chol = np.linalg.cholesky(cov)
        z = linalg.solve_triangular(chol, (x - mu).T, lower=True, check_finite=False)  # (d, N)
        out[:, k] = -0.5 * np.einsum("dn,dn->n", z, z) - np.sum(np.log(np.diag(chol))) - 0.5 * d * math.log(2 * math.pi)
    return out


def _m_step(x: np.ndarray, resp: np.ndarray, reg_covar: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights, means and regularised covariances from responsibilities (N, M)."""
    n, d = x.shape
    nk = resp.sum(axis=0) + 10 * np.finfo(np.float64).eps  # (M,): never 0
    means = (resp.T @ x) / nk[:, None]  # (M, d)
    covars = np.empty((len(nk), d, d))
    for k in range(len(nk)):
        scaled = np.sqrt(resp[:, k, None]) * (x - means[k])  # (N, d)
        covars[k] = scaled.T @ scaled / nk[k]
        covars[k].flat[:: d + 1] += reg_covar
    return means, covars, nk / n


def _kmeans_labels(x: np.ndarray, num: int, rng: np.random.Generator, iterations: int = 20) -> np.ndarray:
    """(N,) cluster labels: k-means++ seeding, then Lloyd iterations."""
    n = len(x)
    sq = np.einsum("nd,nd->n", x, x)
    centers = np.empty((num, x.shape[1]))
    centers[0] = x[rng.integers(n)]
    d2 = np.maximum(sq - 2 * x @ centers[0] + centers[0] @ centers[0], 0.0)
    for k in range(1, num):
        total = d2.sum()
        idx = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
        centers[k] = x[idx]
        d2 = np.minimum(d2, np.maximum(sq - 2 * x @ centers[k] + centers[k] @ centers[k], 0.0))
    labels = np.full(n, -1)
    for _ in range(iterations):
        dist = sq[:, None] - 2 * x @ centers.T + np.einsum("kd,kd->k", centers, centers)[None]  # (N, M)
        new = np.argmin(dist, axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        for k in range(num):
            members = labels == k
            if members.any():  # an empty cluster keeps its centre
                centers[k] = x[members].mean(axis=0)
    return labels


def fit_gmm(
    poses: Float[np.ndarray, "n d"],
    num_components: int = DEFAULT_COMPONENTS,
    seed: int = 0,
    iterations: int = 200,
    reg_covar: float = DEFAULT_REG_COVAR,
    tol: float = 1e-5,
    log: Callable[[str], None] | None = None,
) -> tuple[Float[np.ndarray, "m d"], Float[np.ndarray, "m d d"], Float[np.ndarray, " m"]]:
    """A full-covariance Gaussian mixture fitted to `poses` by EM: (means, covars, weights), float64.

    Initialised from k-means (k-means++ seeding drawn from `seed`, so a seed gives the same mixture),
    then EM until the mean log-likelihood gains less than `tol` or after `iterations` steps.
    `reg_covar` is added to every covariance's diagonal so none goes singular (e.g. on values that
    are constant in the data). `log`, when given, receives progress lines.
    """
    x = np.asarray(poses)
    if x.ndim != 2 or x.dtype.kind not in "iuf":
        raise ValueError(f"fit_gmm: poses must be a (N, d) array of numbers, found shape {x.shape} dtype {x.dtype}")
    x = x.astype(np.float64)
    if not 1 <= num_components <= MAX_COMPONENTS:
        raise ValueError(f"fit_gmm: num_components must be in [1, {MAX_COMPONENTS}], found {num_components}")
    if len(x) < num_components:
        raise ValueError(f"fit_gmm: {num_components} components need at least as many poses, found {len(x)}")
    bad = int(np.sum(~np.all(np.isfinite(x), axis=1)))
    if bad:
        raise ValueError(f"fit_gmm: {bad} of {len(x)} poses hold NaN or inf")
    if not reg_covar > 0 or iterations < 1:
        raise ValueError(f"fit_gmm: reg_covar must be > 0 and iterations >= 1, found {reg_covar}, {iterations}")
    rng = np.random.default_rng(seed)
    labels = _kmeans_labels(x, num_components, rng)
    means, covars, weights = _m_step(x, np.eye(num_components)[labels], reg_covar)
    previous = -np.inf
    for step in range(1, iterations + 1):
        weighted = _log_gaussians(x, means, covars) + np.log(weights)  # (N, M)
        norm = special.logsumexp(weighted, axis=1)  # (N,)
        mean_ll = float(norm.mean())
        means, covars, weights = _m_step(x, np.exp(weighted - norm[:, None]), reg_covar)
        converged = abs(mean_ll - previous) < tol
        if log is not None and (converged or step % 10 == 0 or step == iterations):
            log(f"EM iteration {step}: mean log-likelihood {mean_ll:.5f}" + (" (converged)" if converged else ""))
        if converged:
            break
        previous = mean_ll
    return means, covars, weights


# --- the default: fitted to the synthetic pose generator


def synthetic_poses(num: int, seed: int = 0) -> Float[np.ndarray, "n 69"]:
    """`num` body poses (joints 1..23) as the synthetic data generator draws them for `seed`.

    Sequence by sequence as `hmr_jax.data.synthetic` renders them: a subject's shaped body (its rest
    joints decide self-intersection), a start and an end pose (`scenes.sequence_setup`), and the
    frames between them (`scenes.frame_pose`); deterministic for a seed.
    """
    from hmr_jax.data.synthetic import body as body_lib  # pylint: disable=g-import-not-at-top
    from hmr_jax.data.synthetic import samples, scenes  # pylint: disable=g-import-not-at-top

    body, _ = body_lib.load()
    frames = samples.FRAMES_PER_SEQUENCE
    out, rest, rest_sid = [], None, None
    for qid in range(-(-num // frames)):
        sid = qid // samples.SEQUENCES_PER_SUBJECT
        if sid != rest_sid:
            rest, rest_sid = body_lib.shaped(body, scenes.subject(seed, sid).betas)[1], sid
        seq = scenes.sequence_setup(seed, qid, rest, img_size=256, frames=frames)
        out.extend(scenes.frame_pose(seq, f, frames)[0][1:].reshape(NUM_BODY_POSE) for f in range(frames))
    return np.stack(out[:num])


def default_prior_path() -> pathlib.Path:
    """The default prior's cached .npz (fitted on first use, written atomically).

    A GMM of DEFAULT_COMPONENTS components fitted to DEFAULT_NUM_POSES poses of the synthetic
    generator (`synthetic_poses`, seed DEFAULT_SEED); the file name carries the versions of this
    recipe, of the pose generator and of the default body model the poses depend on.
    """
    from hmr_jax.data.synthetic.writer import GENERATOR_VERSION  # pylint: disable=g-import-not-at-top

    name = f"pose_prior_{PRIOR_VERSION}_{GENERATOR_VERSION}_{body_model.GENERATOR_VERSION}_{DEFAULT_COMPONENTS}.npz"
    path = body_model.cache_dir() / name
    if not path.exists():
        poses = synthetic_poses(DEFAULT_NUM_POSES, DEFAULT_SEED)
        save(path, *fit_gmm(poses, DEFAULT_COMPONENTS, seed=DEFAULT_SEED))
    return path


def default_prior() -> PosePrior:
    """The pose prior fitted to the synthetic pose generator (`default_prior_path`)."""
    return load(default_prior_path())


# --- pose files (the CLI)


def body_poses_of(array: np.ndarray, where: str) -> Float[np.ndarray, "n 69"]:
    """The (N, 69) body poses (joints 1..23) of a pose array, by its width.

    (N, 156) SMPL-H / (N, 165) SMPL-X (AMASS): body joints 1..21 are columns 3:66, SMPL's hand
    joints 22 and 23 are set to zero; (N, 72) SMPL: the global orientation (first 3) is dropped;
    (N, 69) as is; (N, 24, 3) as (N, 72). Raises ValueError starting with `where` otherwise.
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[1:] == (24, 3):
        a = a.reshape(len(a), 72)
    if a.ndim != 2 or a.dtype.kind not in "iuf" or a.shape[1] not in (69, 72, 156, 165):
        raise ValueError(
            f"{where}: expected poses of shape (N, 156) or (N, 165) (AMASS SMPL-H / SMPL-X), (N, 72) or (N, 24, 3) "
            f"(SMPL) or (N, 69) (body only), found {array.shape} {array.dtype}"
        )
    if a.shape[1] in (156, 165):
        return np.concatenate([a[:, 3:66], np.zeros((len(a), 6), a.dtype)], axis=1)
    return a[:, 3:] if a.shape[1] == 72 else a


def _pose_files(paths: Sequence[str]) -> list[tuple[str, bool]]:
    """(file, named) for each path: a file itself (named), or the .npz files below a folder."""
    files = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(str(f) for f in pathlib.Path(p).rglob("*.npz") if f.is_file())
            if not found:
                raise ValueError(f"{p}: no .npz files found in this folder (searched recursively)")
            files.extend((f, False) for f in found)
        elif os.path.isfile(p):
            files.append((p, True))
        else:
            raise FileNotFoundError(f"pose file or folder not found: {p}")
    return files


def read_pose_files(paths: Sequence[str], log: Callable[[str], None] = print) -> Float[np.ndarray, "n 69"]:
    """The (N, 69) float32 body poses of .npz files and folders (searched recursively for .npz).

    Each file's `poses` (AMASS) or `pose` (SPIN annotations) array goes through `body_poses_of`.
    A file found in a folder without either key (e.g. AMASS's shape.npz) is skipped; a named one is
    an error. Rows holding NaN or inf are dropped. Both are counted and reported through `log`.
    """
    files = _pose_files(paths)
    chunks, skipped, dropped = [], [], 0
    for f, named in files:
        try:
            with np.load(f, allow_pickle=False) as z:
                key = next((k for k in ("poses", "pose") if k in z.files), None)
                if key is None:
                    if named:
                        raise ValueError(f"{f}: no 'poses' (AMASS) or 'pose' array; found {z.files}")
                    skipped.append(f)
                    continue
                arr = z[key]
        except ValueError as e:
            raise ValueError(str(e) if str(e).startswith(f) else f"{f}: not a usable pose file: {e}") from None
        except (OSError, zipfile.BadZipFile, EOFError) as e:
            raise ValueError(f"{f}: not a readable .npz file: {e!r}") from None
        body = body_poses_of(arr, f"{f}: {key!r}").astype(np.float32)
        finite = np.all(np.isfinite(body), axis=1)
        dropped += int(np.sum(~finite))
        chunks.append(body[finite])
    poses = np.concatenate(chunks) if chunks else np.zeros((0, NUM_BODY_POSE), np.float32)
    log(
        f"read {len(poses):,} poses from {len(files) - len(skipped)} file(s)"
        f"; skipped {len(skipped)} file(s) without poses; dropped {dropped:,} row(s) holding NaN or inf"
    )
    if not len(poses):
        raise ValueError(f"no poses found in {list(paths)}")
    return poses


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m hmr_jax.fitting.prior",
        description="Fit SMPLify's GMM pose prior to pose files (AMASS .npz, SPIN annotations, (N, 69) / (N, 72) "
        "arrays) and write it as an .npz; without --poses, write the default prior (fitted to the synthetic "
        "pose generator).",
    )
    parser.add_argument(
        "--poses", action="append", default=[], help=".npz file or folder (searched recursively); repeatable"
    )
    parser.add_argument("--out", required=True, help="output .npz (means, covars, weights)")
    parser.add_argument("--components", type=int, default=DEFAULT_COMPONENTS, help="mixture components")
    parser.add_argument(
        "--max-poses",
        type=int,
        default=DEFAULT_MAX_POSES,
        help="fit to a random subset of at most this many poses (0: all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset and of the EM initialisation")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI; returns the exit status (2 on a user error, its message on stderr)."""
    args = _parse_args(argv)
    log = lambda msg: print(msg, flush=True)
    try:
        if not args.out.lower().endswith(".npz"):
            raise ValueError(f"--out must be an .npz file, found {args.out!r}")
        if args.components < 1 or args.max_poses < 0:
            raise ValueError(
                f"--components must be >= 1 and --max-poses >= 0, found {args.components}, {args.max_poses}"
            )
        if not args.poses:
            log("no --poses: writing the default prior (fitted to the synthetic pose generator)")
            out = save(args.out, *read_gmm(default_prior_path()))
            log(f"wrote {out}")
            return 0
        poses = read_pose_files(args.poses, log)
        if args.max_poses and len(poses) > args.max_poses:
            keep = np.sort(np.random.default_rng(args.seed).choice(len(poses), args.max_poses, replace=False))
            poses = poses[keep]
            log(f"fitting to a random subset of {len(poses):,} poses (--max-poses)")
        log(f"fitting {args.components} components to {len(poses):,} poses x {poses.shape[1]} values (EM)")
        start = time.perf_counter()
        gmm = fit_gmm(poses, args.components, seed=args.seed, log=log)
        out = save(args.out, *gmm)
        log(f"wrote {out} ({time.perf_counter() - start:.1f} s)")
        return 0
    except (ValueError, OSError) as e:  # FileNotFoundError and model_files' errors included
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
