"""The workflows a user runs, for Python and for the command line alike.

``align.app`` is the one wing of :mod:`align` that imports the solver packages :mod:`matching` and :mod:`projectors`
(the library core never does; ``align/__init__.py`` never imports this package). Each module is one workflow:

* :mod:`align.app.experiment`: ``unialign run``, YAML experiments and ablation grids (config, preflight, cells,
  report);
* :mod:`align.app.demo`: ``unialign demo``;
* :mod:`align.app.fit`: ``unialign fit`` (:func:`~align.app.fit.fit_from_files`, with the validation report and
  provenance);
* :mod:`align.app.zeroshot`: stitched encoders and ``unialign zeroshot``;
* :mod:`align.app.report`: the plots and Markdown tables the demo and experiments write;
* :mod:`align.app.features`: "embed a feature set through the cache" (shared by ``select``, experiments and the
  demo).

:mod:`align.cli` parses options, calls one function here and prints JSON.
"""
