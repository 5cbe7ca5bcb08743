"""unialign's benchmarks: ``python -m benchmarks run --quick | --full | --gpu`` and ``python -m benchmarks tables``.

Not part of the installed distribution (``setup.cfg`` packages only ``align``, ``matching`` and ``projectors``);
run it from the repository root. See ``benchmarks/README.md``.
"""
