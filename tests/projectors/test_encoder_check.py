"""One encoder check for projectors and stitching: ``check_encoders`` is ``align._provenance.check_trained_on``."""
from __future__ import annotations

import pytest


def test_check_trained_on_is_the_one_check_of_projectors_and_stitching():
    from align._provenance import check_trained_on
    from projectors import make_projector
    from projectors._base import check_encoders

    meta = {"x_encoder": "enc-a", "y_encoder": "enc-b"}
    check_trained_on(meta, x_encoder="enc-a", y_encoder="enc-b")  # the recorded encoders pass
    check_trained_on({}, x_encoder="enc-z", y_encoder="enc-z")  # nothing recorded: nothing to compare
    check_trained_on(meta)  # nothing given: nothing to compare
    with pytest.raises(ValueError, match=r"^p was trained on target features of encoder 'enc-b' but is stitched to "
                                         r"'enc-c'; use 'enc-b' features, or refit the projector on 'enc-c' features$"):
        check_trained_on(meta, x_encoder="enc-a", y_encoder="enc-c", where="p", action="stitched to")
    proj = make_projector("linear")
    proj.metadata_ = meta
    with pytest.raises(ValueError, match=r"^this projector was trained on source features of encoder 'enc-a' but is "
                                         r"applied to features of 'enc-c'; use 'enc-a' features"):
        check_encoders(proj, x_encoder="enc-c")
