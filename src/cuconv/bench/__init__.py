"""The bench harness: measured cost of cuconv's kernels against the textbook's theory.

    from cuconv.bench import Runner, BenchOptions, build_suite
    runner = Runner(BenchOptions(roofline="h100"))
    rows = runner.run(build_suite("seed"))        # dicts with every field of rows.FIELDS

Modules: ``cases`` (what to run and its theory), ``grad_cases`` (the backward passes, §9.8),
``suites`` (seed, models, gemm, algos; ``--backward``; a training step),
``runner`` (verify, then time on a GPU or verify on the emulator without one), ``measure``
(CUDA events, L2 flush, NVML, pool memory), ``record`` (which kernels an op launched),
``rows`` (the schema and its arithmetic), ``peaks`` (published GPU peaks), ``report``
(Markdown, JSON, CSV, roofline PNG). ``cuconv bench`` (cuconv/commands/bench.py) is the CLI.
"""
from .measure import TimingOptions  # noqa: F401
from .peaks import PUBLISHED, DevicePeaks, published  # noqa: F401
from .rows import FIELDS, SCHEMA, Work  # noqa: F401
from .runner import BenchOptions, Runner  # noqa: F401
from .suites import SUITES, build_suite, model_cases  # noqa: F401
