"""3D modality: mesh / point readers, surface sampling, pointcloud:DIR, shapes:N, shape descriptors, user networks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from align.data import load_dataset
from align.data._pointcloud import mesh_area, read_shape, sample_surface
from align.data._shapes import PRIMITIVES, primitive_mesh
from align.encoders import load_encoder
from align.encoders._shape import PointCloudModelEncoder, farthest_point_sample

CUBE_V = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=float)
CUBE_F = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]


def write_off(path, verts=CUBE_V, faces=CUBE_F, quirk=False):
    head = f"OFF{len(verts)} {len(faces)} 0\n" if quirk else f"OFF\n{len(verts)} {len(faces)} 0\n"
    body = "".join(f"{x} {y} {z}\n" for x, y, z in verts) + "".join(f"{len(f)} {' '.join(map(str, f))}\n"
                                                                   for f in faces)
    path.write_text(head + body)


def write_ply_binary(path, verts, tris):
    header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(verts)}\nproperty float x\n"
              f"property float y\nproperty float z\nelement face {len(tris)}\n"
              "property list uchar int vertex_indices\nend_header\n").encode()
    body = np.asarray(verts, dtype="<f4").tobytes()
    for t in tris:
        body += np.uint8(3).tobytes() + np.asarray(t, dtype="<i4").tobytes()
    path.write_bytes(header + body)


# -- readers and sampling -------------------------------------------------------------------------------------


def test_readers_agree_on_a_cube(tmp_path):
    write_off(tmp_path / "a.off")
    write_off(tmp_path / "q.off", quirk=True)
    tris = [(a, b, c) for q in CUBE_F for (a, b, c) in ((q[0], q[1], q[2]), (q[0], q[2], q[3]))]
    write_ply_binary(tmp_path / "b.ply", CUBE_V, tris)
    (tmp_path / "c.obj").write_text("".join(f"v {x} {y} {z}\n" for x, y, z in CUBE_V)
                                    + "".join(f"f {a + 1}/1 {b + 1} {c + 1}\n" for a, b, c in tris))
    (tmp_path / "d.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 8\nproperty float x\nproperty float y\nproperty float z\n"
        "element face 6\nproperty list uchar int vertex_indices\nend_header\n"
        + "".join(f"{x} {y} {z}\n" for x, y, z in CUBE_V) + "".join(f"4 {' '.join(map(str, q))}\n" for q in CUBE_F))
    for name in ("a.off", "q.off", "b.ply", "c.obj", "d.ply"):
        v, f = read_shape(tmp_path / name)
        assert_allclose(v, CUBE_V)
        assert len(f) == 12 and mesh_area(v, f).sum() == pytest.approx(6.0)
    (tmp_path / "p.txt").write_text("0.1,0.2,0.3,0,0,1\n1,2,3,0,1,0\n")
    np.save(tmp_path / "p.npy", np.arange(12.0).reshape(4, 3))
    assert_allclose(read_shape(tmp_path / "p.txt")[0], [[0.1, 0.2, 0.3], [1, 2, 3]])
    v, f = read_shape(tmp_path / "p.npy")
    assert v.shape == (4, 3) and len(f) == 0


def test_bad_meshes_get_clear_errors(tmp_path):
    write_off(tmp_path / "empty.off", verts=np.zeros((0, 3)), faces=[])
    with pytest.raises(ValueError, match="empty.off.*empty"):
        read_shape(tmp_path / "empty.off")
    flat = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0]], dtype=float)
    write_off(tmp_path / "flat.off", verts=flat, faces=[(0, 1, 2)])
    v, f = read_shape(tmp_path / "flat.off")
    with pytest.raises(ValueError, match="degenerate"):
        sample_surface(v, f, 10, np.random.default_rng(0), name="flat.off")
    write_off(tmp_path / "oob.off", verts=flat, faces=[(0, 1, 7)])
    with pytest.raises(ValueError, match="out of range"):
        read_shape(tmp_path / "oob.off")
    (tmp_path / "nan.txt").write_text("0,0,nan\n")
    with pytest.raises(ValueError, match="NaN"):
        read_shape(tmp_path / "nan.txt")
    (tmp_path / "x.off").write_text("PLY\n")
    with pytest.raises(ValueError, match="not an OFF file"):
        read_shape(tmp_path / "x.off")


def test_surface_samples_lie_on_the_surface_and_follow_area():
    rng = np.random.default_rng(0)
    v, f = primitive_mesh("cube")
    pts = sample_surface(v, f, 2000, rng)
    assert_allclose(np.abs(pts).max(1), 0.5, atol=1e-12)  # every point on a face of the unit cube
    # two triangles of area 1/2 and 3/2: a quarter of the points on the first
    v2 = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [10, 0, 0], [13, 0, 0], [10, 1, 0]], dtype=float)
    pts = sample_surface(v2, np.array([[0, 1, 2], [3, 4, 5]]), 20000, rng)
    assert np.mean(pts[:, 0] < 5) == pytest.approx(0.25, abs=0.015)


def test_pointcloud_folder_labels_split_captions_and_stable_sampling(tmp_path):
    for cls in ("chair", "table"):
        for split in ("train", "test"):
            (tmp_path / cls / split).mkdir(parents=True)
            write_off(tmp_path / cls / split / f"{cls}_{split}.off")
    (tmp_path / "captions.csv").write_text("file,caption\nchair_train,a chair\ntable/train/table_train.off,a table\n")
    (tmp_path / "modelnet_shape_names.txt").write_text("chair\ntable\n")  # a root-level list, not a shape
    ds = load_dataset(f"pointcloud:{tmp_path}", split="train", n_points=256)
    assert ds.ids == ["chair/train/chair_train.off", "table/train/table_train.off"]
    assert ds.classes == ["chair", "table"] and ds.labels.tolist() == [0, 1]
    assert ds.fields == ("points", "caption") and ds.get(1, "caption") == "a table"
    pts = ds.get(0)
    assert pts.shape == (256, 3) and pts.dtype == np.float32 and ds.modality("points") == "pointcloud"
    write_off(tmp_path / "chair" / "train" / "a_first.off")
    with open(tmp_path / "captions.csv", "a") as f:
        f.write("a_first,another chair\n")
    more = load_dataset(f"pointcloud:{tmp_path}", split="train", n_points=256)
    assert more.ids[1] == ds.ids[0]
    assert_allclose(more.get(1), pts)  # a shape's points depend on its path and seed, not on the other files
    assert not np.allclose(load_dataset(f"pointcloud:{tmp_path}", split="train", n_points=256, seed=1).get(0), pts)
    with pytest.raises(ValueError, match="no caption for 'chair/test/chair_test.off'"):
        load_dataset(f"pointcloud:{tmp_path}")
    with pytest.raises(ValueError, match="no 3D files"):
        load_dataset(f"pointcloud:{tmp_path}", split="val")


# -- procedural shapes ----------------------------------------------------------------------------------------


def test_procedural_shapes_are_stable_and_captioned():
    small, big = load_dataset("shapes:6", n_points=300), load_dataset("shapes:12", n_points=300)
    assert small.texts() == big.texts()[:6] and small.ids == big.ids[:6]
    assert_allclose(small.get(3), big.get(3))
    assert small.fingerprint() == load_dataset("shapes:6", n_points=300).fingerprint()
    assert small.fingerprint() != load_dataset("shapes:6", n_points=300, seed=1).fingerprint()
    ds = load_dataset("shapes:60", n_points=500)
    assert ds.classes == list(PRIMITIVES)
    for spec, caption, label in zip(ds.specs, ds.texts(), ds.labels):
        noun = caption.split()[-1] if spec.count == 1 else None
        assert spec.size in caption and PRIMITIVES[label] == spec.primitive
        if noun is not None:
            assert noun == spec.primitive
    radius = {s: [] for s in ("small", "large")}
    for i, spec in enumerate(ds.specs):
        if spec.count == 1 and spec.size in radius:
            p = ds.get(i)
            radius[spec.size].append(np.linalg.norm(p - p.mean(0), axis=1).max())
    assert min(radius["large"]) > max(radius["small"])
    with pytest.raises(ValueError, match="number of shapes"):
        load_dataset("shapes:many")


# -- non-learned descriptors ----------------------------------------------------------------------------------


def test_shape_descriptors_are_invariant_and_batch_independent():
    rng = np.random.default_rng(0)
    ds = load_dataset("shapes:4", n_points=600)
    clouds = [ds.get(i) for i in range(4)]
    enc = load_encoder("shape:d2+a3+d1", bins=16, n_points=256, n_samples=2000)
    X = enc.encode(clouds)
    assert X.shape == (4, 48) and enc.dim == 48
    assert_allclose(X.reshape(4, 3, 16).sum(-1), 1.0, atol=1e-6)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    moved = [(c @ q.T * 3.0 + np.array([5, -2, 1])).astype(np.float32) for c in clouds]
    assert_allclose(enc.encode(moved), X, atol=2e-3)  # rotation, translation and scale (float32 bin edges)
    assert_allclose(enc.encode(clouds[2:3]), X[2:3])
    assert_allclose(enc.encode(clouds[::-1])[::-1], X)
    line = np.stack([np.linspace(0, 1, 100), np.zeros(100), np.zeros(100)], 1).astype(np.float32)
    a3_enc = load_encoder("shape:a3", bins=4, n_points=100)
    a3 = a3_enc.encode([line])[0]
    t = a3_enc._triples  # collinear triples: angles 0 or pi; a repeated index has no angle and lands at pi/2
    coincident = np.mean((t[:, 0] == t[:, 1]) | (t[:, 2] == t[:, 1]))
    assert a3[0] + a3[-1] == pytest.approx(1 - coincident, abs=1e-6)


def test_covariance_spectrum_known_answer():
    rng = np.random.default_rng(1)
    box = rng.uniform(-1, 1, size=(4000, 3)) * np.array([3.0, 2.0, 1.0])
    f = load_encoder("shape:cov", n_points=4000).encode([box.astype(np.float32)])[0]
    sd = np.array([3.0, 2.0, 1.0]) / np.sqrt(3)  # std of U(-a, a) is a / sqrt(3)
    assert_allclose(f[:3], sd, rtol=0.05)
    assert_allclose(f[3:5], [2 / 3, 1 / 3], rtol=0.05)


def test_descriptor_errors():
    enc = load_encoder("shape:d2", n_points=16)
    with pytest.raises(ValueError, match="degenerate"):
        enc.encode([np.ones((20, 3), dtype=np.float32)])
    with pytest.raises(ValueError, match=r"point cloud 1 has shape \(5, 2\)"):
        enc.encode([np.zeros((5, 3)), np.zeros((5, 2))])
    with pytest.raises(ValueError, match="unknown shape descriptor.*'d9'"):
        load_encoder("shape:d2+d9")


# -- user networks --------------------------------------------------------------------------------------------


def test_farthest_point_sampling_known_answer_and_padding():
    x = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [10, 0, 0], [4, 0, 0], [0, 0, 0], [0, 0, 0]]])
    assert farthest_point_sample(x, 4).tolist() == [[0, 2, 3, 1]]  # the padded copies of point 0 never win


class TinyPointNet(torch.nn.Module):
    """Shared per-point MLP then max pooling: permutation invariant (Qi et al. 2017)."""

    def __init__(self, d=6, channels_first=False):
        super().__init__()
        self.channels_first = channels_first
        self.mlp = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.ReLU(), torch.nn.Linear(16, d))

    def forward(self, x):
        if self.channels_first:
            x = x.transpose(1, 2)
        return self.mlp(x).amax(dim=1)


def test_pointnet_and_torchscript_checkpoints(tmp_path):
    torch.manual_seed(0)
    net = TinyPointNet()
    torch.save(net, tmp_path / "pn.pt")
    torch.jit.script(net).save(str(tmp_path / "pn.ts"))
    rng = np.random.default_rng(0)
    clouds = [rng.normal(size=(64, 3)).astype(np.float32), rng.normal(size=(40, 3)).astype(np.float32)]
    a = load_encoder(f"pointnet:{tmp_path / 'pn.pt'}", n_points=32)
    b = load_encoder(f"torchscript:{tmp_path / 'pn.ts'}", n_points=32)
    assert a.dim == b.dim == 6 and a.modality == "pointcloud"
    Xa = a.encode(clouds)
    assert_allclose(b.encode(clouds), Xa, atol=1e-6)
    assert_allclose(a.encode(clouds[1:]), Xa[1:], atol=1e-6)  # padding of the shorter cloud changes nothing
    # with exactly n_points points every point is sampled once: the output ignores the point order
    c = clouds[0][:32]
    assert_allclose(a.encode([c[rng.permutation(32)]]), a.encode([c]), atol=1e-6)
    # what the model saw: the centred, unit-radius cloud
    u = c - c.mean(0)
    u = u / np.linalg.norm(u, axis=1).max()
    with torch.no_grad():
        assert_allclose(a.encode([c])[0], net(torch.from_numpy(u[None])).numpy()[0], atol=1e-5)
    cf = PointCloudModelEncoder(TinyPointNet(channels_first=True), n_points=32, channels_first=True)
    assert cf.encode(clouds).shape == (2, 6)
    with pytest.raises(ValueError, match="not TorchScript"):
        load_encoder(f"torchscript:{tmp_path / 'pn.pt'}")
    with pytest.raises(ValueError, match="test batch.*channels_first"):
        PointCloudModelEncoder(TinyPointNet(), n_points=32, channels_first=True)


def test_embed_and_cli_for_point_clouds(tmp_path):
    from click.testing import CliRunner

    from align.cli import main
    from align.features import embed

    enc = load_encoder("shape:d2", bins=8, n_points=128, n_samples=500)
    ds = load_dataset("shapes:5", n_points=200)
    first = embed(enc, ds, cache_dir=tmp_path / "c")
    again = embed(enc, load_dataset("shapes:5", n_points=200), cache_dir=tmp_path / "c")
    assert not first.from_cache and again.from_cache
    assert_allclose(np.asarray(again.X), enc.encode([ds.get(i) for i in range(5)]), atol=1e-7)
    assert embed(enc, load_dataset("shapes:5", n_points=200, seed=3), cache_dir=tmp_path / "c").key != first.key
    with pytest.raises(ValueError, match="takes pointcloud inputs but field 'caption'"):
        embed(enc, ds, field="caption", cache_dir=tmp_path / "c")
    res = CliRunner().invoke(main, ["embed", "--encoder", "shape:d2+cov", "--dataset", "shapes:3", "--encoder-option",
                                    "bins=8", "--cache-dir", str(tmp_path / "c2"), "--no-progress"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output[res.output.index("{"):res.output.rindex("}") + 1])
    assert doc["shapes"] == {"final": [3, 14]} and doc["field"] == "points"
    torch.manual_seed(0)
    torch.save(TinyPointNet(), tmp_path / "pn.pt")
    res = CliRunner().invoke(main, ["embed", "--encoder", f"pointnet:{tmp_path / 'pn.pt'}", "--dataset", "shapes:3",
                                    "--encoder-option", "n_points=64", "--cache-dir", str(tmp_path / "c2"),
                                    "--out", str(tmp_path / "pn.npy"), "--no-progress"])
    assert res.exit_code == 0, res.output
    direct = load_encoder(f"pointnet:{tmp_path / 'pn.pt'}", n_points=64).encode(
        [load_dataset("shapes:3").get(i) for i in range(3)])
    assert_allclose(np.load(tmp_path / "pn.npy"), direct, atol=1e-6)
    write_off(tmp_path / "bad.off", verts=np.zeros((0, 3)), faces=[])
    bad = CliRunner().invoke(main, ["embed", "--encoder", "shape:d2", "--dataset", f"pointcloud:{tmp_path}",
                                    "--cache-dir", str(tmp_path / "c3"), "--no-progress"])
    assert bad.exit_code != 0 and "empty (no vertices)" in bad.output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_sampling_and_descriptors_on_gpu_match_cpu():
    torch.manual_seed(0)
    net = TinyPointNet()
    rng = np.random.default_rng(0)
    clouds = [rng.normal(size=(n, 3)).astype(np.float32) for n in (300, 128, 257)]
    cpu = PointCloudModelEncoder(TinyPointNet(), n_points=64)
    cpu.model.load_state_dict(net.state_dict())
    gpu = PointCloudModelEncoder(TinyPointNet(), n_points=64, device="cuda")
    gpu.model.load_state_dict(net.state_dict())
    assert_allclose(gpu.encode(clouds), cpu.encode(clouds), atol=1e-4)
    x = torch.from_numpy(np.stack([c[:128] for c in clouds]))
    assert farthest_point_sample(x.cuda(), 32).cpu().tolist() == farthest_point_sample(x, 32).tolist()
    d_cpu = load_encoder("shape:d2+a3+cov", n_points=128).encode(clouds)
    d_gpu = load_encoder("shape:d2+a3+cov", n_points=128, device="cuda").encode(clouds)
    assert_allclose(d_gpu, d_cpu, atol=1e-5)
