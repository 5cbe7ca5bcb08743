"""Helpers shared by the command-line tests."""
from __future__ import annotations

from pathlib import Path


def one_error_line(result) -> str:
    """The single ``error: …`` line a CLI run wrote to stderr; fails the test on a traceback or on several lines."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


def zeroshot_inputs(folder: Path) -> list:
    """A projector (efficientnet-lite0 → an 8-d "text" space, metadata recorded), 3 class names with their class
    vectors and one photo, written to ``folder``; returns the ``unialign zeroshot`` arguments that use them."""
    import numpy as np
    from PIL import Image

    import projectors

    gen = np.random.default_rng(1)
    proj = projectors.make_projector("linear").fit(gen.normal(size=(50, 1280)), gen.normal(size=(50, 8)))
    proj.save(folder / "p.pt", x_encoder="efficientnet-lite0", y_encoder="some-text-encoder")
    (folder / "classes.txt").write_text("cat\ndog\ntemple\n")
    np.save(folder / "c.npy", gen.normal(size=(3, 8)).astype(np.float32))
    (folder / "img").mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(folder / "img" / "a.png")
    return ["zeroshot", "--projector", folder / "p.pt", "--images", folder / "img", "--classes",
            folder / "classes.txt", "--class-features", folder / "c.npy", "--no-progress"]
