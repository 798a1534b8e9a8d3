"""The project's autoregressive diffusion-forcing loop (SkyReels-V2 DF) with per-frame-group policies.

``generate(model, policy=None, ...) -> (latents, trace)`` is the entry point (``runtime.df.api``);
``run_diffusion_forcing`` the driver (``loop``); ``build_schedule`` the timestep matrix
(``schedule``); ``Planner`` / ``ActiveFramesPlanner`` / ``FrameUnitsPlanner`` the per-iteration
policy hook (``plan``, ``units``).
"""

from runtime.df.api import generate
from runtime.df.loop import DFTrace, IterationRecord, run_diffusion_forcing
from runtime.df.plan import ActiveFramesPlanner, FramePlan, IterationContext, Planner, is_block_causal
from runtime.df.schedule import DFSchedule, build_schedule
from runtime.df.units import FrameUnitsPlanner

__all__ = [
    "generate", "run_diffusion_forcing", "DFTrace", "IterationRecord", "build_schedule", "DFSchedule",
    "Planner", "ActiveFramesPlanner", "FrameUnitsPlanner", "FramePlan", "IterationContext", "is_block_causal",
]
