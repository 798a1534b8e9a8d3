"""Benchmarking: baseline vs policyc policies vs peers, measured the same way (issue 9).

Modules: ``metrics`` (PSNR / SSIM / relative L2 via scikit-image), ``counting`` (compute-fraction
meter on the block list), ``workload`` (what runs and what a method is), ``peers`` (diffusers and
cache-dit accelerators, configured so that they act), ``policies`` (policies through
``runtime.attach``), ``harness`` (interleaved timed runs, results and JSON), ``pareto`` (pictures).
Nothing here is imported by the rest of the runtime.
"""
