"""Throughput of hmr_jax.render.render_mesh (numpy software rasteriser).

Run: python benchmarks/render.py [--n 50] [--sizes 256,512] [--ssaa 1] [--cull] [--body]

Renders a UV sphere with ~13k faces covering about a third of the image (and, with --body,
the procedural body model's T-pose) and prints images/s for each image size.
"""

import argparse
import time

import numpy as np

from hmr_jax import render


def uv_sphere(n_lat: int, n_lon: int, radius: float = 1.0):
    """UV sphere with 2 * n_lon * (n_lat - 1) faces, outward (counter-clockwise) winding."""
    theta = np.linspace(0, np.pi, n_lat + 1)[1:-1]
    phi = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    ring = np.stack([np.sin(t) * np.cos(p), np.cos(t), np.sin(t) * np.sin(p)], -1).reshape(-1, 3)
    verts = np.concatenate([[[0, 1, 0]], ring, [[0, -1, 0]]]) * radius
    nr = n_lat - 1
    idx = lambda i, j: 1 + i * n_lon + (j % n_lon)  # noqa: E731
    faces = []
    for j in range(n_lon):
        faces.append((0, idx(0, j + 1), idx(0, j)))
        faces.append((len(verts) - 1, idx(nr - 1, j), idx(nr - 1, j + 1)))
        for i in range(nr - 1):
            a, b, c, d = idx(i, j), idx(i, j + 1), idx(i + 1, j), idx(i + 1, j + 1)
            faces += [(a, b, d), (a, d, c)]
    return verts.astype(np.float32), np.array(faces, np.int32)


def bench(name, verts, faces, size, n, ssaa, **kw):
    focal = 500.0 * size / 256
    args = dict(focal=focal, center=(size / 2 - 0.5, size / 2 - 0.5), image_size=(size, size), ssaa=ssaa, **kw)
    res = render.render_mesh(verts, faces, **args)  # warm-up
    times = []
    c0 = time.process_time()
    for _ in range(n):
        t0 = time.perf_counter()
        render.render_mesh(verts, faces, **args)
        times.append(time.perf_counter() - t0)
    cpu = (time.process_time() - c0) / n  # CPU seconds per image (robust to a busy machine)
    med, best = float(np.median(times)), min(times)
    print(
        f"{name:6s} {size}x{size} ssaa={ssaa} F={len(faces)} cover={res.mask.mean():.2f}"
        f"{' cull' if kw.get('cull_backfaces') else ''}: wall {1 / med:5.1f} img/s median "
        f"({1e3 * med:.1f} ms), {1 / best:5.1f} best; CPU {1 / cpu:5.1f} img/s per core "
        f"({1e3 * cpu:.1f} ms)"
    )
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--ssaa", type=int, default=1)
    ap.add_argument("--cull", action="store_true", help="cull_backfaces=True")
    ap.add_argument("--body", action="store_true", help="also render the procedural body model")
    args = ap.parse_args()
    verts, faces = uv_sphere(80, 82, radius=0.5)
    verts = verts + np.array([0, 0, 3.0], np.float32)
    print(f"sphere: V={len(verts)} F={len(faces)}")
    for size in (int(s) for s in args.sizes.split(",")):
        bench("sphere", verts, faces, size, args.n, args.ssaa, cull_backfaces=args.cull)
    if args.body:
        from hmr_jax import body_model

        m = body_model.make_body_model()
        v = np.asarray(m["v_template"], np.float64) * np.array([1, -1, -1])  # 180 deg about x
        v = v - (v.max(0) + v.min(0)) / 2 + np.array([0, 0, 4.0])  # ~215 px tall at 256
        for size in (int(s) for s in args.sizes.split(",")):
            bench("body", v, np.asarray(m["f"]), size, args.n, args.ssaa, cull_backfaces=args.cull)


if __name__ == "__main__":
    main()
