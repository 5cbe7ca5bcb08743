"""Graph modality: Graph / graph datasets, WordNet, structural kernels, graph encoders, user GNNs, embed cache."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from align.data import load_dataset
from align.data._graph import Graph, GraphNode
from align.encoders import load_encoder
from align.graph_kernels import (diffusion_kernel, kernel_features, laplacian_eigh, normalized_laplacian,
                                 shortest_path_distances, shortest_path_kernel)

WORDNET = Path("/usr/share/wordnet/data.noun")


def barbell(k: int = 6) -> Graph:
    """Two k-cliques joined by one edge (nodes 0..k-1 and k..2k-1)."""
    edges = [(i, j) for i in range(k) for j in range(i + 1, k)]
    edges += [(i + k, j + k) for i, j in edges] + [(k - 1, k)]
    return Graph([f"v{i}" for i in range(2 * k)], edges, name="barbell")


def write_graph(tmp_path, edges="a,b\nb,c\nc,d\nd,a\na,c\n", nodes="id,text,label\na,alpha,x\nb,beta,y\nc,gamma,x\n"
                                                                  "d,delta,y\n"):
    (tmp_path / "e.csv").write_text(edges)
    (tmp_path / "n.csv").write_text(nodes)
    return f"graph:{tmp_path / 'e.csv'},{tmp_path / 'n.csv'}"


def sbm(rng, n_per=30, p_in=0.4, p_out=0.02) -> Graph:
    z = np.repeat([0, 1], n_per)
    P = np.where(z[:, None] == z[None, :], p_in, p_out)
    A = np.triu(rng.random((2 * n_per, 2 * n_per)) < P, 1)
    return Graph([str(i) for i in range(2 * n_per)], np.argwhere(A), name="sbm")


# -- Graph and datasets ---------------------------------------------------------------------------------------


def test_graph_merges_duplicates_drops_self_loops_and_fingerprints_edges():
    g = Graph(["a", "b", "c"], [[0, 1], [1, 0], [1, 1], [1, 2]])
    assert g.n_edges == 2
    assert_allclose(g.adjacency().toarray(), [[0, 2, 0], [2, 0, 1], [0, 1, 0]])
    assert_allclose(g.degrees(), [2, 3, 1])
    assert g.fingerprint() == Graph(["a", "b", "c"], [[1, 2], [0, 1], [0, 1]]).fingerprint()
    assert g.fingerprint() != Graph(["a", "b", "c"], [[0, 1], [1, 2]]).fingerprint()
    with pytest.raises(ValueError, match="twice"):
        Graph(["a", "a"], [[0, 1]])


def test_graph_dataset_from_edge_list_and_node_table(tmp_path):
    ds = load_dataset(write_graph(tmp_path))
    assert ds.fields == ("node", "text")
    assert ds.ids == ["a", "b", "c", "d"]
    assert ds.modality("node") == "graph" and ds.modality("text") == "text"
    assert ds.get(2, "text") == "gamma"
    node = ds.get(2)
    assert isinstance(node, GraphNode) and node.id == "c"
    assert ds.classes == ["x", "y"] and ds.labels.tolist() == [0, 1, 0, 1]
    assert ds.graph.n_edges == 5
    assert ds.fingerprint("node") != ds.fingerprint("text")


def test_graph_dataset_bad_graphs_get_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="dangling edge.*'z'"):
        load_dataset(write_graph(tmp_path, edges="a,b\nb,z\nc,d\n"))
    with pytest.raises(ValueError, match="isolated node.*'d'.*isolated=drop"):
        load_dataset(write_graph(tmp_path, edges="a,b\nb,c\n"))
    ds = load_dataset(write_graph(tmp_path, edges="a,b\nb,c\n"), isolated="drop")
    assert ds.ids == ["a", "b", "c"] and ds.texts("text") == ["alpha", "beta", "gamma"]
    with pytest.raises(ValueError, match="has no text in column 'text'"):
        load_dataset(write_graph(tmp_path, nodes="id,text\na,alpha\nb,\nc,gamma\nd,delta\n"))
    with pytest.raises(ValueError, match="no id column"):
        load_dataset(write_graph(tmp_path, nodes="key,text\na,alpha\n"))
    with pytest.raises(ValueError, match="no edges"):
        load_dataset(write_graph(tmp_path, edges="source,target\n"))
    (tmp_path / "e.csv").write_text("a,b\nb,c\n")
    ds = load_dataset(f"graph:{tmp_path / 'e.csv'}")  # no node table: no text fields
    with pytest.raises(ValueError, match="has no field 'text'"):
        ds.resolve_field("text")


def fake_wordnet(root: Path) -> None:
    """A 5-synset data.noun in WordNet's format: entity <- animal <- {dog, cat}, entity <- car (license lines first)."""
    lines = [
        "  1 This software and database is being provided to you, the LICENSEE, by  ",
        "00000001 03 n 01 entity 0 000 | that which is perceived",
        "00000002 05 n 02 animal 0 animate_being 0 001 @ 00000001 n 0000 | a living organism; \"an animal\"",
        "00000003 05 n 01 dog 0 001 @ 00000002 n 0000 | a domestic canine",
        "00000004 05 n 01 cat 0 002 @ 00000002 n 0000 ~ 00000002 n 0000 | a feline",
        "00000005 06 n 01 car 0 001 @i 00000001 n 0000 | a motor vehicle",
    ]
    root.mkdir(parents=True, exist_ok=True)
    (root / "data.noun").write_text("\n".join(lines) + "\n")


def test_wordnet_parser_on_a_small_database(tmp_path):
    fake_wordnet(tmp_path / "wn")
    ds = load_dataset("wordnet:nouns", root=str(tmp_path / "wn"))
    assert ds.ids == ["n00000001", "n00000002", "n00000003", "n00000004", "n00000005"]
    assert ds.texts("lemmas")[1] == "animal, animate being"
    assert ds.texts("definition")[1] == "a living organism"
    assert ds.texts("gloss")[1] == 'a living organism; "an animal"'
    assert_allclose(shortest_path_distances(ds.graph)[2], [2, 1, 0, 2, 3])  # dog: entity, animal, dog, cat, car
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        load_dataset("wordnet:nouns", root=str(tmp_path / "nowhere"))


@pytest.mark.skipif(not WORDNET.is_file(), reason="Debian wordnet-base is not installed")
def test_wordnet_imagenet_subtree_links_to_imagenet_classes():
    from align.data._concepts import imagenet_wnids, synset_definitions

    ds = load_dataset("wordnet:imagenet-1k")
    assert len(ds) == 1000 and ds.ids == list(imagenet_wnids())
    assert ds.graph.n_nodes > 1000 and ds.graph.n_components() == 1 and len(ds.graph.isolated()) == 0
    assert "n00001740" in ds.graph.index  # entity, the root
    timm_defs = synset_definitions()
    assert ds.texts("definition") == [timm_defs[w] for w in ds.ids]
    assert ds.labels.tolist() == list(range(1000))
    assert len(load_dataset("wordnet:imagenet-1k", nodes="all")) == ds.graph.n_nodes


# -- structural kernels ---------------------------------------------------------------------------------------


def test_diffusion_kernel_is_the_matrix_exponential_and_the_encoder_its_factor():
    from scipy.linalg import expm

    g = barbell(5)
    L = normalized_laplacian(g).toarray()
    K = diffusion_kernel(g, t=0.7)
    assert_allclose(K, expm(-0.7 * L), atol=1e-10)
    nodes = np.array([7, 0, 3])
    assert_allclose(diffusion_kernel(g, nodes, t=0.7), K[np.ix_(nodes, nodes)], atol=1e-12)
    F = load_encoder("graph:diffusion", dim=g.n_nodes, t=0.7).embed_graph(g).astype(np.float64)
    assert_allclose(F @ F.T, K, atol=1e-6)


def test_shortest_path_kernel_on_a_path_and_a_tree():
    path = Graph(list("abcde"), [[0, 1], [1, 2], [2, 3], [3, 4]])
    D = shortest_path_distances(path)
    assert_allclose(D, np.abs(np.arange(5)[:, None] - np.arange(5)[None, :]))
    K = shortest_path_kernel(path, gamma=0.5)
    assert_allclose(K, np.exp(-0.5 * D))
    # a tree metric is of negative type: exp(-gamma d) is positive semi-definite
    rng = np.random.default_rng(0)
    parents = [int(rng.integers(k)) for k in range(1, 40)]
    tree = Graph([str(k) for k in range(40)], [[k + 1, p] for k, p in enumerate(parents)])
    assert np.linalg.eigvalsh(shortest_path_kernel(tree, gamma=0.3)).min() > -1e-10
    two = Graph(list("abcd"), [[0, 1], [2, 3]])
    assert shortest_path_kernel(two)[0, 2] == 0.0


def test_kernel_features_reproduce_the_kernel_and_its_cka(rng):
    from align.similarity import compare

    X = rng.normal(size=(50, 4))
    K = np.exp(-((X[:, None] - X[None]) ** 2).sum(-1) / 4)
    F = kernel_features(K)
    assert_allclose(F @ F.T, K, atol=1e-8)
    Y = X @ rng.normal(size=(4, 6)) + 0.3 * rng.normal(size=(50, 6))
    H = np.eye(50) - 1 / 50
    Kc, Lc = H @ K @ H, H @ (Y @ Y.T) @ H
    naive = (Kc * Lc).sum() / np.sqrt((Kc * Kc).sum() * (Lc * Lc).sum())
    assert compare(F, Y, "linear_cka").value == pytest.approx(naive, abs=1e-9)
    indefinite = np.array([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3 and -1
    F2 = kernel_features(indefinite)
    assert F2.shape == (2, 1)
    assert_allclose(F2 @ F2.T, np.full((2, 2), 1.5), atol=1e-12)  # the positive part, 3 u u^T
    with pytest.raises(ValueError, match="symmetric"):
        kernel_features(np.array([[1.0, 0.5], [0.0, 1.0]]))


def test_structural_kernel_through_faq_recovers_a_planted_permutation(rng):
    import matching

    g = sbm(rng, 20, 0.3, 0.05)
    K = diffusion_kernel(g, t=2.0)
    perm = rng.permutation(g.n_nodes)
    seeds = np.stack([np.arange(8), np.argsort(perm)[:8]], axis=1)
    res = matching.faq(K, K[np.ix_(perm, perm)], seeds, n_init=3, rng=0)
    assert np.mean(res.col_ind == np.argsort(perm)) > 0.9
    F = kernel_features(K)  # the factor through match(..., kernel="linear") is the same problem
    res2 = matching.match(F, F[perm], method="faq", kernel="linear", partial_match=seeds, n_init=3, rng=0)
    assert np.mean(res2.col_ind == np.argsort(perm)) > 0.9


# -- encoders -------------------------------------------------------------------------------------------------


def test_spectral_eigenmaps_split_a_barbell_and_are_degree_orthonormal():
    g = barbell(6)
    enc = load_encoder("graph:spectral", dim=3)
    Y = enc.embed_graph(g).astype(np.float64)
    assert Y.shape == (12, 3) and enc.modality == "graph"
    assert np.all(np.sign(Y[:6, 0]) == -np.sign(Y[6:, 0][0])) and np.all(np.sign(Y[6:, 0]) == np.sign(Y[6, 0]))
    assert_allclose(Y.T @ np.diag(g.degrees()) @ Y, np.eye(3), atol=1e-5)
    evals, _ = laplacian_eigh(g, 4)
    assert evals[0] == pytest.approx(0.0, abs=1e-10) and np.all(np.diff(evals) >= -1e-12)
    with pytest.raises(ValueError, match="at least 13 nodes"):
        load_encoder("graph:spectral", dim=12).embed_graph(g)


def test_walk_embedding_is_seeded_and_separates_communities(rng):
    g = sbm(rng)
    enc = load_encoder("graph:walk", dim=4, walks_per_node=8, walk_length=10, window=3, seed=1)
    C = enc.cooccurrence(g)
    assert_allclose((C - C.T).toarray(), 0)
    assert C.sum() == 2 * 8 * g.n_nodes * sum(11 - o for o in range(1, 4))
    A = enc.embed_graph(g)
    assert_allclose(A, load_encoder("graph:walk", dim=4, walks_per_node=8, walk_length=10, window=3,
                                    seed=1).embed_graph(g))
    assert not np.allclose(A, load_encoder("graph:walk", dim=4, walks_per_node=8, walk_length=10, window=3,
                                           seed=2).embed_graph(g))
    from sklearn.cluster import KMeans

    z = KMeans(2, n_init=5, random_state=0).fit_predict(A)
    truth = np.repeat([0, 1], 30)
    assert max(np.mean(z == truth), np.mean(z != truth)) > 0.9


def test_graph_encoders_reject_bad_inputs(rng):
    enc = load_encoder("graph:spectral", dim=2)
    with pytest.raises(TypeError, match="GraphNode"):
        enc.encode(["not a node"])
    g1, g2 = barbell(3), barbell(3)
    with pytest.raises(ValueError, match="one graph"):
        enc.encode([GraphNode(g1, 0), GraphNode(g2, 1)])
    iso = Graph(list("abc"), [[0, 1]])
    with pytest.raises(ValueError, match="isolated"):
        enc.embed_graph(iso)
    with pytest.raises(ValueError, match="unknown graph encoder"):
        load_encoder("graph:node2vec")
    with pytest.raises(TypeError, match="'graph:spectral' does not take option.*t; its options are dim"):
        load_encoder("graph:spectral", t=2.0)


class DenseGCN(torch.nn.Module):
    """Two GCN layers on a normalised dense adjacency: relu(A relu(A X W1) W2)."""

    def __init__(self, d_in=1, d_hidden=8, d_out=5):
        super().__init__()
        self.l1, self.l2 = torch.nn.Linear(d_in, d_hidden), torch.nn.Linear(d_hidden, d_out)

    def forward(self, x, adj):
        return adj @ self.l2(torch.relu(adj @ self.l1(x)))


class EdgeGCN(torch.nn.Module):
    """Mean aggregation over an edge_index (PyG convention), then a linear layer."""

    def __init__(self, d_in=1, d_out=4):
        super().__init__()
        self.lin = torch.nn.Linear(2 * d_in, d_out)

    def forward(self, x, edge_index):
        src, dst = edge_index[0], edge_index[1]
        agg = torch.zeros_like(x).index_add_(0, dst, x[src])
        deg = torch.zeros(x.shape[0], dtype=x.dtype).index_add_(0, dst, torch.ones_like(src, dtype=x.dtype))
        return self.lin(torch.cat([x, agg / deg.clamp(min=1)[:, None]], dim=1))


def test_user_gnn_pickled_and_torchscript_match_the_module(tmp_path):
    torch.manual_seed(0)
    g = barbell(4)
    model = DenseGCN()
    torch.save(model, tmp_path / "gcn.pt")
    torch.jit.script(model).save(str(tmp_path / "gcn.ts"))
    x = torch.log1p(torch.as_tensor(g.degrees(), dtype=torch.float32))[:, None]
    A = torch.as_tensor(g.adjacency().toarray(), dtype=torch.float32) + torch.eye(g.n_nodes)
    s = A.sum(1).rsqrt()
    with torch.no_grad():
        expected = model(x, s[:, None] * A * s[None, :]).numpy()
    for path in ("gcn.pt", "gcn.ts"):
        enc = load_encoder(f"gnn:{tmp_path / path}", graph_input="adjacency")
        assert enc.dim == 5 and enc.modality == "graph"
        nodes = [GraphNode(g, k) for k in (5, 0, 7)]
        assert_allclose(enc.encode(nodes), expected[[5, 0, 7]], atol=1e-5)
    edge = EdgeGCN()
    torch.save(edge, tmp_path / "edge.pt")
    enc = load_encoder(f"gnn:{tmp_path / 'edge.pt'}")  # edge_index input, degree features
    out = enc.embed_graph(g)
    assert out.shape == (8, 4)
    # relabelling the nodes permutes the rows (equivariance through the loader)
    perm = np.random.default_rng(0).permutation(8)
    inv = np.argsort(perm)
    g2 = Graph([g.node_ids[p] for p in perm], inv[g.edges])
    assert_allclose(enc.embed_graph(g2), out[perm], atol=1e-5)


def test_user_gnn_bad_checkpoints(tmp_path):
    torch.save(DenseGCN().state_dict(), tmp_path / "sd.pt")
    with pytest.raises(ValueError, match="state_dict"):
        load_encoder(f"gnn:{tmp_path / 'sd.pt'}")
    torch.save(DenseGCN(d_in=3), tmp_path / "wide.pt")
    with pytest.raises(ValueError, match="3-node test graph.*node_features"):
        load_encoder(f"gnn:{tmp_path / 'wide.pt'}", graph_input="adjacency")
    np.save(tmp_path / "x.npy", np.ones((3, 3), dtype=np.float32))
    enc = load_encoder(f"gnn:{tmp_path / 'wide.pt'}", graph_input="adjacency",
                       node_features=str(tmp_path / "x.npy"))
    assert enc.dim == 5
    with pytest.raises(ValueError, match=r"\(8, f\)"):
        enc.embed_graph(barbell(4))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_encoder(f"gnn:{tmp_path / 'missing.pt'}")


# -- through the feature cache and the CLI --------------------------------------------------------------------


def test_embed_caches_graph_features_and_misses_when_the_graph_changes(tmp_path):
    from align.features import embed

    spec = write_graph(tmp_path)
    enc = load_encoder("graph:diffusion", dim=3)
    ds = load_dataset(spec)
    first = embed(enc, ds, cache_dir=tmp_path / "cache")
    again = embed(enc, load_dataset(spec), cache_dir=tmp_path / "cache")
    assert not first.from_cache and again.from_cache
    assert_allclose(np.asarray(again.X), enc.embed_graph(ds.graph))
    (tmp_path / "e.csv").write_text("a,b\nb,c\nc,d\n")
    changed = embed(enc, load_dataset(spec), cache_dir=tmp_path / "cache")
    assert not changed.from_cache and changed.key != first.key
    with pytest.raises(ValueError, match="takes graph inputs but field 'text'"):
        embed(enc, ds, field="text", cache_dir=tmp_path / "cache")


def test_cli_embed_graph(tmp_path):
    from click.testing import CliRunner

    from align.cli import main

    spec = write_graph(tmp_path)
    out = tmp_path / "f.npy"
    args = ["embed", "--encoder", "graph:spectral", "--dataset", spec, "--encoder-option", "dim=2",
            "--cache-dir", str(tmp_path / "c"), "--out", str(out), "--no-progress"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output[res.output.index("{"):res.output.rindex("}") + 1])
    assert doc["shapes"] == {"final": [4, 2]} and doc["field"] == "node"
    assert np.load(out).shape == (4, 2)
    bad = CliRunner().invoke(main, ["embed", "--encoder", "graph:spectral", "--dataset",
                                    write_graph(tmp_path, edges="a,b\nb,zz\n")])
    assert bad.exit_code != 0 and "dangling edge" in bad.output
